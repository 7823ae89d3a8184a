/* mine.c - the knowledge-mining run; see mine.h for the protocol. */
#include "mine.h"

#include "embcache.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/image.h"
#include "../models/sam_preprocess.h"
#include "../models/unetpp.h"
#include "../train/augment.h"
#include "../train/dataset.h"
#include "../train/sched.h"
#include "../train/splits.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KM_MINE_RNG_SALT 0x6d696e696e670000ULL /* "mining" */

void km_mine_config_default(km_mine_config *c) {
    memset(c, 0, sizeof *c);
    km_train_config_default(&c->train);
    c->train.labelled_fraction = 0.5;
    c->profile = KM_SAM_PROFILE_SAM;
    c->schedule = KM_MINE_CONTINUOUS;
    c->prompt_mode = KM_PROMPT_POINTS_BOX;
    c->points = 1;
    c->pseudo_weight = 0.5;
    c->mine_epochs = 100;
    c->cache_mem = 256;
    c->sample_pngs = 8;
}

km_status km_mine_config_check(const km_mine_config *c) {
    if (!c->out || !c->out[0]) return km_err(KM_EARG, "--out: a run folder is required");
    if (!c->teacher || !c->teacher[0]) return km_err(KM_EARG, "--teacher: a SAM/MedSAM checkpoint is required");
    struct stat st;
    if (stat(c->teacher, &st) || !S_ISREG(st.st_mode))
        return km_err(KM_EIO, "--teacher %s: no such checkpoint file", c->teacher);
    if (c->init && (stat(c->init, &st) || !S_ISREG(st.st_mode)))
        return km_err(KM_EIO, "--init %s: no such checkpoint file", c->init);
    if (c->schedule != KM_MINE_ONETIME && c->schedule != KM_MINE_CONTINUOUS)
        return km_err(KM_EARG, "--schedule: expected onetime or continuous");
    if (c->points < 1 || c->points > KM_PROMPTS_MAX_POINTS)
        return km_err(KM_EARG, "--points %d: expected 1..%d", c->points, KM_PROMPTS_MAX_POINTS);
    if (c->profile == KM_SAM_PROFILE_MEDSAM && c->prompt_mode != KM_PROMPT_BOX)
        return km_err(KM_EARG, "--prompt-mode %s: MedSAM takes box prompts only (use --prompt-mode box)",
                      km_prompt_mode_name(c->prompt_mode));
    if (!(c->pseudo_weight >= 0) || isinf(c->pseudo_weight))
        return km_err(KM_EARG, "--pseudo-weight %g: expected a finite value >= 0", c->pseudo_weight);
    if (c->mine_epochs < 1) return km_err(KM_EARG, "--mine-epochs %d: expected >= 1", c->mine_epochs);
    if (c->cache_mem < 0) return km_err(KM_EARG, "--cache-mem %d: expected >= 0", c->cache_mem);
    if (c->sample_pngs < 0) return km_err(KM_EARG, "--sample-pngs %d: expected >= 0", c->sample_pngs);
    km_train_config t = c->train;
    if (!t.data) return km_err(KM_EARG, "--data: a dataset folder is required");
    t.out = NULL;
    return km_train_config_check(&t);
}

/* ------------------------------------------------------------------ helpers */

/* {0,1} mask [S, S] -> 0/255 grey PNG */
static km_status save_mask_png(const char *path, const uint8_t *m01, int S, uint8_t *tmp) {
    for (int i = 0; i < S * S; i++) tmp[i] = m01[i] ? 255 : 0;
    km_image img = {S, S, 1, tmp};
    return km_image_save_png(path, &img);
}

static double dice_u8(const uint8_t *p, const uint8_t *g, size_t n) {
    long inter = 0, sp = 0, sg = 0;
    for (size_t i = 0; i < n; i++) {
        inter += p[i] && g[i];
        sp += p[i] != 0;
        sg += g[i] != 0;
    }
    return sp + sg ? 2.0 * inter / (double)(sp + sg) : 1.0; /* both empty = 1 (method.md 7) */
}

/* JSON string (escaped) or null */
static void json_str(FILE *f, const char *v) {
    if (!v) {
        fputs("null", f);
        return;
    }
    char *b = NULL;
    size_t len = 0, cap = 0;
    km_json_escape(&b, &len, &cap, v);
    fwrite(b, 1, len, f);
    km_free(b);
}

/* <out>/mine_config.json: every resolved mining setting and the data /
 * optimisation settings the phase uses (the supervised phase writes its own
 * supervised/config.json). */
static km_status write_config(const km_mine_config *c, const char *path) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return km_err(KM_EIO, "%s: cannot build the configuration: %s", path, strerror(errno));
    const km_train_config *t = &c->train;
    fprintf(f, "{\n  \"kmseg_version\": ");
    json_str(f, KM_VERSION);
    fprintf(f, ",\n  \"data\": ");
    json_str(f, t->data);
    fprintf(f, ",\n  \"split_dir\": ");
    json_str(f, t->split_dir);
    fprintf(f, ",\n  \"teacher\": ");
    json_str(f, c->teacher);
    fprintf(f, ",\n  \"teacher_profile\": \"%s\"", c->profile == KM_SAM_PROFILE_MEDSAM ? "medsam" : "sam");
    fprintf(f, ",\n  \"schedule\": \"%s\"", c->schedule == KM_MINE_ONETIME ? "onetime" : "continuous");
    fprintf(f, ",\n  \"init\": ");
    json_str(f, c->init);
    fprintf(f, ",\n  \"prompt_mode\": \"%s\"", km_prompt_mode_name(c->prompt_mode));
    fprintf(f, ",\n  \"points\": %d,\n  \"pseudo_weight\": %.17g,\n  \"mine_epochs\": %d", c->points,
            c->pseudo_weight, c->mine_epochs);
    fprintf(f, ",\n  \"cache_dir\": ");
    json_str(f, c->cache_dir);
    fprintf(f, ",\n  \"cache_mem\": %d,\n  \"sample_pngs\": %d", c->cache_mem, c->sample_pngs);
    fprintf(f, ",\n  \"val_fraction\": %.17g,\n  \"test_fraction\": %.17g,\n  \"labelled_fraction\": %.17g",
            t->val_fraction, t->test_fraction, t->labelled_fraction);
    fprintf(f, ",\n  \"max_images\": %d,\n  \"size\": %d,\n  \"resnet\": %d,\n  \"batch\": %d,\n  \"epochs\": %d",
            t->max_images, t->size, t->resnet, t->batch, t->epochs);
    fprintf(f, ",\n  \"lr\": %.17g,\n  \"beta1\": %.17g,\n  \"beta2\": %.17g,\n  \"eps\": %.17g", t->lr, t->beta1,
            t->beta2, t->eps);
    fprintf(f, ",\n  \"weight_decay\": %.17g,\n  \"plateau_factor\": %.17g,\n  \"min_lr\": %.17g", t->weight_decay,
            t->plateau_factor, t->min_lr);
    fprintf(f, ",\n  \"plateau_patience\": %d,\n  \"early_stop\": %d,\n  \"bce_weight\": %.17g",
            t->plateau_patience, t->early_stop, t->bce_weight);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"threads\": %d,\n  \"eval_test\": %d\n}\n", (unsigned long long)t->seed,
            t->threads, t->eval_test);
    fclose(f);
    km_status s = km_write_file_atomic(path, buf, n);
    free(buf);
    return s;
}

/* ------------------------------------------------------------------ teacher */

typedef struct {
    km_sam sam;
    int loaded;
    km_sam_predictor p;
    km_sam_profile profile;
    km_embcache cache;
    int cache_on;
    uint64_t fp;
    float *encin, *emb;
    long calls, encoder_runs;
    double t_encode, t_decode; /* seconds in the image encoder / prompt encoder + decoder + post-processing */
    km_prompt_mode mode;
    float *m256;
} teacher;

static km_status teacher_open(teacher *t, const km_mine_config *c) {
    memset(t, 0, sizeof *t);
    t->profile = c->profile;
    t->mode = c->prompt_mode;
    km_status s = km_sam_load(&t->sam, c->teacher, 1);
    if (s) return km_err_prefix(s, "--teacher: ");
    t->loaded = 1;
    s = km_sam_predictor_init(&t->p, &t->sam, c->profile);
    if (!s) s = km_checkpoint_fingerprint(c->teacher, &t->fp);
    if (!s) s = km_embcache_init(&t->cache, c->cache_dir, 256, c->cache_mem);
    if (s) return s;
    t->cache_on = 1;
    t->encin = km_malloc(sizeof(float) * 3 * KM_SAM_INPUT * KM_SAM_INPUT);
    t->emb = km_malloc(sizeof(float) * 256 * KM_EMB_HW * KM_EMB_HW);
    t->m256 = km_malloc(sizeof(float) * 256 * 256);
    return KM_OK;
}

static void teacher_close(teacher *t) {
    if (t->cache_on) km_embcache_free(&t->cache);
    if (t->loaded) {
        km_sam_predictor_free(&t->p);
        km_sam_free(&t->sam);
    }
    km_free(t->encin);
    km_free(t->emb);
    km_free(t->m256);
}

/* Pseudo label [S, S] {0,1} of the un-augmented crop rgb [S, S, 3] from
 * prompts in that frame; z_orig (the student's logits in that frame) only for
 * the mask mode. */
static km_status teacher_label(teacher *t, const uint8_t *rgb, int S, km_prompts *pr, const float *z_orig,
                               uint8_t *label) {
    km_embkey k;
    km_embkey_make(&k, km_hash_image(rgb, S, S, 3), t->fp, t->profile == KM_SAM_PROFILE_MEDSAM ? "medsam" : "sam",
                   S, S);
    km_status s;
    if (!km_embcache_lookup(&t->cache, &k, t->emb)) {
        double t0 = km_now();
        if (t->profile == KM_SAM_PROFILE_MEDSAM) km_medsam_preprocess(t->encin, KM_SAM_INPUT, rgb, S, S, 3);
        else km_sam_preprocess(t->encin, KM_SAM_INPUT, rgb, S, S, 3, NULL, NULL);
        s = km_sam_encoder_forward(t->sam.encoder, t->encin, t->emb, NULL);
        t->t_encode += km_now() - t0;
        if (s) return s;
        t->encoder_runs++;
        if (km_embcache_insert(&t->cache, &k, t->emb))
            fprintf(stderr, "kmseg mine: warning: embedding not cached: %s\n", km_errmsg());
    }
    s = km_sam_set_embedding(&t->p, t->emb, S, S);
    if (s) return s;
    const float *m256 = NULL;
    if (t->mode & KM_PROMPT_USE_MASK) {
        km_prompts_mask_input(t->m256, z_orig, S, S, t->p.input_h, t->p.input_w);
        m256 = t->m256;
    }
    km_sam_prompts sp;
    km_prompts_to_sam(pr, m256, &sp);
    km_sam_result r;
    memset(&r, 0, sizeof r);
    double t0 = km_now();
    s = km_sam_predict(&t->p, &sp, &r);
    t->t_decode += km_now() - t0;
    if (!s) {
        KM_ASSERT(r.K >= 1 && r.h == S && r.w == S);
        memcpy(label, r.masks, (size_t)S * S);
        t->calls++;
    }
    km_sam_result_free(&r);
    return s;
}

/* ------------------------------------------------------------------ data */

typedef struct {
    km_dataset_index idx;
    km_split sp;
    int *lab, *unl;
    int n_lab, n_unl;
    km_dataset pool; /* labelled [0, n_lab) then unlabelled [n_lab, n_lab + n_unl), with masks */
    km_dataset va, te;
} mine_data;

static void mine_data_free(mine_data *d) {
    km_dataset_free(&d->te);
    km_dataset_free(&d->va);
    km_dataset_free(&d->pool);
    km_free(d->lab);
    km_free(d->unl);
    km_split_free(&d->sp);
    km_dataset_index_free(&d->idx);
}

/* The splits exactly as train.c's prepare_data makes them for a new run,
 * written to <out>/splits/ (train, val, test, labelled, unlabelled .txt) so
 * that `kmseg eval --split-dir` can score the mined student. */
static km_status mine_data_load(const km_train_config *c, const char *out, mine_data *d) {
    km_issues iss;
    km_issues_init(&iss);
    km_status s = km_dataset_scan(c->data, &d->idx, &iss);
    if (!s) s = km_issues_status(&iss, c->data);
    km_issues_free(&iss);
    if (s) return s;
    if (c->split_dir) {
        s = km_split_from_dir(&d->idx, c->split_dir, &d->sp, NULL);
        if (s) return s;
    } else {
        int n = c->max_images && c->max_images < d->idx.n ? c->max_images : d->idx.n;
        km_split_random(n, c->seed, c->val_fraction, c->test_fraction, &d->sp);
    }
    km_split_labelled(&d->sp, c->labelled_fraction, c->seed, &d->lab, &d->n_lab, &d->unl, &d->n_unl);
    if (d->sp.n_val < 1) return km_err(KM_EARG, "%s: the validation split is empty", c->data);
    if (d->n_lab < 2) return km_err(KM_EARG, "%s: %d labelled training image(s); at least 2 are needed", c->data, d->n_lab);
    char *sd = km_path_join(out, "splits");
    s = km_mkdir_p(sd);
    if (!s) s = km_split_write(&d->idx, &d->sp, sd);
    char *lp = km_path_join(sd, "labelled.txt"), *up = km_path_join(sd, "unlabelled.txt"), *tp = km_path_join(sd, "test.txt");
    if (!s && d->sp.n_test == 0) remove(tp); /* an empty list does not read back (splits.h) */
    if (!s) s = km_write_id_list(&d->idx, d->lab, d->n_lab, lp);
    if (!s) s = km_write_id_list(&d->idx, d->unl, d->n_unl, up);
    km_free(lp);
    km_free(up);
    km_free(tp);
    km_free(sd);
    if (s) return s;
    int n = d->n_lab + d->n_unl;
    int *which = km_malloc(sizeof(int) * (size_t)(n + 1));
    memcpy(which, d->lab, sizeof(int) * (size_t)d->n_lab);
    if (d->n_unl) memcpy(which + d->n_lab, d->unl, sizeof(int) * (size_t)d->n_unl);
    s = km_dataset_load(&d->idx, which, n, c->size, 1, &d->pool, NULL);
    km_free(which);
    if (!s) s = km_dataset_load(&d->idx, d->sp.val, d->sp.n_val, c->size, 1, &d->va, NULL);
    if (!s && c->eval_test && d->sp.n_test)
        s = km_dataset_load(&d->idx, d->sp.test, d->sp.n_test, c->size, 1, &d->te, NULL);
    return s;
}

/* ------------------------------------------------------------------ loss */

/* Loss of the part `sel[0..n)` of a batch (positions), gathered into
 * contiguous buffers; dlogits of the part scattered back, scaled. */
static double part_loss(const float *logits, const float *y, const int *sel, int n, size_t P, double a, float scale,
                        float *gz, float *gy, float *gd, float *dlogits) {
    if (n == 0) return 0;
    for (int i = 0; i < n; i++) {
        memcpy(gz + P * i, logits + P * sel[i], sizeof(float) * P);
        memcpy(gy + P * i, y + P * sel[i], sizeof(float) * P);
    }
    double l = km_seg_loss(gz, gy, P * n, a, scale, gd, NULL, NULL);
    for (int i = 0; i < n; i++) memcpy(dlogits + P * sel[i], gd + P * i, sizeof(float) * P);
    return l;
}

static const char *const k_mine_cols[] = {
    "epoch", "train_loss", "sup_loss", "pseudo_loss", "val_loss", "val_dice", "val_iou",
    "test_dice", "test_iou", "lr", "seconds", "unl_visits", "teacher_calls", "no_box", "cache_hits",
    "cache_misses", "encoder_runs", "encoder_seconds", "decoder_seconds", "pseudo_dice"};
#define NMCOLS ((int)(sizeof k_mine_cols / sizeof k_mine_cols[0]))

/* Eval-mode validation: size-weighted loss, per-image Dice/IoU at logit > 0. */
static km_status validate(km_unetpp *m, const km_dataset *va, int B, int S, double a, float *x, float *y,
                          float *z, float *dz, double *loss, double *dice, double *iou) {
    size_t P = (size_t)S * S;
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    int *which = km_malloc(sizeof(int) * (size_t)B);
    double wsum = 0;
    km_status s = KM_OK;
    for (int b0 = 0; b0 < va->n && !s; b0 += B) {
        int bn = va->n - b0 < B ? va->n - b0 : B;
        for (int i = 0; i < bn; i++) which[i] = b0 + i;
        km_batch_fill(va, which, NULL, bn, x, y);
        s = km_unetpp_forward(m, x, bn, S, S, 0, z);
        if (s) break;
        wsum += km_seg_loss(z, y, P * bn, a, 1.0f, dz, NULL, NULL) * bn;
        for (int i = 0; i < bn; i++) km_metric_acc_add(&acc, km_conf_logits_f32(z + P * i, y + P * i, P), NULL, NULL);
    }
    km_free(which);
    *loss = wsum / va->n;
    *dice = km_metric_mean_dice(&acc);
    *iou = km_metric_mean_iou(&acc);
    return s;
}

/* ------------------------------------------------------------------ run */

km_status km_mine_run(const km_mine_config *c, const km_train_hooks *hooks, km_mine_result *res) {
    static const km_train_hooks no_hooks = {0};
    if (!hooks) hooks = &no_hooks;
    FILE *log = hooks->log;
    memset(res, 0, sizeof *res);
    res->best_val_loss = res->last_val_dice = NAN;
    km_status s = km_mine_config_check(c);
    if (s) return s;
    s = km_mkdir_p(c->out);
    if (s) return s;
    char *p_cfg = km_path_join(c->out, "mine_config.json");
    s = write_config(c, p_cfg);
    km_free(p_cfg);
    if (s) return s;

    /* 1. supervised phase (or a given student) */
    char *p_sup = km_path_join(c->out, "supervised"), *init = NULL;
    if (c->init) {
        init = km_strdup(c->init);
    } else {
        km_train_config tc = c->train;
        tc.out = p_sup;
        km_train_result tr;
        if (log) fprintf(log, "supervised phase -> %s\n", p_sup);
        s = km_train_run(&tc, 0, hooks, &tr);
        if (s) {
            km_free(p_sup);
            return km_err_prefix(s, "supervised phase: ");
        }
        init = km_path_join(p_sup, "best.safetensors");
    }
    km_free(p_sup);
    km_set_threads(c->train.threads);

    const km_train_config *tc = &c->train;
    int S = tc->size, B = tc->batch;
    size_t P = (size_t)S * S;
    mine_data d;
    memset(&d, 0, sizeof d);
    teacher T;
    memset(&T, 0, sizeof T);
    km_unetpp *m = NULL;
    km_csv csv;
    km_jsonl jl;
    memset(&csv, 0, sizeof csv);
    memset(&jl, 0, sizeof jl);
    float *x = NULL, *y = NULL, *z = NULL, *dz = NULL, *gz = NULL, *gy = NULL, *gd = NULL, *zo = NULL;
    uint8_t *frozen = NULL, *has_frozen = NULL, *lab_o = NULL, *lab_a = NULL, *png = NULL, *aug = NULL;
    int *order = NULL, *pool = NULL, *sel_l = NULL, *sel_u = NULL;
    char *p_best = km_path_join(c->out, "best.safetensors"), *p_last = km_path_join(c->out, "last.safetensors");
    char *p_pseudo = km_path_join(c->out, "pseudo"), *p_csv = km_path_join(c->out, "metrics.csv");
    char *p_jsonl = km_path_join(c->out, "metrics.jsonl");

    s = km_unetpp_load(&m, init);
    if (!s && km_unetpp_resnet_depth(m) != tc->resnet)
        s = km_err(KM_EARG, "%s: resnet%d weights, but --resnet %d", init, km_unetpp_resnet_depth(m), tc->resnet);
    if (s) goto out;
    km_unetpp_adam_reset(m); /* fresh optimiser state (method.md 5) */
    s = mine_data_load(tc, c->out, &d);
    if (!s) s = teacher_open(&T, c);
    if (!s) s = km_unetpp_reserve(m, B, S, S);
    if (!s) s = km_mkdir_p(p_pseudo);
    if (s) goto out;
    res->n_labelled = d.n_lab;
    res->n_unlabelled = d.n_unl;
    if (log)
        fprintf(log, "mining: %d labelled, %d unlabelled, %d val; teacher %s (%s), %s schedule, %s, lambda %g\n",
                d.n_lab, d.n_unl, d.va.n, c->teacher, c->profile == KM_SAM_PROFILE_MEDSAM ? "medsam" : "sam",
                c->schedule == KM_MINE_ONETIME ? "one-time" : "continuous", km_prompt_mode_name(c->prompt_mode),
                c->pseudo_weight);

    x = km_malloc(sizeof(float) * 3 * P * B);
    y = km_malloc(sizeof(float) * P * B);
    z = km_malloc(sizeof(float) * P * B);
    dz = km_malloc(sizeof(float) * P * B);
    gz = km_malloc(sizeof(float) * P * B);
    gy = km_malloc(sizeof(float) * P * B);
    gd = km_malloc(sizeof(float) * P * B);
    zo = km_malloc(sizeof(float) * P);
    lab_o = km_malloc(P);
    lab_a = km_malloc(P);
    png = km_malloc(P);
    sel_l = km_malloc(sizeof(int) * B);
    sel_u = km_malloc(sizeof(int) * B);
    km_rng rng;
    km_rng_seed(&rng, tc->seed ^ KM_MINE_RNG_SALT);
    int npool_all = d.n_lab + d.n_unl;
    pool = km_malloc(sizeof(int) * (size_t)(npool_all + 1));
    int npool = 0;
    for (int i = 0; i < d.n_lab; i++) pool[npool++] = i;

    /* 2. one-time pseudo labels, frozen */
    if (c->schedule == KM_MINE_ONETIME) {
        frozen = km_malloc(P * (d.n_unl + 1));
        has_frozen = km_calloc((size_t)d.n_unl + 1);
        long hits0 = T.cache.hits_mem + T.cache.hits_disk;
        double pd = 0;
        int npd = 0;
        for (int b0 = 0; b0 < d.n_unl && !s; b0 += B) {
            int bn = d.n_unl - b0 < B ? d.n_unl - b0 : B;
            for (int i = 0; i < bn; i++) sel_u[i] = d.n_lab + b0 + i;
            km_batch_fill(&d.pool, sel_u, NULL, bn, x, NULL);
            s = km_unetpp_forward(m, x, bn, S, S, 0, z);
            for (int i = 0; i < bn && !s; i++) {
                int u = b0 + i, pi = d.n_lab + u;
                km_prompts pr;
                s = km_prompts_from_logits(&pr, z + P * i, S, S, c->prompt_mode, c->points, &rng);
                if (s) break;
                if (pr.outcome == KM_PROMPTS_NO_BOX) {
                    res->no_box++;
                    continue;
                }
                s = teacher_label(&T, d.pool.images + 3 * P * pi, S, &pr, z + P * i, frozen + P * u);
                if (s) break;
                has_frozen[u] = 1;
                pool[npool++] = pi;
                pd += dice_u8(frozen + P * u, d.pool.masks + P * pi, P);
                npd++;
                char name[600];
                snprintf(name, sizeof name, "%s/%s.png", p_pseudo, d.pool.ids[pi]);
                s = save_mask_png(name, frozen + P * u, S, png);
            }
        }
        if (s) goto out;
        res->teacher_calls = T.calls;
        res->last_pseudo_dice = npd ? pd / npd : NAN;
        if (log)
            fprintf(log, "one-time pseudo labels: %d of %d unlabelled images (%ld NO_BOX), mean Dice vs ground truth "
                         "%.4f, %ld encoder runs (%.1f s), %ld cache hits, decoder %.1f s\n",
                    npd, d.n_unl, res->no_box, res->last_pseudo_dice, T.encoder_runs, T.t_encode,
                    T.cache.hits_mem + T.cache.hits_disk - hits0, T.t_decode);
    } else {
        for (int u = 0; u < d.n_unl; u++) pool[npool++] = d.n_lab + u;
    }

    /* 3. mining epochs */
    s = km_csv_open(&csv, p_csv, (const char *const *)k_mine_cols, NMCOLS, 0);
    if (!s) s = km_jsonl_open(&jl, p_jsonl, 0);
    if (s) goto out;
    km_plateau pl;
    km_plateau_init(&pl, tc->lr, tc->plateau_factor, tc->plateau_patience, tc->min_lr);
    km_early_stop es;
    km_early_stop_init(&es, tc->early_stop);
    order = km_malloc(sizeof(int) * (size_t)(npool + 1));
    aug = km_malloc((size_t)npool + 1);
    int *which = km_malloc(sizeof(int) * B);
    int epoch = 0;
    while (epoch < c->mine_epochs) {
        epoch++;
        double t0 = km_now();
        memcpy(order, pool, sizeof(int) * (size_t)npool);
        km_rng_shuffle(&rng, order, npool);
        for (int i = 0; i < npool; i++) aug[i] = km_aug_draw(&rng);
        long calls0 = T.calls, hits0 = T.cache.hits_mem + T.cache.hits_disk, miss0 = T.cache.misses;
        long enc0 = T.encoder_runs, nobox = 0, visits = 0;
        double tenc0 = T.t_encode, tdec0 = T.t_decode;
        double lsum = 0, lsup = 0, lpse = 0, pd = 0;
        int seen = 0, nsup = 0, npse = 0, npd = 0, nsample = 0;
        char sdir[600];
        snprintf(sdir, sizeof sdir, "%s/epoch_%03d", p_pseudo, epoch);
        if (c->schedule == KM_MINE_CONTINUOUS && c->sample_pngs > 0 && d.n_unl > 0 && (s = km_mkdir_p(sdir))) break;
        float lr = (float)pl.lr;
        double lr_ep = pl.lr;
        int nb = npool / B + (npool % B > 1 ? 1 : 0);
        km_progress pg;
        int show = hooks->progress && log;
        char label[48], extra[64];
        snprintf(label, sizeof label, "mine epoch %d/%d", epoch, c->mine_epochs);
        if (show) km_progress_start(&pg, log, label, (int64_t)nb * B > npool ? npool : (int64_t)nb * B, "img");
        for (int k = 0; k < nb && !s; k++) {
            int b0 = k * B, bn = npool - b0 < B ? npool - b0 : B;
            const uint8_t *ab = aug + b0;
            memcpy(which, order + b0, sizeof(int) * bn);
            km_batch_fill(&d.pool, which, ab, bn, x, y);
            int nl = 0, nu = 0;
            for (int i = 0; i < bn; i++) {
                if (which[i] < d.n_lab) {
                    sel_l[nl++] = i;
                } else if (c->schedule == KM_MINE_ONETIME) {
                    /* the frozen label, augmented like this visit's image */
                    km_aug_apply_u8(ab[i], S, 1, frozen + P * (which[i] - d.n_lab), lab_a);
                    for (size_t j = 0; j < P; j++) y[P * i + j] = lab_a[j];
                    sel_u[nu++] = i;
                    visits++;
                }
            }
            km_unetpp_zero_grad(m);
            s = km_unetpp_forward(m, x, bn, S, S, 1, z);
            if (s) break;
            if (c->schedule == KM_MINE_CONTINUOUS) {
                for (int i = 0; i < bn && !s; i++) {
                    int pi = which[i];
                    if (pi < d.n_lab) continue;
                    visits++;
                    km_prompts pr;
                    s = km_prompts_from_logits(&pr, z + P * i, S, S, c->prompt_mode, c->points, &rng);
                    if (s) break;
                    if (pr.outcome == KM_PROMPTS_NO_BOX) {
                        nobox++;
                        continue;
                    }
                    km_prompts_unaugment(&pr, ab[i], S);
                    if (c->prompt_mode & KM_PROMPT_USE_MASK) km_prompts_unaugment_map(ab[i], S, z + P * i, zo);
                    s = teacher_label(&T, d.pool.images + 3 * P * pi, S, &pr, zo, lab_o);
                    if (s) break;
                    pd += dice_u8(lab_o, d.pool.masks + P * pi, P);
                    npd++;
                    if (nsample < c->sample_pngs) {
                        char name[1300];
                        snprintf(name, sizeof name, "%s/%s.png", sdir, d.pool.ids[pi]);
                        s = save_mask_png(name, lab_o, S, png);
                        nsample++;
                        if (s) break;
                    }
                    km_aug_apply_u8(ab[i], S, 1, lab_o, lab_a);
                    for (size_t j = 0; j < P; j++) y[P * i + j] = lab_a[j];
                    sel_u[nu++] = i;
                }
                if (s) break;
            }
            memset(dz, 0, sizeof(float) * P * bn);
            double ll = part_loss(z, y, sel_l, nl, P, tc->bce_weight, 1.0f, gz, gy, gd, dz);
            double lu = part_loss(z, y, sel_u, nu, P, tc->bce_weight, (float)c->pseudo_weight, gz, gy, gd, dz);
            double l = ll + c->pseudo_weight * lu;
            km_unetpp_backward(m, dz, NULL);
            km_unetpp_adam_step(m, lr, (float)tc->beta1, (float)tc->beta2, (float)tc->eps, (float)tc->weight_decay);
            lsum += l * bn;
            seen += bn;
            lsup += ll * nl;
            nsup += nl;
            lpse += lu * nu;
            npse += nu;
            if (show) {
                snprintf(extra, sizeof extra, "loss %.4f", lsum / seen);
                km_progress_update(&pg, seen, extra);
            }
        }
        if (show) km_progress_end(&pg, seen ? extra : NULL);
        if (s) break;
        if (c->schedule == KM_MINE_ONETIME) {
            pd = res->last_pseudo_dice;
            npd = 1;
        }
        double vl, vd, vi, tl = NAN, td = NAN, ti = NAN;
        s = validate(m, &d.va, B, S, tc->bce_weight, x, y, z, dz, &vl, &vd, &vi);
        if (!s && d.te.n) s = validate(m, &d.te, B, S, tc->bce_weight, x, y, z, dz, &tl, &td, &ti);
        if (s) break;
        int improved = 0;
        int stop = km_early_stop_step(&es, vl, epoch, &improved);
        km_plateau_step(&pl, vl);
        if (improved) {
            km_tdict meta;
            km_tdict_init(&meta);
            char b[64];
            snprintf(b, sizeof b, "%d", S);
            km_tdict_set_meta(&meta, "size", b);
            snprintf(b, sizeof b, "%d", epoch);
            km_tdict_set_meta(&meta, "mine.epoch", b);
            snprintf(b, sizeof b, "%.17g", vl);
            km_tdict_set_meta(&meta, "val_loss", b);
            s = km_unetpp_save(m, p_best, &meta);
            km_tdict_free(&meta);
            if (s) break;
        }
        double secs = km_now() - t0;
        res->last_sup_loss = nsup ? lsup / nsup : NAN;
        res->last_pseudo_loss = npse ? lpse / npse : NAN;
        res->last_pseudo_dice = npd ? pd / npd : NAN;
        res->last_teacher_calls = T.calls - calls0;
        res->last_no_box = c->schedule == KM_MINE_CONTINUOUS ? nobox : 0;
        res->last_unl_visits = visits;
        res->last_cache_hits = T.cache.hits_mem + T.cache.hits_disk - hits0;
        res->last_cache_misses = T.cache.misses - miss0;
        res->last_epoch_seconds = secs;
        res->no_box += res->last_no_box;
        double vals[NMCOLS] = {epoch, seen ? lsum / seen : NAN, res->last_sup_loss, res->last_pseudo_loss, vl, vd, vi,
                               td, ti, lr_ep, secs, (double)visits, (double)res->last_teacher_calls,
                               (double)res->last_no_box, (double)res->last_cache_hits,
                               (double)res->last_cache_misses, (double)(T.encoder_runs - enc0),
                               T.t_encode - tenc0, T.t_decode - tdec0, res->last_pseudo_dice};
        km_csv_int(&csv, epoch);
        for (int i = 1; i < NMCOLS; i++) km_csv_num(&csv, vals[i]);
        s = km_csv_end_row(&csv);
        if (s) break;
        km_jsonl_int(&jl, "epoch", epoch);
        for (int i = 1; i < NMCOLS; i++) km_jsonl_num(&jl, k_mine_cols[i], vals[i]);
        s = km_jsonl_end(&jl);
        if (s) break;
        if (log) {
            fprintf(log, "mine epoch %d/%d  loss %.4f (sup %.4f, pseudo %.4f)  val_loss %.4f  val_dice %.4f  "
                         "teacher %ld, cache %ld hit / %ld miss, NO_BOX %ld, pseudo Dice %.4f  %.1f s\n",
                    epoch, c->mine_epochs, vals[1], vals[2], vals[3], vl, vd, res->last_teacher_calls,
                    res->last_cache_hits, res->last_cache_misses, res->last_no_box, res->last_pseudo_dice, secs);
            fflush(log);
        }
        res->last_val_dice = vd;
        res->stopped_early = stop;
        if (stop) break;
    }
    km_free(which);
    if (!s) {
        km_tdict meta;
        km_tdict_init(&meta);
        char b[32];
        snprintf(b, sizeof b, "%d", S);
        km_tdict_set_meta(&meta, "size", b);
        s = km_unetpp_save(m, p_last, &meta);
        km_tdict_free(&meta);
    }
    res->epochs_done = epoch;
    res->best_epoch = es.best_epoch;
    res->best_val_loss = es.best;
    res->teacher_calls = T.calls;
    res->encoder_runs = T.encoder_runs;
    res->encoder_seconds = T.t_encode;
    res->decoder_seconds = T.t_decode;
    res->cache_hits = T.cache.hits_mem + T.cache.hits_disk;
    res->cache_misses = T.cache.misses;
out:
    if (csv.f) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (jl.f) {
        km_status s2 = km_jsonl_close(&jl);
        if (!s) s = s2;
    }
    teacher_close(&T);
    mine_data_free(&d);
    if (m) km_unetpp_free(m);
    km_free(x); km_free(y); km_free(z); km_free(dz); km_free(gz); km_free(gy); km_free(gd); km_free(zo);
    km_free(frozen); km_free(has_frozen); km_free(lab_o); km_free(lab_a); km_free(png); km_free(aug);
    km_free(order); km_free(pool); km_free(sel_l); km_free(sel_u);
    km_free(p_best); km_free(p_last); km_free(p_pseudo); km_free(p_csv); km_free(p_jsonl);
    km_free(init);
    return s;
}

/* test_mine.c - knowledge mining end to end on 16 real Kvasir-SEG images at
 * 32x32 (ResNet18) with the random-weight sam_tiny teacher: this proves the
 * plumbing (pseudo labels produced and binary, the lambda term in the loss,
 * continuous labels regenerated per visit, the embedding cache hit from the
 * second epoch on, NO_BOX counted) and the CLI's errors, not label quality. */
#include "cli.h"
#include "test.h"
#include "../src/io/image.h"
#include "../src/io/json.h"
#include "../src/io/safetensors.h"
#include "../src/mine/mine.h"
#include "../src/models/unetpp.h"
#include "../src/eval/metrics.h"
#include "../src/train/dataset.h"

#include <dirent.h>

#include <stdlib.h>
#include <string.h>

/* 16 images -> 12 train (6 labelled, 6 unlabelled) / 4 val, 32x32, batch 4. */
static void small_config(km_mine_config *c, const char *out) {
    km_mine_config_default(c);
    km_train_config *t = &c->train;
    t->data = (char *)km_test_path("data/kvasir-seg");
    t->max_images = 16;
    t->val_fraction = 0.25;
    t->test_fraction = 0;
    t->size = 32;
    t->batch = 4;
    t->resnet = 18;
    t->lr = 1e-3;
    t->epochs = 3;
    t->seed = 3;
    t->threads = 1;
    c->out = (char *)out;
    c->teacher = (char *)km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    c->mine_epochs = 2;
    /* one box per image: these tests check the mining protocol, and sam_tiny's
     * decoder takes seconds per decode here (a random student's mask has up
     * to 16 sizeable specks); per-component mining: mine_onetime_per_component */
    c->box_rule = KM_BOX_ALL;
}

/* Value of column `col` in data row `row` (1-based) of a CSV file; NaN if absent. */
static double csv_get(const char *path, int row, const char *col) {
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    char line[4096];
    int idx = -1, r = 0;
    double v = NAN;
    while (fgets(line, sizeof line, f)) {
        char *save = NULL;
        int k = 0;
        if (r == 0) {
            for (char *tok = strtok_r(line, ",\n", &save); tok; tok = strtok_r(NULL, ",\n", &save), k++)
                if (!strcmp(tok, col)) idx = k;
        } else if (r == row) {
            for (char *tok = strtok_r(line, ",\n", &save); tok; tok = strtok_r(NULL, ",\n", &save), k++)
                if (k == idx) v = strtod(tok, NULL);
            break;
        }
        r++;
    }
    fclose(f);
    return v;
}

/* Number of PNGs in dir that are S x S grey with only 0 / 255; -1 if any is not. */
static int check_pngs(const char *dir, int S) {
    char list[1200];
    snprintf(list, sizeof list, "%s/list.txt", km_test_tmpdir());
    if (km_test_sh("ls '%s' | grep '\\.png$' > '%s'", dir, list) != 0) return 0;
    FILE *f = fopen(list, "r");
    if (!f) return -1;
    char name[512];
    int n = 0;
    while (fgets(name, sizeof name, f)) {
        name[strcspn(name, "\n")] = 0;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        km_image img;
        if (km_image_load(p, &img, 1) != KM_OK) {
            n = -1;
            break;
        }
        int ok = img.w == S && img.h == S && img.c == 1;
        for (int i = 0; ok && i < S * S; i++) ok = img.data[i] == 0 || img.data[i] == 255;
        km_image_free(&img);
        if (!ok) {
            n = -1;
            break;
        }
        n++;
    }
    fclose(f);
    return n;
}

/* The continuous run with its supervised phase, shared by the other tests
 * (they start from its supervised best checkpoint). */
static km_mine_result g_cont;
static const char *cont_run(void) {
    static int done;
    const char *dir = km_test_sub("cont");
    if (done) return dir;
    done = 1;
    km_mine_config c;
    small_config(&c, dir);
    c.cache_dir = (char *)km_test_sub("cont_cache");
    double t0 = km_now();
    CHECK_OK(km_mine_run(&c, 0, NULL, &g_cont));
    printf("    continuous run (3 supervised + 2 mining epochs): %.1f s\n", km_now() - t0);
    return dir;
}

KM_TEST(mine_continuous_regenerates_labels_and_hits_cache) {
    const char *dir = cont_run();
    const km_mine_result *r = &g_cont;
    char csv[1200], p[1200];
    snprintf(csv, sizeof csv, "%s/metrics.csv", dir);
    CHECK(r->n_labelled == 6 && r->n_unlabelled == 6);
    CHECK(r->epochs_done == 2);
    for (int e = 1; e <= 2; e++) {
        double visits = csv_get(csv, e, "unl_visits"), calls = csv_get(csv, e, "teacher_calls");
        double nobox = csv_get(csv, e, "no_box"), hits = csv_get(csv, e, "cache_hits");
        double miss = csv_get(csv, e, "cache_misses"), enc = csv_get(csv, e, "encoder_runs");
        printf("    epoch %d: %g unlabelled visits, %g teacher calls, %g NO_BOX, cache %g hit / %g miss, "
               "%g encoder runs, pseudo loss %.4f, pseudo Dice %.4f\n",
               e, visits, calls, nobox, hits, miss, enc, csv_get(csv, e, "pseudo_loss"), csv_get(csv, e, "pseudo_dice"));
        /* every unlabelled image is visited once per epoch (no batch of one dropped: 12 = 3 x 4) */
        CHECK(visits == 6);
        /* a fresh teacher label per visit, except NO_BOX visits */
        CHECK(calls == visits - nobox);
        /* one lookup per teacher call; the encoder runs only on a miss */
        CHECK(hits + miss == calls);
        CHECK(enc == miss);
        /* images prompted in epoch 1 hit from then on: only epoch-1 NO_BOX images can miss */
        if (e == 2) CHECK(miss <= csv_get(csv, 1, "no_box"));
        double pl = csv_get(csv, e, "pseudo_loss");
        CHECK(calls == 0 || (pl > 0 && isfinite(pl)));
        double pd = csv_get(csv, e, "pseudo_dice");
        CHECK(calls == 0 || (pd >= 0 && pd <= 1));
        snprintf(p, sizeof p, "%s/pseudo/epoch_%03d", dir, e);
        int n = check_pngs(p, 32);
        CHECK_MSG(n == (int)calls, "epoch %d: %d sample PNGs (32x32, 0/255), expected %g", e, n, calls);
    }
    /* epoch 1 encodes each prompted image once (the cache folder was new) */
    CHECK(csv_get(csv, 1, "cache_misses") == csv_get(csv, 1, "teacher_calls"));
    CHECK(csv_get(csv, 1, "teacher_calls") > 0);
    CHECK(r->encoder_runs == r->cache_misses);
    CHECK(r->teacher_calls == r->cache_hits + r->cache_misses);
    /* the run's splits and settings */
    CHECK(km_test_sh("test $(wc -l < '%s/splits/unlabelled.txt') -eq 6 && test $(wc -l < '%s/splits/labelled.txt') -eq 6",
                     dir, dir) == 0);
    CHECK(km_test_sh("grep -q '\"schedule\": \"continuous\"' '%s/mine_config.json'", dir) == 0);
    CHECK(r->encoder_seconds > 0 && r->decoder_seconds > 0);
    printf("    teacher cost: encoder %.3f s per run, prompt encoder + decoder + post-processing %.3f s per call\n",
           r->encoder_seconds / (double)r->encoder_runs, r->decoder_seconds / (double)r->teacher_calls);
    snprintf(p, sizeof p, "%s/supervised/best.safetensors", dir);
    CHECK(km_test_sh("test -s '%s' && test -s '%s/best.safetensors' && test -s '%s/last.safetensors'", p, dir, dir) == 0);
}

/* Last-checkpoint weights of a one-epoch one-time run from the supervised best. */
static float *onetime_weights(const char *name, double lambda, km_mine_result *r, size_t *n) {
    const char *cont = cont_run();
    const char *dir = km_test_sub(name);
    char init[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont);
    km_mine_config c;
    small_config(&c, dir);
    c.init = init;
    c.schedule = KM_MINE_ONETIME;
    c.pseudo_weight = lambda;
    c.mine_epochs = 1;
    c.cache_dir = (char *)km_test_sub("cont_cache");
    CHECK_OK(km_mine_run(&c, 0, NULL, r));
    char last[1200];
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    km_unetpp *m = NULL;
    if (km_unetpp_load(&m, last) != KM_OK) {
        CHECK_MSG(0, "%s: %s", last, km_errmsg());
        return NULL;
    }
    *n = km_unetpp_num_params(m);
    float *w = km_malloc(sizeof(float) * *n);
    memcpy(w, km_unetpp_params(m), sizeof(float) * *n);
    km_unetpp_free(m);
    return w;
}

/* The student's own mean Dice (eval mode, one image at a time) on the
 * unlabelled images that got a one-time label (the PNGs in RUN/pseudo), as
 * student_unl_dice reports it. */
static double student_dice_on_pseudo(const char *weights, const char *pseudo_dir, int S) {
    km_unetpp *m = NULL;
    int msize = 0;
    if (km_train_load_student(weights, &m, &msize) != KM_OK) return NAN;
    km_dataset_index idx;
    km_issues iss;
    km_issues_init(&iss);
    CHECK_OK(km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, &iss));
    int which[64], n = 0;
    DIR *d = opendir(pseudo_dir);
    for (struct dirent *e; d && (e = readdir(d)) && n < 64;) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".png")) continue;
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)(l - 4), e->d_name);
        int k = km_dataset_find(&idx, id);
        if (k >= 0) which[n++] = k;
    }
    if (d) closedir(d);
    km_dataset ds;
    double sum = 0;
    CHECK_OK(km_dataset_load(&idx, which, n, S, 1, &ds, NULL));
    size_t P = (size_t)S * S;
    float *x = km_malloc(sizeof(float) * 3 * P), *y = km_malloc(sizeof(float) * P), *z = km_malloc(sizeof(float) * P);
    for (int i = 0; i < n; i++) {
        km_batch_fill(&ds, &i, NULL, 1, x, y);
        CHECK_OK(km_unetpp_forward(m, x, 1, S, S, 0, z));
        sum += km_dice_score(km_conf_logits_u8(z, ds.masks + P * i, P));
    }
    km_free(x);
    km_free(y);
    km_free(z);
    km_dataset_free(&ds);
    km_dataset_index_free(&idx);
    km_issues_free(&iss);
    km_unetpp_free(m);
    return n ? sum / n : NAN;
}

KM_TEST(mine_onetime_frozen_labels_and_lambda_term) {
    km_mine_result r0, r5;
    size_t n0 = 0, n5 = 0;
    float *w0 = onetime_weights("one_l0", 0.0, &r0, &n0);
    float *w5 = onetime_weights("one_l5", 0.5, &r5, &n5);
    if (!w0 || !w5) return;
    /* one teacher call per unlabelled image with prompts, from the shared cache */
    CHECK(r5.teacher_calls + r5.no_box == 6);
    CHECK(r5.encoder_runs == 0 && r5.cache_hits == r5.teacher_calls);
    char p[1200];
    snprintf(p, sizeof p, "%s/pseudo", km_test_sub("one_l5"));
    int npng = check_pngs(p, 32);
    CHECK_MSG(npng == (int)r5.teacher_calls, "%d one-time PNGs, expected %ld", npng, r5.teacher_calls);
    /* same data, order and augmentation: only lambda differs; with lambda 0
     * the pseudo term is still computed (and logged) but weighs nothing */
    CHECK(r0.last_pseudo_loss > 0 && r5.last_pseudo_loss > 0);
    CHECK(n0 == n5);
    double maxd = 0;
    for (size_t i = 0; i < n0 && i < n5; i++) maxd = fmax(maxd, fabs((double)w0[i] - w5[i]));
    printf("    one-time: %ld labels, %ld NO_BOX, pseudo Dice %.4f; max |w(lambda 0.5) - w(lambda 0)| = %.3g\n",
           r5.teacher_calls, r5.no_box, r5.last_pseudo_dice, maxd);
    CHECK(maxd > 1e-6);
    /* student_unl_dice: the init student's own Dice on the same images, recomputed here one image at a
     * time (the run predicts in batches; batch composition can move a logit by ~1e-6, hence 1e-3) */
    char init[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont_run());
    double sd = student_dice_on_pseudo(init, p, 32);
    printf("    student_unl_dice %.6f, recomputed %.6f\n", r5.last_student_unl_dice, sd);
    CHECK_NEAR(r5.last_student_unl_dice, sd, 1e-3);
    km_free(w0);
    km_free(w5);
}

/* The default box rule end to end (one-time, one epoch, from the shared
 * supervised student and cache), its config key written and read back, and
 * a mine_config.json without the key (older runs) read as `all`. */
KM_TEST(mine_onetime_per_component) {
    const char *cont = cont_run(), *dir = km_test_sub("one_pc");
    char init[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont);
    km_mine_config c;
    small_config(&c, dir);
    c.box_rule = KM_BOX_PER_COMPONENT;
    c.init = init;
    c.schedule = KM_MINE_ONETIME;
    c.mine_epochs = 1;
    c.cache_dir = (char *)km_test_sub("cont_cache");
    km_mine_result r;
    CHECK_OK(km_mine_run(&c, 0, NULL, &r));
    printf("    one-time per-component: %ld labels (%ld decodes), %ld NO_BOX, pseudo Dice %.4f\n", r.teacher_calls,
           r.decodes, r.no_box, r.last_pseudo_dice);
    CHECK(r.teacher_calls + r.no_box == 6 && r.decodes >= r.teacher_calls);
    CHECK(r.encoder_runs == 0); /* the cache keyed the same original images */
    char p[1200];
    snprintf(p, sizeof p, "%s/pseudo", dir);
    CHECK(check_pngs(p, 32) == (int)r.teacher_calls);
    km_mine_config rc;
    CHECK_OK(km_mine_config_load(dir, &rc));
    CHECK(rc.box_rule == KM_BOX_PER_COMPONENT);
    km_mine_config_free(&rc);
    const char *old = km_test_sub("one_pc_old");
    CHECK(km_test_sh("mkdir -p '%s' && grep -v '\"box_rule\"' '%s/mine_config.json' > '%s/mine_config.json'", old, dir,
                     old) == 0);
    CHECK_OK(km_mine_config_load(old, &rc));
    CHECK(rc.box_rule == KM_BOX_ALL);
    km_mine_config_free(&rc);
    CHECK(km_test_sh("sed 's/\"box_rule\": \"per-component\"/\"box_rule\": \"biggest\"/' '%s/mine_config.json' > "
                     "'%s/mine_config.json'", dir, old) == 0);
    CHECK_ERR(km_mine_config_load(old, &rc), KM_EARG, "expected all, largest or per-component");
}

KM_TEST(mine_empty_predictions_counted_as_no_box) {
    /* a student whose head bias is -100 predicts nothing: no box anywhere */
    const char *cont = cont_run();
    char init[1200], nob[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont);
    snprintf(nob, sizeof nob, "%s/nobox.safetensors", km_test_tmpdir());
    km_unetpp *m = NULL;
    CHECK_OK(km_unetpp_load(&m, init));
    if (!m) return;
    km_unetpp_tensor(m, "segmentation_head.0.bias", 0)[0] = -100.0f;
    km_tdict meta;
    km_tdict_init(&meta);
    CHECK_OK(km_unetpp_save(m, nob, &meta));
    km_tdict_free(&meta);
    km_unetpp_free(m);
    for (int sched = 0; sched < 2; sched++) {
        km_mine_config c;
        const char *dir = km_test_sub(sched ? "nobox_cont" : "nobox_one");
        small_config(&c, dir);
        c.init = nob;
        c.schedule = sched ? KM_MINE_CONTINUOUS : KM_MINE_ONETIME;
        c.mine_epochs = 1;
        km_mine_result r;
        CHECK_OK(km_mine_run(&c, 0, NULL, &r));
        printf("    %s: NO_BOX %ld, teacher calls %ld, unlabelled visits %ld\n", sched ? "continuous" : "one-time",
               r.no_box, r.teacher_calls, r.last_unl_visits);
        CHECK(r.no_box == 6);
        CHECK(r.teacher_calls == 0);
        CHECK(r.last_unl_visits == (sched ? 6 : 0)); /* one-time leaves them out of the phase */
        CHECK(isnan(r.last_pseudo_loss));            /* the unlabelled part was empty */
    }
}

KM_TEST(mine_medsam_profile_box_prompts) {
    /* MedSAM profile: its own preprocessing (another cache key than SAM's for
     * the same crops: all misses in a cache shared with the SAM runs), box
     * prompts, labels at the crop size; one test-split Dice column filled */
    const char *cont = cont_run();
    char init[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont);
    km_mine_config c;
    const char *dir = km_test_sub("medsam");
    small_config(&c, dir);
    c.init = init;
    c.profile = KM_SAM_PROFILE_MEDSAM;
    c.prompt_mode = KM_PROMPT_BOX;
    c.mine_epochs = 1;
    c.cache_dir = (char *)km_test_sub("cont_cache");
    c.train.test_fraction = 0.125;
    c.train.val_fraction = 0.125;
    c.train.eval_test = 1;
    km_mine_result r;
    CHECK_OK(km_mine_run(&c, 0, NULL, &r));
    char csv[1200], p[1200];
    snprintf(csv, sizeof csv, "%s/metrics.csv", dir);
    snprintf(p, sizeof p, "%s/pseudo/epoch_001", dir);
    int n = check_pngs(p, 32);
    printf("    medsam: %d unlabelled, %ld teacher calls, %ld NO_BOX, %ld encoder runs, test Dice %.4f\n", r.n_unlabelled,
           r.teacher_calls, r.no_box, r.encoder_runs, csv_get(csv, 1, "test_dice"));
    CHECK(r.n_unlabelled == 6 && r.teacher_calls + r.no_box == 6);
    CHECK(r.encoder_runs == r.teacher_calls && r.cache_hits == 0);
    CHECK(n == (int)r.teacher_calls);
    double td = csv_get(csv, 1, "test_dice");
    CHECK(td >= 0 && td <= 1);
}

static int same_file(const char *a, const char *b) {
    uint8_t *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    int ok = km_read_file(a, (size_t)1 << 30, &da, &na) == KM_OK && km_read_file(b, (size_t)1 << 30, &db, &nb) == KM_OK &&
             na == nb && !memcmp(da, db, na);
    km_free(da);
    km_free(db);
    return ok;
}

KM_TEST(mine_cached_embeddings_train_identically) {
    /* continuous mining from the same student: encoder run every time (memory
     * cache of size 0, no folder) vs every embedding read from the disk cache
     * of the shared run -> the same bytes of last.safetensors, through the CLI */
    const char *cont = cont_run();
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    const char *common = "--max-images 16 --val-fraction 0.25 --test-fraction 0 --size 32 --resnet 18 --batch 4 "
                         "--lr 1e-3 --seed 3 --threads 1 --mine-epochs 1 --quiet";
    const char *a = km_test_sub("nocache"), *b = km_test_sub("cached");
    int rc = km_test_sh("'%s' mine --data '%s' --teacher '%s' --init '%s/supervised/best.safetensors' --out '%s' "
                        "--no-cache --cache-mem 0 %s", km_test_bin(), kv, sam, cont, a, common);
    CHECK(rc == 0);
    rc = km_test_sh("'%s' mine --data '%s' --teacher '%s' --init '%s/supervised/best.safetensors' --out '%s' "
                    "--cache-dir '%s' %s", km_test_bin(), kv, sam, cont, b, km_test_sub("cont_cache"), common);
    CHECK(rc == 0);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/metrics.csv", a);
    snprintf(pb, sizeof pb, "%s/metrics.csv", b);
    double ea = csv_get(pa, 1, "encoder_runs"), eb = csv_get(pb, 1, "encoder_runs");
    double ha = csv_get(pa, 1, "cache_hits"), hb = csv_get(pb, 1, "cache_hits");
    printf("    no cache: %g encoder runs, %g hits; disk cache: %g encoder runs, %g hits\n", ea, ha, eb, hb);
    CHECK(ea == csv_get(pa, 1, "teacher_calls") && ea > 0 && ha == 0);
    CHECK(eb == 0 && hb == csv_get(pb, 1, "teacher_calls"));
    snprintf(pa, sizeof pa, "%s/last.safetensors", a);
    snprintf(pb, sizeof pb, "%s/last.safetensors", b);
    CHECK(same_file(pa, pb));
}

KM_TEST(mine_cli_bad_inputs_fail_clearly) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    const char *out = km_test_sub("cli");
    char a[4096];
    const char *common = "--max-images 16 --size 32 --resnet 18 --batch 4 --epochs 1 --mine-epochs 1 --quiet";
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r0' --teacher '%s/missing.pth' %s", kv, out, out, common);
    KM_CLI_EXPECT_FAIL(a, "missing.pth");
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r1' --teacher '%s' --schedule weekly %s", kv, out, sam, common);
    KM_CLI_EXPECT_FAIL(a, "--schedule 'weekly'");
    /* no --teacher and no default teacher installed: how to install it */
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r2' %s", kv, out, common);
    char *saved = getenv("KMSEG_TEACHER") ? km_strdup(getenv("KMSEG_TEACHER")) : NULL;
    setenv("KMSEG_TEACHER", "/nonexistent/lite_medsam.pth", 1);
    KM_CLI_EXPECT_FAIL(a, "install-teacher.sh");
    if (saved) setenv("KMSEG_TEACHER", saved, 1);
    else unsetenv("KMSEG_TEACHER");
    km_free(saved);
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r3' --teacher '%s' --teacher-profile medsam --prompt-mode points+box %s",
             kv, out, sam, common);
    KM_CLI_EXPECT_FAIL(a, "box prompts only");
    /* a LiteMedSAM profile on a SAM ViT checkpoint */
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r3b' --teacher '%s' --teacher-profile litemedsam %s", kv, out, sam,
             common);
    KM_CLI_EXPECT_FAIL(a, "teacher profile 'litemedsam' needs a TinyViT");
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r4' --teacher '%s' --prompt-mode dots %s", kv, out, sam, common);
    KM_CLI_EXPECT_FAIL(a, "--prompt-mode");
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r5' --teacher '%s' --init '%s/none.safetensors' %s", kv, out, sam,
             out, common);
    KM_CLI_EXPECT_FAIL(a, "none.safetensors");
    /* --help shows the method.md defaults */
    const char *h = km_test_sub("help.txt");
    CHECK(km_test_sh("'%s' mine --help > '%s' 2>&1", km_test_bin(), h) == 0);
    CHECK(km_test_sh("grep -q 'schedule.*(default: continuous)' '%s' && grep -q 'pseudo-weight.*(default: 0.5)' '%s' && "
                     "grep -q 'prompt-mode.*(default: auto)' '%s' && grep -q 'labelled-fraction.*(default: 0.5)' '%s' && "
                     "grep -q 'points .*(default: 1)' '%s' && grep -q 'size.*(default: 224)' '%s'",
                     h, h, h, h, h, h) == 0);
    /* a teacher file that is not a checkpoint */
    CHECK(km_test_sh("printf 'not a checkpoint' > '%s/bad.pth'", km_test_tmpdir()) == 0);
    snprintf(a, sizeof a, "mine --data '%s' --out '%s/r6' --teacher '%s/bad.pth' --init '%s/cont/supervised/best.safetensors' %s",
             kv, out, km_test_tmpdir(), km_test_tmpdir(), common);
    cont_run();
    KM_CLI_EXPECT_FAIL(a, "bad.pth");
}

/* ------------------------------------------------------------------ resume */

/* The run folder's metrics.csv and metrics.jsonl agree with another's row for
 * row, every column but the wall-clock ones and those counting what the
 * process found in the embedding cache. */
static int skip_col(const char *name) {
    static const char *const cols[] = {"seconds", "encoder_seconds", "decoder_seconds", "cache_hits", "cache_misses",
                                       "encoder_runs"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, cols[i])) return 1;
    return 0;
}

static char *slurp(const char *path) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (km_read_file(path, 1 << 24, &d, &n) != KM_OK) return NULL;
    char *s = km_malloc(n + 1);
    if (n) memcpy(s, d, n);
    s[n] = 0;
    km_free(d);
    return s;
}

static int count_lines(const char *path) {
    char *t = slurp(path);
    if (!t) return -1;
    int n = 0;
    for (const char *p = t; *p; p++) n += *p == '\n';
    km_free(t);
    return n;
}

static int same_csv_rows(const char *a, const char *b, int *rows) {
    char *ta = slurp(a), *tb = slurp(b);
    int ok = ta && tb, r = 0, timecol[64] = {0};
    char *sa = NULL, *sb = NULL;
    for (char *la = ta ? strtok_r(ta, "\n", &sa) : NULL, *lb = tb ? strtok_r(tb, "\n", &sb) : NULL; ok && (la || lb);
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), r++) {
        if (!la || !lb) {
            ok = 0;
            break;
        }
        char *fa = NULL, *fb = NULL;
        int k = 0;
        for (char *xa = strtok_r(la, ",", &fa), *xb = strtok_r(lb, ",", &fb); xa || xb;
             xa = strtok_r(NULL, ",", &fa), xb = strtok_r(NULL, ",", &fb), k++) {
            if (!xa || !xb || k >= 64) {
                ok = 0;
                break;
            }
            if (r == 0) timecol[k] = skip_col(xa);
            if (!timecol[k] && strcmp(xa, xb)) {
                printf("    %s row %d column %d: '%s' vs '%s'\n", b, r, k, xa, xb);
                ok = 0;
            }
        }
    }
    km_free(ta);
    km_free(tb);
    *rows = r - 1;
    return ok;
}

static int same_jsonl_rows(const char *a, const char *b) {
    char *ta = slurp(a), *tb = slurp(b);
    int ok = ta && tb;
    char *sa = NULL, *sb = NULL;
    for (char *la = ta ? strtok_r(ta, "\n", &sa) : NULL, *lb = tb ? strtok_r(tb, "\n", &sb) : NULL; ok && (la || lb);
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb)) {
        km_json ja, jb;
        if (!la || !lb || km_json_parse(a, la, strlen(la), &ja) != KM_OK) {
            ok = 0;
            break;
        }
        if (km_json_parse(b, lb, strlen(lb), &jb) != KM_OK) {
            km_json_free(&ja);
            ok = 0;
            break;
        }
        ok = ja.type == KM_JSON_OBJ && jb.type == KM_JSON_OBJ && ja.n == jb.n;
        for (int i = 0; ok && i < ja.n; i++) {
            const km_json *va = &ja.items[i], *vb = km_json_get(&jb, ja.keys[i].str);
            if (skip_col(ja.keys[i].str)) continue;
            ok = vb && va->type == vb->type && (va->type != KM_JSON_NUM || va->num == vb->num);
            if (!ok) printf("    %s: '%s' differs\n", b, ja.keys[i].str);
        }
        km_json_free(&ja);
        km_json_free(&jb);
    }
    km_free(ta);
    km_free(tb);
    return ok;
}

/* The files of an uninterrupted run folder a and a killed + resumed one b:
 * checkpoints byte for byte, log rows as above. */
static void check_same_run(const char *a, const char *b, int rows, int supervised) {
    const char *files[] = {"last.safetensors", "best.safetensors", "supervised/last.safetensors",
                           "supervised/best.safetensors"};
    char pa[1200], pb[1200];
    for (int i = 0; i < (supervised ? 4 : 2); i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        CHECK_MSG(same_file(pa, pb), "%s: the resumed run's bytes differ from the uninterrupted run's", files[i]);
    }
    int ra = 0, rb = 0;
    snprintf(pa, sizeof pa, "%s/metrics.csv", a);
    snprintf(pb, sizeof pb, "%s/metrics.csv", b);
    CHECK_MSG(same_csv_rows(pa, pa, &ra) && ra == rows, "%s: %d rows, expected %d", pa, ra, rows);
    CHECK_MSG(same_csv_rows(pa, pb, &rb) && rb == rows, "metrics.csv of the resumed run differs (%d rows)", rb);
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
    snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
    CHECK(count_lines(pa) == rows && count_lines(pb) == rows);
    CHECK_MSG(same_jsonl_rows(pa, pb), "metrics.jsonl of the resumed run differs");
}

/* A log row written after the checkpoint (killed before last.safetensors was
 * replaced), which the resume must drop. */
static void append_stray_rows(const char *dir) {
    CHECK(km_test_sh("echo '9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9' >> '%s/metrics.csv' && "
                     "echo '{\"epoch\":9}' >> '%s/metrics.jsonl'", dir, dir) == 0);
}

KM_TEST(mine_resume_continuous_matches_uninterrupted) {
    /* the shared continuous run (3 supervised + 2 mining epochs) again, killed
     * in the supervised phase (after epoch 2), then in the mining phase
     * (after mining epoch 1, with a stray log row), resumed each time */
    const char *a = cont_run(), *b = km_test_sub("res_cont_killed");
    km_mine_config c;
    small_config(&c, b);
    c.cache_dir = (char *)km_test_sub("cont_cache");
    km_mine_result rb;
    km_train_hooks h = {0};
    h.stop_after = 2;
    double t0 = km_now();
    CHECK_OK(km_mine_run(&c, 0, &h, &rb));
    CHECK(!rb.finished && rb.epochs_done == 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/last.safetensors", b);
    CHECK(km_test_sh("test -s '%s/supervised/last.safetensors' && ! test -e '%s'", b, p) == 0);
    /* from here on the run's own mine_config.json is the configuration */
    km_mine_config rc;
    CHECK_OK(km_mine_config_load(b, &rc));
    CHECK(rc.schedule == KM_MINE_CONTINUOUS && rc.mine_epochs == 2 && rc.train.epochs == 3 && rc.train.seed == 3 &&
          rc.train.size == 32 && rc.train.max_images == 16 && rc.pseudo_weight == 0.5 && rc.cache_dir &&
          !strcmp(rc.cache_dir, c.cache_dir) && !strcmp(rc.out, b) && !rc.init);
    h.stop_after = 4; /* 3 supervised + 1 mining epoch */
    CHECK_OK(km_mine_run(&rc, 1, &h, &rb));
    CHECK(!rb.finished && rb.epochs_done == 1);
    snprintf(p, sizeof p, "%s/metrics.csv", b);
    CHECK(count_lines(p) == 2);
    append_stray_rows(b);
    CHECK_OK(km_mine_run(&rc, 1, NULL, &rb));
    CHECK(rb.finished && rb.epochs_done == 2);
    km_mine_config_free(&rc);
    printf("    killed twice + resumed: %.1f s; teacher calls %ld / %ld, NO_BOX %ld / %ld, best epoch %d / %d\n",
           km_now() - t0, g_cont.teacher_calls, rb.teacher_calls, g_cont.no_box, rb.no_box, g_cont.best_epoch,
           rb.best_epoch);
    check_same_run(a, b, 2, 1);
    /* the totals carried over in the checkpoint */
    CHECK(rb.teacher_calls == g_cont.teacher_calls && rb.no_box == g_cont.no_box);
    CHECK(rb.best_epoch == g_cont.best_epoch && rb.best_val_loss == g_cont.best_val_loss);
    /* cache counts are the last process's: one lookup per teacher call of epoch 2 */
    CHECK(rb.cache_hits + rb.cache_misses == (long)csv_get(p, 2, "teacher_calls"));
    /* the sample labels of the epoch after the kill were made again */
    char pa[1200];
    snprintf(pa, sizeof pa, "%s/pseudo/epoch_002", a);
    snprintf(p, sizeof p, "%s/pseudo/epoch_002", b);
    int na = check_pngs(pa, 32);
    CHECK(na > 0 && check_pngs(p, 32) == na);
}

static const char *onetime_common(char *buf, size_t n) {
    snprintf(buf, n, "--data '%s' --teacher '%s' --init '%s/supervised/best.safetensors' --cache-dir '%s' "
             "--schedule onetime --max-images 16 --val-fraction 0.25 --test-fraction 0 --size 32 --resnet 18 "
             "--batch 4 --lr 1e-3 --seed 3 --threads 1 --mine-epochs 2 --quiet",
             km_test_path("data/kvasir-seg"), km_test_path("fixtures/sam_tiny/sam_tiny.pth"), cont_run(),
             km_test_sub("cont_cache"));
    return buf;
}

/* The uninterrupted one-time CLI run from cont_run's student (2 mining
 * epochs), shared by the resume tests. */
static const char *onetime_full(double *secs) {
    static int done;
    static double t;
    const char *a = km_test_sub("res_one_full");
    if (!done) {
        char common[4096];
        done = 1;
        onetime_common(common, sizeof common);
        double t0 = km_now();
        CHECK(km_test_sh("'%s' mine %s --out '%s'", km_test_bin(), common, a) == 0);
        t = km_now() - t0;
    }
    if (secs) *secs = t;
    return a;
}

KM_TEST(mine_resume_onetime_cli_matches_uninterrupted) {
    /* one-time through the CLI from a given student: killed after mining
     * epoch 1 of 2 (with a stray log row), resumed; the frozen labels come
     * back from pseudo/<id>.png */
    char common[4096];
    onetime_common(common, sizeof common);
    double t_full;
    const char *a = onetime_full(&t_full), *b = km_test_sub("res_one_killed");
    double t0 = km_now();
    CHECK(km_test_sh("'%s' mine %s --out '%s' --stop-after 1", km_test_bin(), common, b) == 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/metrics.csv", b);
    CHECK(count_lines(p) == 2);
    append_stray_rows(b);
    CHECK(km_test_sh("'%s' mine --resume '%s' --quiet", km_test_bin(), b) == 0);
    double t_killed = km_now() - t0;
    printf("    uninterrupted %.1f s, killed + resumed %.1f s\n", t_full, t_killed);
    check_same_run(a, b, 2, 0);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/pseudo", a);
    snprintf(pb, sizeof pb, "%s/pseudo", b);
    int na = check_pngs(pa, 32), nb = check_pngs(pb, 32);
    CHECK(na > 0 && na == nb);
    /* resuming a finished run changes nothing */
    snprintf(pb, sizeof pb, "%s/last.safetensors", b);
    CHECK(km_test_sh("'%s' mine --resume '%s' > '%s/again.txt' 2>&1", km_test_bin(), b, km_test_tmpdir()) == 0);
    CHECK(km_test_sh("grep -q 'already finished' '%s/again.txt'", km_test_tmpdir()) == 0);
    snprintf(pa, sizeof pa, "%s/res_one_full/last.safetensors", km_test_tmpdir());
    CHECK(same_file(pa, pb));
    CHECK(count_lines(p) == 3);
}

KM_TEST(mine_resume_bad_run_folder_fails_clearly) {
    char common[4096], a[4096];
    onetime_common(common, sizeof common);
    const char *r = km_test_sub("res_bad");
    /* a one-time run stopped after mining epoch 1 of 2: resumable */
    CHECK(km_test_sh("'%s' mine %s --out '%s' --stop-after 1 && cp '%s/last.safetensors' '%s/good.safetensors'", km_test_bin(),
                     common, r, r, km_test_tmpdir()) == 0);
    snprintf(a, sizeof a, "mine --resume '%s/nothere'", km_test_tmpdir());
    KM_CLI_EXPECT_FAIL(a, "nothere/mine_config.json");
    snprintf(a, sizeof a, "mine --resume '%s' --lr 0.1", r);
    KM_CLI_EXPECT_FAIL(a, "--lr cannot be combined with --resume");
    /* a truncated checkpoint */
    CHECK(km_test_sh("head -c 300 '%s/good.safetensors' > '%s/last.safetensors'", km_test_tmpdir(), r) == 0);
    snprintf(a, sizeof a, "mine --resume '%s' --quiet", r);
    KM_CLI_EXPECT_FAIL(a, "last.safetensors");
    /* weights without the mining state (e.g. best.safetensors) */
    CHECK(km_test_sh("cp '%s/best.safetensors' '%s/last.safetensors'", r, r) == 0);
    KM_CLI_EXPECT_FAIL(a, "last.safetensors");
    /* a frozen one-time label that is not one */
    CHECK(km_test_sh("cp '%s/good.safetensors' '%s/last.safetensors' && f=$(ls '%s/pseudo/'*.png | head -1) && "
                     "cp \"$f\" '%s/keep.png' && echo \"$f\" > '%s/png.txt' && printf 'not a png' > \"$f\"",
                     km_test_tmpdir(), r, r, km_test_tmpdir(), km_test_tmpdir()) == 0);
    char png[1200] = "";
    FILE *f = fopen(km_test_sub("png.txt"), "r");
    if (f) {
        if (fgets(png, sizeof png, f)) png[strcspn(png, "\n")] = 0;
        fclose(f);
    }
    const char *base = strrchr(png, '/');
    KM_CLI_EXPECT_FAIL(a, base ? base + 1 : "png");
    /* a config that is not one */
    CHECK(km_test_sh("cp '%s/keep.png' '%s' && cp '%s/mine_config.json' '%s/cfg.json' && "
                     "printf '{\"data\": 1}' > '%s/mine_config.json'", km_test_tmpdir(), png, r, km_test_tmpdir(), r) == 0);
    KM_CLI_EXPECT_FAIL(a, "mine_config.json");
    /* and with everything restored it resumes (the failures were the files' fault) */
    CHECK(km_test_sh("cp '%s/cfg.json' '%s/mine_config.json'", km_test_tmpdir(), r) == 0);
    CHECK(km_test_sh("'%s' mine --resume '%s' --quiet", km_test_bin(), r) == 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/metrics.csv", r);
    CHECK(count_lines(p) == 3);
}

/* SIGUSR1 (KMSEG_TEST_FAULT=0:STEP:usr1: raised after optimiser step STEP
 * of the mining phase) stops the run after that step, in mid-epoch: exit 0,
 * a checkpoint with the partial epoch and no log row for it; --resume then
 * ends with the files of the uninterrupted run: checkpoints byte for byte,
 * pseudo/ (one-time labels, continuous samples), log rows but their time and
 * cache columns (each row once). One-time (2 epochs, stopped in epoch 1) and
 * continuous (1 epoch: the visits' prompts come from the run RNG, saved
 * after the step), each with and without --micro-batch 2 (batch 4: 3 steps
 * per epoch). */
KM_TEST(mine_stop_mid_epoch_resumes_identically) {
    static const struct {
        const char *name, *args;
        int epochs, step; /* mining epochs; the step after which SIGUSR1 comes (in epoch 1 of 2 or 3 steps) */
        int saturated;    /* from the saturated student (below) */
    } cases[] = {
        {"onetime", "", 2, 1, 0},
        {"onetime_micro", "--mine-epochs 1 --micro-batch 2", 1, 1, 0},
        {"cont", "--schedule continuous --mine-epochs 1 --sample-pngs 8", 1, 2, 1},
        {"cont_micro", "--schedule continuous --mine-epochs 1 --sample-pngs 8 --micro-batch 2", 1, 2, 0},
    };
    /* the continuous run without micro-batches draws its visits' prompts from the run RNG, but only to break
     * ties between the top probabilities: its student has a head bias of +100 (every pixel p = 1, every
     * visit draws its point), so a resume that does not restore the RNG after the stop ends elsewhere */
    char init[1200], sat[1200];
    snprintf(init, sizeof init, "%s/supervised/best.safetensors", cont_run());
    snprintf(sat, sizeof sat, "%s/saturated.safetensors", km_test_tmpdir());
    km_unetpp *m = NULL;
    CHECK_OK(km_unetpp_load(&m, init));
    if (!m) return;
    km_unetpp_tensor(m, "segmentation_head.0.bias", 0)[0] = 100.0f;
    km_tdict meta;
    km_tdict_init(&meta);
    CHECK_OK(km_unetpp_save(m, sat, &meta));
    km_tdict_free(&meta);
    km_unetpp_free(m);
    char common[4096];
    onetime_common(common, sizeof common);
    char *quiet = strstr(common, " --quiet");
    CHECK(quiet != NULL);
    if (quiet) *quiet = 0; /* the stop and resume lines are log lines */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char na[64], nb[64], p[1400], args[1400];
        snprintf(args, sizeof args, "%s%s%s%s", cases[i].args, cases[i].saturated ? " --init '" : "",
                 cases[i].saturated ? sat : "", cases[i].saturated ? "'" : "");
        snprintf(na, sizeof na, "stop_%s_full", cases[i].name);
        snprintf(nb, sizeof nb, "stop_%s", cases[i].name);
        double t0 = km_now(), t1;
        const char *a = i ? km_test_sub(na) : onetime_full(&t1), *b = km_test_sub(nb);
        if (i) CHECK(km_test_sh("'%s' mine %s %s --out '%s' --quiet", km_test_bin(), common, args, a) == 0);
        t1 = i ? km_now() - t0 : t1;
        t0 = km_now();
        CHECK(km_test_sh("KMSEG_TEST_FAULT=0:%d:usr1 '%s' mine %s %s --out '%s' > '%s.log' 2>&1", cases[i].step,
                         km_test_bin(), common, args, b, b) == 0);
        snprintf(p, sizeof p, "%s/metrics.csv", b);
        CHECK_MSG(count_lines(p) == 1, "%s: a log row for the interrupted epoch", p);
        CHECK_MSG(km_test_sh("grep -q 'stop requested (SIGTERM/SIGUSR1): checkpoint after step %d of mining epoch 1; "
                             "continue with --resume' '%s.log' && grep -aq '\"mine.partial.steps\":\"%d\"' "
                             "'%s/last.safetensors'", cases[i].step, b, cases[i].step, b) == 0,
                  "%s: no mid-epoch stop line or checkpoint", b);
        double t2 = km_now();
        CHECK(km_test_sh("'%s' mine --resume '%s' > '%s.resume.log' 2>&1", km_test_bin(), b, b) == 0);
        printf("    %-13s uninterrupted %.1f s, stopped %.1f s + resumed %.1f s\n", cases[i].name, t1, t2 - t0,
               km_now() - t2);
        CHECK(km_test_sh("grep -q 'resuming .* after step %d of mining epoch 1' '%s.resume.log' && "
                         "grep -q '^0,' '%s/resumes.csv'", cases[i].step, b, b) == 0);
        check_same_run(a, b, cases[i].epochs, 0);
        CHECK_MSG(km_test_sh("diff -r '%s/pseudo' '%s/pseudo' > /dev/null", a, b) == 0, "%s: pseudo/ differs", b);
        CHECK(km_test_sh("! grep -aq 'mine.partial' '%s/last.safetensors'", b) == 0);
        if (i) km_test_sh("rm -rf '%s' '%s'", a, b);
    }
}

/* SIGUSR1 between two batches of the one-time labelling pass
 * (KMSEG_TEST_FAULT=0:-B:usr1: after batch B) stops the run there: exit 0,
 * the labels so far in pseudo/, a checkpoint that says how far the pass got
 * and no log row; resumed, the run ends with the files of the uninterrupted
 * one (batch 4: 6 unlabelled images in 2 batches, stopped after the first). */
KM_TEST(mine_stop_in_labelling_pass_resumes_identically) {
    char common[4096];
    onetime_common(common, sizeof common);
    char *quiet = strstr(common, " --quiet");
    CHECK(quiet != NULL);
    if (quiet) *quiet = 0; /* the stop and resume lines are log lines */
    double t_full;
    const char *a = onetime_full(&t_full), *b = km_test_sub("stop_pass");
    char p[1400];
    snprintf(p, sizeof p, "%s/metrics.csv", b);
    double t0 = km_now();
    CHECK(km_test_sh("KMSEG_TEST_FAULT=0:-1:usr1 '%s' mine %s --out '%s' > '%s.log' 2>&1", km_test_bin(), common, b,
                     b) == 0);
    CHECK_MSG(km_test_sh("grep -q 'stop requested (SIGTERM/SIGUSR1): checkpoint after 4 of 6 images of the one-time "
                         "labelling pass; continue with --resume' '%s.log'", b) == 0, "%s.log: no stop line", b);
    CHECK_MSG(count_lines(p) == 1, "%s: a log row before any mining epoch", p);
    CHECK(km_test_sh("grep -aq '\"mine.onetime.pass.images\":\"4\"' '%s/last.safetensors'", b) == 0);
    int n1 = km_test_sh("exit $(ls '%s/pseudo' | wc -l)", b);
    CHECK_MSG(n1 >= 1 && n1 <= 4, "%s/pseudo: %d labels after the first batch of 4", b, n1);
    double t1 = km_now();
    CHECK(km_test_sh("'%s' mine --resume '%s' > '%s.resume.log' 2>&1", km_test_bin(), b, b) == 0);
    printf("    uninterrupted %.1f s, stopped %.1f s + resumed %.1f s; %d labels at the stop\n", t_full, t1 - t0,
           km_now() - t1, n1);
    CHECK(km_test_sh("grep -q 'resuming .* after 4 of 6 images of the one-time labelling pass' '%s.resume.log' && "
                     "grep -q 'one-time pseudo labels: [0-9] of 6' '%s.resume.log'", b, b) == 0);
    check_same_run(a, b, 2, 0);
    CHECK_MSG(km_test_sh("diff -r '%s/pseudo' '%s/pseudo' > /dev/null", a, b) == 0, "%s: pseudo/ differs", b);
    CHECK(km_test_sh("! grep -aq 'mine.onetime.pass' '%s/last.safetensors'", b) == 0);
}

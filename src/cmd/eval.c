/* eval.c - `kmseg eval`: per-image Dice and IoU of a student checkpoint on a
 * dataset split (method.md 7).
 *
 *   kmseg eval --weights W --data DIR [--split test|val|train|all]
 *              [--split-dir RUN/splits] --out DIR
 *
 * Images and masks are preprocessed exactly as in training (shortest side ->
 * size, centre crop, masks > 127) and scored at that resolution, the
 * student in eval mode (BatchNorm running statistics); a pixel is foreground
 * when its logit > 0 (p > 0.5, metrics.h). Both-empty images score 1.
 * Writes <out>/per_image.csv (id, dice, iou, tp, fp, fn, pred_pixels,
 * true_pixels) in split-list order and <out>/summary.json (mean and sample
 * std of the per-image scores, global/micro Dice and IoU from the summed
 * counts, and what was evaluated). --split other than all needs --split-dir
 * (a run folder's splits/ or user lists).
 *
 * Refined mode (--teacher CKPT, issue 5.4): each image's student logits
 * prompt the teacher (--box-rule: one box, the largest component's, or one
 * decode per sizeable component), which sees the ORIGINAL image file (its
 * embedding cached per original image); the teacher's answer is brought to
 * the S x S crop with the images' geometry and its mask there is the
 * prediction (src/mine/refine.h: frames, prompts, cache, +-1 logits,
 * fallbacks).
 * Images whose prompts give NO_BOX, or whose teacher mask is empty, keep the
 * student's own mask; per_image.csv's last column "prediction" says which
 * (teacher / student_no_box / student_empty_teacher; "student" in the
 * default student-only mode) and summary.json records "mode" (student or
 * refined), the teacher settings, teacher calls and the fallback counts. */
#include "cmd.h"

#include "../core/args.h"
#include "../core/log.h"
#include "../io/json.h"
#include "../io/settings.h"
#include "../eval/metrics.h"
#include "../mine/embcache.h"
#include "../mine/refine.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/splits.h"
#include "../train/train.h"

#include <string.h>

typedef struct {
    const char *weights, *data, *split, *split_dir, *out, *label, *split_file;
    int size, batch, threads, fold;
    int which; /* 0 train, 1 val, 2 test, 3 all */
    km_refine_flags rf;
} eval_args;

/* What is open while scoring (all zero: nothing). */
typedef struct {
    km_unetpp *m;
    km_refiner ref;
    km_issues iss;
    km_dataset_index idx;
    km_split sp;
    km_dataset ds;
    int *all;
    int n;
    double *dices, *ious;
    km_metric_acc acc;
} eval_state;

/* Step 1: the flags, checked. */
static km_status eval_flags(int argc, char **argv, eval_args *a, int *help) {
    *a = (eval_args){.split = "test", .batch = 8, .threads = 2};
    const km_flag own[] = {
        {"--weights", KM_FLAG_STR, &a->weights, "student checkpoint (.safetensors from kmseg train, or smp .pth)", 1, 0},
        KM_CMD_DATA_FLAG(&a->data),
        KM_DATA_FLAGS(&a->label, &a->split_file, &a->fold),
        {"--split", KM_FLAG_STR, &a->split, "test, val, train or all (all: every image/mask pair)", 0, 0},
        {"--split-dir", KM_FLAG_STR, &a->split_dir, "folder with train.txt/val.txt/test.txt, e.g. RUN/splits", 0, 0},
        {"--out", KM_FLAG_STR, &a->out, "output folder for per_image.csv and summary.json", 1, 0},
        {"--size", KM_FLAG_INT, &a->size, "crop size (0: the checkpoint's training size, else 224)", 0, 0},
        {"--batch", KM_FLAG_INT, &a->batch, "images per forward pass", 0, 0},
        KM_CMD_THREADS_FLAG(&a->threads),
        {0}};
    static const char usage[] = "--weights W --data DIR [--split test|val|train|all --split-dir D] --out DIR";
    km_refine_flags_default(&a->rf);
    km_status s = km_cmd_parse_with("eval", usage, own, &km_refine_settings, &a->rf, argc, argv, help);
    if (s || *help) return s;
    if ((s = km_split_choose(&a->split_dir, a->split_file, a->fold))) return s;
    static const char *const names[] = {"train", "val", "test", "all"};
    a->which = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(a->split, names[i])) a->which = i;
    if (a->which < 0) return km_err(KM_EARG, "--split '%s': expected test, val, train or all", a->split);
    if (a->which != 3 && !a->split_dir)
        return km_err(KM_EARG, "--split %s needs --split-dir (e.g. RUN/splits), or use --split all", a->split);
    if ((s = km_cmd_check_size(a->size))) return s;
    if (a->batch < 1) return km_err(KM_EARG, "--batch %d: expected >= 1", a->batch);
    return km_cmd_set_threads(a->threads);
}

/* Step 2: the images of the split, loaded and preprocessed (e->ds, e->n). */
static km_status eval_images(const eval_args *a, eval_state *e) {
    km_issues_init(&e->iss);
    km_status s = km_dataset_scan(a->data, a->label, &e->idx, &e->iss);
    if (!s) s = km_issues_status(&e->iss, a->data);
    if (s) return s;
    const int *which;
    if (a->which == 3) {
        e->all = km_malloc(sizeof(int) * (size_t)(e->idx.n + 1));
        for (int i = 0; i < e->idx.n; i++) e->all[i] = i;
        which = e->all;
        e->n = e->idx.n;
    } else {
        if ((s = km_split_from_path(&e->idx, a->split_dir, a->fold, &e->sp, NULL))) return s;
        which = a->which == 0 ? e->sp.train : a->which == 1 ? e->sp.val : e->sp.test;
        e->n = a->which == 0 ? e->sp.n_train : a->which == 1 ? e->sp.n_val : e->sp.n_test;
    }
    if (e->n == 0) return km_err(KM_EARG, "%s: the %s split is empty", a->split_dir ? a->split_dir : a->data, a->split);
    return km_dataset_load(&e->idx, which, e->n, a->size, 1, &e->ds, NULL);
}

/* Image k's metrics and per_image.csv row; z its logits (refined first in
 * refined mode). */
static km_status eval_one(const eval_args *a, eval_state *e, int k, float *z, km_csv *csv) {
    size_t P = (size_t)a->size * a->size;
    km_refine_outcome ro = KM_REFINE_TEACHER;
    if (a->rf.teacher) {
        /* the teacher sees the original file, read on an embedding-cache miss */
        char *ip = km_dataset_image_path(&e->idx, e->ds.src[k]);
        km_refine_image im;
        km_refine_image_file(&im, ip, e->ds.orig_w[k], e->ds.orig_h[k], e->ds.orig_hash[k]);
        km_status s = km_refine_logits(&e->ref, &im, a->size, z, &ro);
        km_free(ip);
        if (s) return s;
    }
    km_conf c = km_conf_logits_u8(z, e->ds.masks + P * k, P);
    km_metric_acc_add(&e->acc, c, &e->dices[k], &e->ious[k]);
    km_csv_str(csv, e->ds.ids[k]);
    km_csv_num(csv, e->dices[k]);
    km_csv_num(csv, e->ious[k]);
    km_csv_int(csv, c.tp);
    km_csv_int(csv, c.fp);
    km_csv_int(csv, c.fn);
    km_csv_int(csv, c.tp + c.fp);
    km_csv_int(csv, c.tp + c.fn);
    km_csv_str(csv, a->rf.teacher ? km_refine_outcome_name(ro) : "student");
    return km_csv_end_row(csv);
}

/* Step 3: the student (and teacher) on every image, in batches, into
 * <out>/per_image.csv. */
static km_status eval_score(const eval_args *a, eval_state *e) {
    static const char *const cols[] = {"id", "dice", "iou", "tp", "fp", "fn", "pred_pixels", "true_pixels",
                                       "prediction"};
    char path[4096];
    km_csv csv;
    memset(&csv, 0, sizeof csv);
    km_status s = km_mkdir_p(a->out);
    snprintf(path, sizeof path, "%s/per_image.csv", a->out);
    if (!s) s = km_csv_open(&csv, path, cols, 9, 0);
    km_metric_acc_init(&e->acc);
    e->dices = km_malloc(sizeof(double) * (size_t)(e->n + 1));
    e->ious = km_malloc(sizeof(double) * (size_t)(e->n + 1));
    size_t P = (size_t)a->size * a->size;
    float *x = km_malloc(sizeof(float) * 3 * P * a->batch), *y = km_malloc(sizeof(float) * P * a->batch);
    float *lg = km_malloc(sizeof(float) * P * a->batch);
    int *pos = km_malloc(sizeof(int) * (size_t)a->batch);
    for (int b0 = 0; b0 < e->n && !s; b0 += a->batch) {
        int bn = e->n - b0 < a->batch ? e->n - b0 : a->batch;
        for (int b = 0; b < bn; b++) pos[b] = b0 + b;
        km_batch_fill(&e->ds, pos, NULL, bn, x, y);
        s = km_unetpp_forward(e->m, x, bn, a->size, a->size, 0, lg);
        for (int b = 0; b < bn && !s; b++) s = eval_one(a, e, b0 + b, lg + P * b, &csv);
    }
    km_free(pos);
    km_free(x);
    km_free(y);
    km_free(lg);
    if (csv.f) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    return s;
}

/* Step 4: <out>/summary.json and the result lines on stdout. */
static km_status eval_summary(const eval_args *a, const eval_state *e, double t0) {
    double md, sd, mi, si;
    km_mean_std(e->dices, e->n, &md, &sd);
    km_mean_std(e->ious, e->n, &mi, &si);
    const km_refiner *r = &e->ref;
    km_jw w = {0};
    km_jw_str(&w, "weights", a->weights);
    km_jw_str(&w, "data", a->data);
    km_jw_str(&w, "split", a->split);
    km_jw_str(&w, "split_dir", a->split_dir);
    km_jw_num(&w, "n", e->n);
    km_jw_num(&w, "size", a->size);
    km_jw_str(&w, "mode", a->rf.teacher ? "refined" : "student");
    km_jw_str(&w, "teacher", a->rf.teacher);
    if (a->rf.teacher) {
        km_jw_str(&w, "teacher_profile", km_sam_profile_name(r->cfg.profile));
        km_jw_str(&w, "prompt_mode", km_prompt_mode_name(r->cfg.mode));
        km_jw_str(&w, "box_rule", km_box_rule_name(r->cfg.box_rule));
        km_jw_num(&w, "points", r->cfg.points);
    }
    km_jw_num(&w, "teacher_calls", (double)r->teacher_calls);
    km_jw_num(&w, "teacher_decodes", (double)r->decodes);
    km_jw_num(&w, "teacher_encoder_runs", (double)r->encoder_runs);
    km_jw_num(&w, "teacher_cache_hits", a->rf.teacher ? (double)km_refiner_cache_hits(r) : 0);
    km_jw_num(&w, "fallbacks", (double)(r->fallback_no_box + r->fallback_empty));
    km_jw_num(&w, "fallback_no_box", (double)r->fallback_no_box);
    km_jw_num(&w, "fallback_empty_teacher", (double)r->fallback_empty);
    km_jw_num(&w, "mean_dice", md);
    km_jw_num(&w, "std_dice", sd);
    km_jw_num(&w, "mean_iou", mi);
    km_jw_num(&w, "std_iou", si);
    km_jw_num(&w, "global_dice", km_metric_global_dice(&e->acc));
    km_jw_num(&w, "global_iou", km_metric_global_iou(&e->acc));
    km_jw_num(&w, "seconds", km_now() - t0);
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", a->out);
    km_status s = km_jw_write(&w, path);
    if (s) return s;
    printf("%s %s: %d images at %dx%d  Dice %.4f +- %.4f  IoU %.4f +- %.4f  global Dice %.4f IoU %.4f\n", a->data,
           a->split, e->n, a->size, a->size, md, sd, mi, si, km_metric_global_dice(&e->acc),
           km_metric_global_iou(&e->acc));
    if (a->rf.teacher) km_refiner_print(r, stdout);
    return KM_OK;
}

static void eval_free(eval_state *e) {
    km_free(e->dices);
    km_free(e->ious);
    km_free(e->all);
    km_dataset_free(&e->ds);
    km_split_free(&e->sp);
    if (e->idx.items || e->idx.root) km_dataset_index_free(&e->idx);
    km_issues_free(&e->iss);
    km_unetpp_free(e->m);
    km_refiner_close(&e->ref);
}

km_status km_cmd_eval(int argc, char **argv) {
    eval_args a;
    int help = 0;
    km_status s = eval_flags(argc, argv, &a, &help);
    if (s || help) return s;
    eval_state e = {0};
    char tbuf[4096];
    if ((s = km_cmd_open_student(a.weights, &a.rf, tbuf, sizeof tbuf, &e.ref, &e.m, &a.size))) return s;
    double t0 = km_now();
    s = eval_images(&a, &e);
    if (!s) s = eval_score(&a, &e);
    if (!s) s = eval_summary(&a, &e, t0);
    eval_free(&e);
    return s;
}

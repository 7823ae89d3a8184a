/* teacher_quality.c - the teacher scored on a dataset (teacher_quality.h). */
#include "teacher_quality.h"
#include "metrics.h"

#include "../core/log.h"
#include "../core/progress.h"
#include "../io/image.h"
#include "../io/json.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/splits.h"
#include "../train/train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const k_prompts[] = {"gt-box", "gt-box+points", "student"};

const char *km_tq_prompts_name(km_tq_prompts p) { return k_prompts[p]; }

km_status km_tq_prompts_parse(const char *s, km_tq_prompts *p) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, k_prompts[i])) {
            *p = (km_tq_prompts)i;
            return KM_OK;
        }
    return km_err(KM_EARG, "--prompts '%s': expected gt-box, gt-box+points or student", s);
}

/* The images to score: indices into idx (split, then the first N). */
static km_status select_images(const km_tq_config *c, const km_dataset_index *idx, int **which, int *n) {
    km_split sp;
    memset(&sp, 0, sizeof sp);
    *which = km_malloc(sizeof(int) * (size_t)(idx->n + 1));
    if (c->split == 3 || !c->split_dir) {
        for (int i = 0; i < idx->n; i++) (*which)[i] = i;
        *n = idx->n;
    } else {
        km_status s = km_split_from_dir(idx, c->split_dir, &sp, NULL);
        if (s) return s;
        const int *w = c->split == 0 ? sp.train : c->split == 1 ? sp.val : sp.test;
        *n = c->split == 0 ? sp.n_train : c->split == 1 ? sp.n_val : sp.n_test;
        memcpy(*which, w, sizeof(int) * (size_t)*n);
        km_split_free(&sp);
    }
    if (c->first > 0 && c->first < *n) *n = c->first;
    if (*n == 0) return km_err(KM_EARG, "%s: no image to score in the chosen split", c->data);
    return KM_OK;
}

typedef struct {
    km_refiner r;
    km_unetpp *student;
    int S;
    km_metric_acc acc, acc_student, acc_crop;
    double *dice;
    km_csv csv;
} tq_state;

/* The student's logits z [S, S] on the crop of rgb (w x h) and the crop's
 * ground truth gtc [S, S]. */
static km_status student_logits(tq_state *t, const km_image *rgb, const km_image *gt, float *z, uint8_t *gtc) {
    const int S = t->S;
    uint8_t *crop = km_malloc((size_t)S * S * 3);
    float *x = km_malloc(sizeof(float) * 3 * S * S);
    km_status s = km_preprocess_image(rgb, S, crop);
    if (!s) {
        km_normalize_rgb(crop, S, x);
        km_preprocess_mask(gt, S, gtc);
        s = km_unetpp_forward(t->student, x, 1, S, S, 0, z);
    }
    km_free(crop);
    km_free(x);
    return s;
}

/* Student mode, scores in the student's frame: the student's own mask and
 * the teacher's confidence brought to the crop. */
static void score_crop(tq_state *t, const km_geom *g, const float *z, const float *conf, const uint8_t *gtc,
                       double *ds, double *dt) {
    const size_t P = (size_t)t->S * t->S;
    float *cS = km_malloc(sizeof(float) * P);
    uint8_t *m = km_malloc(P);
    km_geom_resize_crop_f32(g, conf, cS);
    for (size_t i = 0; i < P; i++) m[i] = cS[i] > 0;
    km_metric_acc_add(&t->acc_student, km_conf_logits_u8(z, gtc, P), ds, NULL);
    km_metric_acc_add(&t->acc_crop, km_conf_masks_u8(m, gtc, P), dt, NULL);
    km_free(cS);
    km_free(m);
}

static km_status score_image(tq_state *t, const km_tq_config *c, const km_dataset_index *idx, int i, int k,
                             km_tq_result *res) {
    char *ip = km_dataset_image_path(idx, i), *mp = km_dataset_mask_path(idx, i);
    km_image rgb = {0}, gt = {0};
    km_status s = km_image_load(ip, &rgb, 3);
    if (!s) s = km_image_load(mp, &gt, 1);
    if (!s && (gt.w != rgb.w || gt.h != rgb.h))
        s = km_err(KM_ESHAPE, "%s: mask is %dx%d, image %dx%d", mp, gt.w, gt.h, rgb.w, rgb.h);
    const size_t HW = (size_t)rgb.w * rgb.h, P = (size_t)t->S * t->S;
    uint8_t *mask = NULL, *gt01 = NULL, *gtc = NULL;
    float *z = NULL, *conf = NULL;
    double ds = NAN, dt = NAN, dice = 0, iou = 0;
    km_refine_outcome o = KM_REFINE_TEACHER;
    if (!s) {
        mask = km_malloc(HW);
        gt01 = km_malloc(HW);
        conf = km_malloc(sizeof(float) * HW);
        for (size_t p = 0; p < HW; p++) gt01[p] = gt.data[p] > 127;
        km_refine_image im;
        km_refine_image_rgb(&im, rgb.data, rgb.w, rgb.h);
        if (c->prompts == KM_TQ_STUDENT) {
            z = km_malloc(sizeof(float) * P);
            gtc = km_malloc(P);
            km_geom g;
            km_geom_compute(rgb.w, rgb.h, t->S, &g);
            s = student_logits(t, &rgb, &gt, z, gtc);
            if (!s) s = km_refine_teacher_mask_orig(&t->r, &im, z, &g, mask, conf, &o);
            if (!s) score_crop(t, &g, z, conf, gtc, &ds, &dt);
        } else {
            z = km_malloc(sizeof(float) * HW);
            for (size_t p = 0; p < HW; p++) z[p] = gt01[p] ? 1.0f : -1.0f;
            s = km_refine_teacher_mask_orig(&t->r, &im, z, NULL, mask, conf, &o);
        }
    }
    if (!s) {
        km_conf cf = km_conf_masks_u8(mask, gt01, HW);
        km_metric_acc_add(&t->acc, cf, &dice, &iou);
        t->dice[k] = dice;
        res->no_box += o == KM_REFINE_FALLBACK_NO_BOX;
        res->empty_teacher += o == KM_REFINE_FALLBACK_EMPTY;
        km_csv_str(&t->csv, idx->items[i].id);
        km_csv_int(&t->csv, rgb.w);
        km_csv_int(&t->csv, rgb.h);
        km_csv_num(&t->csv, dice);
        km_csv_num(&t->csv, iou);
        km_csv_int(&t->csv, cf.tp + cf.fp);
        km_csv_int(&t->csv, cf.tp + cf.fn);
        km_csv_str(&t->csv, o == KM_REFINE_TEACHER ? "teacher" : o == KM_REFINE_FALLBACK_NO_BOX ? "no_box" : "empty_teacher");
        km_csv_num(&t->csv, ds);
        km_csv_num(&t->csv, dt);
        s = km_csv_end_row(&t->csv);
    }
    km_free(ip);
    km_free(mp);
    km_free(mask);
    km_free(gt01);
    km_free(gtc);
    km_free(z);
    km_free(conf);
    km_image_free(&rgb);
    km_image_free(&gt);
    return s;
}


static km_status write_summary(const km_tq_config *c, const tq_state *t, const km_tq_result *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return km_err(KM_ENOMEM, "cannot build summary.json");
    fprintf(f, "{\n");
    km_json_fput_str_member(f, "data", c->data);
    km_json_fput_str_member(f, "split_dir", c->split_dir);
    km_json_fput_str_member(f, "prompts", km_tq_prompts_name(c->prompts));
    km_json_fput_str_member(f, "teacher", c->teacher.teacher);
    km_json_fput_str_member(f, "teacher_profile", km_sam_profile_name(t->r.cfg.profile));
    km_json_fput_str_member(f, "prompt_mode", km_prompt_mode_name(t->r.cfg.mode));
    km_json_fput_str_member(f, "box_rule", km_box_rule_name(t->r.cfg.box_rule));
    km_json_fput_str_member(f, "weights", c->weights);
    km_json_fput_num_member(f, "n", r->n, 0);
    km_json_fput_num_member(f, "first", c->first, 0);
    km_json_fput_num_member(f, "mean_dice", r->mean_dice, 0);
    km_json_fput_num_member(f, "std_dice", r->std_dice, 0);
    km_json_fput_num_member(f, "mean_iou", r->mean_iou, 0);
    km_json_fput_num_member(f, "std_iou", r->std_iou, 0);
    km_json_fput_num_member(f, "global_dice", r->global_dice, 0);
    km_json_fput_num_member(f, "student_mean_dice_crop", r->student_dice, 0);
    km_json_fput_num_member(f, "teacher_mean_dice_crop", r->teacher_dice_crop, 0);
    km_json_fput_num_member(f, "no_box", r->no_box, 0);
    km_json_fput_num_member(f, "empty_teacher", r->empty_teacher, 0);
    km_json_fput_num_member(f, "teacher_calls", (double)t->r.teacher_calls, 0);
    km_json_fput_num_member(f, "decodes", (double)t->r.decodes, 0);
    km_json_fput_num_member(f, "encoder_runs", (double)t->r.encoder_runs, 0);
    km_json_fput_num_member(f, "seconds", r->seconds, 1);
    fprintf(f, "}\n");
    fclose(f);
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", c->out);
    km_status s = km_write_file_atomic(path, buf, len);
    free(buf);
    return s;
}

static km_status open_models(tq_state *t, const km_tq_config *c) {
    km_refine_config rc = c->teacher;
    if (c->prompts == KM_TQ_GT_BOX) rc.mode = KM_PROMPT_BOX;
    else if (c->prompts == KM_TQ_GT_BOX_POINTS) rc.mode = KM_PROMPT_POINTS_BOX;
    km_status s = km_refiner_open(&t->r, &rc);
    if (s) return s;
    t->S = c->size ? c->size : 224;
    if (c->prompts != KM_TQ_STUDENT) return KM_OK;
    if (!c->weights) return km_err(KM_EARG, "--prompts student needs --weights (a student checkpoint)");
    int msize = 0;
    if ((s = km_train_load_student(c->weights, &t->student, &msize))) return s;
    if (!c->size && msize) t->S = msize;
    return KM_OK;
}

km_status km_teacher_quality_run(const km_tq_config *c, FILE *log, km_tq_result *res) {
    static const char *const cols[] = {"id", "w", "h", "dice", "iou", "pred_pixels", "true_pixels", "outcome",
                                       "student_dice_crop", "teacher_dice_crop"};
    memset(res, 0, sizeof *res);
    double t0 = km_now();
    tq_state t;
    memset(&t, 0, sizeof t);
    km_metric_acc_init(&t.acc);
    km_metric_acc_init(&t.acc_student);
    km_metric_acc_init(&t.acc_crop);
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    int *which = NULL, n = 0;
    km_status s = km_dataset_scan(c->data, NULL, &idx, &iss);
    if (!s) s = km_issues_status(&iss, c->data);
    if (!s) s = select_images(c, &idx, &which, &n);
    if (!s) s = open_models(&t, c);
    if (!s) s = km_mkdir_p(c->out);
    char path[4096];
    snprintf(path, sizeof path, "%s/per_image.csv", c->out);
    if (!s) s = km_csv_open(&t.csv, path, cols, 10, 0);
    t.dice = km_malloc(sizeof(double) * (size_t)(n + 1));
    km_progress pb;
    km_progress_start(&pb, log, "teacher", n, "img");
    for (int k = 0; k < n && !s; k++) {
        s = score_image(&t, c, &idx, which[k], k, res);
        km_progress_update(&pb, k + 1, NULL);
    }
    km_progress_end(&pb, NULL);
    if (t.csv.f) {
        km_status s2 = km_csv_close(&t.csv);
        if (!s) s = s2;
    }
    if (!s) {
        res->n = n;
        res->size = t.S;
        km_mean_std(t.dice, n, &res->mean_dice, &res->std_dice);
        res->mean_iou = km_metric_mean_iou(&t.acc);
        res->std_iou = NAN;
        res->global_dice = km_metric_global_dice(&t.acc);
        res->student_dice = km_metric_mean_dice(&t.acc_student);
        res->teacher_dice_crop = km_metric_mean_dice(&t.acc_crop);
        res->seconds = km_now() - t0;
        s = write_summary(c, &t, res);
    }
    km_free(t.dice);
    km_free(which);
    if (t.student) km_unetpp_free(t.student);
    km_refiner_close(&t.r);
    km_dataset_index_free(&idx);
    km_issues_free(&iss);
    return s;
}

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
#include "../eval/metrics.h"
#include "../mine/embcache.h"
#include "../mine/refine.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/splits.h"
#include "../train/train.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>


km_status km_cmd_eval(int argc, char **argv) {
    const char *weights = NULL, *data = NULL, *split = "test", *split_dir = NULL, *out = NULL;
    int size = 0, batch = 8, threads = 2, fold = 0;
    const char *label = NULL, *split_file = NULL;
    const char *teacher = NULL, *profile = "auto", *pmode = "auto", *box_rule = "per-component", *cache_dir = NULL;
    int points = 1, no_cache = 0, refine = 0;
    char tbuf[4096];
    km_flag flags[] = {
        {"--weights", KM_FLAG_STR, &weights, "student checkpoint (.safetensors from kmseg train, or smp .pth)", 1, 0},
        {"--data", KM_FLAG_STR, &data, "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", 1, 0},
        KM_DATA_FLAGS(&label, &split_file, &fold),
        {"--split", KM_FLAG_STR, &split, "test, val, train or all (all: every image/mask pair)", 0, 0},
        {"--split-dir", KM_FLAG_STR, &split_dir, "folder with train.txt/val.txt/test.txt, e.g. RUN/splits", 0, 0},
        {"--out", KM_FLAG_STR, &out, "output folder for per_image.csv and summary.json", 1, 0},
        {"--size", KM_FLAG_INT, &size, "crop size (0: the checkpoint's training size, else 224)", 0, 0},
        {"--batch", KM_FLAG_INT, &batch, "images per forward pass", 0, 0},
        {"--threads", KM_FLAG_INT, &threads, "compute threads", 0, 0},
        {"--teacher", KM_FLAG_STR, &teacher, "refined mode with this teacher checkpoint (implies --refine)", 0, 0},
        {"--refine", KM_FLAG_BOOL, &refine, "refined mode: the student's prediction prompts the teacher (default teacher: the installed LiteMedSAM, $KMSEG_TEACHER)", 0, 0},
        {"--teacher-profile", KM_FLAG_STR, &profile, "refined mode: auto (from the checkpoint), sam, medsam, litemedsam or mobilesam", 0, 0},
        {"--prompt-mode", KM_FLAG_STR, &pmode, "refined mode: auto (the teacher's: box for MedSAM / LiteMedSAM, else points+box), points, box, points+box or points+box+mask", 0, 0},
        {"--box-rule", KM_FLAG_STR, &box_rule, "refined mode: boxes from the student's mask: all, largest or per-component (one decode per component of >= 10 % of the largest)", 0, 0},
        {"--points", KM_FLAG_INT, &points, "refined mode: guiding points per image", 0, 0},
        {"--cache-dir", KM_FLAG_STR, &cache_dir, "refined mode: teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", 0, 0},
        {"--no-cache", KM_FLAG_BOOL, &no_cache, "refined mode: keep teacher embeddings in memory only", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("eval", "--weights W --data DIR [--split test|val|train|all --split-dir D] --out DIR",
                                 flags, argc, argv, &help);
    if (s || help) return s;
    s = km_split_choose(&split_dir, split_file, fold);
    if (s) return s;
    int which_split;
    if (!strcmp(split, "train")) which_split = 0;
    else if (!strcmp(split, "val")) which_split = 1;
    else if (!strcmp(split, "test")) which_split = 2;
    else if (!strcmp(split, "all")) which_split = 3;
    else return km_err(KM_EARG, "--split '%s': expected test, val, train or all", split);
    if (which_split != 3 && !split_dir)
        return km_err(KM_EARG, "--split %s needs --split-dir (e.g. RUN/splits), or use --split all", split);
    if (size && (size < 32 || size % 32))
        return km_err(KM_EARG, "--size %d: expected a positive multiple of 32", size);
    if (batch < 1) return km_err(KM_EARG, "--batch %d: expected >= 1", batch);
    if (threads < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", threads);
    km_set_threads(threads);
    km_unetpp *m = NULL;
    km_refiner ref;
    if (refine && !teacher && (s = km_teacher_resolve(NULL, tbuf, sizeof tbuf, &teacher))) return s;
    s = km_refine_open_student(weights, teacher, profile, pmode, box_rule, points, cache_dir, no_cache, &ref, &m,
                               &size);
    if (s) return s;

    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    km_split sp;
    memset(&sp, 0, sizeof sp);
    km_dataset ds;
    memset(&ds, 0, sizeof ds);
    float *x = NULL, *y = NULL, *lg = NULL;
    int *all = NULL;
    char *bufj = NULL;
    km_csv csv;
    memset(&csv, 0, sizeof csv);
    double t0 = km_now();
    s = km_dataset_scan(data, label, &idx, &iss);
    if (!s) s = km_issues_status(&iss, data);
    const int *which = NULL;
    int n = 0;
    if (!s && which_split == 3) {
        all = km_malloc(sizeof(int) * (size_t)(idx.n + 1));
        for (int i = 0; i < idx.n; i++) all[i] = i;
        which = all;
        n = idx.n;
    } else if (!s) {
        s = km_split_from_path(&idx, split_dir, fold, &sp, NULL);
        if (!s) {
            which = which_split == 0 ? sp.train : which_split == 1 ? sp.val : sp.test;
            n = which_split == 0 ? sp.n_train : which_split == 1 ? sp.n_val : sp.n_test;
        }
    }
    if (!s && n == 0) s = km_err(KM_EARG, "%s: the %s split is empty", split_dir ? split_dir : data, split);
    if (!s) s = km_dataset_load(&idx, which, n, size, 1, &ds, NULL);
    if (!s && mkdir(out, 0777) && errno != EEXIST)
        s = km_err(KM_EIO, "%s: cannot create folder: %s", out, strerror(errno));
    char path[4096];
    static const char *const cols[] = {"id", "dice", "iou", "tp", "fp", "fn", "pred_pixels", "true_pixels",
                                       "prediction"};
    if (!s) {
        snprintf(path, sizeof path, "%s/per_image.csv", out);
        s = km_csv_open(&csv, path, cols, 9, 0);
    }
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    double *dices = km_malloc(sizeof(double) * (size_t)(n + 1)), *ious = km_malloc(sizeof(double) * (size_t)(n + 1));
    if (!s) {
        size_t P = (size_t)size * size;
        x = km_malloc(sizeof(float) * 3 * P * batch);
        y = km_malloc(sizeof(float) * P * batch);
        lg = km_malloc(sizeof(float) * P * batch);
        int *pos = km_malloc(sizeof(int) * (size_t)batch);
        for (int b0 = 0; b0 < n && !s; b0 += batch) {
            int bn = n - b0 < batch ? n - b0 : batch;
            for (int b = 0; b < bn; b++) pos[b] = b0 + b;
            km_batch_fill(&ds, pos, NULL, bn, x, y);
            s = km_unetpp_forward(m, x, bn, size, size, 0, lg);
            for (int b = 0; b < bn && !s; b++) {
                km_refine_outcome ro = KM_REFINE_TEACHER;
                if (teacher) {
                    /* the teacher sees the original file, read on an embedding-cache miss */
                    int k = b0 + b;
                    char *ip = km_dataset_image_path(&idx, ds.src[k]);
                    km_refine_image im;
                    km_refine_image_file(&im, ip, ds.orig_w[k], ds.orig_h[k], ds.orig_hash[k]);
                    s = km_refine_logits(&ref, &im, size, lg + P * b, &ro);
                    km_free(ip);
                    if (s) break;
                }
                km_conf c = km_conf_logits_u8(lg + P * b, ds.masks + P * (b0 + b), P);
                km_metric_acc_add(&acc, c, &dices[b0 + b], &ious[b0 + b]);
                km_csv_str(&csv, ds.ids[b0 + b]);
                km_csv_num(&csv, dices[b0 + b]);
                km_csv_num(&csv, ious[b0 + b]);
                km_csv_int(&csv, c.tp);
                km_csv_int(&csv, c.fp);
                km_csv_int(&csv, c.fn);
                km_csv_int(&csv, c.tp + c.fp);
                km_csv_int(&csv, c.tp + c.fn);
                km_csv_str(&csv, teacher ? km_refine_outcome_name(ro) : "student");
                s = km_csv_end_row(&csv);
            }
        }
        km_free(pos);
    }
    if (csv.f) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (!s) {
        double md, sd, mi, si;
        km_mean_std(dices, n, &md, &sd);
        km_mean_std(ious, n, &mi, &si);
        size_t len = 0;
        FILE *f = open_memstream(&bufj, &len);
        if (!f) return km_err(KM_ENOMEM, "cannot build summary.json"); /* nothing else held here */
        fprintf(f, "{\n");
        km_json_fput_str_member(f, "weights", weights);
        km_json_fput_str_member(f, "data", data);
        km_json_fput_str_member(f, "split", split);
        km_json_fput_str_member(f, "split_dir", split_dir);
        km_json_fput_num_member(f, "n", n, 0);
        km_json_fput_num_member(f, "size", size, 0);
        km_json_fput_str_member(f, "mode", teacher ? "refined" : "student");
        km_json_fput_str_member(f, "teacher", teacher);
        if (teacher) {
            km_json_fput_str_member(f, "teacher_profile", km_sam_profile_name(ref.cfg.profile));
            km_json_fput_str_member(f, "prompt_mode", km_prompt_mode_name(ref.cfg.mode));
            km_json_fput_str_member(f, "box_rule", km_box_rule_name(ref.cfg.box_rule));
            km_json_fput_num_member(f, "points", ref.cfg.points, 0);
        }
        km_json_fput_num_member(f, "teacher_calls", (double)ref.teacher_calls, 0);
        km_json_fput_num_member(f, "teacher_decodes", (double)ref.decodes, 0);
        km_json_fput_num_member(f, "teacher_encoder_runs", (double)ref.encoder_runs, 0);
        km_json_fput_num_member(f, "teacher_cache_hits", teacher ? (double)km_refiner_cache_hits(&ref) : 0, 0);
        km_json_fput_num_member(f, "fallbacks", (double)(ref.fallback_no_box + ref.fallback_empty), 0);
        km_json_fput_num_member(f, "fallback_no_box", (double)ref.fallback_no_box, 0);
        km_json_fput_num_member(f, "fallback_empty_teacher", (double)ref.fallback_empty, 0);
        km_json_fput_num_member(f, "mean_dice", md, 0);
        km_json_fput_num_member(f, "std_dice", sd, 0);
        km_json_fput_num_member(f, "mean_iou", mi, 0);
        km_json_fput_num_member(f, "std_iou", si, 0);
        km_json_fput_num_member(f, "global_dice", km_metric_global_dice(&acc), 0);
        km_json_fput_num_member(f, "global_iou", km_metric_global_iou(&acc), 0);
        km_json_fput_num_member(f, "seconds", km_now() - t0, 1);
        fprintf(f, "}\n");
        fclose(f);
        snprintf(path, sizeof path, "%s/summary.json", out);
        s = km_write_file_atomic(path, bufj, len);
        if (!s)
            printf("%s %s: %d images at %dx%d  Dice %.4f +- %.4f  IoU %.4f +- %.4f  global Dice %.4f IoU %.4f\n",
                   data, split, n, size, size, md, sd, mi, si, km_metric_global_dice(&acc),
                   km_metric_global_iou(&acc));
        if (!s && teacher)
            printf("refined by %s (box rule %s): %ld teacher call(s), %ld decode(s) (%ld encoder run(s), %ld cached), %ld fallback(s) to the student (%ld NO_BOX, %ld empty "
                   "teacher mask)\n",
                   teacher, km_box_rule_name(ref.cfg.box_rule), ref.teacher_calls, ref.decodes, ref.encoder_runs,
                   km_refiner_cache_hits(&ref),
                   ref.fallback_no_box + ref.fallback_empty, ref.fallback_no_box,
                   ref.fallback_empty);
    }
    free(bufj); /* open_memstream buffer: plain malloc */
    km_free(dices);
    km_free(ious);
    km_free(x);
    km_free(y);
    km_free(lg);
    km_free(all);
    km_dataset_free(&ds);
    km_split_free(&sp);
    if (idx.items || idx.root) km_dataset_index_free(&idx);
    km_issues_free(&iss);
    km_unetpp_free(m);
    km_refiner_close(&ref);
    return s;
}

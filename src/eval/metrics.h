/* metrics.h - segmentation metrics (method.md section 7).
 *
 * Prediction rule: a pixel is foreground when the student probability
 * p = sigmoid(z) > 0.5, evaluated as logit z > 0. The two are the same rule in
 * real arithmetic; in float32 sigmoid(z) rounds to exactly 0.5 for
 * 0 < z < ~3e-8, where "z > 0" still says foreground - kmseg always
 * thresholds the logit. Ground truth: a target value > 0.5 (float {0,1}
 * targets) or != 0 (uint8 {0,1} masks from the dataset cache).
 *
 * Per image, with tp/fp/fn counted over its pixels:
 *   Dice = 2tp / (2tp + fp + fn)       (= 2|P n G| / (|P| + |G|))
 *   IoU  = tp / (tp + fp + fn)         (= |P n G| / |P u G|)
 * Empty cases [choice, method.md 7]: prediction and truth both empty -> Dice =
 * IoU = 1 (a correct "nothing here"); exactly one empty -> 0 (falls out of
 * the formulas). smp.metrics would give 0 for both-empty (zero_division).
 * "mean" = average of the per-image scores; "global" (micro) = one score from
 * tp/fp/fn summed over all images (both-empty rule applied to the sums).
 * Counts are int64 and sums are double, added in image order: deterministic. */
#ifndef KM_METRICS_H
#define KM_METRICS_H

#include "../core/km.h"

typedef struct {
    int64_t tp, fp, fn, tn;
} km_conf;

/* Confusion counts of one image: logits [n] against targets [n]. */
km_conf km_conf_logits_f32(const float *logits, const float *target, size_t n);
km_conf km_conf_logits_u8(const float *logits, const uint8_t *target, size_t n);
/* Both inputs already binary (uint8, nonzero = foreground). */
km_conf km_conf_masks_u8(const uint8_t *pred, const uint8_t *target, size_t n);

double km_dice_score(km_conf c);
double km_iou_score(km_conf c);

/* Accumulator over images, in the order they are added. */
typedef struct {
    int n;
    double sum_dice, sum_iou;
    km_conf total;
} km_metric_acc;

void km_metric_acc_init(km_metric_acc *a);
/* Adds one image; returns its Dice and IoU through the optional pointers. */
void km_metric_acc_add(km_metric_acc *a, km_conf c, double *dice, double *iou);
double km_metric_mean_dice(const km_metric_acc *a); /* NaN when n == 0 */
double km_metric_mean_iou(const km_metric_acc *a);
double km_metric_global_dice(const km_metric_acc *a);
double km_metric_global_iou(const km_metric_acc *a);

/* Mean and sample standard deviation (ddof 1, as numpy.std(ddof=1) and the
 * paper's "mean +- std" over seeds). n == 1 gives std NaN (undefined, like
 * numpy); n == 0 gives both NaN. Two-pass in double. */
void km_mean_std(const double *x, int n, double *mean, double *std);

#endif

/* metrics.c - see metrics.h for the definitions and the empty-mask rule. */
#include "metrics.h"

#include <math.h>

km_conf km_conf_logits_f32(const float *logits, const float *target, size_t n) {
    km_conf c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int p = logits[i] > 0.0f, g = target[i] > 0.5f;
        c.tp += p & g;
        c.fp += p & !g;
        c.fn += (!p) & g;
        c.tn += (!p) & (!g);
    }
    return c;
}

km_conf km_conf_logits_u8(const float *logits, const uint8_t *target, size_t n) {
    km_conf c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int p = logits[i] > 0.0f, g = target[i] != 0;
        c.tp += p & g;
        c.fp += p & !g;
        c.fn += (!p) & g;
        c.tn += (!p) & (!g);
    }
    return c;
}

km_conf km_conf_masks_u8(const uint8_t *pred, const uint8_t *target, size_t n) {
    km_conf c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int p = pred[i] != 0, g = target[i] != 0;
        c.tp += p & g;
        c.fp += p & !g;
        c.fn += (!p) & g;
        c.tn += (!p) & (!g);
    }
    return c;
}

double km_dice_score(km_conf c) {
    int64_t den = 2 * c.tp + c.fp + c.fn;
    return den == 0 ? 1.0 : (double)(2 * c.tp) / (double)den;
}

double km_iou_score(km_conf c) {
    int64_t den = c.tp + c.fp + c.fn;
    return den == 0 ? 1.0 : (double)c.tp / (double)den;
}

void km_metric_acc_init(km_metric_acc *a) {
    a->n = 0;
    a->sum_dice = a->sum_iou = 0.0;
    a->total = (km_conf){0, 0, 0, 0};
}

void km_metric_acc_add(km_metric_acc *a, km_conf c, double *dice, double *iou) {
    double d = km_dice_score(c), j = km_iou_score(c);
    a->n++;
    a->sum_dice += d;
    a->sum_iou += j;
    a->total.tp += c.tp;
    a->total.fp += c.fp;
    a->total.fn += c.fn;
    a->total.tn += c.tn;
    if (dice) *dice = d;
    if (iou) *iou = j;
}

double km_metric_mean_dice(const km_metric_acc *a) { return a->n ? a->sum_dice / a->n : NAN; }
double km_metric_mean_iou(const km_metric_acc *a) { return a->n ? a->sum_iou / a->n : NAN; }
double km_metric_global_dice(const km_metric_acc *a) { return a->n ? km_dice_score(a->total) : NAN; }
double km_metric_global_iou(const km_metric_acc *a) { return a->n ? km_iou_score(a->total) : NAN; }

void km_mean_std(const double *x, int n, double *mean, double *std) {
    if (n <= 0) {
        *mean = *std = NAN;
        return;
    }
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    double m = s / n;
    *mean = m;
    if (n < 2) {
        *std = NAN;
        return;
    }
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *std = sqrt(ss / (n - 1));
}

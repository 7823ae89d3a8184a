/* loss.c - the student's losses on logits (reference-arch.md 2.11, 3.4, 3.5).
 * Per-element terms are computed in float like PyTorch; sums use double
 * accumulators in index order (deterministic, no threads). */
#include "ops.h"
#include "../core/km.h"

#include <math.h>

/* BCEWithLogits (1.13 formula): with m = max(-z, 0),
 * l = (1 - y) z + m + log(exp(-m) + exp(-z - m)), which never overflows. */
double km_bce_logits_forward(const float *z, const float *y, size_t n) {
    KM_ASSERT(n > 0);
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        float m = -z[i] > 0.0f ? -z[i] : 0.0f;
        float l = (1.0f - y[i]) * z[i] + m + logf(expf(-m) + expf(-z[i] - m));
        s += l;
    }
    return s / (double)n;
}

void km_bce_logits_backward(float *dz, const float *z, const float *y, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) {
        float p = 1.0f / (1.0f + expf(-z[i]));
        dz[i] += (p - y[i]) * scale / (float)n;
    }
}

/* p = exp(logsigmoid(z)) as smp computes it (F.logsigmoid(z).exp()). */
static float dice_prob(float z) { return expf(fminf(z, 0.0f) - log1pf(expf(-fabsf(z)))); }

#define KM_DICE_EPS 1e-7

/* Sums I = sum p*y, Sp = sum p, Sy = sum y over the whole batch. */
static void dice_sums(const float *z, const float *y, size_t n, double *I, double *Sp, double *Sy) {
    double i_ = 0, p_ = 0, y_ = 0;
    for (size_t i = 0; i < n; i++) {
        float p = dice_prob(z[i]);
        i_ += (double)(p * y[i]);
        p_ += p;
        y_ += y[i];
    }
    *I = i_;
    *Sp = p_;
    *Sy = y_;
}

double km_dice_logits_forward(const float *z, const float *y, size_t n) {
    double I, Sp, Sy;
    dice_sums(z, y, n, &I, &Sp, &Sy);
    if (!(Sy > 0)) return 0.0; /* smp: loss *= (sum y > 0) */
    double S = Sp + Sy;
    return 1.0 - 2.0 * I / (S > KM_DICE_EPS ? S : KM_DICE_EPS);
}

/* L = 1 - 2I / S (S >= eps): dL/dp_i = (2I - 2 y_i S) / S^2; when the clamp
 * is active (S < eps) the denominator is a constant: dL/dp_i = -2 y_i / eps.
 * dp/dz = p (1 - p). */
void km_dice_logits_backward(float *dz, const float *z, const float *y, size_t n, float scale) {
    double I, Sp, Sy;
    dice_sums(z, y, n, &I, &Sp, &Sy);
    if (!(Sy > 0)) return;
    double S = Sp + Sy;
    int clamped = S < KM_DICE_EPS;
    for (size_t i = 0; i < n; i++) {
        double p = dice_prob(z[i]);
        double dp = clamped ? -2.0 * y[i] / KM_DICE_EPS : (2.0 * I - 2.0 * y[i] * S) / (S * S);
        dz[i] += (float)(scale * dp * p * (1.0 - p));
    }
}

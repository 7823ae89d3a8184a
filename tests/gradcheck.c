/* gradcheck.c - see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>

double km_gc_dot(const float *out, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

double km_gradcheck(const char *label, km_gc_loss loss, void *ctx, float *x, const float *analytic,
                    size_t n, double h, size_t max_checks) {
    size_t step = n > max_checks ? n / max_checks : 1;
    double max_err = 0, scale = 0;
    size_t worst = 0, checked = 0;
    for (size_t i = 0; i < n; i += step, checked++) {
        float x0 = x[i];
        float xp = (float)(x0 + h), xm = (float)(x0 - h);
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        double num = (lp - lm) / ((double)xp - (double)xm);
        double err = fabs(num - analytic[i]);
        if (fabs(num) > scale) scale = fabs(num);
        if (err > max_err || isnan(err)) {
            max_err = isnan(err) ? INFINITY : err;
            worst = i;
        }
    }
    double rel = max_err / (scale > 1e-12 ? scale : 1e-12);
    printf("    gradcheck %-44s rel_err=%.3g (max_abs_err=%.3g at %zu, max|grad|=%.3g, %zu of %zu)\n",
           label, rel, max_err, worst, scale, checked, n);
    return rel;
}

int km_gradcheck_top(const char *label, km_gc_loss loss, void *ctx, float *x, const float *analytic, size_t n,
                     float h, int k, double rel, double abs_frac) {
    float gmax = 0, prev = INFINITY;
    for (size_t i = 0; i < n; i++) gmax = fmaxf(gmax, fabsf(analytic[i]));
    int bad = 0;
    for (int t = 0; t < k && n; t++) {
        size_t best = n; /* the largest |analytic| below the previous one (ties: the first) */
        for (size_t i = 0; i < n; i++)
            if (fabsf(analytic[i]) < prev && (best == n || fabsf(analytic[i]) > fabsf(analytic[best]))) best = i;
        if (best == n) break;
        prev = fabsf(analytic[best]);
        float x0 = x[best];
        x[best] = x0 + h;
        double lp = loss(ctx);
        x[best] = x0 - h;
        double lm = loss(ctx);
        x[best] = x0;
        double fd = (lp - lm) / ((double)(x0 + h) - (double)(x0 - h)), g0 = analytic[best];
        int ok = fabs(fd - g0) <= rel * fabs(g0) + abs_frac * gmax;
        printf("    %s[%zu]: analytic %.6g, finite difference %.6g%s\n", label, best, g0, fd, ok ? "" : "  <- off");
        bad += !ok;
    }
    return bad;
}

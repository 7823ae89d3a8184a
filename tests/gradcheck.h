/* gradcheck.h - finite-difference gradient checker for the layer library
 * (ggml's test-grad0 idea): compare an analytic gradient with central
 * differences of a scalar objective computed in double.
 *
 *   loss(ctx) runs the op's forward on the current inputs and returns, in
 *   double, a scalar such as sum(out * R) for a fixed random R, so that the
 *   analytic gradient of the inputs is the op's backward applied to dout = R.
 *
 * km_gradcheck perturbs up to max_checks evenly spaced elements of x by +-h
 * (x is float: the actual step (float)(x+h) - (float)(x-h) is used as the
 * denominator), restores them, and returns the worst error relative to the
 * largest gradient checked: max_i |analytic_i - numeric_i| / max_i |numeric_i|.
 * It prints one line with the label, the error and the scale. */
#ifndef KM_GRADCHECK_H
#define KM_GRADCHECK_H

#include <stddef.h>

typedef double (*km_gc_loss)(void *ctx);

double km_gradcheck(const char *label, km_gc_loss loss, void *ctx, float *x, const float *analytic,
                    size_t n, double h, size_t max_checks);

/* The k elements of x with the largest |analytic| (distinct values, in
 * decreasing order) against central differences of step h: each must be
 * within rel * |analytic| + abs_frac * max|analytic|, the rule for gradients
 * behind ReLUs and max-pools, where a step may cross kinks. Prints one line
 * per element; returns how many are off. */
int km_gradcheck_top(const char *label, km_gc_loss loss, void *ctx, float *x, const float *analytic, size_t n,
                     float h, int k, double rel, double abs_frac);

/* sum_i out[i] * r[i] in double: the usual objective. */
double km_gc_dot(const float *out, const float *r, size_t n);

#endif

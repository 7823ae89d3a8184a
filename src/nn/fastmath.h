/* fastmath.h - branch-free float exp and GELU that GCC vectorises inside
 * `#pragma omp simd` loops (glibc's expf/erf are scalar calls here because we
 * do not build with -ffast-math, and the softmax of SAM's global attention
 * alone needs ~10^9 exponentials per image).
 *
 * km_expf_fast: Cephes expf (range reduction by n = rint(x log2 e) with a
 * two-part ln 2, degree-6 polynomial, 2^n by exponent bits); about 1 ulp over
 * [-87.3, 88.3], inputs are clamped to that range (so exp(-inf) gives 2^-126
 * rather than 0, irrelevant next to softmax sums >= 1).
 *
 * km_gelu_fast: 0.5 x erfc(-x / sqrt 2) with the Numerical Recipes erfc
 * (Chebyshev fit, fractional error < 1.2e-7 everywhere) evaluated in float.
 * Measured against double erf over [-12, 12]: max abs error 3.8e-7 (1 ulp at
 * |x| = 12), max relative error 2.3e-6 where |gelu| > 1e-6 (the far negative
 * tail, where the float argument -z^2 of exp loses bits); see
 * tests/test_sam_encoder.c. */
#ifndef KM_FASTMATH_H
#define KM_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float km_expf_fast(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    /* n = round-to-nearest(x log2 e) by the 1.5 * 2^23 trick: floorf() would
     * stop GCC from vectorising the loop without -ffast-math. */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

static inline float km_gelu_fast(float x) {
    float y = x * 0.70710678118654752f;
    float z = fabsf(y);
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float erfc_z = t * km_expf_fast(p - z * z); /* erfc(|y|) */
    float erfc_negy = y >= 0.0f ? 2.0f - erfc_z : erfc_z;
    return 0.5f * x * erfc_negy;
}

#endif

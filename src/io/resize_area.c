/* resize_area.c - OpenCV 4.6 cv::resize(..., INTER_AREA) on 8-bit images, bit
 * for bit (imgproc/src/resize.cpp; docs/teacher-tinyvit.md 3.2). See resize.h
 * for the four cases. Everything here is written from the algorithm's
 * description; the float32 expressions are evaluated in the same order as
 * OpenCV's scalar code and the build keeps -ffp-contract=off (no FMA). */
#include "resize.h"
#include "../core/km.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define AREA_COEF_BITS 11 /* INTER_RESIZE_COEF_BITS */
#define AREA_COEF_ONE (1 << AREA_COEF_BITS)

/* saturate_cast<uchar>(float): round half to even (cvRound), clamp. */
static inline uint8_t sat_u8f(float v) {
    long r = lrintf(v);
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

/* saturate_cast<short>(float) */
static inline int16_t sat_s16f(float v) {
    long r = lrintf(v);
    return (int16_t)(r < -32768 ? -32768 : r > 32767 ? 32767 : r);
}

/* (b) integer factors ix x iy (resizeAreaFast_): per output pixel the integer
 * sum S of its ix*iy source pixels. 2x2 with 1, 3 or 4 channels takes the
 * ResizeAreaFastVec route, (S + 2) >> 2; every other case (2 channels
 * included) saturate_cast<uchar>(S * (1.f / (ix*iy))). */
static void area_fast(const uint8_t *src, int sw, int C, uint8_t *dst, int dw, int dh, int ix,
                      int iy) {
    const int quad = ix == 2 && iy == 2 && (C == 1 || C == 3 || C == 4);
    const float scale = 1.f / (float)(ix * iy);
    const size_t srow = (size_t)sw * C;
    for (int dy = 0; dy < dh; dy++) {
        const uint8_t *s0 = src + (size_t)dy * iy * srow;
        uint8_t *d = dst + (size_t)dy * dw * C;
        for (int dx = 0; dx < dw; dx++)
            for (int c = 0; c < C; c++) {
                int64_t S = 0; /* OpenCV sums in int; int64 avoids overflow for huge cells */
                for (int ky = 0; ky < iy; ky++)
                    for (int kx = 0; kx < ix; kx++) S += s0[ky * srow + (size_t)(dx * ix + kx) * C + c];
                d[(size_t)dx * C + c] = quad ? (uint8_t)((S + 2) >> 2) : sat_u8f((float)S * scale);
            }
    }
}

typedef struct {
    int di, si; /* output index, source index (pixels, not elements) */
    float alpha;
} area_tap;

/* computeResizeAreaTab for one axis, in double; returns the number of taps,
 * in increasing (di, si) order. Taps covering less than 1e-3 of a pixel are
 * dropped. A tap is a (cell, pixel) pair that overlap, and two partitions of
 * [0, ssize) into ssize and dsize intervals have at most ssize + dsize - 1
 * overlapping pairs: tab needs ssize + dsize entries. */
static int area_tab(int ssize, int dsize, double scale, area_tap *tab) {
    int k = 0;
    for (int dx = 0; dx < dsize; dx++) {
        double fsx1 = dx * scale, fsx2 = fsx1 + scale;
        double cell = scale < ssize - fsx1 ? scale : ssize - fsx1;
        int sx1 = (int)ceil(fsx1), sx2 = (int)floor(fsx2);
        if (sx2 > ssize - 1) sx2 = ssize - 1;
        if (sx1 > sx2) sx1 = sx2;
        if (sx1 - fsx1 > 1e-3) tab[k++] = (area_tap){dx, sx1 - 1, (float)((sx1 - fsx1) / cell)};
        for (int sx = sx1; sx < sx2; sx++) tab[k++] = (area_tap){dx, sx, (float)(1.0 / cell)};
        if (fsx2 - sx2 > 1e-3) {
            double part = fsx2 - sx2 < 1.0 ? fsx2 - sx2 : 1.0;
            if (part > cell) part = cell;
            tab[k++] = (area_tap){dx, sx2, (float)(part / cell)};
        }
        KM_ASSERT(k <= ssize + dsize);
    }
    return k;
}

/* (c) general downscale (ResizeArea_Invoker): per output row, for each of its
 * y-taps in increasing order, buf = sum over x-taps of src * alpha (float32,
 * multiply then add), then sum = beta * buf (first tap) or sum + beta * buf. */
static void area_general(const uint8_t *src, int sw, int sh, int C, uint8_t *dst, int dw, int dh,
                         double scale_x, double scale_y) {
    area_tap *xt = km_malloc(sizeof(area_tap) * ((size_t)sw + dw));
    area_tap *yt = km_malloc(sizeof(area_tap) * ((size_t)sh + dh));
    int nx = area_tab(sw, dw, scale_x, xt), ny = area_tab(sh, dh, scale_y, yt);
    size_t W = (size_t)dw * C;
    float *buf = km_malloc(sizeof(float) * W), *sum = km_malloc(sizeof(float) * W);
    int j = 0;
    for (int dy = 0; dy < dh; dy++) {
        KM_ASSERT(j < ny && yt[j].di == dy);
        for (int first = 1; j < ny && yt[j].di == dy; j++, first = 0) {
            const uint8_t *S = src + (size_t)yt[j].si * sw * C;
            const float beta = yt[j].alpha;
            memset(buf, 0, sizeof(float) * W);
            for (int k = 0; k < nx; k++) {
                const uint8_t *s = S + (size_t)xt[k].si * C;
                float *b = buf + (size_t)xt[k].di * C, a = xt[k].alpha;
                for (int c = 0; c < C; c++) b[c] = b[c] + (float)s[c] * a;
            }
            if (first)
                for (size_t i = 0; i < W; i++) sum[i] = beta * buf[i];
            else
                for (size_t i = 0; i < W; i++) sum[i] = sum[i] + beta * buf[i];
        }
        uint8_t *d = dst + (size_t)dy * W;
        for (size_t i = 0; i < W; i++) d[i] = sat_u8f(sum[i]);
    }
    km_free(sum);
    km_free(buf);
    km_free(yt);
    km_free(xt);
}

/* The "area" coordinates of the linear fallback for one axis: source index
 * s[d] and 11-bit weights c0[d], c1[d]. With clamp (the x axis) s is kept
 * inside the source and the result is xmax, the first d whose s+1 falls
 * outside it (the horizontal pass copies beyond it); the y axis is not
 * clamped (its rows are, by the caller). */
static int linear_tab(int ssize, int dsize, double scale, double inv_scale, int clamp, int *s,
                      int16_t *c0, int16_t *c1) {
    int xmax = dsize;
    for (int d = 0; d < dsize; d++) {
        int sx = (int)floor(d * scale);
        float f = (float)((d + 1) - (sx + 1) * inv_scale);
        f = f <= 0 ? 0.f : f - (float)(int)floorf(f);
        if (clamp && sx < 0) f = 0.f, sx = 0;
        if (clamp && sx + 1 >= ssize) {
            if (d < xmax) xmax = d;
            if (sx >= ssize - 1) f = 0.f, sx = ssize - 1;
        }
        s[d] = sx;
        c0[d] = sat_s16f((1.f - f) * (float)AREA_COEF_ONE);
        c1[d] = sat_s16f(f * (float)AREA_COEF_ONE);
    }
    return xmax;
}

/* One output row of the vertical pass (VResizeLinear<uchar, int, short>),
 * with the rounding of OpenCV's SIMD kernel VResizeLinearVec_32s8u:
 * ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2, clamped.
 * Measured against Debian's OpenCV 4.6 (tools/check_inter_area.c) it holds on
 * every element of a row, the last ones of a row whose width is not a
 * multiple of the vector width included; the textbook fixed-point form
 * (h0*b0 + h1*b1 + 2^21) >> 22 differs by one on ~10 % of them. */
static void linear_vrow(uint8_t *d, const int32_t *h0, const int32_t *h1, int b0, int b1, int W) {
    for (int x = 0; x < W; x++) {
        int v = ((((h0[x] >> 4) * b0) >> 16) + (((h1[x] >> 4) * b1) >> 16) + 2) >> 2;
        d[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

/* One source row through the horizontal pass (HResizeLinear, int32). */
static void linear_hrow(int32_t *h, const uint8_t *S, int C, int dw, int xmax, const int *xs,
                        const int16_t *a0, const int16_t *a1) {
    for (int dx = 0; dx < dw; dx++)
        for (int c = 0; c < C; c++) {
            const uint8_t *p = S + (size_t)xs[dx] * C + c;
            h[(size_t)dx * C + c] = dx < xmax ? p[0] * a0[dx] + p[C] * a1[dx] : p[0] * AREA_COEF_ONE;
        }
}

/* (d) upscale on either axis: OpenCV's fixed-point linear resampler with the
 * area coordinates of linear_tab on both axes; source rows s and s+1 (clamped
 * to the last row). */
static void area_linear(const uint8_t *src, int sw, int sh, int C, uint8_t *dst, int dw, int dh,
                        double scale_x, double inv_x, double scale_y, double inv_y) {
    int *xs = km_malloc(sizeof(int) * (size_t)(dw + dh)), *ys = xs + dw;
    int16_t *t = km_malloc(sizeof(int16_t) * 2 * (size_t)(dw + dh));
    int16_t *a0 = t, *a1 = t + dw, *b0 = t + 2 * dw, *b1 = b0 + dh;
    int xmax = linear_tab(sw, dw, scale_x, inv_x, 1, xs, a0, a1);
    linear_tab(sh, dh, scale_y, inv_y, 0, ys, b0, b1);
    const int W = dw * C;
    int32_t *h = km_malloc(sizeof(int32_t) * 2 * (size_t)W), *h1 = h + W;
    for (int dy = 0; dy < dh; dy++) {
        int r0 = ys[dy] < sh ? ys[dy] : sh - 1, r1 = ys[dy] + 1 < sh ? ys[dy] + 1 : sh - 1;
        linear_hrow(h, src + (size_t)r0 * sw * C, C, dw, xmax, xs, a0, a1);
        linear_hrow(h1, src + (size_t)r1 * sw * C, C, dw, xmax, xs, a0, a1);
        linear_vrow(dst + (size_t)dy * W, h, h1, b0[dy], b1[dy], W);
    }
    km_free(h);
    km_free(t);
    km_free(xs);
}

void km_resize_area_u8(const uint8_t *src, int sw, int sh, int C, uint8_t *dst, int dw, int dh) {
    KM_ASSERT(src && dst && sw > 0 && sh > 0 && dw > 0 && dh > 0 && C >= 1 && C <= 4);
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * C);
        return;
    }
    const double inv_x = (double)dw / sw, inv_y = (double)dh / sh;
    const double scale_x = 1.0 / inv_x, scale_y = 1.0 / inv_y;
    if (scale_x >= 1 && scale_y >= 1) {
        int ix = (int)lrint(scale_x), iy = (int)lrint(scale_y);
        if (fabs(scale_x - ix) < DBL_EPSILON && fabs(scale_y - iy) < DBL_EPSILON) {
            KM_ASSERT(sw == dw * ix && sh == dh * iy);
            area_fast(src, sw, C, dst, dw, dh, ix, iy);
        } else {
            area_general(src, sw, sh, C, dst, dw, dh, scale_x, scale_y);
        }
        return;
    }
    area_linear(src, sw, sh, C, dst, dw, dh, scale_x, inv_x, scale_y, inv_y);
}

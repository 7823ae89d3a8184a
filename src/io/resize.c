/* resize.c - Pillow-exact uint8 bilinear resampling (see resize.h). */
#include "resize.h"
#include "../core/km.h"

#include <math.h>
#include <string.h>

#define PIL_PRECISION_BITS 22 /* Resample.c: 32 - 8 - 2 */

typedef struct {
    int ksize;
    int *bounds; /* [out, 2]: first input index, number of taps */
    int32_t *kk; /* [out, ksize] fixed-point weights */
} pil_coeffs;

static double tri(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Resample.c precompute_coeffs, in0 = 0, in1 = in: the normalised double
 * weights kd [out, ksize] (bounds as above); the 8-bit path quantises them. */
static double *pil_precompute_double(int in, int out, int *ksize_out, int *bounds) {
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    *ksize_out = ksize;
    double *kd = km_malloc(sizeof(double) * (size_t)ksize * out);
    for (int xx = 0; xx < out; xx++) {
        double center = 0.0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        double *k = kd + (size_t)xx * ksize;
        int x = 0;
        for (; x < xmax; x++) {
            double wt = tri((x + xmin - center + 0.5) * ss);
            k[x] = wt;
            ww += wt;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0.0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    return kd;
}

/* Resample.c precompute_coeffs + normalize_coeffs_8bpc, in0 = 0, in1 = in. */
static void pil_precompute(pil_coeffs *pc, int in, int out) {
    pc->bounds = km_malloc(sizeof(int) * 2 * (size_t)out);
    double *kd = pil_precompute_double(in, out, &pc->ksize, pc->bounds);
    size_t n = (size_t)pc->ksize * out;
    pc->kk = km_malloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++)
        pc->kk[i] = kd[i] < 0 ? (int32_t)(-0.5 + kd[i] * (1 << PIL_PRECISION_BITS))
                              : (int32_t)(0.5 + kd[i] * (1 << PIL_PRECISION_BITS));
    km_free(kd);
}

static void pil_free(pil_coeffs *pc) {
    km_free(pc->bounds);
    km_free(pc->kk);
}

static inline uint8_t clip8(int32_t v) {
    int32_t s = v >> PIL_PRECISION_BITS; /* arithmetic shift, as Pillow's lookup index */
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

void km_resize_pil_bilinear(uint8_t *out, int ow, int oh, const uint8_t *in, int w, int h, int c) {
    KM_ASSERT(out && in && ow > 0 && oh > 0 && w > 0 && h > 0 && c > 0);
    const uint8_t *src = in;
    uint8_t *tmp = NULL;
    if (ow != w) {
        pil_coeffs pc;
        pil_precompute(&pc, w, ow);
        tmp = km_malloc((size_t)h * ow * c);
        for (int y = 0; y < h; y++) {
            const uint8_t *row = in + (size_t)y * w * c;
            uint8_t *orow = tmp + (size_t)y * ow * c;
            for (int xx = 0; xx < ow; xx++) {
                int xmin = pc.bounds[2 * xx], xn = pc.bounds[2 * xx + 1];
                const int32_t *k = pc.kk + (size_t)xx * pc.ksize;
                for (int ch = 0; ch < c; ch++) {
                    int32_t ss = 1 << (PIL_PRECISION_BITS - 1);
                    for (int x = 0; x < xn; x++) ss += row[(size_t)(x + xmin) * c + ch] * k[x];
                    orow[(size_t)xx * c + ch] = clip8(ss);
                }
            }
        }
        pil_free(&pc);
        src = tmp;
    }
    if (oh != h) {
        pil_coeffs pc;
        pil_precompute(&pc, h, oh);
        size_t rowlen = (size_t)ow * c;
        for (int yy = 0; yy < oh; yy++) {
            int ymin = pc.bounds[2 * yy], yn = pc.bounds[2 * yy + 1];
            const int32_t *k = pc.kk + (size_t)yy * pc.ksize;
            uint8_t *orow = out + (size_t)yy * rowlen;
            for (size_t i = 0; i < rowlen; i++) {
                int32_t ss = 1 << (PIL_PRECISION_BITS - 1);
                for (int y = 0; y < yn; y++) ss += src[(size_t)(y + ymin) * rowlen + i] * k[y];
                orow[i] = clip8(ss);
            }
        }
        pil_free(&pc);
    } else {
        memcpy(out, src, (size_t)h * ow * c);
    }
    km_free(tmp);
}

/* Pillow's 32bpc passes (ImagingResampleHorizontal/Vertical_32bpc): double
 * weights, double sum, stored as float. */
void km_resize_pil_bilinear_f32(float *out, int ow, int oh, const float *in, int w, int h) {
    KM_ASSERT(out && in && ow > 0 && oh > 0 && w > 0 && h > 0);
    const float *src = in;
    float *tmp = NULL;
    int ksize;
    if (ow != w) {
        int *bounds = km_malloc(sizeof(int) * 2 * (size_t)ow);
        double *kd = pil_precompute_double(w, ow, &ksize, bounds);
        tmp = km_malloc(sizeof(float) * (size_t)h * ow);
        for (int y = 0; y < h; y++) {
            const float *row = in + (size_t)y * w;
            for (int xx = 0; xx < ow; xx++) {
                int xmin = bounds[2 * xx], xn = bounds[2 * xx + 1];
                const double *k = kd + (size_t)xx * ksize;
                double ss = 0.0;
                for (int x = 0; x < xn; x++) ss += row[x + xmin] * k[x];
                tmp[(size_t)y * ow + xx] = (float)ss;
            }
        }
        km_free(kd);
        km_free(bounds);
        src = tmp;
    }
    if (oh != h) {
        int *bounds = km_malloc(sizeof(int) * 2 * (size_t)oh);
        double *kd = pil_precompute_double(h, oh, &ksize, bounds);
        for (int yy = 0; yy < oh; yy++) {
            int ymin = bounds[2 * yy], yn = bounds[2 * yy + 1];
            const double *k = kd + (size_t)yy * ksize;
            float *orow = out + (size_t)yy * ow;
            for (int xx = 0; xx < ow; xx++) {
                double ss = 0.0;
                for (int y = 0; y < yn; y++) ss += src[(size_t)(y + ymin) * ow + xx] * k[y];
                orow[xx] = (float)ss;
            }
        }
        km_free(kd);
        km_free(bounds);
    } else {
        memcpy(out, src, sizeof(float) * (size_t)h * ow);
    }
    km_free(tmp);
}

/* ------------------------------------------------------------------------ */
/* scikit-image resize(order=3, anti_aliasing=True) via scipy.ndimage.      */

/* scipy ndimage 'mirror' boundary for an integer index (ni_interpolation.c). */
static long mirror_index(long idx, long len) {
    if (len <= 1) return 0;
    long s2 = 2 * len - 2;
    if (idx < 0) {
        idx = s2 * (-idx / s2) + idx;
        idx = idx <= 1 - len ? idx + s2 : -idx;
    } else if (idx >= len) {
        idx -= s2 * (idx / s2);
        if (idx >= len) idx = s2 - idx;
    }
    return idx;
}

/* The same for a coordinate (map_coordinate, NI_EXTEND_MIRROR). */
static double mirror_coord(double in, long len) {
    if (in < 0) {
        if (len <= 1) return 0;
        long sz2 = 2 * len - 2;
        in = sz2 * (long)(-in / sz2) + in;
        in = in <= 1 - len ? in + sz2 : -in;
    } else if (in > len - 1) {
        if (len <= 1) return 0;
        long sz2 = 2 * len - 2;
        in -= sz2 * (long)(in / sz2);
        if (in >= len) in = sz2 - in;
    }
    return in;
}

/* numpy's pairwise summation (umath loops, PW_BLOCKSIZE 128) of n doubles. */
static double np_pairwise_sum(const double *a, long n) {
    if (n < 8) {
        double r = 0.0;
        for (long i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        long i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    long n2 = n / 2;
    n2 -= n2 % 8;
    return np_pairwise_sum(a, n2) + np_pairwise_sum(a + n2, n - n2);
}

/* Runs `fn` on every 1-D line of a contiguous [d0, d1, d2] array along
 * `axis` (copied through a contiguous per-thread buffer; `tmp` is scratch of
 * tmp_len doubles for fn). Lines are independent, so threads do not change
 * the result. */
typedef void (*line_fn)(double *line, long len, void *ctx, double *tmp);

static void for_each_line(double *a, const long dims[3], int axis, line_fn fn, void *ctx,
                          long tmp_len) {
    const long strides[3] = {dims[1] * dims[2], dims[2], 1};
    const int p = axis == 0 ? 1 : 0, q = axis == 2 ? 1 : 2; /* the other two axes */
    const long len = dims[axis], stride = strides[axis], nq = dims[q];
#pragma omp parallel if (dims[p] * nq * len > 65536)
    {
        double *line = km_malloc(sizeof(double) * (size_t)len);
        double *tmp = km_malloc(sizeof(double) * (size_t)(tmp_len > 0 ? tmp_len : 1));
#pragma omp for schedule(static)
        for (long pq = 0; pq < dims[p] * nq; pq++) {
            double *base = a + (pq / nq) * strides[p] + (pq % nq) * strides[q];
            for (long k = 0; k < len; k++) line[k] = base[k * stride];
            fn(line, len, ctx, tmp);
            for (long k = 0; k < len; k++) base[k * stride] = line[k];
        }
        km_free(line);
        km_free(tmp);
    }
}

typedef struct {
    const double *w; /* 2r+1 symmetric weights */
    long r;
} gauss_ctx;

/* correlate1d, symmetric-kernel path (ni_filters.c), mirror extension. */
static void gauss_line(double *line, long len, void *vctx, double *ext) {
    const gauss_ctx *g = vctx;
    long r = g->r;
    for (long k = -r; k < len + r; k++) ext[k + r] = line[mirror_index(k, len)];
    const double *fw = g->w + r;
    for (long i = 0; i < len; i++) {
        const double *il = ext + r + i;
        double o = il[0] * fw[0];
        for (long j = -r; j < 0; j++) o += (il[j] + il[-j]) * fw[j];
        line[i] = o;
    }
}

/* ni_splines.c apply_filter for order 3, NI_EXTEND_MIRROR. */
static void spline_line(double *c, long n, void *ctx, double *tmp) {
    (void)ctx;
    (void)tmp;
    if (n <= 1) return;
    const double z = -0.267949192431122706472553658494127633; /* sqrt(3) - 2 */
    const double gain = (1.0 - z) * (1.0 - 1.0 / z);
    for (long i = 0; i < n; i++) c[i] *= gain;
    double z_i = z, z_n_1 = pow(z, (double)(n - 1));
    c[0] = c[0] + z_n_1 * c[n - 1];
    for (long i = 1; i < n - 1; i++) {
        c[0] += z_i * (c[i] + z_n_1 * c[n - 1 - i]);
        z_i *= z;
    }
    c[0] /= 1 - z_n_1 * z_n_1;
    for (long i = 1; i < n; i++) c[i] += z * c[i - 1];
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1);
    for (long i = n - 2; i >= 0; i--) c[i] = z * (c[i + 1] - c[i]);
}

/* get_spline_interpolation_weights, order 3. */
static void cubic_weights(double x, double w[4]) {
    x -= floor(x);
    double y = x, z = 1.0 - x;
    w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
    w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
    w[0] = z * z * z / 6.0;
    w[3] = 1.0;
    for (int i = 0; i < 3; i++) w[3] -= w[i];
}

/* Per output index along one axis: 4 source indices (mirrored) and weights. */
static void zoom_axis(long *idx, double *wt, long out_len, long in_len) {
    double zoom = (double)in_len / (double)out_len;
    for (long k = 0; k < out_len; k++) {
        double cc = (double)k;
        cc += 0.5;
        cc *= zoom;
        cc -= 0.5;
        cc = mirror_coord(cc, in_len);
        long start = (long)floor(cc) - 1;
        for (int t = 0; t < 4; t++) idx[k * 4 + t] = mirror_index(start + t, in_len);
        cubic_weights(cc, wt + k * 4);
    }
}

void km_resize_skimage_cubic(uint8_t *out, int ow, int oh, const uint8_t *in, int w, int h, int c) {
    KM_ASSERT(out && in && ow > 0 && oh > 0 && w > 0 && h > 0 && c > 0);
    const long dims[3] = {h, w, c};
    size_t n = (size_t)h * w * c;
    double *a = km_malloc(sizeof(double) * n);
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < n; i++) {
        a[i] = in[i];
        if (in[i] < mn) mn = in[i];
        if (in[i] > mx) mx = in[i];
    }
    /* 1. anti-aliasing Gaussian (gaussian_filter skips sigma <= 1e-15). */
    const double factors[2] = {(double)h / oh, (double)w / ow};
    for (int ax = 0; ax < 2; ax++) {
        double sigma = (factors[ax] - 1) / 2;
        if (!(sigma > 1e-15)) continue;
        long r = (long)(4.0 * sigma + 0.5);
        double *wts = km_malloc(sizeof(double) * (size_t)(2 * r + 1));
        double c2 = -0.5 / (sigma * sigma);
        for (long x = -r; x <= r; x++) wts[x + r] = exp(c2 * (double)x * (double)x);
        double s = np_pairwise_sum(wts, 2 * r + 1);
        for (long i = 0; i < 2 * r + 1; i++) wts[i] /= s;
        gauss_ctx g = {wts, r};
        for_each_line(a, dims, ax, gauss_line, &g, dims[ax] + 2 * r);
        km_free(wts);
    }
    /* 2. spline prefilter along every axis, channel included. */
    for (int ax = 0; ax < 3; ax++) for_each_line(a, dims, ax, spline_line, NULL, 0);
    /* 3. zoom. */
    long *iy = km_malloc(sizeof(long) * 4 * (size_t)oh), *ix = km_malloc(sizeof(long) * 4 * (size_t)ow);
    long *ic = km_malloc(sizeof(long) * 4 * (size_t)c);
    double *wy = km_malloc(sizeof(double) * 4 * (size_t)oh), *wx = km_malloc(sizeof(double) * 4 * (size_t)ow);
    double *wc = km_malloc(sizeof(double) * 4 * (size_t)c);
    zoom_axis(iy, wy, oh, h);
    zoom_axis(ix, wx, ow, w);
    zoom_axis(ic, wc, c, c);
#pragma omp parallel for schedule(static) if ((long)oh * ow * c > 65536)
    for (long oy = 0; oy < oh; oy++)
        for (long ox = 0; ox < ow; ox++)
            for (long oc = 0; oc < c; oc++) {
                double t = 0.0;
                for (int a0 = 0; a0 < 4; a0++)
                    for (int a1 = 0; a1 < 4; a1++)
                        for (int a2 = 0; a2 < 4; a2++) {
                            double coeff = a[((size_t)iy[oy * 4 + a0] * w + ix[ox * 4 + a1]) * c +
                                             ic[oc * 4 + a2]];
                            coeff *= wy[oy * 4 + a0];
                            coeff *= wx[ox * 4 + a1];
                            coeff *= wc[oc * 4 + a2];
                            t += coeff;
                        }
                /* 4. clip to the input range, numpy astype(uint8) truncates. */
                t = t < mn ? mn : t > mx ? mx : t;
                out[((size_t)oy * ow + ox) * c + oc] = (uint8_t)t;
            }
    km_free(iy); km_free(ix); km_free(ic); km_free(wy); km_free(wx); km_free(wc);
    km_free(a);
}

void km_resize_bilinear_f32(float *out, int ow, int oh, const float *in, int w, int h) {
    double sx = (double)w / ow, sy = (double)h / oh;
    for (int y = 0; y < oh; y++) {
        double fy = (y + 0.5) * sy - 0.5;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        double wy = fy - y0;
        for (int x = 0; x < ow; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            double wx = fx - x0;
            double a = in[(size_t)y0 * w + x0] * (1 - wx) + in[(size_t)y0 * w + x1] * wx;
            double b = in[(size_t)y1 * w + x0] * (1 - wx) + in[(size_t)y1 * w + x1] * wx;
            out[(size_t)y * ow + x] = (float)(a * (1 - wy) + b * wy);
        }
    }
}

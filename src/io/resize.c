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

/* Resample.c precompute_coeffs + normalize_coeffs_8bpc, in0 = 0, in1 = in. */
static void pil_precompute(pil_coeffs *pc, int in, int out) {
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    pc->ksize = ksize;
    pc->bounds = km_malloc(sizeof(int) * 2 * (size_t)out);
    pc->kk = km_malloc(sizeof(int32_t) * (size_t)ksize * out);
    double *k = km_malloc(sizeof(double) * (size_t)ksize);
    for (int xx = 0; xx < out; xx++) {
        double center = 0.0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        int x = 0;
        for (; x < xmax; x++) {
            double wt = tri((x + xmin - center + 0.5) * ss);
            k[x] = wt;
            ww += wt;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0.0;
        int32_t *kq = pc->kk + (size_t)xx * ksize;
        for (x = 0; x < ksize; x++)
            kq[x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << PIL_PRECISION_BITS))
                             : (int32_t)(0.5 + k[x] * (1 << PIL_PRECISION_BITS));
        pc->bounds[2 * xx] = xmin;
        pc->bounds[2 * xx + 1] = xmax;
    }
    km_free(k);
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

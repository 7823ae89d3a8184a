/* sam_postprocess.c - bilinear resampling with PyTorch's float32 index maths
 * (aten/src/ATen/native/UpSample.h area_pixel_compute_source_index,
 * cpu/UpSampleKernel.cpp) and SAM / MedSAM / LiteMedSAM mask post-processing. */
#include "sam_postprocess.h"
#include "sam_prompt.h"
#include "../core/km.h"

#include <math.h>
#include <string.h>

/* One axis: source indices and weights for output index o. The scale is the
 * float32 in/out, but the source coordinate and its fractional part are formed
 * in double and rounded once (as PyTorch 1.13's CPU kernel does; measured
 * bit-exact on its weights for 1024->247, 759->183, 300->1000). Rounding the
 * coordinate to float32 first moves the weights by up to half an ulp of the
 * coordinate (3e-5 at 1000) and SAM's mask logits by ~3e-5. */
static inline void src_index(float scale, int o, int in, int *i0, int *i1, float *l0, float *l1) {
    double s = (double)scale * ((double)o + 0.5) - 0.5;
    if (s < 0.0) s = 0.0;
    int i = (int)s;
    float l = (float)(s - (double)i);
    l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *l1 = l;
    *l0 = 1.0f - l;
}

/* Horizontal pass of source row y for every output column, the first half of
 * the reference's expression: h[x] = r[x0] * b0 + r[x1] * b1. */
static void hrow(float *h, const float *in, int IW, int y, const int *xi, const float *xl, int n) {
    const float *r = in + (size_t)y * IW;
    for (int x = 0; x < n; x++) {
        float t = r[xi[2 * x]] * xl[2 * x];
        t += r[xi[2 * x + 1]] * xl[2 * x + 1];
        h[x] = t;
    }
}

/* Per-thread cache of the two most recent horizontal rows: slot_for returns
 * the row of source row y, computing it into the slot that does not hold
 * `keep` when it is not there. */
typedef struct {
    float *h[2];
    int row[2];
} hcache;

static const float *slot_for(hcache *c, int y, int keep, const float *in, int IW, const int *xi,
                             const float *xl, int n) {
    if (c->row[0] == y) return c->h[0];
    if (c->row[1] == y) return c->h[1];
    int k = c->row[0] == keep ? 1 : 0;
    hrow(c->h[k], in, IW, y, xi, xl, n);
    c->row[k] = y;
    return c->h[k];
}

/* The value l0_y (l0_x a + l1_x b) + l1_y (l0_x c + l1_x d) is evaluated in
 * that order, but the horizontal halves of a source row are computed once per
 * thread and reused by every output row that reads it (4 output rows per
 * source row when upsampling 256 -> 1024), and the column indices and
 * weights once per call. */
void km_bilinear_resize(float *out, const float *in, int IH, int IW, int OH, int OW, int crop_h,
                        int crop_w) {
    KM_ASSERT(IH > 0 && IW > 0 && OH > 0 && OW > 0);
    KM_ASSERT(crop_h >= 0 && crop_h <= OH && crop_w >= 0 && crop_w <= OW);
    if (crop_h == 0 || crop_w == 0) return;
    const float sh = (float)IH / (float)OH, sw = (float)IW / (float)OW;
    int *xi = km_malloc(sizeof(int) * 2 * crop_w);
    float *xl = km_malloc(sizeof(float) * 2 * crop_w);
    for (int x = 0; x < crop_w; x++)
        src_index(sw, x, IW, &xi[2 * x], &xi[2 * x + 1], &xl[2 * x], &xl[2 * x + 1]);
#pragma omp parallel if ((size_t)crop_h * crop_w > 16384)
    {
        hcache c = {{km_malloc(sizeof(float) * crop_w), km_malloc(sizeof(float) * crop_w)},
                    {-1, -1}};
#pragma omp for schedule(static)
        for (int y = 0; y < crop_h; y++) {
            int y0, y1;
            float a0, a1;
            src_index(sh, y, IH, &y0, &y1, &a0, &a1);
            const float *t0 = slot_for(&c, y0, y1, in, IW, xi, xl, crop_w);
            const float *t1 = slot_for(&c, y1, y0, in, IW, xi, xl, crop_w);
            float *o = out + (size_t)y * crop_w;
#pragma omp simd
            for (int x = 0; x < crop_w; x++) {
                float v = t0[x] * a0;
                v += t1[x] * a1;
                o[x] = v;
            }
        }
        km_free(c.h[0]);
        km_free(c.h[1]);
    }
    km_free(xi);
    km_free(xl);
}

size_t km_sam_postprocess_work_floats(int input_h, int input_w) {
    return (size_t)input_h * input_w;
}

void km_sam_postprocess(float *out, const float *lowres, int C, int input_h, int input_w, int H,
                        int W, float *work) {
    const int L = KM_SAM_MASK_HW, S = KM_SAM_INPUT;
    KM_ASSERT(input_h > 0 && input_h <= S && input_w > 0 && input_w <= S);
    for (int c = 0; c < C; c++) {
        km_bilinear_resize(work, lowres + (size_t)c * L * L, L, L, S, S, input_h, input_w);
        km_bilinear_resize(out + (size_t)c * H * W, work, input_h, input_w, H, W, H, W);
    }
}

void km_medsam_postprocess(float *out, const float *lowres, int C, int H, int W, float *work) {
    const int L = KM_SAM_MASK_HW;
    for (int c = 0; c < C; c++) {
        const float *z = lowres + (size_t)c * L * L;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < L * L; i++) work[i] = 1.0f / (1.0f + expf(-z[i]));
        km_bilinear_resize(out + (size_t)c * H * W, work, L, L, H, W, H, W);
    }
}

void km_litemedsam_postprocess(float *out, const float *lowres, int C, int new_h, int new_w, int H,
                               int W, float *work) {
    const int L = KM_SAM_MASK_HW;
    KM_ASSERT(new_h > 0 && new_h <= L && new_w > 0 && new_w <= L && H > 0 && W > 0);
    for (int c = 0; c < C; c++) {
        const float *z = lowres + (size_t)c * L * L;
        for (int y = 0; y < new_h; y++)
            memcpy(work + (size_t)y * new_w, z + (size_t)y * L, sizeof(float) * new_w);
        km_bilinear_resize(out + (size_t)c * H * W, work, new_h, new_w, H, W, H, W);
    }
}

int km_litemedsam_mask(float logit) {
    return 1.0f / (1.0f + expf(-logit)) > 0.5f;
}

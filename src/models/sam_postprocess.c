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

void km_bilinear_resize(float *out, const float *in, int IH, int IW, int OH, int OW, int crop_h,
                        int crop_w) {
    KM_ASSERT(IH > 0 && IW > 0 && OH > 0 && OW > 0);
    KM_ASSERT(crop_h >= 0 && crop_h <= OH && crop_w >= 0 && crop_w <= OW);
    const float sh = (float)IH / (float)OH, sw = (float)IW / (float)OW;
#pragma omp parallel for schedule(static) if ((size_t)crop_h * crop_w > 16384)
    for (int y = 0; y < crop_h; y++) {
        int y0, y1;
        float a0, a1;
        src_index(sh, y, IH, &y0, &y1, &a0, &a1);
        const float *r0 = in + (size_t)y0 * IW, *r1 = in + (size_t)y1 * IW;
        float *o = out + (size_t)y * crop_w;
        for (int x = 0; x < crop_w; x++) {
            int x0, x1;
            float b0, b1;
            src_index(sw, x, IW, &x0, &x1, &b0, &b1);
            float t0 = r0[x0] * b0;
            t0 += r0[x1] * b1;
            float t1 = r1[x0] * b0;
            t1 += r1[x1] * b1;
            float v = t0 * a0;
            v += t1 * a1;
            o[x] = v;
        }
    }
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

/* sam_preprocess.c - SamPredictor / MedSAM / LiteMedSAM input pre-processing (see
 * sam_preprocess.h). */
#include "sam_preprocess.h"
#include "../core/km.h"
#include "../io/resize.h"

#include <string.h>

/* Sam.pixel_mean / pixel_std are float32 buffers built from these literals. */
const float km_sam_pixel_mean[3] = {123.675f, 116.28f, 103.53f};
const float km_sam_pixel_std[3] = {58.395f, 57.12f, 57.375f};

void km_sam_preprocess_shape(int h, int w, int long_side, int *new_h, int *new_w) {
    KM_ASSERT(h > 0 && w > 0 && long_side > 0);
    double scale = long_side * 1.0 / (h > w ? h : w);
    double nh = h * scale, nw = w * scale;
    if (new_h) *new_h = (int)(nh + 0.5);
    if (new_w) *new_w = (int)(nw + 0.5);
}

void km_sam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *new_h,
                       int *new_w) {
    KM_ASSERT(out && rgb && S > 0 && (c == 1 || c == 3));
    int nh, nw;
    km_sam_preprocess_shape(h, w, S, &nh, &nw);
    KM_ASSERT(nh >= 1 && nw >= 1 && nh <= S && nw <= S);
    /* Each channel is resampled independently, so resizing grey and then
     * replicating equals replicating first. */
    uint8_t *rs = km_malloc((size_t)nh * nw * c);
    km_resize_pil_bilinear(rs, nw, nh, rgb, w, h, c);
    memset(out, 0, sizeof(float) * 3 * (size_t)S * S);
    for (int ch = 0; ch < 3; ch++) {
        int sc = c == 3 ? ch : 0;
        float mean = km_sam_pixel_mean[ch], std = km_sam_pixel_std[ch];
        float *plane = out + (size_t)ch * S * S;
        for (int y = 0; y < nh; y++)
            for (int x = 0; x < nw; x++)
                plane[(size_t)y * S + x] = ((float)rs[((size_t)y * nw + x) * c + sc] - mean) / std;
    }
    km_free(rs);
    if (new_h) *new_h = nh;
    if (new_w) *new_w = nw;
}

/* numpy: (img - img.min()) / np.clip(img.max() - img.min(), 1e-8, None) on
 * the uint8 array gives float64; torch.tensor(...).float() rounds to float32. */
void km_medsam_normalize(float *out, int S, const uint8_t *rgb, int c) {
    KM_ASSERT(out && rgb && S > 0 && (c == 1 || c == 3));
    size_t n = (size_t)S * S * c;
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (rgb[i] < mn) mn = rgb[i];
        if (rgb[i] > mx) mx = rgb[i];
    }
    double den = mx - mn > 0 ? (double)(mx - mn) : 1e-8;
    for (int ch = 0; ch < 3; ch++) {
        int sc = c == 3 ? ch : 0;
        float *plane = out + (size_t)ch * S * S;
        for (size_t p = 0; p < (size_t)S * S; p++)
            plane[p] = (float)((double)(rgb[p * c + sc] - mn) / den);
    }
}

void km_medsam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c) {
    KM_ASSERT(out && rgb && S > 0 && w > 0 && h > 0 && (c == 1 || c == 3));
    /* np.repeat(img[:, :, None], 3, -1) before the resize: the resize's
     * channel axis then has length 3, which changes its arithmetic. */
    const uint8_t *src = rgb;
    uint8_t *rep = NULL;
    if (c == 1) {
        rep = km_malloc((size_t)w * h * 3);
        for (size_t i = 0; i < (size_t)w * h; i++) rep[3 * i] = rep[3 * i + 1] = rep[3 * i + 2] = rgb[i];
        src = rep;
    }
    uint8_t *rs = km_malloc((size_t)S * S * 3);
    km_resize_skimage_cubic(rs, S, S, src, w, h, 3);
    km_medsam_normalize(out, S, rs, 3);
    km_free(rs);
    km_free(rep);
}

void km_litemedsam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *new_h,
                              int *new_w) {
    KM_ASSERT(out && rgb && S > 0 && w > 0 && h > 0 && (c == 1 || c == 3));
    int nh, nw;
    km_sam_preprocess_shape(h, w, S, &nh, &nw);
    KM_ASSERT(nh >= 1 && nw >= 1 && nh <= S && nw <= S);
    /* INTER_AREA treats channels independently (its 2x2 rule is the same for
     * 1 and 3 channels), so resizing grey and replicating afterwards equals
     * the reference's resize of the 3-channel image. */
    size_t n = (size_t)nh * nw * c;
    uint8_t *rs = km_malloc(n);
    km_resize_area_u8(rgb, w, h, c, rs, nw, nh);
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (rs[i] < mn) mn = rs[i];
        if (rs[i] > mx) mx = rs[i];
    }
    /* np.clip(max - min, 1e-8, None) makes the quotient float64 */
    double den = mx > mn ? (double)(mx - mn) : 1e-8;
    memset(out, 0, sizeof(float) * 3 * (size_t)S * S);
    for (int ch = 0; ch < 3; ch++) {
        int sc = c == 3 ? ch : 0;
        float *plane = out + (size_t)ch * S * S;
        for (int y = 0; y < nh; y++)
            for (int x = 0; x < nw; x++)
                plane[(size_t)y * S + x] =
                    (float)((double)(rs[((size_t)y * nw + x) * c + sc] - mn) / den);
    }
    km_free(rs);
    if (new_h) *new_h = nh;
    if (new_w) *new_w = nw;
}

/* ratio = 256 / max(original_size) (a Python float), then int(box * ratio). */
float km_litemedsam_box_coord(float v, int w, int h, int S) {
    KM_ASSERT(w > 0 && h > 0 && S > 0);
    double ratio = S / (double)(h > w ? h : w);
    return (float)(int)((double)v * ratio);
}

float km_litemedsam_point_coord(float v, int w, int h, int S) {
    KM_ASSERT(w > 0 && h > 0 && S > 0);
    double ratio = S / (double)(h > w ? h : w);
    return (float)((double)v * ratio);
}

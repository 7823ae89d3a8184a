/* test_resize_f32.c - km_resize_bilinear_f32 (io/resize.h), the half-pixel
 * bilinear `kmseg predict` brings the student's logits to the original size
 * with: values by hand, and why neither resampler that was already in the
 * library replaces it (measured differences). */
#include "test.h"

#include "../src/core/rng.h"
#include "../src/io/resize.h"
#include "../src/models/sam_postprocess.h"

#include <string.h>

KM_TEST(resize_bilinear_f32_by_hand) {
    /* in[y][x] = 2y + x on 2 x 2, enlarged to 4 x 4: source positions
     * max((i + 0.5) / 2 - 0.5, 0) = 0, 0.25, 0.75, 1.25 -> clamped 1, so
     * out[y][x] = 2 t(y) + t(x) with t = 0, 0.25, 0.75, 1 (exact in binary) */
    const float in[4] = {0, 1, 2, 3};
    const float t[4] = {0, 0.25f, 0.75f, 1};
    float out[16];
    km_resize_bilinear_f32(out, 4, 4, in, 2, 2);
    int bad = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) bad += out[y * 4 + x] != 2 * t[y] + t[x];
    CHECK_MSG(bad == 0, "%d values differ", bad);
    /* shrinking 4 -> 2 is not antialiased: positions 0.5 and 2.5 */
    const float row[4] = {0, 1, 2, 3};
    float o2[2];
    km_resize_bilinear_f32(o2, 2, 1, row, 4, 1);
    CHECK(o2[0] == 0.5f && o2[1] == 2.5f);
    /* same size: an exact copy */
    float o3[4];
    km_resize_bilinear_f32(o3, 2, 2, in, 2, 2);
    CHECK(!memcmp(o3, in, sizeof in));
}

/* The two resamplers the library had: km_bilinear_resize (torch's float32
 * arithmetic, sam_postprocess.h) is the same interpolation but not the same
 * bits, so using it would move predict's logits (by up to 1.8e-4 here, so
 * mask pixels whose logit is that close to 0 could flip); km_resize_pil_bilinear_f32 antialiases when
 * shrinking, a different filter. Measured on a Kvasir-like case (student
 * frame 160 x 128 -> original 622 x 529, logits in [-20, 20]). */
KM_TEST(resize_bilinear_f32_vs_library_resamplers) {
    const int iw = 160, ih = 128, ow = 622, oh = 529;
    float *in = km_malloc(sizeof(float) * iw * ih), *a = km_malloc(sizeof(float) * ow * oh),
          *b = km_malloc(sizeof(float) * ow * oh), *c = km_malloc(sizeof(float) * 80 * 64);
    km_rng rng;
    km_rng_seed(&rng, 7);
    for (int i = 0; i < iw * ih; i++) in[i] = 40.0f * (float)km_rng_uniform(&rng) - 20.0f;
    km_resize_bilinear_f32(a, ow, oh, in, iw, ih);
    km_bilinear_resize(b, in, ih, iw, oh, ow, oh, ow);
    km_cmp d = km_compare("bilinear double vs torch float32", b, a, (size_t)ow * oh);
    long same = 0;
    for (long i = 0; i < (long)ow * oh; i++) same += a[i] == b[i];
    printf("    %ld of %ld values bit-identical\n", same, (long)ow * oh);
    /* close (same formula; measured max 1.8e-4, 1 % of values identical:
     * torch's weights are float32) but not identical: not a replacement */
    CHECK(d.max_abs > 0 && d.max_abs < 1e-3 && same < (long)ow * oh / 10);
    /* shrinking 2x: Pillow's filter averages 4 taps per axis (antialiased), this one 2 */
    km_resize_bilinear_f32(c, 80, 64, in, iw, ih);
    float *p = km_malloc(sizeof(float) * 80 * 64);
    km_resize_pil_bilinear_f32(p, 80, 64, in, iw, ih);
    km_cmp e = km_compare("bilinear vs Pillow (antialiased), 2x down", p, c, 80 * 64);
    CHECK(e.max_abs > 1);
    km_free(in);
    km_free(a);
    km_free(b);
    km_free(c);
    km_free(p);
}

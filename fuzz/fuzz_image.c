/* fuzz_image.c - libFuzzer target for the PNG and JPEG decoders
 * (km_image_load_mem, and km_mask_load_mem's raw PNG mode). Any input must give either KM_OK with a well-formed
 * image or an error whose message names the input; never a crash, leak or
 * out-of-bounds access (ASan + UBSan).
 *
 *   make fuzz
 *   build/fuzz/fuzz_image -max_total_time=300 CORPUS_DIR tests/data/image
 *
 * The pixel cap is lowered to 2^22 so that a 50-byte file claiming a huge
 * size costs little; the code paths are the same as with the default cap. */
#include "../src/io/image.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int wants[3] = {0, 1, 3};
    int want_c = wants[size % 3]; /* all three conversions, without spending input bytes */
    km_image im;
    km_status s = km_image_load_mem_max("fuzz-input", data, size, &im, want_c, (int64_t)1 << 22);
    if (s == KM_OK) {
        KM_ASSERT(im.w > 0 && im.h > 0 && (int64_t)im.w * im.h <= ((int64_t)1 << 22));
        KM_ASSERT(im.c == (want_c ? want_c : im.c) && (im.c == 1 || im.c == 3));
        /* Touch every byte so ASan checks the buffer size and MSan-style
         * uninitialised reads would show in a sum. */
        size_t n = (size_t)im.w * im.h * im.c;
        volatile unsigned sum = 0;
        for (size_t i = 0; i < n; i++) sum += im.data[i];
        km_image_free(&im);
    } else {
        KM_ASSERT(im.data == NULL);
        KM_ASSERT(strstr(km_errmsg(), "fuzz-input") != NULL);
    }
    /* the mask decoder: values as stored (palette indices, 1..16-bit grey) */
    km_mask m;
    s = km_mask_load_mem_max("fuzz-input", data, size, &m, (int64_t)1 << 22);
    if (s == KM_OK) {
        KM_ASSERT(m.w > 0 && m.h > 0 && (int64_t)m.w * m.h <= ((int64_t)1 << 22));
        KM_ASSERT(m.depth >= 1 && m.depth <= 16);
        size_t n = (size_t)m.w * m.h;
        volatile unsigned sum = 0;
        for (size_t i = 0; i < n; i++) sum += m.data[i];
        km_mask_free(&m);
    } else {
        KM_ASSERT(m.data == NULL);
        KM_ASSERT(strstr(km_errmsg(), "fuzz-input") != NULL);
    }
    return 0;
}

/* check_inter_area.c - developer cross-check of km_resize_area_u8 against the
 * system's OpenCV (Debian 12 libopencv-imgproc406, the version the fixtures
 * were made with) through its legacy C entry point cvResize. Not part of the
 * test suite (CI has no OpenCV); the suite checks the stored cv2 goldens.
 *
 *   make && gcc -O2 -std=c11 -Isrc tools/check_inter_area.c build/release/libkmseg.a \
 *       -l:libopencv_imgproc.so.406 -l:libopencv_core.so.406 -fopenmp -lpng -ljpeg -lm \
 *       -o build/check_inter_area && build/check_inter_area [n_cases]
 *
 * Random sizes 1..700 (source and target, up and down on either axis, exact
 * integer factors and same size mixed in), 1..4 channels, random and smooth
 * content; prints the failing case and exits 1 on the first mismatch. */
#include "io/resize.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void *cvCreateMatHeader(int rows, int cols, int type);
void cvSetData(void *arr, void *data, int step);
void cvResize(const void *src, void *dst, int interpolation);
void cvReleaseMat(void **mat);

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

static void cv_area(const uint8_t *src, int sw, int sh, int C, uint8_t *dst, int dw, int dh) {
    int type = (C - 1) << 3; /* CV_8UC(C) */
    void *a = cvCreateMatHeader(sh, sw, type), *b = cvCreateMatHeader(dh, dw, type);
    cvSetData(a, (void *)src, sw * C);
    cvSetData(b, dst, dw * C);
    cvResize(a, b, 3 /* CV_INTER_AREA */);
    cvReleaseMat(&a);
    cvReleaseMat(&b);
}

static int pick(int s) {
    switch (rnd() % 6) {
    case 0: return s;                           /* same */
    case 1: return s % 2 == 0 ? s / 2 : s;     /* exact 2x */
    case 2: return s % 3 == 0 ? s / 3 : s + 1; /* exact 3x */
    default: return 1 + (int)(rnd() % (rnd() % 4 ? 300 : 700));
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000, bad = 0;
    for (int t = 0; t < n; t++) {
        int sw = 1 + (int)(rnd() % 700), sh = 1 + (int)(rnd() % 700), C = 1 + (int)(rnd() % 4);
        int dw = pick(sw), dh = pick(sh), smooth = rnd() % 2;
        uint8_t *src = malloc((size_t)sw * sh * C), *a = malloc((size_t)dw * dh * C),
                *b = malloc((size_t)dw * dh * C);
        for (int i = 0; i < sw * sh * C; i++)
            src[i] = smooth ? (uint8_t)((i / C % sw) * 255 / sw / 2 + (i / C / sw) * 255 / sh / 2)
                            : (uint8_t)rnd();
        cv_area(src, sw, sh, C, a, dw, dh);
        km_resize_area_u8(src, sw, sh, C, b, dw, dh);
        int diff = 0;
        for (int i = 0; i < dw * dh * C; i++) diff += a[i] != b[i];
        if (diff) {
            printf("MISMATCH %dx%dx%d -> %dx%d: %d of %d\n", sw, sh, C, dw, dh, diff, dw * dh * C);
            bad++;
        }
        free(src);
        free(a);
        free(b);
    }
    printf("%d cases, %d mismatching\n", n, bad);
    return bad != 0;
}

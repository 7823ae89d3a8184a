/* image.h - PNG (libpng) and JPEG (libjpeg-turbo) decoding/encoding to 8-bit
 * interleaved pixels. Decoders reject truncated/corrupt files and absurd sizes
 * with an error naming the file; they never read out of bounds. */
#ifndef KM_IMAGE_H
#define KM_IMAGE_H

#include "../core/km.h"

typedef struct {
    int w, h, c; /* c = 1 (grey) or 3 (RGB) */
    uint8_t *data; /* h * w * c bytes, row-major, interleaved */
} km_image;

/* want_c: 0 = as stored (grey stays 1, RGB/RGBA/palette -> 3), 1 = grey
 * (RGB -> first channel if all equal, else luma), 3 = RGB (grey replicated).
 * 16-bit PNGs are reduced to 8 bits, alpha is dropped, palettes expanded. */
km_status km_image_load(const char *path, km_image *img, int want_c);
km_status km_image_load_mem(const char *name, const uint8_t *buf, size_t n, km_image *img,
                            int want_c);
/* km_image_load_mem with a lower pixel-count limit (the default is 2^28; the
 * fuzz targets use a small one so that a tiny file claiming a huge size costs
 * little). max_pixels must be in 1 .. 2^28. */
km_status km_image_load_mem_max(const char *name, const uint8_t *buf, size_t n, km_image *img,
                                int want_c, int64_t max_pixels);
/* Masks, read with their values as stored: a palette PNG gives its indices
 * (never the colours), a grey PNG its values (1/2/4-bit unpacked but not
 * scaled: a 1-bit mask is 0/1; 16-bit values kept whole); alpha is dropped.
 * An RGB(A) PNG and a JPEG are reduced to 8-bit grey as km_image_load with
 * want_c = 1 does. */
typedef enum { KM_MASK_GREY, KM_MASK_PALETTE, KM_MASK_RGB, KM_MASK_JPEG } km_mask_kind;
typedef struct {
    int w, h;
    uint16_t *data;    /* h * w values, row-major */
    int depth;         /* bits per value in the file: 1, 2, 4, 8 or 16 (RGB, JPEG: 8) */
    km_mask_kind kind;
} km_mask;
km_status km_mask_load(const char *path, km_mask *m);
km_status km_mask_load_mem(const char *name, const uint8_t *buf, size_t n, km_mask *m);
/* With a lower pixel-count limit, as km_image_load_mem_max (fuzzing). */
km_status km_mask_load_mem_max(const char *name, const uint8_t *buf, size_t n, km_mask *m, int64_t max_pixels);
void km_mask_free(km_mask *m);
/* Writes a grey label map atomically: 8-bit when every value is <= 255, else
 * 16-bit. */
km_status km_mask_save_png(const char *path, const km_mask *m);

/* Writes an 8-bit PNG (grey or RGB) atomically. */
km_status km_image_save_png(const char *path, const km_image *img);
/* The same PNG bytes in memory: *buf (km_malloc'ed, km_free) of *n bytes;
 * `name` only labels errors. */
km_status km_image_encode_png(const char *name, const km_image *img, uint8_t **buf, size_t *n);
void km_image_free(km_image *img);

#endif

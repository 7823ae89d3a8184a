/* augment.h - training augmentation (method.md section 2): horizontal flip,
 * vertical flip, 90-degree rotation, transpose, each with p = 0.5, applied
 * identically to image and mask of a square S x S crop.
 *
 * An augmentation is a 4-bit code (KM_AUG_*); the four ops are applied in the
 * order hflip, vflip, rot90, transpose. Every code is a pixel permutation (an
 * element of the 8-element symmetry group of the square), so the composite
 * distribution is uniform over the 8 symmetries; "rot90" is one quarter turn
 * counter-clockwise (numpy.rot90 with k = 1). albumentations' RandomRotate90
 * would draw k in 0..3, which gives the same uniform composite distribution.
 *
 * Coordinates: x = column, y = row, integers 0..S-1. A code maps a pixel of
 * the source (un-augmented) frame to the augmented frame:
 *   hflip (x, y) -> (S-1-x, y)      vflip (x, y) -> (x, S-1-y)
 *   rot90 (x, y) -> (y, S-1-x)      transpose (x, y) -> (y, x)
 * so out[map(p)] = in[p] for every pixel p. The knowledge-mining phase uses
 * km_aug_map_point(..., inverse = 1) to bring prompts from the augmented
 * frame back to the cached un-augmented frame (method.md 5).
 *
 * Randomness: km_aug_draw consumes exactly 4 km_rng_uniform draws (h, v, r,
 * t; op on when u < 0.5) per sample, on the caller's thread, so codes are
 * reproducible from the seed regardless of how batch assembly overlaps with
 * compute. */
#ifndef KM_AUGMENT_H
#define KM_AUGMENT_H

#include "../core/km.h"
#include "../core/rng.h"

enum { KM_AUG_HFLIP = 1, KM_AUG_VFLIP = 2, KM_AUG_ROT90 = 4, KM_AUG_TRANSPOSE = 8 };

uint8_t km_aug_draw(km_rng *r);

/* Maps pixel (x, y) of the source frame to the augmented frame (inverse = 0)
 * or back (inverse = 1). */
void km_aug_map_point(uint8_t code, int S, int x, int y, int inverse, int *xo, int *yo);
/* Maps an inclusive box (x0, y0, x1, y1) the same way; the result is again
 * ordered (x0 <= x1, y0 <= y1). */
void km_aug_map_box(uint8_t code, int S, const int in[4], int inverse, int out[4]);

/* Applies `code` to an S x S image of C interleaved uint8 channels (HWC);
 * dst and src must not overlap. */
void km_aug_apply_u8(uint8_t code, int S, int C, const uint8_t *src, uint8_t *dst);
/* The same for a planar float map [S, S] (e.g. a mask or logits). */
void km_aug_apply_f32(uint8_t code, int S, const float *src, float *dst);

/* The permutation as an affine map of the destination pixel back to its
 * source: src = (ox + axx*x + axy*y, oy + ayx*x + ayy*y) for destination
 * (x, y). Used by the applies and by km_batch_fill. */
typedef struct {
    int ox, oy, axx, axy, ayx, ayy;
} km_aug_affine;
km_aug_affine km_aug_inverse_affine(uint8_t code, int S);

#endif

/* augment.c - dihedral augmentations as pixel permutations; see augment.h. */
#include "augment.h"

uint8_t km_aug_draw(km_rng *r) {
    uint8_t code = 0;
    if (km_rng_uniform(r) < 0.5) code |= KM_AUG_HFLIP;
    if (km_rng_uniform(r) < 0.5) code |= KM_AUG_VFLIP;
    if (km_rng_uniform(r) < 0.5) code |= KM_AUG_ROT90;
    if (km_rng_uniform(r) < 0.5) code |= KM_AUG_TRANSPOSE;
    return code;
}

/* One op forward (source -> augmented). */
static void op_fwd(int op, int S, int *x, int *y) {
    int a = *x, b = *y;
    switch (op) {
    case KM_AUG_HFLIP: *x = S - 1 - a; break;
    case KM_AUG_VFLIP: *y = S - 1 - b; break;
    case KM_AUG_ROT90: *x = b; *y = S - 1 - a; break;
    case KM_AUG_TRANSPOSE: *x = b; *y = a; break;
    default: KM_ASSERT(0);
    }
}

/* One op inverse (augmented -> source). Flips and transpose are involutions;
 * the inverse of (x, y) -> (y, S-1-x) is (x, y) -> (S-1-y, x). */
static void op_inv(int op, int S, int *x, int *y) {
    if (op == KM_AUG_ROT90) {
        int a = *x, b = *y;
        *x = S - 1 - b;
        *y = a;
    } else {
        op_fwd(op, S, x, y);
    }
}

static const int k_ops[4] = {KM_AUG_HFLIP, KM_AUG_VFLIP, KM_AUG_ROT90, KM_AUG_TRANSPOSE};

void km_aug_map_point(uint8_t code, int S, int x, int y, int inverse, int *xo, int *yo) {
    KM_ASSERT(code < 16 && S > 0);
    if (!inverse) {
        for (int i = 0; i < 4; i++)
            if (code & k_ops[i]) op_fwd(k_ops[i], S, &x, &y);
    } else {
        for (int i = 3; i >= 0; i--)
            if (code & k_ops[i]) op_inv(k_ops[i], S, &x, &y);
    }
    *xo = x;
    *yo = y;
}

void km_aug_map_box(uint8_t code, int S, const int in[4], int inverse, int out[4]) {
    int ax, ay, bx, by;
    km_aug_map_point(code, S, in[0], in[1], inverse, &ax, &ay);
    km_aug_map_point(code, S, in[2], in[3], inverse, &bx, &by);
    out[0] = ax < bx ? ax : bx;
    out[1] = ay < by ? ay : by;
    out[2] = ax < bx ? bx : ax;
    out[3] = ay < by ? by : ay;
}

km_aug_affine km_aug_inverse_affine(uint8_t code, int S) {
    /* The inverse map is affine in (x, y): read it off at three points. */
    int x0, y0, x1, y1, x2, y2;
    km_aug_map_point(code, S, 0, 0, 1, &x0, &y0);
    km_aug_map_point(code, S, 1, 0, 1, &x1, &y1);
    km_aug_map_point(code, S, 0, 1, 1, &x2, &y2);
    km_aug_affine a = {x0, y0, x1 - x0, x2 - x0, y1 - y0, y2 - y0};
    return a;
}

void km_aug_apply_u8(uint8_t code, int S, int C, const uint8_t *src, uint8_t *dst) {
    KM_ASSERT(src != dst);
    km_aug_affine a = km_aug_inverse_affine(code, S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int sx = a.ox + a.axx * x + a.axy * y, sy = a.oy + a.ayx * x + a.ayy * y;
            const uint8_t *s = src + ((size_t)sy * S + sx) * C;
            uint8_t *d = dst + ((size_t)y * S + x) * C;
            for (int c = 0; c < C; c++) d[c] = s[c];
        }
}

void km_aug_apply_f32(uint8_t code, int S, const float *src, float *dst) {
    KM_ASSERT(src != dst);
    km_aug_affine a = km_aug_inverse_affine(code, S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int sx = a.ox + a.axx * x + a.axy * y, sy = a.oy + a.ayx * x + a.ayy * y;
            dst[(size_t)y * S + x] = src[(size_t)sy * S + sx];
        }
}

/* overlay.c - see overlay.h. */
#include "overlay.h"

#include <math.h>
#include <string.h>

const km_rgb KM_OVERLAY_FILL = {0, 114, 178};
const km_rgb KM_OVERLAY_OUTLINE = {240, 228, 66};
const km_rgb KM_OVERLAY_TP = {0, 114, 178};
const km_rgb KM_OVERLAY_FP = {230, 159, 0};
const km_rgb KM_OVERLAY_FN = {204, 121, 167};
const km_rgb KM_OVERLAY_POINT_FG = {0, 200, 0};
const km_rgb KM_OVERLAY_POINT_BG = {230, 0, 0};
const km_rgb KM_OVERLAY_BOX = {0, 255, 0};

static uint8_t mix(uint8_t a, uint8_t b, int pct) { return (uint8_t)(((100 - pct) * a + pct * b + 50) / 100); }

static void put(uint8_t *p, km_rgb c) {
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

void km_overlay_fill(uint8_t *rgb, int w, int h, const uint8_t *mask, km_rgb c, int alpha_pct) {
    for (size_t i = 0; i < (size_t)w * h; i++) {
        if (!mask[i]) continue;
        uint8_t *p = rgb + 3 * i;
        p[0] = mix(p[0], c.r, alpha_pct);
        p[1] = mix(p[1], c.g, alpha_pct);
        p[2] = mix(p[2], c.b, alpha_pct);
    }
}

/* 1 when (x, y) is inside the image and in the mask */
static int in(const uint8_t *m, int w, int h, int x, int y) { return x >= 0 && y >= 0 && x < w && y < h && m[(size_t)y * w + x]; }

void km_overlay_outline(uint8_t *rgb, int w, int h, const uint8_t *mask, km_rgb c) {
    static const km_rgb black = {0, 0, 0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int self = in(mask, w, h, x, y);
            int nin = in(mask, w, h, x - 1, y) + in(mask, w, h, x + 1, y) + in(mask, w, h, x, y - 1) +
                      in(mask, w, h, x, y + 1);
            uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            if (self && nin < 4) put(p, c);
            else if (!self && nin > 0) put(p, black);
        }
}

void km_overlay_mask(uint8_t *rgb, int w, int h, const uint8_t *pred, const uint8_t *ref) {
    if (pred) km_overlay_fill(rgb, w, h, pred, KM_OVERLAY_FILL, 50);
    if (ref) km_overlay_outline(rgb, w, h, ref, KM_OVERLAY_OUTLINE);
}

void km_overlay_errors(uint8_t *rgb, int w, int h, const uint8_t *pred, const uint8_t *ref) {
    static const km_rgb black = {0, 0, 0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            uint8_t *p = rgb + 3 * i;
            int grey = (77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8;
            uint8_t g = (uint8_t)(96 + grey * 3 / 8); /* dimmed, 96..191 */
            int pr = pred[i] != 0, rf = ref[i] != 0;
            if (pr && rf) put(p, KM_OVERLAY_TP);
            else if (pr) put(p, (x + y) % 4 == 0 ? black : KM_OVERLAY_FP);
            else if (rf) put(p, (x % 4 == 0 || y % 4 == 0) ? black : KM_OVERLAY_FN);
            else p[0] = p[1] = p[2] = g;
        }
}

void km_overlay_prediction(uint8_t *rgb, const uint8_t *img, int w, int h, int c, const uint8_t *pred) {
    for (size_t i = 0; i < (size_t)w * h; i++)
        for (int k = 0; k < 3; k++) rgb[3 * i + k] = img[i * c + (c == 3 ? k : 0)];
    km_overlay_mask(rgb, w, h, pred, NULL);
}

static void put_px(uint8_t *rgb, int w, int h, int x, int y, km_rgb c) {
    if (x >= 0 && y >= 0 && x < w && y < h) put(rgb + 3 * ((size_t)y * w + x), c);
}

void km_overlay_disc(uint8_t *rgb, int w, int h, float cx, float cy, int r, km_rgb c) {
    static const km_rgb white = {255, 255, 255};
    int x0 = (int)floorf(cx), y0 = (int)floorf(cy);
    for (int dy = -r - 1; dy <= r + 1; dy++)
        for (int dx = -r - 1; dx <= r + 1; dx++) {
            int d2 = dx * dx + dy * dy;
            if (d2 <= r * r) put_px(rgb, w, h, x0 + dx, y0 + dy, c);
            else if (d2 <= (r + 1) * (r + 1)) put_px(rgb, w, h, x0 + dx, y0 + dy, white);
        }
}

void km_overlay_frame(uint8_t *rgb, int w, int h, const float box[4], int thick, km_rgb c) {
    int x0 = (int)lroundf(box[0]), y0 = (int)lroundf(box[1]), x1 = (int)lroundf(box[2]), y1 = (int)lroundf(box[3]);
    for (int k = 0; k < thick; k++) {
        for (int x = x0; x <= x1; x++) {
            put_px(rgb, w, h, x, y0 + k, c);
            put_px(rgb, w, h, x, y1 - k, c);
        }
        for (int y = y0; y <= y1; y++) {
            put_px(rgb, w, h, x0 + k, y, c);
            put_px(rgb, w, h, x1 - k, y, c);
        }
    }
}

void km_overlay_prompts(uint8_t *rgb, int w, int h, const float *xy, const int *label, int n, const float *box) {
    int r = (w < h ? w : h) / 80;
    if (r < 2) r = 2;
    if (box) km_overlay_frame(rgb, w, h, box, r / 2 > 1 ? r / 2 : 1, KM_OVERLAY_BOX);
    for (int i = 0; i < n; i++)
        km_overlay_disc(rgb, w, h, xy[2 * i], xy[2 * i + 1], r, label[i] ? KM_OVERLAY_POINT_FG : KM_OVERLAY_POINT_BG);
}

void km_overlay_resample(const uint8_t *src, int sw, int sh, int c, uint8_t *dst, int dw, int dh, int nearest) {
    for (int y = 0; y < dh; y++) {
        int y0 = (int)((int64_t)y * sh / dh), y1 = (int)((int64_t)(y + 1) * sh / dh);
        int yc = (int)(((int64_t)2 * y + 1) * sh / (2 * (int64_t)dh));
        if (y1 <= y0 || nearest) { y0 = yc; y1 = yc + 1; }
        for (int x = 0; x < dw; x++) {
            int x0 = (int)((int64_t)x * sw / dw), x1 = (int)((int64_t)(x + 1) * sw / dw);
            int xc = (int)(((int64_t)2 * x + 1) * sw / (2 * (int64_t)dw));
            if (x1 <= x0 || nearest) { x0 = xc; x1 = xc + 1; }
            int cnt = (y1 - y0) * (x1 - x0);
            for (int k = 0; k < c; k++) {
                int64_t sum = 0;
                for (int yy = y0; yy < y1; yy++)
                    for (int xx = x0; xx < x1; xx++) sum += src[((size_t)yy * sw + xx) * c + k];
                dst[((size_t)y * dw + x) * c + k] = (uint8_t)((sum + cnt / 2) / cnt);
            }
        }
    }
}

/* test_overlay_draw.c - the drawing that `kmseg predict --overlay` and `kmseg
 * sam --overlay` share with the report (report/overlay.h): prediction fill,
 * prompt discs and box frames, every value computed by hand. */
#include "test.h"

#include "../src/report/overlay.h"

#include <string.h>

/* Grey and RGB images: masked pixels go 50 % towards #0072B2 with the
 * overlay's rounding (50 a + 50 b + 50) / 100, the others are copied. */
KM_TEST(overlay_prediction_fill_by_hand) {
    const uint8_t grey[6] = {100, 255, 0, 7, 100, 200}, mask[6] = {1, 1, 0, 0, 1, 0};
    uint8_t rgb[18];
    km_overlay_prediction(rgb, grey, 3, 2, 1, mask);
    /* 100: (5000 + 0 + 50) / 100 = 50, (5000 + 5700 + 50) / 100 = 107, (5000 + 8900 + 50) / 100 = 139 */
    const uint8_t want[18] = {50, 107, 139, 128, 185, 217, 0, 0, 0, 7, 7, 7, 50, 107, 139, 200, 200, 200};
    /* 255: (12750 + 50) / 100 = 128, (12750 + 5700 + 50) / 100 = 185, (12750 + 8900 + 50) / 100 = 217 */
    CHECK(!memcmp(rgb, want, sizeof want));
    const uint8_t col[6] = {10, 20, 30, 200, 100, 50}, m2[2] = {0, 1};
    uint8_t o2[6];
    km_overlay_prediction(o2, col, 2, 1, 3, m2);
    /* (200,100,50) -> (100, (5000 + 5700 + 50) / 100 = 107, (2500 + 8900 + 50) / 100 = 114) */
    const uint8_t w2[6] = {10, 20, 30, 100, 107, 114};
    CHECK(!memcmp(o2, w2, sizeof w2));
}

/* A disc of radius 1 at (3.6, 3.2): centre pixel (3, 3); d^2 <= 1 coloured
 * (5 pixels), 1 < d^2 <= 4 white (8 pixels), nothing else touched. */
KM_TEST(overlay_disc_and_frame_by_hand) {
    enum { W = 7, H = 7 };
    uint8_t im[W * H * 3];
    memset(im, 9, sizeof im);
    const km_rgb c = {1, 2, 3};
    km_overlay_disc(im, W, H, 3.6f, 3.2f, 1, c);
    int n_col = 0, n_white = 0, n_same = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *p = im + 3 * (y * W + x);
            int d2 = (x - 3) * (x - 3) + (y - 3) * (y - 3);
            int col = p[0] == 1 && p[1] == 2 && p[2] == 3, white = p[0] == 255 && p[1] == 255 && p[2] == 255;
            int same = p[0] == 9 && p[1] == 9 && p[2] == 9;
            CHECK_MSG(d2 <= 1 ? col : d2 <= 4 ? white : same, "pixel (%d, %d)", x, y);
            n_col += col, n_white += white, n_same += same;
        }
    CHECK(n_col == 5 && n_white == 8 && n_same == W * H - 13);
    /* clipped at the border: a disc at (0, 0) writes only inside */
    km_overlay_disc(im, W, H, 0, 0, 1, c);
    CHECK(im[0] == 1 && im[3] == 1 && im[3 * W] == 1);
    /* frame (1.4, 0.6, 4.5, 3), thickness 1 on 6 x 5: corners (1, 1) .. (5, 3)
     * (lroundf: 4.5 -> 5), 5 + 5 + 1 + 1 = 12 pixels */
    enum { FW = 6, FH = 5 };
    uint8_t f[FW * FH * 3];
    memset(f, 0, sizeof f);
    const float box[4] = {1.4f, 0.6f, 4.5f, 3.0f};
    km_overlay_frame(f, FW, FH, box, 1, KM_OVERLAY_BOX);
    int n = 0;
    for (int y = 0; y < FH; y++)
        for (int x = 0; x < FW; x++) {
            int on = f[3 * (y * FW + x) + 1] == 255;
            int want = x >= 1 && x <= 5 && y >= 1 && y <= 3 && (x == 1 || x == 5 || y == 1 || y == 3);
            CHECK_MSG(on == want, "frame pixel (%d, %d)", x, y);
            n += on;
        }
    CHECK(n == 12);
}

/* kmseg sam's prompt marks: radius max(2, min(w, h) / 80), frame thickness
 * max(1, r / 2); foreground green, background red (overlay.h). */
KM_TEST(overlay_prompt_marks_sizes_and_colours) {
    enum { W = 800, H = 400 }; /* r = 400 / 80 = 5, thickness 2 */
    uint8_t *im = km_calloc(W * H * 3);
    const float xy[4] = {100, 100, 600, 300}, box[4] = {300, 50, 500, 350};
    const int lab[2] = {1, 0};
    km_overlay_prompts(im, W, H, xy, lab, 2, box);
#define PX(x, y) (im + 3 * ((size_t)(y) * W + (x)))
    CHECK(PX(100, 100)[0] == 0 && PX(100, 100)[1] == 200 && PX(100, 100)[2] == 0);
    CHECK(PX(105, 100)[1] == 200 && PX(106, 100)[0] == 255 && PX(107, 100)[0] == 0); /* disc to 5, ring at 6 */
    CHECK(PX(600, 300)[0] == 230 && PX(600, 300)[1] == 0);
    CHECK(PX(300, 200)[1] == 255 && PX(301, 200)[1] == 255 && PX(302, 200)[1] == 0); /* 2 pixels thick */
    CHECK(PX(400, 50)[1] == 255 && PX(400, 51)[1] == 255 && PX(400, 52)[1] == 0 && PX(400, 350)[1] == 255);
#undef PX
    km_free(im);
    /* a small image: r = 2 (not 100 / 80 = 1) */
    uint8_t small[20 * 100 * 3];
    memset(small, 0, sizeof small);
    const float p1[2] = {10, 10};
    const int l1 = 1;
    km_overlay_prompts(small, 100, 20, p1, &l1, 1, NULL);
    CHECK(small[3 * (10 * 100 + 12) + 1] == 200 && small[3 * (10 * 100 + 13)] == 255);
}

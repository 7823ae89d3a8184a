/* test_geometry.c - the student's geometry and its inverse (method.md 4,
 * revised: the teacher sees the original image): prompts mapped crop ->
 * original -> crop for all 16 augmentation codes and portrait / landscape /
 * square / upscaled originals, Pillow's float bilinear against Pillow 9.4,
 * and masks brought back from the original frame. */
#include "test.h"
#include "../src/core/rng.h"
#include "../src/io/resize.h"
#include "../src/mine/prompts.h"
#include "../src/train/augment.h"
#include "../src/train/dataset.h"

#include <stdlib.h>

/* Original sizes: portrait, landscape (Kvasir-like), square, the crop size
 * itself (identity scale), identity scale with a crop, mild upscale (< 2x),
 * and a 3.5x upscale where the clamp at the image edge bites. */
static const struct {
    int w, h;
    const char *what;
} k_shapes[] = {{300, 457, "portrait"}, {622, 529, "landscape"}, {512, 512, "square"}, {64, 64, "square = S"},
                {64, 90, "portrait, S wide"}, {50, 41, "upscale 1.56x"}, {18, 25, "upscale 3.6x"}};
#define NSHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))
#define GS 64

/* Every crop pixel, in every augmented frame, through the path the teacher
 * call takes (km_prompts_unaugment -> km_prompts_to_sam with the geometry,
 * float coordinates) and back (km_geom_from_orig, then the augmentation):
 * the same pixel, except where km_geom_to_orig clamped. The clamped pixels
 * are counted from the unclamped formula, independently. */
KM_TEST(geometry_prompt_round_trip_all_codes_and_shapes) {
    for (int si = 0; si < NSHAPES; si++) {
        km_geom g;
        km_geom_compute(k_shapes[si].w, k_shapes[si].h, GS, &g);
        long bad = 0, clamped = 0, n = 0;
        for (int code = 0; code < 16; code++)
            for (int y = 0; y < GS; y++)
                for (int x = 0; x < GS; x++) {
                    km_prompts pr;
                    memset(&pr, 0, sizeof pr);
                    pr.mode = KM_PROMPT_POINTS_BOX;
                    pr.w = pr.h = GS;
                    pr.n_points = 1;
                    pr.xy[0][0] = x;
                    pr.xy[0][1] = y;
                    pr.has_box = 1;
                    pr.n_boxes = 1;
                    int b[4] = {x, y, GS - 1, GS - 1};
                    memcpy(pr.box, b, sizeof b);
                    memcpy(pr.boxes[0], b, sizeof b);
                    km_prompts_unaugment(&pr, (uint8_t)code, GS); /* augmented -> un-augmented frame */
                    int ux = pr.xy[0][0], uy = pr.xy[0][1], ub[4];
                    memcpy(ub, pr.boxes[0], sizeof ub);
                    km_sam_prompts sp;
                    km_prompts_to_sam(&pr, 0, &g, NULL, &sp); /* -> original frame, float */
                    CHECK(sp.n_points == 1 && sp.box);
                    int bx, by, ax, ay;
                    km_geom_from_orig(&g, sp.points[0], sp.points[1], &bx, &by);
                    km_aug_map_point((uint8_t)code, GS, bx, by, 0, &ax, &ay);
                    int cx = (ux + g.left + 0.5) * g.w / g.rw - 0.5 < 0 || (uy + g.top + 0.5) * g.h / g.rh - 0.5 < 0 ||
                             (ux + g.left + 0.5) * g.w / g.rw - 0.5 > g.w - 1 ||
                             (uy + g.top + 0.5) * g.h / g.rh - 0.5 > g.h - 1;
                    clamped += cx;
                    n++;
                    if (!cx) bad += ax != x || ay != y;
                    /* box corners */
                    for (int c = 0; c < 2; c++) {
                        int px, py;
                        km_geom_from_orig(&g, sp.box[2 * c], sp.box[2 * c + 1], &px, &py);
                        int cc = (ub[2 * c] + g.left + 0.5) * g.w / g.rw - 0.5 < 0 ||
                                 (ub[2 * c + 1] + g.top + 0.5) * g.h / g.rh - 0.5 < 0 ||
                                 (ub[2 * c] + g.left + 0.5) * g.w / g.rw - 0.5 > g.w - 1 ||
                                 (ub[2 * c + 1] + g.top + 0.5) * g.h / g.rh - 0.5 > g.h - 1;
                        if (!cc) bad += px != ub[2 * c] || py != ub[2 * c + 1];
                        CHECK(sp.box[2 * c] >= 0 && sp.box[2 * c] <= g.w - 1 && sp.box[2 * c + 1] >= 0 &&
                              sp.box[2 * c + 1] <= g.h - 1);
                    }
                }
        printf("    %-18s %4dx%-4d -> %dx%d crop (%d,%d): %ld point mappings, %ld clamped, %ld wrong\n",
               k_shapes[si].what, g.w, g.h, g.rw, g.rh, g.left, g.top, n, clamped, bad);
        CHECK(bad == 0);
        /* the clamp can only bite when upscaling */
        if (g.w >= g.rw && g.h >= g.rh) CHECK(clamped == 0);
    }
    /* clamped case, by hand: 18x25 -> 64 wide (rw 64, rh int(64*25/18) = 88,
     * top round(12) = 12): crop (0, 0) -> ((0.5) * 18/64 - 0.5 < 0 -> 0,
     * (12.5) * 25/88 - 0.5 = 3.0511...) */
    km_geom g;
    km_geom_compute(18, 25, GS, &g);
    CHECK(g.rw == 64 && g.rh == 88 && g.top == 12 && g.left == 0);
    double xo, yo;
    km_geom_to_orig(&g, 0, 0, &xo, &yo);
    CHECK(xo == 0.0);
    CHECK_NEAR(yo, 12.5 * 25 / 88 - 0.5, 1e-12);
}

/* Expected: Image.fromarray(a, mode="F").resize((ow, oh), Image.BILINEAR)
 * with a = ((x*37 + y*91 + ((x*y) % 17)*7) % 256) / 255 - 0.5 as float32,
 * Pillow 9.4.0 (/work/main/.venv), printed with %.9g (float32 exact). */
static const struct {
    int w, h, ow, oh;
    float v[88];
} k_pil_f[] = {
    {13, 9, 5, 4, {-0.085516341f, -0.0300195236f, -0.00858743489f, -0.101639934f, -0.068836607f, -0.0170604195f, 0.0323449709f, 0.0470711179f, -0.0252960045f, -0.0507348962f, -0.0434592664f, 0.0132240606f, -0.0870191976f, 0.0377766192f, 0.0314873271f, -0.0050756298f, -0.043159321f, 0.0023449373f, 0.0523266271f, 0.0938300714f}},
    {7, 5, 11, 8, {-0.5f, -0.434046358f, -0.341711253f, -0.249376118f, -0.157040998f, -0.0647058859f, 0.0276292339f, 0.119964354f, 0.212299466f, 0.304634571f, 0.370588243f, -0.343872547f, -0.272459894f, -0.172482193f, -0.0725044534f, 0.0274732672f, 0.127450988f, -0.0520721935f, -0.111809269f, -0.0118315555f, 0.0881461576f, 0.159558833f, -0.120833337f, -0.041622106f, 0.0635695159f, 0.134536549f, 0.228319973f, 0.339215696f, -0.148819074f, -0.380169332f, -0.269273639f, -0.158377901f, -0.0791666657f, 0.10220588f, 0.189215675f, 0.24828431f, -0.0691176504f, -0.135539219f, -0.0137254903f, -0.0915552601f, -0.0838235319f, 0.0379901975f, 0.159803927f, 0.246813729f, 0.0115196081f, 0.106327981f, 0.176314607f, -0.130169347f, -0.185672924f, -0.0529411808f, 0.0797905475f, 0.126960784f, 0.0600490198f, 0.255837798f, 0.426960796f, -0.392892152f, -0.2902852f, -0.152339578f, -0.0486185402f, 0.0779188946f, 0.221568629f, 0.365218341f, 0.252183586f, -0.203097165f, 0.129723698f, 0.461274505f, -0.232598037f, -0.122192509f, 0.0323752202f, 0.186942965f, 0.136163101f, -0.0686274543f, 0.0859402791f, 0.049131006f, -0.242847607f, -0.0238636397f, 0.193382353f, -0.0764705911f, 0.0393939391f, 0.201604277f, 0.363814622f, 0.160962567f, -0.315686285f, -0.15347594f, -0.118538328f, -0.253297687f, -0.133511588f, -0.0176470596f}},
    {10, 6, 10, 3, {-0.24509804f, -0.0803921595f, -0.0591036417f, 0.105602242f, -0.159943983f, 0.00476190029f, 0.169467792f, -0.239495799f, -0.074789919f, 0.0232493002f, -0.109803922f, 0.10392157f, -0.0588235296f, 0.029411763f, 0.117647059f, -0.103431381f, 0.311764717f, -0.227450982f, -0.0137254922f, -0.0333333313f, 0.0254902001f, -0.142016813f, 0.120728292f, -0.0467787161f, 0.0159663875f, -0.0647058859f, -0.155462191f, 0.19411765f, 0.0266106408f, 0.0893557519f}},
};

KM_TEST(geometry_float_resize_matches_pillow_mode_f) {
    for (int t = 0; t < 3; t++) {
        int w = k_pil_f[t].w, h = k_pil_f[t].h, ow = k_pil_f[t].ow, oh = k_pil_f[t].oh;
        float *a = km_malloc(sizeof(float) * w * h), *o = km_malloc(sizeof(float) * ow * oh);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                a[y * w + x] = (float)(((x * 37 + y * 91 + ((x * y) % 17) * 7) % 256) / 255.0 - 0.5);
        km_resize_pil_bilinear_f32(o, ow, oh, a, w, h);
        char label[64];
        snprintf(label, sizeof label, "%dx%d -> %dx%d", w, h, ow, oh);
        km_cmp c = km_compare(label, o, k_pil_f[t].v, (size_t)ow * oh);
        /* same taps, same double weights and sums, float after each pass:
         * bit-exact expected; 1 ulp of 0.5 allowed for libm differences in
         * nothing (no transcendental is involved), so 0 */
        CHECK(c.max_abs == 0);
        km_free(a);
        km_free(o);
    }
    /* an unchanged size is an exact copy */
    float a[6] = {0.1f, -0.7f, 1.0f, -1.0f, 0.25f, 3e-8f}, o[6];
    km_resize_pil_bilinear_f32(o, 3, 2, a, 3, 2);
    CHECK(!memcmp(a, o, sizeof a));
}

/* A crop mask M [S, S], its image in the original frame (each original pixel
 * takes the crop pixel nearest to it, km_geom_from_orig; background outside
 * the crop), as confidence +1 / -1, back through km_geom_resize_crop_f32 and
 * c > 0. Exact (every pixel of every mask) when w / rw and h / rh are
 * integers (identity included): a crop pixel's own block then carries >= 3/4
 * of its triangle filter's weight per axis (9/16 > 1/2 in 2-D), all other
 * pixels together <= 7/16. With other factors the blocks have uneven sizes
 * and only structures thinner than the filter can flip: measured below, and
 * every flipped pixel must touch the other class (8-neighbourhood). */
static void mask_round_trip(int w, int h, const uint8_t *M, long *flips, long *interior_flips) {
    km_geom g;
    km_geom_compute(w, h, GS, &g);
    float *c = km_malloc(sizeof(float) * w * h), *back = km_malloc(sizeof(float) * GS * GS);
    for (int yo = 0; yo < h; yo++)
        for (int xo = 0; xo < w; xo++) {
            int x, y;
            km_geom_from_orig(&g, xo, yo, &x, &y);
            int in = x >= 0 && y >= 0 && x < GS && y < GS;
            c[yo * w + xo] = in && M[y * GS + x] ? 1.0f : -1.0f;
        }
    km_geom_resize_crop_f32(&g, c, back);
    *flips = *interior_flips = 0;
    for (int y = 0; y < GS; y++)
        for (int x = 0; x < GS; x++) {
            int m = M[y * GS + x], got = back[y * GS + x] > 0;
            if (m == got) continue;
            (*flips)++;
            int edge = 0;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx >= 0 && yy >= 0 && xx < GS && yy < GS) edge |= M[yy * GS + xx] != m;
                }
            *interior_flips += !edge;
        }
    km_free(c);
    km_free(back);
}

KM_TEST(geometry_mask_round_trip_through_the_original_frame) {
    /* masks: random pixels (the worst case: every pixel an edge), a
     * checkerboard, and smooth discs */
    uint8_t *rnd = km_malloc(GS * GS), *chk = km_malloc(GS * GS), *disc = km_malloc(GS * GS);
    km_rng r;
    km_rng_seed(&r, 11);
    for (int y = 0; y < GS; y++)
        for (int x = 0; x < GS; x++) {
            rnd[y * GS + x] = km_rng_uniform(&r) < 0.4;
            chk[y * GS + x] = (x + y) & 1;
            double d1 = (x - 20.3) * (x - 20.3) + (y - 30.1) * (y - 30.1), d2 = (x - 47) * (x - 47) + (y - 15) * (y - 15);
            disc[y * GS + x] = d1 < 14 * 14 || d2 < 9 * 9;
        }
    static const struct {
        int w, h, exact;
    } sizes[] = {{64, 64, 1}, {64, 90, 1}, {128, 192, 1}, {192, 192, 1}, {256, 128, 1}, /* integer factors */
                 {300, 457, 0}, {622, 529, 0}, {100, 100, 0}};
    const uint8_t *masks[3] = {rnd, chk, disc};
    const char *names[3] = {"random", "checkerboard", "discs"};
    for (int s = 0; s < 8; s++)
        for (int m = 0; m < 3; m++) {
            long flips, inner;
            mask_round_trip(sizes[s].w, sizes[s].h, masks[m], &flips, &inner);
            printf("    %4dx%-4d %-12s %4ld of %d pixels differ (%ld not at an edge)%s\n", sizes[s].w, sizes[s].h,
                   names[m], flips, GS * GS, inner, sizes[s].exact ? "  [integer factor: must be exact]" : "");
            if (sizes[s].exact) CHECK(flips == 0);
            CHECK(inner == 0);
        }
    km_free(rnd);
    km_free(chk);
    km_free(disc);
}

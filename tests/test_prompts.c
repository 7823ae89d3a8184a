/* test_prompts.c - prompts from student logits (src/mine/prompts.h): ties in
 * float32 probability space broken by the seeded RNG, the box over all
 * components, empty predictions per mode, the augmentation round trip for
 * every dihedral transform, the mask prompt geometry, and the plumbing into
 * the real SAM predictor (sam_tiny fixture: random weights, so shapes and
 * ranges only). */
#include "test.h"
#include "../src/io/npy.h"
#include "../src/mine/prompts.h"
#include "../src/models/sam_postprocess.h"
#include "../src/models/sam_preprocess.h"
#include "../src/nn/ops.h"
#include "../src/train/augment.h"

#define FIX "fixtures/sam_tiny/"

static float *fill(int H, int W, float v) {
    float *z = km_malloc(sizeof(float) * H * W);
    for (int i = 0; i < H * W; i++) z[i] = v;
    return z;
}

static float student_p(float z) {
    float p;
    km_sigmoid_forward(&p, &z, 1);
    return p;
}

static int rng_same(const km_rng *a, const km_rng *b) { return memcmp(a, b, sizeof *a) == 0; }

KM_TEST(prompts_probability_is_the_students_sigmoid) {
    /* The ranking uses the student's float32 sigmoid bit for bit: check the
     * reported p of a single-pixel maximum over a range of logits. */
    const float zs[] = {-30.0f, -3.0f, -1e-9f, 0.0f, 1e-9f, 0.3f, 2.5f, 9.0f, 15.9f, 16.7f, 88.0f};
    km_rng r;
    km_rng_seed(&r, 1);
    for (size_t k = 0; k < sizeof zs / sizeof zs[0]; k++) {
        float *z = fill(4, 5, -50.0f);
        z[7] = zs[k];
        km_prompts pr;
        CHECK_OK(km_prompts_from_logits(&pr, z, 4, 5, KM_PROMPT_POINTS, 1, &r));
        CHECK(pr.n_points == 1 && pr.xy[0][0] == 2 && pr.xy[0][1] == 1);
        CHECK_MSG(pr.p[0] == student_p(zs[k]), "z=%g: p %.9g vs student %.9g", zs[k], pr.p[0],
                  student_p(zs[k]));
        km_free(z);
    }
    /* Saturation the tie rule is about. */
    CHECK(student_p(16.7f) == 1.0f && student_p(17.0f) == 1.0f && student_p(15.0f) < 1.0f);
}

/* A 32 x 32 map: background -6, a plateau of 20 pixels with distinct logits
 * 17..36 (all p == 1.0f in float32), and brighter-than-background pixels at
 * z = 10 (p < 1). */
static float *plateau_map(int *plateau_idx) {
    float *z = fill(32, 32, -6.0f);
    for (int i = 0; i < 20; i++) {
        int r = 5 + i / 5, c = 9 + (i % 5) * 3;
        plateau_idx[i] = r * 32 + c;
        z[plateau_idx[i]] = 17.0f + (float)i;
    }
    z[0] = z[31 * 32 + 31] = 10.0f;
    return z;
}

static int in_set(int idx, const int *set, int n) {
    for (int i = 0; i < n; i++)
        if (set[i] == idx) return 1;
    return 0;
}

KM_TEST(prompts_saturated_plateau_ties_drawn_by_seed) {
    int plat[20];
    float *z = plateau_map(plat);
    int seen[32 * 32] = {0}, distinct = 0, max_logit_picked = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        km_rng a, b;
        km_rng_seed(&a, seed);
        km_rng_seed(&b, seed);
        km_prompts pa, pb;
        CHECK_OK(km_prompts_from_logits(&pa, z, 32, 32, KM_PROMPT_POINTS_BOX, 1, &a));
        CHECK_OK(km_prompts_from_logits(&pb, z, 32, 32, KM_PROMPT_POINTS_BOX, 1, &b));
        int idx = pa.xy[0][1] * 32 + pa.xy[0][0];
        CHECK(pa.n_points == 1 && pa.p[0] == 1.0f && in_set(idx, plat, 20));
        CHECK(pa.n_tie == 20 && pa.n_drawn == 1);
        CHECK(pb.xy[0][0] == pa.xy[0][0] && pb.xy[0][1] == pa.xy[0][1]); /* same seed, same point */
        CHECK(rng_same(&a, &b));
        if (!seen[idx]++) distinct++;
        max_logit_picked += idx == plat[19];
    }
    printf("  plateau of 20, x=1, 40 seeds: %d distinct points, max-logit pixel picked %d times\n",
           distinct, max_logit_picked);
    CHECK(distinct >= 10);      /* varies with the seed (expected ~17.3 of 20) */
    CHECK(max_logit_picked < 10); /* not a logit argmax in disguise (expected 2) */

    /* x = 3: three distinct plateau pixels, ordered by p (all 1.0) then scan order. */
    km_rng r;
    km_rng_seed(&r, 7);
    km_prompts pr;
    CHECK_OK(km_prompts_from_logits(&pr, z, 32, 32, KM_PROMPT_POINTS, 3, &r));
    CHECK(pr.n_points == 3 && pr.n_drawn == 3);
    for (int i = 0; i < 3; i++) {
        int idx = pr.xy[i][1] * 32 + pr.xy[i][0];
        CHECK(in_set(idx, plat, 20));
        if (i) CHECK(idx > pr.xy[i - 1][1] * 32 + pr.xy[i - 1][0]);
    }

    /* Uniformity of the draw over an 8-pixel plateau: 4000 draws, each pixel
     * expected 500 times (sd ~21). */
    float *y = fill(8, 8, -3.0f);
    for (int i = 0; i < 8; i++) y[i * 8 + (i * 3) % 8] = 20.0f + 3.0f * (float)i;
    int count[64] = {0};
    km_rng_seed(&r, 12345);
    for (int t = 0; t < 4000; t++) {
        CHECK_OK(km_prompts_from_logits(&pr, y, 8, 8, KM_PROMPT_POINTS, 1, &r));
        count[pr.xy[0][1] * 8 + pr.xy[0][0]]++;
    }
    int lo = 4000, hi = 0;
    for (int i = 0; i < 8; i++) {
        int c = count[i * 8 + (i * 3) % 8];
        lo = c < lo ? c : lo;
        hi = c > hi ? c : hi;
    }
    printf("  8-pixel plateau, 4000 draws: counts %d..%d (expected 500 each)\n", lo, hi);
    CHECK(lo >= 420 && hi <= 580);
    km_free(y);
    km_free(z);
}

KM_TEST(prompts_cutoff_straddles_a_tie) {
    /* x = 4: two pixels above the cut-off always taken, two of five tied
     * pixels at z = 2 drawn; z = 1.9 never taken. */
    float *z = fill(10, 10, -4.0f);
    z[11] = 30.0f;
    z[88] = 5.0f;
    const int ties[5] = {3, 25, 47, 60, 99};
    for (int i = 0; i < 5; i++) z[ties[i]] = 2.0f;
    z[50] = 1.9f;
    km_rng r;
    km_rng_seed(&r, 3);
    for (int rep = 0; rep < 20; rep++) {
        km_prompts pr;
        CHECK_OK(km_prompts_from_logits(&pr, z, 10, 10, KM_PROMPT_POINTS, 4, &r));
        CHECK(pr.n_points == 4 && pr.n_tie == 5 && pr.n_drawn == 2);
        CHECK(pr.xy[0][0] == 1 && pr.xy[0][1] == 1); /* z = 30 first */
        CHECK(pr.xy[1][0] == 8 && pr.xy[1][1] == 8); /* then z = 5 */
        int a = pr.xy[2][1] * 10 + pr.xy[2][0], b = pr.xy[3][1] * 10 + pr.xy[3][0];
        CHECK(in_set(a, ties, 5) && in_set(b, ties, 5) && a < b);
        CHECK(pr.p[2] == student_p(2.0f) && pr.p[3] == pr.p[2]);
    }
    /* x larger than the image: every pixel, no draw. */
    km_prompts pr;
    float one[2] = {-1.0f, 3.0f};
    CHECK_OK(km_prompts_from_logits(&pr, one, 1, 2, KM_PROMPT_POINTS, 5, &r));
    CHECK(pr.n_points == 2 && pr.xy[0][0] == 1 && pr.xy[1][0] == 0 && pr.n_drawn == 0);
    km_free(z);
}

KM_TEST(prompts_unique_maximum_consumes_no_rng) {
    float *z = fill(20, 30, -2.0f);
    for (int i = 0; i < 600; i++) z[i] = -2.0f + 0.001f * (float)(i % 97);
    z[14 * 30 + 21] = 4.0f;
    z[14 * 30 + 22] = 3.0f;
    km_rng r, r0;
    km_rng_seed(&r, 99);
    r0 = r;
    km_prompts pr;
    CHECK_OK(km_prompts_from_logits(&pr, z, 20, 30, KM_PROMPT_POINTS_BOX, 1, &r));
    CHECK(pr.outcome == KM_PROMPTS_READY && pr.n_points == 1);
    CHECK(pr.xy[0][0] == 21 && pr.xy[0][1] == 14 && pr.n_tie == 1 && pr.n_drawn == 0);
    CHECK(rng_same(&r, &r0));
    CHECK(pr.has_box && pr.box[0] == 21 && pr.box[1] == 14 && pr.box[2] == 22 && pr.box[3] == 14);
    CHECK(pr.n_fg == 2);
    km_free(z);
}

KM_TEST(prompts_two_blobs_box_covers_both) {
    /* Lungs: two separate components; the box is the tight inclusive box of
     * both, no margin. */
    const int H = 40, W = 50;
    float *z = fill(H, W, -8.0f);
    long fg = 0;
    for (int r = 6; r <= 30; r++)
        for (int c = 5; c <= 18; c++) z[r * W + c] = 3.0f, fg++;
    for (int r = 9; r <= 35; r++)
        for (int c = 29; c <= 44; c++) z[r * W + c] = 2.0f, fg++;
    z[20 * W + 10] = 9.0f; /* the unique maximum, in the left lung */
    km_rng r;
    km_rng_seed(&r, 0);
    km_prompts pr;
    CHECK_OK(km_prompts_from_logits(&pr, z, H, W, KM_PROMPT_POINTS_BOX, 1, &r));
    CHECK(pr.outcome == KM_PROMPTS_READY && pr.has_box && pr.n_fg == fg);
    CHECK(pr.box[0] == 5 && pr.box[1] == 6 && pr.box[2] == 44 && pr.box[3] == 35);
    CHECK(pr.xy[0][0] == 10 && pr.xy[0][1] == 20);
    km_sam_prompts sp;
    km_prompts_to_sam(&pr, 0, NULL, NULL, &sp);
    CHECK(sp.n_points == 1 && sp.labels[0] == 1 && sp.points[0] == 10.0f && sp.points[1] == 20.0f);
    CHECK(sp.box && sp.box[0] == 5.0f && sp.box[1] == 6.0f && sp.box[2] == 44.0f &&
          sp.box[3] == 35.0f);
    CHECK(!sp.mask_input && sp.multimask == 0);
    km_free(z);
}

KM_TEST(prompts_single_pixel_and_threshold_on_logit) {
    float *z = fill(16, 16, -1.0f);
    z[3 * 16 + 12] = 1e-9f; /* p rounds to exactly 0.5f, but z > 0: foreground */
    CHECK(student_p(1e-9f) == 0.5f);
    km_rng r;
    km_rng_seed(&r, 5);
    km_prompts pr;
    CHECK_OK(km_prompts_from_logits(&pr, z, 16, 16, KM_PROMPT_POINTS_BOX, 1, &r));
    CHECK(pr.outcome == KM_PROMPTS_READY && pr.has_box && pr.n_fg == 1);
    CHECK(pr.box[0] == 12 && pr.box[2] == 12 && pr.box[1] == 3 && pr.box[3] == 3);
    CHECK(pr.n_points == 1 && pr.xy[0][0] == 12 && pr.xy[0][1] == 3);
    z[3 * 16 + 12] = 0.0f; /* z == 0: background (p == 0.5 is not > 0.5) */
    CHECK_OK(km_prompts_from_logits(&pr, z, 16, 16, KM_PROMPT_BOX, 1, NULL));
    CHECK(!pr.has_box && pr.outcome == KM_PROMPTS_NO_BOX);
    km_free(z);
}

KM_TEST(prompts_empty_prediction_per_mode) {
    float *z = fill(12, 12, -7.0f);
    z[5 * 12 + 2] = -0.5f; /* most likely pixel, still background */
    const km_prompt_mode modes[4] = {KM_PROMPT_POINTS, KM_PROMPT_BOX, KM_PROMPT_POINTS_BOX,
                                     KM_PROMPT_POINTS_BOX_MASK};
    const km_prompts_outcome want[4] = {KM_PROMPTS_READY, KM_PROMPTS_NO_BOX, KM_PROMPTS_NO_BOX,
                                        KM_PROMPTS_NO_BOX};
    for (int m = 0; m < 4; m++) {
        km_rng r;
        km_rng_seed(&r, 1);
        km_prompts pr;
        CHECK_OK(km_prompts_from_logits(&pr, z, 12, 12, modes[m], 1, &r));
        CHECK_MSG(pr.outcome == want[m], "mode %s: outcome %d, expected %d",
                  km_prompt_mode_name(modes[m]), pr.outcome, want[m]);
        CHECK(!pr.has_box && pr.n_fg == 0 && pr.mode == modes[m]);
        if (modes[m] & KM_PROMPT_USE_POINTS) /* top pixel even below 0.5 */
            CHECK(pr.n_points == 1 && pr.xy[0][0] == 2 && pr.xy[0][1] == 5);
        else
            CHECK(pr.n_points == 0);
    }
    /* An all-equal empty map: a draw among all 144 pixels, seeded. */
    float *c = fill(12, 12, -3.0f);
    km_rng r1, r2;
    km_rng_seed(&r1, 77);
    km_rng_seed(&r2, 77);
    km_prompts a, b;
    CHECK_OK(km_prompts_from_logits(&a, c, 12, 12, KM_PROMPT_POINTS, 2, &r1));
    CHECK_OK(km_prompts_from_logits(&b, c, 12, 12, KM_PROMPT_POINTS, 2, &r2));
    CHECK(a.n_tie == 144 && a.n_drawn == 2 && memcmp(a.xy, b.xy, sizeof a.xy) == 0);
    km_free(c);
    km_free(z);
}

KM_TEST(prompts_modes_and_bad_input) {
    km_prompt_mode m;
    const char *names[4] = {"points", "box", "points+box", "points+box+mask"};
    for (int i = 0; i < 4; i++) {
        CHECK_OK(km_prompt_mode_parse(names[i], &m));
        CHECK(strcmp(km_prompt_mode_name(m), names[i]) == 0);
    }
    CHECK_ERR(km_prompt_mode_parse("mask", &m), KM_EARG, "points+box+mask");
    float *z = fill(8, 8, 1.0f);
    km_rng r;
    km_rng_seed(&r, 1);
    km_prompts pr;
    CHECK_ERR(km_prompts_from_logits(&pr, z, 8, 8, KM_PROMPT_POINTS_BOX, 0, &r), KM_EARG,
              "expected 1..64");
    CHECK_ERR(km_prompts_from_logits(&pr, z, 8, 8, KM_PROMPT_POINTS, KM_PROMPTS_MAX_POINTS + 1, &r),
              KM_EARG, "65 guiding points");
    CHECK_ERR(km_prompts_from_logits(&pr, z, 8, 8, (km_prompt_mode)5, 1, &r), KM_EARG,
              "unknown prompt mode 5");
    CHECK_OK(km_prompts_from_logits(&pr, z, 8, 8, KM_PROMPT_BOX, 0, NULL)); /* x unused */
    CHECK(pr.n_points == 0 && pr.has_box && pr.box[2] == 7 && pr.box[3] == 7);
    km_sam_prompts sp;
    km_prompts_to_sam(&pr, 0, NULL, NULL, &sp);
    CHECK(sp.n_points == 0 && !sp.points && sp.box);
    z[2 * 8 + 6] = NAN;
    CHECK_ERR(km_prompts_from_logits(&pr, z, 8, 8, KM_PROMPT_BOX, 1, NULL), KM_EARG,
              "pixel (x=6, y=2) of the 8x8 map is NaN");
    km_free(z);
}

/* A stand-in teacher with the geometry that matters: the mask of the box
 * plus a 3x3 square around each point, in whatever frame the prompts are. */
static void fake_teacher(const km_prompts *pr, int S, uint8_t *mask) {
    memset(mask, 0, (size_t)S * S);
    if (pr->has_box)
        for (int y = pr->box[1]; y <= pr->box[3]; y++)
            for (int x = pr->box[0]; x <= pr->box[2]; x++) mask[y * S + x] = 1;
    for (int i = 0; i < pr->n_points; i++)
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int x = pr->xy[i][0] + dx, y = pr->xy[i][1] + dy;
                if (x >= 0 && y >= 0 && x < S && y < S) mask[y * S + x] = 2;
            }
}

KM_TEST(prompts_augmentation_round_trip_all_codes) {
    /* For every code (16 codes, the 8 symmetries of the square each twice):
     * prompts of the augmented logits mapped back == prompts of the
     * un-augmented logits; the stand-in teacher's mask on the mapped-back
     * prompts, augmented forward == its mask on the augmented-frame prompts;
     * the mask prompt from the un-augmented logits matches. S = 24, an
     * asymmetric map with distinct logits (so no draws) and two blobs. */
    const int S = 24;
    float *z = fill(S, S, 0.0f), *za = fill(S, S, 0.0f), *zb = fill(S, S, 0.0f);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float v = -5.0f + 0.01f * (float)(y * S + x);
            if (x >= 2 && x <= 7 && y >= 3 && y <= 15) v = 1.0f + 0.013f * (float)(x * 7 + y);
            if (x >= 15 && x <= 19 && y >= 10 && y <= 21) v = 0.5f + 0.011f * (float)(x + 3 * y);
            z[y * S + x] = v;
        }
    float *m_ref = km_malloc(sizeof(float) * 256 * 256), *m_got = km_malloc(sizeof(float) * 256 * 256);
    km_prompts_mask_input(m_ref, z, S, S, 1024, 1024);
    uint8_t *t_orig = km_malloc(S * S), *t_fwd = km_malloc(S * S), *t_aug = km_malloc(S * S);
    km_rng r;
    km_rng_seed(&r, 4);
    km_prompts ref;
    CHECK_OK(km_prompts_from_logits(&ref, z, S, S, KM_PROMPT_POINTS_BOX_MASK, 3, &r));
    CHECK(ref.has_box && ref.n_points == 3 && ref.n_drawn == 0);
    int ok_codes = 0;
    for (int code = 0; code < 16; code++) {
        km_aug_apply_f32((uint8_t)code, S, z, za);
        km_prompts pa, back;
        CHECK_OK(km_prompts_from_logits(&pa, za, S, S, KM_PROMPT_POINTS_BOX_MASK, 3, &r));
        back = pa;
        km_prompts_unaugment(&back, (uint8_t)code, S);
        int same = back.has_box && memcmp(back.box, ref.box, sizeof ref.box) == 0 &&
                   memcmp(back.xy, ref.xy, sizeof(int) * 2 * 3) == 0;
        CHECK_MSG(same, "code %d: mapped-back prompts differ: box (%d,%d,%d,%d) vs (%d,%d,%d,%d)",
                  code, back.box[0], back.box[1], back.box[2], back.box[3], ref.box[0], ref.box[1],
                  ref.box[2], ref.box[3]);
        /* The teacher decodes in the un-augmented frame; its mask, augmented
         * forward, is what the teacher would give in the augmented frame. */
        fake_teacher(&back, S, t_orig);
        km_aug_apply_u8((uint8_t)code, S, 1, t_orig, t_fwd);
        fake_teacher(&pa, S, t_aug);
        int mask_same = memcmp(t_fwd, t_aug, (size_t)S * S) == 0;
        CHECK_MSG(mask_same, "code %d: augmented teacher mask differs", code);
        /* Logits brought back for the mask prompt. */
        km_prompts_unaugment_map((uint8_t)code, S, za, zb);
        int map_same = memcmp(zb, z, sizeof(float) * S * S) == 0;
        CHECK_MSG(map_same, "code %d: unaugment_map is not the inverse of km_aug_apply_f32", code);
        km_prompts_mask_input(m_got, zb, S, S, 1024, 1024);
        CHECK(memcmp(m_got, m_ref, sizeof(float) * 256 * 256) == 0);
        ok_codes += same && mask_same && map_same;
    }
    printf("  %d/16 augmentation codes round-trip exactly\n", ok_codes);

    /* A plateau: the mapped-back point is one of the original tied pixels. */
    int plat[20];
    float *p = plateau_map(plat), *pa32 = fill(32, 32, 0.0f);
    for (int code = 0; code < 16; code++) {
        km_aug_apply_f32((uint8_t)code, 32, p, pa32);
        km_prompts pr;
        CHECK_OK(km_prompts_from_logits(&pr, pa32, 32, 32, KM_PROMPT_POINTS_BOX, 1, &r));
        km_prompts_unaugment(&pr, (uint8_t)code, 32);
        CHECK(in_set(pr.xy[0][1] * 32 + pr.xy[0][0], plat, 20));
    }
    km_free(p);
    km_free(pa32);
    km_free(t_orig);
    km_free(t_fwd);
    km_free(t_aug);
    km_free(m_ref);
    km_free(m_got);
    km_free(z);
    km_free(za);
    km_free(zb);
}

KM_TEST(prompts_mask_input_geometry) {
    /* Square (the default 224 x 224): the predictor's input is 1024 x 1024 and
     * the whole 256 x 256 is the image, F.interpolate bilinear of the logits. */
    const int S = 224;
    float *z = fill(S, S, 0.0f);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) z[y * S + x] = (float)x - 0.5f * (float)y;
    float *m = km_malloc(sizeof(float) * 256 * 256), *ref = km_malloc(sizeof(float) * 256 * 256);
    km_prompts_mask_input(m, z, S, S, 1024, 1024);
    km_bilinear_resize(ref, z, S, S, 256, 256, 256, 256);
    CHECK(memcmp(m, ref, sizeof(float) * 256 * 256) == 0);
    /* A linear ramp interpolates exactly away from the clamped border:
     * source coordinate (d + 0.5) * 224/256 - 0.5. */
    double worst = 0;
    for (int d = 4; d < 250; d += 7) {
        double sx = (d + 0.5) * 224.0 / 256.0 - 0.5, sy = (100 + 0.5) * 224.0 / 256.0 - 0.5;
        double want = sx - 0.5 * sy, e = fabs(m[100 * 256 + d] - want);
        worst = e > worst ? e : worst;
    }
    CHECK(worst < 1e-4);
    km_free(z);

    /* Non-square, the fixture's 247 x 183: input 1024 x 759 -> the image is
     * the top 190 rows (759 / 4 = 189.75) of the 256 x 256 mask input, the
     * rest is padding at the smallest logit. */
    int ih, iw;
    km_sam_preprocess_shape(183, 247, 1024, &ih, &iw);
    CHECK(ih == 759 && iw == 1024);
    z = fill(183, 247, 0.0f);
    float lo = 1e30f;
    for (int i = 0; i < 183 * 247; i++) {
        z[i] = sinf(0.05f * (float)i) * 6.0f + (float)(i % 247) * 0.01f;
        lo = z[i] < lo ? z[i] : lo;
    }
    km_prompts_mask_input(m, z, 183, 247, ih, iw);
    km_bilinear_resize(ref, z, 183, 247, 190, 256, 190, 256);
    CHECK(memcmp(m, ref, sizeof(float) * 190 * 256) == 0);
    int pad_ok = 1;
    float rmin = ref[0];
    for (int i = 0; i < 190 * 256; i++) rmin = ref[i] < rmin ? ref[i] : rmin;
    for (int i = 190 * 256; i < 256 * 256; i++) pad_ok &= m[i] == rmin;
    CHECK(pad_ok && rmin >= lo);
    /* Portrait: the padding is on the right. */
    float *zt = fill(247, 183, 0.0f);
    for (int i = 0; i < 247 * 183; i++) zt[i] = (float)(i % 183) * 0.1f - 5.0f;
    km_sam_preprocess_shape(247, 183, 1024, &ih, &iw);
    km_prompts_mask_input(m, zt, 247, 183, ih, iw);
    CHECK(ih == 1024 && iw == 759 && m[5 * 256 + 189] > m[5 * 256 + 0] && m[5 * 256 + 190] == m[0]);
    CHECK(m[255 * 256 + 255] == m[0] && m[255 * 256 + 100] > m[0]);
    km_free(zt);
    km_free(z);
    km_free(m);
    km_free(ref);
}

static float *load_embedding(void) {
    km_tensor t;
    if (km_npy_load_f32(km_test_path(FIX "image_embedding.npy"), -1, NULL, &t) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "image_embedding.npy: %s", km_errmsg());
        return NULL;
    }
    float *d = t.data;
    t.data = NULL;
    km_tensor_free(&t);
    return d;
}

KM_TEST(prompts_into_sam_predictor_sam_tiny) {
    /* Plumbing with the random-weight sam_tiny: every mode's prompts are
     * accepted by the predictor (which validates ranges) on the fixture
     * image's embedding (247 x 183), one mask of the image's size comes back,
     * the token count is what the mode implies. */
    km_sam m;
    km_status s = km_sam_load(&m, km_test_path(FIX "sam_tiny.pth"), 0);
    CHECK_OK(s);
    if (s) return;
    float *emb = load_embedding();
    km_sam_predictor p;
    CHECK_OK(km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_SAM));
    const int H = 183, W = 247;
    float *z = fill(H, W, -4.0f);
    for (int y = 40; y < 120; y++)
        for (int x = 30; x < 90; x++) z[y * W + x] = 20.0f + 0.1f * (float)(x % 7); /* saturated */
    for (int y = 60; y < 170; y++)
        for (int x = 150; x < 246; x++) z[y * W + x] = 1.5f;
    float *mask_in = km_malloc(sizeof(float) * 256 * 256);
    const km_prompt_mode modes[4] = {KM_PROMPT_POINTS, KM_PROMPT_BOX, KM_PROMPT_POINTS_BOX,
                                     KM_PROMPT_POINTS_BOX_MASK};
    const int want_tokens[4] = {2 + 1, 2, 2 + 2, 2 + 2}; /* x = 2 points (+1 padding w/o box) */
    km_rng r;
    km_rng_seed(&r, 11);
    CHECK_OK(km_sam_set_embedding(&p, emb, W, H));
    for (int k = 0; k < 4; k++) {
        km_prompts pr;
        CHECK_OK(km_prompts_from_logits(&pr, z, H, W, modes[k], 2, &r));
        CHECK(pr.outcome == KM_PROMPTS_READY);
        CHECK(pr.box[0] == 30 && pr.box[1] == 40 && pr.box[2] == 245 && pr.box[3] == 169);
        for (int i = 0; i < pr.n_points; i++)
            CHECK(pr.xy[i][0] >= 30 && pr.xy[i][0] < 90 && pr.xy[i][1] >= 40 && pr.xy[i][1] < 120);
        const float *mi = NULL;
        if (modes[k] & KM_PROMPT_USE_MASK) {
            km_prompts_mask_input(mask_in, z, H, W, p.input_h, p.input_w);
            mi = mask_in;
        }
        km_sam_prompts sp;
        km_prompts_to_sam(&pr, 0, NULL, mi, &sp);
        km_sam_result res;
        CHECK_OK(km_sam_predict(&p, &sp, &res));
        CHECK(res.K == 1 && res.h == H && res.w == W && res.n_sparse == want_tokens[k]);
        long fg = 0;
        int finite = 1, binary = 1;
        for (long i = 0; i < (long)H * W; i++) {
            fg += res.masks[i];
            finite &= isfinite(res.scores[i]) != 0;
            binary &= res.masks[i] == (res.scores[i] > 0.0f);
        }
        printf("  %-16s tokens %d, pseudo-label foreground %ld of %d pixels\n",
               km_prompt_mode_name(modes[k]), res.n_sparse, fg, H * W);
        CHECK(finite && binary);
        km_sam_result_free(&res);
    }

    /* Continuous-mode path on a square S x S frame: prompts from augmented
     * logits, mapped back, decoded on the (un-augmented) embedding, mask
     * augmented forward; equals decoding with the mapped prompts directly. */
    const int S = 64;
    float *zs = fill(S, S, -3.0f), *za = fill(S, S, 0.0f);
    for (int y = 10; y < 30; y++)
        for (int x = 20; x < 50; x++) zs[y * S + x] = 2.0f + 0.01f * (float)(x + y);
    CHECK_OK(km_sam_set_embedding(&p, emb, S, S));
    uint8_t *aug = km_malloc(S * S);
    const uint8_t code = KM_AUG_HFLIP | KM_AUG_ROT90;
    km_aug_apply_f32(code, S, zs, za);
    km_prompts pr, direct;
    CHECK_OK(km_prompts_from_logits(&pr, za, S, S, KM_PROMPT_POINTS_BOX, 1, &r));
    km_prompts_unaugment(&pr, code, S);
    CHECK_OK(km_prompts_from_logits(&direct, zs, S, S, KM_PROMPT_POINTS_BOX, 1, &r));
    CHECK(memcmp(pr.box, direct.box, sizeof pr.box) == 0 && pr.xy[0][0] == direct.xy[0][0] &&
          pr.xy[0][1] == direct.xy[0][1]);
    km_sam_prompts sp;
    km_sam_result a, b;
    km_prompts_to_sam(&pr, 0, NULL, NULL, &sp);
    CHECK_OK(km_sam_predict(&p, &sp, &a));
    km_prompts_to_sam(&direct, 0, NULL, NULL, &sp);
    CHECK_OK(km_sam_predict(&p, &sp, &b));
    CHECK(a.h == S && a.w == S && memcmp(a.scores, b.scores, sizeof(float) * S * S) == 0);
    km_aug_apply_u8(code, S, 1, a.masks, aug);
    long n_a = 0, n_aug = 0;
    for (int i = 0; i < S * S; i++) n_a += a.masks[i], n_aug += aug[i];
    CHECK(n_a == n_aug);
    km_sam_result_free(&a);
    km_sam_result_free(&b);
    km_free(aug);
    km_free(zs);
    km_free(za);
    km_free(mask_in);
    km_free(z);
    km_free(emb);
    km_sam_predictor_free(&p);
    km_sam_free(&m);
}

/* test_boxrule.c - the box rule (method.md 4, revised): 8-connected
 * components of the student's mask, all / largest / per-component boxes and
 * which box each guiding point goes with, on hand-made maps; and the
 * per-component decode through the sam_tiny teacher on a real Kvasir-SEG
 * image at its original size (two components: two decodes, one teacher call,
 * the union = the pixel-wise maximum of the two single-box answers). */
#include "test.h"
#include "../src/io/image.h"
#include "../src/mine/refine.h"
#include "../src/train/dataset.h"

#include <stdlib.h>

#define BW 24
#define BH 20

/* logit map from a character picture: '#' = 2, '*' = 9 (the top point), '.' = -3 */
static void draw(float *z, const char *const rows[BH]) {
    for (int y = 0; y < BH; y++)
        for (int x = 0; x < BW; x++) {
            char ch = rows[y][x];
            z[y * BW + x] = ch == '#' ? 2.0f : ch == '*' ? 9.0f : -3.0f;
        }
}

static void rule(const float *z, km_box_rule r, km_prompts *pr) {
    km_rng rng;
    km_rng_seed(&rng, 5);
    CHECK_OK(km_prompts_from_logits(pr, z, BH, BW, KM_PROMPT_POINTS_BOX, 1, &rng));
    CHECK_OK(km_prompts_set_box_rule(pr, z, BH, BW, r));
}

static int box_is(const km_prompts *pr, int k, int x0, int y0, int x1, int y1) {
    const int *b = pr->boxes[k];
    if (b[0] == x0 && b[1] == y0 && b[2] == x1 && b[3] == y1) return 1;
    printf("    box %d is (%d, %d, %d, %d), expected (%d, %d, %d, %d)\n", k, b[0], b[1], b[2], b[3], x0, y0, x1, y1);
    return 0;
}

/* Two blobs (left 5x6 = 30 px, right 4x4 = 16 px), two stray pixels (1 px
 * each: below 10 % of 30), and the top point in the right blob. */
static const char *const k_two[BH] = {
    "........................", "........................", "..#####.................",
    "..#####.................", "..#####...........####..", "..#####...........##*#..",
    "..#####...........####..", "..#####...........####..", "........................",
    "........................", "........................", "........................",
    "........................", "........................", "........................",
    "........................", "...........#............", "........................",
    "......................#.", "........................"};

KM_TEST(boxrule_two_blobs_strays_and_the_three_rules) {
    float z[BW * BH];
    draw(z, k_two);
    km_prompts a, l, p;
    rule(z, KM_BOX_ALL, &a);
    rule(z, KM_BOX_LARGEST, &l);
    rule(z, KM_BOX_PER_COMPONENT, &p);
    /* all: every foreground pixel, strays included (the inflation method.md measured) */
    CHECK(a.n_boxes == 1 && box_is(&a, 0, 2, 2, 22, 18) && a.box_area[0] == 30 + 16 + 2);
    CHECK(!memcmp(a.boxes[0], a.box, sizeof a.box));
    /* largest: the left blob; the point (in the right blob) still goes with it */
    CHECK(l.n_components == 4 && l.n_boxes == 1 && box_is(&l, 0, 2, 2, 6, 7) && l.box_area[0] == 30);
    CHECK(l.point_box[0] == 0);
    /* per-component: both blobs by decreasing area, strays dropped, the point with its own blob */
    CHECK(p.n_components == 4 && p.n_boxes == 2);
    CHECK(box_is(&p, 0, 2, 2, 6, 7) && box_is(&p, 1, 18, 4, 21, 7));
    CHECK(p.box_area[0] == 30 && p.box_area[1] == 16);
    CHECK(p.n_points == 1 && p.xy[0][0] == 20 && p.xy[0][1] == 5 && p.point_box[0] == 1);
    CHECK(km_prompts_n_decodes(&p) == 2);
    /* the points are the same whatever the rule (no RNG in the box rule) */
    CHECK(a.xy[0][0] == p.xy[0][0] && l.xy[0][1] == p.xy[0][1]);
    /* decode k gets box k and only its points */
    km_sam_prompts sp;
    km_prompts_to_sam(&p, 0, NULL, NULL, &sp);
    CHECK(sp.n_points == 0 && sp.box && sp.box[0] == 2 && sp.box[3] == 7);
    km_prompts_to_sam(&p, 1, NULL, NULL, &sp);
    CHECK(sp.n_points == 1 && sp.points[0] == 20 && sp.points[1] == 5 && sp.box[0] == 18 && sp.box[2] == 21);
}

/* 10 % boundary: 100 px blob + 10 px blob (kept: 10 * 10 >= 100) + 9 px blob
 * (dropped). */
KM_TEST(boxrule_ten_percent_threshold) {
    float z[BW * BH];
    for (int i = 0; i < BW * BH; i++) z[i] = -1.0f;
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 10; x++) z[y * BW + x] = 1.0f; /* 100 px */
    for (int x = 12; x < 22; x++) z[0 * BW + x] = 1.0f;     /* 10 px, row 0 */
    for (int x = 12; x < 21; x++) z[5 * BW + x] = 1.0f;     /* 9 px, row 5 */
    km_prompts p;
    rule(z, KM_BOX_PER_COMPONENT, &p);
    CHECK(p.n_components == 3 && p.n_boxes == 2);
    CHECK(box_is(&p, 0, 0, 0, 9, 9) && box_is(&p, 1, 12, 0, 21, 0));
    CHECK(p.box_area[1] == 10);
}

/* Two squares touching only at a corner: one 8-connected component (two
 * 4-connected ones); a third square one pixel apart is its own component. */
KM_TEST(boxrule_eight_connectivity) {
    static const char *const rows[BH] = {
        "........................", ".###....................", ".###....................",
        ".###....................", "....###.................", "....###...###...........",
        "....###...###...........", "..........###...........", "........................",
        "........................", "........................", "........................",
        "........................", "........................", "........................",
        "........................", "........................", "........................",
        "........................", "........................"};
    float z[BW * BH];
    draw(z, rows);
    km_prompts p;
    rule(z, KM_BOX_PER_COMPONENT, &p);
    CHECK(p.n_components == 2 && p.n_boxes == 2);
    CHECK(box_is(&p, 0, 1, 1, 6, 6) && p.box_area[0] == 18); /* the diagonal pair, one component */
    CHECK(box_is(&p, 1, 10, 5, 12, 7) && p.box_area[1] == 9);
}

/* The top point in a speck too small to keep: it goes with the NEAREST box
 * (the smaller blob on its side), not the largest. */
KM_TEST(boxrule_point_outside_every_kept_component) {
    static const char *const rows[BH] = {
        "........................", "..#####.................", "..#####.................",
        "..#####.................", "..#####.................", "..#####.................",
        "..#####.................", "..#####.................", "..#####.................",
        "........................", "..................###...", "..................###...",
        "..................###...", "........................", "......................*.",
        "........................", "........................", "........................",
        "........................", "........................"};
    float z[BW * BH];
    draw(z, rows);
    km_prompts p;
    rule(z, KM_BOX_PER_COMPONENT, &p);
    CHECK(p.n_components == 3 && p.n_boxes == 2);
    CHECK(box_is(&p, 0, 2, 1, 6, 8) && box_is(&p, 1, 18, 10, 20, 12));
    CHECK(p.xy[0][0] == 22 && p.xy[0][1] == 14);
    CHECK(p.point_box[0] == 1); /* distance^2 to box 1: 2^2 + 2^2 = 8; to box 0: 16^2 + 6^2 */
    /* in points-only mode there is one decode with every point */
    km_rng rng;
    km_rng_seed(&rng, 5);
    km_prompts q;
    CHECK_OK(km_prompts_from_logits(&q, z, BH, BW, KM_PROMPT_POINTS, 3, &rng));
    CHECK_OK(km_prompts_set_box_rule(&q, z, BH, BW, KM_BOX_PER_COMPONENT));
    km_sam_prompts sp;
    CHECK(km_prompts_n_decodes(&q) == 1);
    km_prompts_to_sam(&q, 0, NULL, NULL, &sp);
    CHECK(sp.n_points == 3 && !sp.box);
}

/* More sizeable components than KM_PROMPTS_MAX_BOXES: the largest are kept,
 * ties in scan order; empty maps have no box. */
KM_TEST(boxrule_cap_and_empty) {
    float z[BW * BH];
    for (int i = 0; i < BW * BH; i++) z[i] = -1.0f;
    int n = 0;
    for (int y = 0; y < BH; y += 2)
        for (int x = 0; x < BW; x += 2) {
            z[y * BW + x] = 1.0f; /* 120 isolated pixels */
            n++;
        }
    z[(BH - 2) * BW + BW - 1] = 1.0f; /* the last speck gets 2 px: the largest */
    km_prompts p;
    rule(z, KM_BOX_PER_COMPONENT, &p);
    CHECK(p.n_components == n && p.n_boxes == KM_PROMPTS_MAX_BOXES);
    CHECK(p.box_area[0] == 2 && box_is(&p, 0, BW - 2, BH - 2, BW - 1, BH - 2));
    CHECK(box_is(&p, 1, 0, 0, 0, 0) && box_is(&p, 2, 2, 0, 2, 0)); /* then scan order */
    for (int i = 0; i < BW * BH; i++) z[i] = -1.0f;
    km_rng rng;
    km_rng_seed(&rng, 5);
    CHECK_OK(km_prompts_from_logits(&p, z, BH, BW, KM_PROMPT_POINTS_BOX, 1, &rng));
    CHECK_OK(km_prompts_set_box_rule(&p, z, BH, BW, KM_BOX_PER_COMPONENT));
    CHECK(p.outcome == KM_PROMPTS_NO_BOX && p.n_boxes == 0 && km_prompts_n_decodes(&p) == 0);
    km_box_rule r;
    CHECK_OK(km_box_rule_parse("largest", &r));
    CHECK(r == KM_BOX_LARGEST && !strcmp(km_box_rule_name(KM_BOX_PER_COMPONENT), "per-component"));
    CHECK_ERR(km_box_rule_parse("biggest", &r), KM_EARG, "expected all, largest or per-component");
}

/* ------------------------------------------------------------------ teacher */

#define TS 64

/* Student logits in the TS crop of a Kvasir image: two discs (left, right). */
static void two_discs(float *z) {
    for (int y = 0; y < TS; y++)
        for (int x = 0; x < TS; x++) {
            double a = (x - 16) * (x - 16) + (y - 32) * (y - 32), b = (x - 48) * (x - 48) + (y - 30) * (y - 30);
            z[y * TS + x] = a < 64 ? 3.0f : b < 36 ? 2.0f : -4.0f;
        }
    z[32 * TS + 16] = 8.0f; /* the top point, in the left disc */
}

KM_TEST(boxrule_per_component_decodes_and_union_sam_tiny) {
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, NULL));
    char *ip = km_dataset_image_path(&idx, 0);
    km_image img = {0};
    CHECK_OK(km_image_load(ip, &img, 3));
    km_refine_image im;
    km_refine_image_rgb(&im, img.data, img.w, img.h);
    km_geom g;
    km_geom_compute(img.w, img.h, TS, &g);
    printf("    %s: %dx%d, crop %d of %dx%d at (%d, %d)\n", idx.items[0].id, img.w, img.h, TS, g.rw, g.rh, g.left, g.top);
    km_refine_config rc;
    km_refine_config_default(&rc);
    rc.teacher = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    CHECK(rc.box_rule == KM_BOX_PER_COMPONENT);
    km_refiner r;
    CHECK_OK(km_refiner_open(&r, &rc));
    float z[TS * TS];
    two_discs(z);
    km_rng rng;
    km_rng_seed(&rng, 1);
    km_prompts pr;
    CHECK_OK(km_refine_prompts(&r, z, TS, TS, &rng, &pr));
    CHECK(pr.n_boxes == 2 && pr.point_box[0] == 0);
    size_t n = (size_t)img.w * img.h;
    float *u = km_malloc(sizeof(float) * n), *c0 = km_malloc(sizeof(float) * n), *c1 = km_malloc(sizeof(float) * n);
    CHECK_OK(km_refine_teacher_conf(&r, &im, &pr, &g, NULL, u));
    CHECK(r.teacher_calls == 1 && r.decodes == 2 && r.encoder_runs == 1);
    /* each box alone: decode 0 = box 0 with the point, decode 1 = box 1 */
    km_prompts one = pr;
    one.n_boxes = 1;
    CHECK_OK(km_refine_teacher_conf(&r, &im, &one, &g, NULL, c0));
    one = pr;
    one.n_boxes = 1;
    memcpy(one.boxes[0], pr.boxes[1], sizeof one.boxes[0]);
    one.n_points = 0; /* box 1 had no point */
    CHECK_OK(km_refine_teacher_conf(&r, &im, &one, &g, NULL, c1));
    CHECK(r.teacher_calls == 3 && r.decodes == 4 && r.encoder_runs == 1); /* embedding cached per original image */
    printf("    encoder %.2f s (1 run), decoder + post-processing %.2f s per decode\n", r.encoder_seconds,
           r.decoder_seconds / r.decodes);
    long bad = 0, f0 = 0, f1 = 0, fu = 0, range = 0;
    for (size_t i = 0; i < n; i++) {
        bad += u[i] != (c0[i] > c1[i] ? c0[i] : c1[i]);
        f0 += c0[i] > 0;
        f1 += c1[i] > 0;
        fu += u[i] > 0;
        range += !(u[i] >= -1.0f && u[i] <= 1.0f);
    }
    printf("    foreground at %dx%d: box 0 %ld, box 1 %ld, union %ld px; %ld pixels differ from max(c0, c1)\n", img.w,
           img.h, f0, f1, fu, bad);
    CHECK(bad == 0 && range == 0);
    CHECK(fu >= f0 && fu >= f1 && fu <= f0 + f1);
    /* the S-frame pseudo label = the union resampled with the images' geometry, c > 0 */
    uint8_t mask[TS * TS];
    CHECK_OK(km_refine_teacher_mask(&r, &im, TS, &pr, NULL, mask));
    float cs[TS * TS];
    km_geom_resize_crop_f32(&g, u, cs);
    long mm = 0;
    for (int i = 0; i < TS * TS; i++) mm += mask[i] != (cs[i] > 0);
    CHECK(mm == 0);
    /* the all rule: one decode */
    r.cfg.box_rule = KM_BOX_ALL;
    km_rng_seed(&rng, 1);
    CHECK_OK(km_refine_prompts(&r, z, TS, TS, &rng, &pr));
    long d0 = r.decodes;
    CHECK_OK(km_refine_teacher_conf(&r, &im, &pr, &g, NULL, u));
    CHECK(r.decodes == d0 + 1);
    km_free(u);
    km_free(c0);
    km_free(c1);
    km_refiner_close(&r);
    km_image_free(&img);
    km_free(ip);
    km_dataset_index_free(&idx);
}

/* The teacher-quality entry point: a ground-truth mask in the original frame
 * (g NULL) gives prompts there and the teacher's mask at the original size;
 * an image given by file is read only on a cache miss, and a file whose
 * pixels changed is refused. */
KM_TEST(boxrule_teacher_mask_orig_from_ground_truth_and_file) {
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, NULL));
    char *ip = km_dataset_image_path(&idx, 1), *mp = km_dataset_mask_path(&idx, 1);
    km_image img = {0}, gt = {0};
    CHECK_OK(km_image_load(ip, &img, 3));
    CHECK_OK(km_image_load(mp, &gt, 1));
    size_t n = (size_t)img.w * img.h;
    float *z = km_malloc(sizeof(float) * n), *conf = km_malloc(sizeof(float) * n);
    uint8_t *mask = km_malloc(n);
    for (size_t i = 0; i < n; i++) z[i] = gt.data[i] > 127 ? 1.0f : -1.0f;
    km_refine_config rc;
    km_refine_config_default(&rc);
    rc.teacher = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    rc.mode = KM_PROMPT_BOX;
    km_refiner r;
    CHECK_OK(km_refiner_open(&r, &rc));
    km_refine_image im;
    km_refine_image_file(&im, ip, img.w, img.h, km_hash_image(img.data, img.w, img.h, 3));
    km_refine_outcome o;
    CHECK_OK(km_refine_teacher_mask_orig(&r, &im, z, NULL, mask, conf, &o));
    long fg = 0, agree = 0;
    for (size_t i = 0; i < n; i++) {
        fg += mask[i];
        agree += mask[i] == (conf[i] > 0);
    }
    printf("    %s %dx%d: %ld box(es) decoded from the ground truth, teacher mask %ld px (%s)\n", idx.items[1].id,
           img.w, img.h, r.decodes, fg, km_refine_outcome_name(o));
    CHECK(r.encoder_runs == 1 && r.teacher_calls == 1 && r.decodes >= 1 && agree == (long)n);
    CHECK(o == (fg ? KM_REFINE_TEACHER : KM_REFINE_FALLBACK_EMPTY));
    /* at the original size the confidence keeps SAM's own rule exactly: the
     * same prompts straight into the predictor (embedding still set), mask =
     * logit > 0, equals mask = c > 0 */
    {
        km_rng rng;
        km_rng_seed(&rng, KM_REFINE_SEED);
        km_prompts pr;
        CHECK_OK(km_refine_prompts(&r, z, img.h, img.w, &rng, &pr));
        uint8_t *un = km_calloc(n);
        for (int k = 0; k < km_prompts_n_decodes(&pr); k++) { /* union of SAM's own masks */
            km_sam_prompts sp;
            km_prompts_to_sam(&pr, k, NULL, NULL, &sp);
            km_sam_result res;
            CHECK_OK(km_sam_predict(&r.p, &sp, &res));
            for (size_t i = 0; i < n; i++) un[i] |= res.masks[i];
            km_sam_result_free(&res);
        }
        long diff = 0;
        for (size_t i = 0; i < n; i++) diff += un[i] != mask[i];
        printf("    direct SAM predictor, %d decode(s): %ld of %zu pixels differ from c > 0\n",
               km_prompts_n_decodes(&pr), diff, n);
        CHECK(diff == 0);
        km_free(un);
    }
    /* the same image from memory: a cache hit, the same answer */
    float *conf2 = km_malloc(sizeof(float) * n);
    km_refine_image im2;
    km_refine_image_rgb(&im2, img.data, img.w, img.h);
    CHECK(im2.hash == im.hash);
    CHECK_OK(km_refine_teacher_mask_orig(&r, &im2, z, NULL, mask, conf2, &o));
    CHECK(r.encoder_runs == 1 && !memcmp(conf, conf2, sizeof(float) * n));
    /* a file that changed since its hash was taken: refused on the miss */
    km_refine_image bad;
    km_refine_image_file(&bad, ip, img.w, img.h, im.hash ^ 1);
    CHECK_ERR(km_refine_teacher_mask_orig(&r, &bad, z, NULL, mask, conf2, &o), KM_EFORMAT, "changed on disk");
    /* an empty ground truth: NO_BOX, teacher not called, mask 0 and conf -1 */
    for (size_t i = 0; i < n; i++) z[i] = -1.0f;
    long calls = r.teacher_calls;
    CHECK_OK(km_refine_teacher_mask_orig(&r, &im, z, NULL, mask, conf2, &o));
    CHECK(o == KM_REFINE_FALLBACK_NO_BOX && r.teacher_calls == calls && mask[0] == 0 && conf2[n - 1] == -1.0f);
    km_refiner_close(&r);
    km_free(z);
    km_free(conf);
    km_free(conf2);
    km_free(mask);
    km_image_free(&img);
    km_image_free(&gt);
    km_free(ip);
    km_free(mp);
    km_dataset_index_free(&idx);
}

/* Mask-prompt mode through the geometry: an original that IS the S x S crop
 * (identity geometry) must give bit-identical teacher output whether the
 * prompts and the student's logits go through the geometry or not (the
 * inverse map of pixel centres is exact there, and the logit map moved to
 * the original frame is the map itself). */
KM_TEST(boxrule_mask_prompt_identity_geometry_sam_tiny) {
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, NULL));
    char *ip = km_dataset_image_path(&idx, 2);
    km_image img = {0};
    CHECK_OK(km_image_load(ip, &img, 3));
    uint8_t *crop = km_malloc(TS * TS * 3);
    km_resize_crop_bilinear_u8(img.data, img.w, img.h, 3, TS, crop);
    km_refine_image im;
    km_refine_image_rgb(&im, crop, TS, TS);
    km_geom g;
    km_geom_compute(TS, TS, TS, &g);
    km_refine_config rc;
    km_refine_config_default(&rc);
    rc.teacher = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    rc.mode = KM_PROMPT_POINTS_BOX_MASK;
    rc.box_rule = KM_BOX_LARGEST;
    km_refiner r;
    CHECK_OK(km_refiner_open(&r, &rc));
    float z[TS * TS], a[TS * TS], b[TS * TS];
    two_discs(z);
    km_rng rng;
    km_rng_seed(&rng, 2);
    km_prompts pr;
    CHECK_OK(km_refine_prompts(&r, z, TS, TS, &rng, &pr));
    km_prompts pr2 = pr;
    CHECK_OK(km_refine_teacher_conf(&r, &im, &pr, &g, z, a));
    CHECK_OK(km_refine_teacher_conf(&r, &im, &pr2, NULL, z, b));
    long fa = 0;
    for (int i = 0; i < TS * TS; i++) fa += a[i] > 0;
    printf("    %d x %d original, mask prompt: %ld foreground px, %s\n", TS, TS, fa,
           memcmp(a, b, sizeof a) ? "DIFFERENT" : "bit-identical with and without the geometry");
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(r.encoder_runs == 1 && r.decodes == 2);
    km_refiner_close(&r);
    km_free(crop);
    km_image_free(&img);
    km_free(ip);
    km_dataset_index_free(&idx);
}

/* test_datasets.c - datasets as users have them: the nnU-Net raw layout
 * (three grey channel files or one RGB _0000 file per case, dataset.json,
 * splits_final.json, imagesTs predictions), palette, 0/1 and 16-bit label-map
 * masks. Every form is built here from the same 10 Kvasir-SEG images and
 * masks (foreground = JPEG mask > 127), so each must train bit-identically to
 * the images/masks form of the original files (same ids, so the same seeded
 * split): the weights and Adam state of last.safetensors are compared byte
 * for byte. Bad inputs: every problem listed by verify / check-data, the
 * first one stops the other commands. */
#include "test.h"
#include "../src/io/image.h"
#include "../src/io/safetensors.h"
#include "../src/train/dataset.h"
#include "../src/train/splits.h"
#include "../src/train/train.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NIMG 10
#define DS_S 64

static char g_ids[NIMG][128];
static km_image g_img[NIMG];
static uint8_t *g_fg[NIMG]; /* JPEG mask > 127 */

static const char *bin(void) { return getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg"; }

static const char *sub(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", km_test_tmpdir(), name);
    return buf[k];
}

/* The first NIMG Kvasir ids, decoded once. */
static int load_sources(void) {
    static int state;
    if (state) return state > 0;
    state = -1;
    km_dataset_index idx;
    km_issues iss;
    km_issues_init(&iss);
    if (km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, &iss)) return 0;
    km_issues_free(&iss);
    for (int i = 0; i < NIMG; i++) {
        snprintf(g_ids[i], sizeof g_ids[i], "%s", idx.items[i].id);
        char *p = km_dataset_image_path(&idx, i), *q = km_dataset_mask_path(&idx, i);
        km_mask m;
        if (km_image_load(p, &g_img[i], 3) || km_mask_load(q, &m)) return 0;
        g_fg[i] = km_malloc((size_t)m.w * m.h);
        for (size_t k = 0; k < (size_t)m.w * m.h; k++) g_fg[i][k] = m.data[k] > 127;
        km_mask_free(&m);
        km_free(p);
        km_free(q);
    }
    km_dataset_index_free(&idx);
    state = 1;
    return 1;
}

/* A PNG written with libpng: grey (depth 1..16) or palette (depth 1..8;
 * index 0 black, 1 red, 2 green, 3 blue); v holds the values / indices. */
static void write_png_raw(const char *path, int w, int h, int palette, int depth, const uint16_t *v) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, palette ? PNG_COLOR_TYPE_PALETTE : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    if (palette) png_set_PLTE(png, info, pal, depth == 1 ? 2 : 4);
    png_write_info(png, info);
    if (depth < 8) png_set_packing(png); /* rows hold one value per byte */
    uint8_t *row = km_malloc((size_t)w * 2);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint16_t a = v[(size_t)y * w + x];
            if (depth == 16) {
                row[2 * x] = (uint8_t)(a >> 8);
                row[2 * x + 1] = (uint8_t)a;
            } else {
                row[x] = (uint8_t)a;
            }
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    km_free(row);
    fclose(f);
}

/* Mask i as values: foreground -> fgv, background -> 0, except a 5x5 corner
 * block of background set to `other` (a second label; 0: none). */
static uint16_t *mask_values(int i, int fgv, int other) {
    int w = g_img[i].w, h = g_img[i].h;
    uint16_t *v = km_malloc(sizeof(uint16_t) * (size_t)w * h);
    for (size_t k = 0; k < (size_t)w * h; k++) v[k] = g_fg[i][k] ? (uint16_t)fgv : 0;
    for (int y = 0; y < 5 && other; y++)
        for (int x = 0; x < 5; x++)
            if (!g_fg[i][(size_t)y * w + x]) v[(size_t)y * w + x] = (uint16_t)other;
    return v;
}

/* Mask decoding keeps the stored values: 1-bit grey 0/1, palette indices
 * (2-bit), 16-bit values; images still expand a palette to its colours;
 * km_mask_save_png writes 8 bits up to 255, else 16, and reads back equal. */
KM_TEST(datasets_mask_values_as_stored) {
    enum { W = 7, H = 3 };
    uint16_t v[W * H], v16[W * H];
    for (int i = 0; i < W * H; i++) {
        v[i] = (uint16_t)(i % 4);
        v16[i] = (uint16_t)(i * 3121);
    }
    struct {
        int palette, depth, mod;
        km_mask_kind kind;
    } cases[] = {{0, 1, 2, KM_MASK_GREY}, {0, 2, 4, KM_MASK_GREY}, {1, 1, 2, KM_MASK_PALETTE},
                 {1, 2, 4, KM_MASK_PALETTE}, {0, 8, 4, KM_MASK_GREY}, {0, 16, 0, KM_MASK_GREY}};
    char p[2048];
    snprintf(p, sizeof p, "%s/mv.png", km_test_tmpdir());
    for (int c = 0; c < 6; c++) {
        uint16_t w[W * H];
        for (int i = 0; i < W * H; i++) w[i] = cases[c].mod ? (uint16_t)(v[i] % cases[c].mod) : v16[i];
        write_png_raw(p, W, H, cases[c].palette, cases[c].depth, w);
        km_mask m;
        CHECK_OK(km_mask_load(p, &m));
        int same = m.w == W && m.h == H && m.depth == cases[c].depth && m.kind == cases[c].kind;
        for (int i = 0; same && i < W * H; i++) same = m.data[i] == w[i];
        CHECK_MSG(same, "case %d (palette %d, depth %d): values not as stored", c, cases[c].palette, cases[c].depth);
        if (c == 3) { /* the image decoder gives the colours */
            km_image im;
            CHECK_OK(km_image_load(p, &im, 3));
            CHECK(im.data[3 * 1] == 255 && im.data[3 * 1 + 1] == 0 && im.data[3 * 2 + 1] == 255 && im.data[3 * 3 + 2] == 255);
            km_image_free(&im);
        }
        /* written back: 8 bits up to 255, else 16 */
        CHECK_OK(km_mask_save_png(p, &m));
        km_mask r;
        CHECK_OK(km_mask_load(p, &r));
        CHECK(r.depth == (c == 5 ? 16 : 8) && r.kind == KM_MASK_GREY && !memcmp(r.data, m.data, sizeof(uint16_t) * W * H));
        km_mask_free(&r);
        km_mask_free(&m);
    }
}

static void write_text(const char *path, const char *text) {
    CHECK_OK(km_write_file_atomic(path, text, strlen(text)));
}

static void dataset_json(const char *dir, int nch, const char *labels, int ntr) {
    char p[2048], j[1024];
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    snprintf(j, sizeof j,
             "{\"channel_names\": %s, \"labels\": %s, \"numTraining\": %d, \"file_ending\": \".png\"}",
             nch == 3 ? "{\"0\": \"R\", \"1\": \"G\", \"2\": \"B\"}" : "{\"0\": \"rgb\"}", labels, ntr);
    write_text(p, j);
}

/* nnU-Net forms. three: grey channel files; else one RGB _0000 file. Label
 * maps with the polyp at `fgv` and a second label `other` in a corner. */
static void build_nnunet(const char *dir, int three, int fgv, int other, const char *labels) {
    char p[2048];
    CHECK(km_test_sh("mkdir -p '%s/imagesTr' '%s/labelsTr' '%s/imagesTs'", dir, dir, dir) == 0);
    for (int i = 0; i < NIMG; i++) {
        const km_image *im = &g_img[i];
        size_t np = (size_t)im->w * im->h;
        if (three) {
            for (int c = 0; c < 3; c++) {
                km_image g = {im->w, im->h, 1, km_malloc(np)};
                for (size_t k = 0; k < np; k++) g.data[k] = im->data[3 * k + c];
                snprintf(p, sizeof p, "%s/imagesTr/%s_%04d.png", dir, g_ids[i], c);
                CHECK_OK(km_image_save_png(p, &g));
                km_image_free(&g);
            }
        } else {
            snprintf(p, sizeof p, "%s/imagesTr/%s_0000.png", dir, g_ids[i]);
            CHECK_OK(km_image_save_png(p, im));
        }
        uint16_t *v = mask_values(i, fgv, other);
        snprintf(p, sizeof p, "%s/labelsTr/%s.png", dir, g_ids[i]);
        write_png_raw(p, im->w, im->h, 0, fgv > 255 ? 16 : 8, v);
        km_free(v);
    }
    dataset_json(dir, three ? 3 : 1, labels, NIMG);
}

/* images/ (the original JPEGs) + masks/ written as `kind`: 0 the original
 * JPEG masks, 1 palette PNG (index 1 red), 2 grey 0/1 PNG, 3 16-bit label
 * map (polyp 300, a second label 7), 4 16-bit binary 0/65535. */
static void build_folders(const char *dir, int kind) {
    char kv[4096];
    if (!realpath(km_test_path("data/kvasir-seg"), kv)) return;
    CHECK(km_test_sh("mkdir -p '%s/images' '%s/masks'", dir, dir) == 0);
    for (int i = 0; i < NIMG; i++) {
        CHECK(km_test_sh("cp '%s/images/%s.jpg' '%s/images/'", kv, g_ids[i], dir) == 0);
        if (kind == 0) {
            CHECK(km_test_sh("cp '%s/masks/%s.jpg' '%s/masks/'", kv, g_ids[i], dir) == 0);
            continue;
        }
        char p[2048];
        snprintf(p, sizeof p, "%s/masks/%s.png", dir, g_ids[i]);
        uint16_t *v = mask_values(i, kind == 3 ? 300 : kind == 4 ? 65535 : 1, kind == 3 ? 7 : 0);
        write_png_raw(p, g_img[i].w, g_img[i].h, kind == 1, kind >= 3 ? 16 : 8, v);
        km_free(v);
    }
}

static void ds_config(km_train_config *c, const char *data, const char *label, const char *out) {
    km_train_config_default(c);
    c->data = (char *)data;
    c->label = (char *)label;
    c->out = (char *)out;
    c->size = DS_S;
    c->resnet = 18;
    c->batch = 4;
    c->lr = 1e-3;
    c->epochs = 2;
    c->threads = 1;
    c->seed = 5;
}

/* Tensors (names, dtypes, bytes) of two safetensors files; metadata aside. */
static int same_tensors(const char *a, const char *b, const char *what) {
    km_tdict x, y;
    if (km_safetensors_load(a, &x)) return 0;
    if (km_safetensors_load(b, &y)) {
        km_tdict_free(&x);
        return 0;
    }
    int ok = x.n == y.n, differ = 0;
    size_t bytes = 0;
    for (int i = 0; ok && i < x.n; i++) {
        const km_tensor *s = &x.items[i], *t = &y.items[i];
        ok = !strcmp(s->name, t->name) && s->nbytes == t->nbytes;
        if (ok && memcmp(s->data, t->data, s->nbytes)) differ++;
        bytes += s->nbytes;
    }
    printf("    %s: %d tensors, %zu bytes, %d differ from the images/masks run\n", what, x.n, bytes, differ);
    km_tdict_free(&x);
    km_tdict_free(&y);
    return ok && !differ;
}

static const char *meta_of(const char *path, const char *key, char *buf, size_t cap) {
    km_tdict d;
    buf[0] = 0;
    if (km_safetensors_load(path, &d)) return buf;
    const char *v = km_tdict_get_meta(&d, key);
    snprintf(buf, cap, "%s", v ? v : "");
    km_tdict_free(&d);
    return buf;
}

/* The numbers of a run that any difference in the weights would move. */
static int same_result(const km_train_result *a, const km_train_result *b, const char *what) {
    const double x[] = {a->first_step_loss, a->last_train_loss, a->last_val_loss, a->best_val_loss, a->last_val_dice,
                        a->last_val_iou};
    const double y[] = {b->first_step_loss, b->last_train_loss, b->last_val_loss, b->best_val_loss, b->last_val_dice,
                        b->last_val_iou};
    int same = a->steps == b->steps && a->epochs_done == b->epochs_done && !memcmp(x, y, sizeof x);
    printf("    %s: %d steps, train loss %.17g, val loss %.17g, val Dice %.17g: %s\n", what, b->steps, y[1], y[2], y[4],
           same ? "bit-identical to the images/masks run" : "DIFFERENT");
    return same;
}

/* Training without a run folder (no checkpoint I/O: 6 runs), compared on
 * every loss and metric to the last bit; the CLI runs of
 * datasets_nnunet_splits_and_predict compare the checkpoints themselves. */
KM_TEST(datasets_every_form_trains_bit_identically) {
    if (!load_sources()) {
        CHECK_MSG(0, "shared Kvasir-SEG data not found under %s", km_test_shared());
        return;
    }
    const char *ref = sub("ref"), *nn3 = sub("nn3"), *nn1 = sub("nn1");
    build_folders(ref, 0);
    build_nnunet(nn3, 1, 2, 1, "{\"background\": 0, \"other\": 1, \"polyp\": 2}");
    build_nnunet(nn1, 0, 1, 0, "{\"background\": 0, \"polyp\": 1}");
    const char *pal = sub("pal"), *b01 = sub("b01"), *l16 = sub("l16");
    build_folders(pal, 1);
    build_folders(b01, 2);
    build_folders(l16, 3);
    struct {
        const char *data, *label, *name;
    } forms[] = {{nn3, "polyp", "nnU-Net, three grey channel files, --label polyp (value 2)"},
                 {nn1, NULL, "nnU-Net, one RGB _0000 file, default label"},
                 {pal, NULL, "palette PNG masks (index 1 red)"},
                 {b01, NULL, "grey 0/1 PNG masks"},
                 {l16, "300", "16-bit label maps, --label 300"}};
    km_train_config c;
    km_train_result r0, r;
    ds_config(&c, ref, NULL, NULL);
    CHECK_OK(km_train_run(&c, 0, NULL, &r0));
    CHECK(r0.steps == 4 && isfinite(r0.last_val_loss));
    for (int f = 0; f < 5; f++) {
        ds_config(&c, forms[f].data, forms[f].label, NULL);
        CHECK_OK(km_train_run(&c, 0, NULL, &r));
        CHECK_MSG(same_result(&r0, &r, forms[f].name), "%s: training differs from the images/masks form", forms[f].name);
    }
}

/* The kinds check-data reports, and the 0/1, palette and 16-bit rules on the
 * same masks: identical caches. */
KM_TEST(datasets_mask_kinds_load_identically) {
    if (!load_sources()) return;
    const char *ref = sub("k_ref"), *pal = sub("k_pal"), *l16 = sub("k_l16"), *nn3 = sub("k_nn3"), *b16 = sub("k_b16");
    build_folders(ref, 0);
    build_folders(pal, 1);
    build_folders(l16, 3);
    build_folders(b16, 4);
    build_nnunet(nn3, 1, 2, 1, "{\"background\": 0, \"other\": 1, \"polyp\": 2}");
    const char *dirs[5] = {ref, pal, l16, nn3, b16}, *labels[5] = {NULL, NULL, "300", "polyp", NULL};
    int all[NIMG];
    for (int i = 0; i < NIMG; i++) all[i] = i;
    km_dataset ds[5];
    km_data_stats st[5];
    km_set_threads(1);
    for (int d = 0; d < 5; d++) {
        km_issues iss;
        km_issues_init(&iss);
        km_dataset_index idx;
        CHECK_OK(km_dataset_scan(dirs[d], labels[d], &idx, &iss));
        km_dataset_verify(&idx, DS_S, &iss, &st[d]);
        km_issues_print(&iss, stdout, 0);
        CHECK_MSG(iss.n_err == 0, "%s: %d errors", dirs[d], iss.n_err);
        CHECK_OK(km_dataset_load(&idx, all, NIMG, DS_S, 1, &ds[d], NULL));
        if (d == 3) { /* what a checkpoint records of the label */
            km_tdict meta;
            km_tdict_init(&meta);
            km_dataset_label_meta(&idx, &meta);
            const char *v = km_tdict_get_meta(&meta, "data.label_value"), *nm = km_tdict_get_meta(&meta, "data.label");
            CHECK(v && !strcmp(v, "2") && nm && !strcmp(nm, "polyp"));
            km_tdict_free(&meta);
        }
        km_dataset_index_free(&idx);
        km_issues_free(&iss);
    }
    CHECK(st[0].n_bin255 == NIMG && st[0].n_jpeg == NIMG);
    CHECK(st[1].n_bin01 == NIMG && st[1].n_palette == NIMG);
    CHECK(st[2].n_labelmap == NIMG && st[2].n_png16 == NIMG && st[2].n_with_label == NIMG);
    CHECK(st[3].n_labelmap == NIMG && st[3].n_png_grey == NIMG);
    CHECK(st[4].n_bin255 == NIMG && st[4].n_png16 == NIMG);
    size_t P = (size_t)DS_S * DS_S * NIMG;
    for (int d = 1; d < 5; d++) {
        CHECK_MSG(!memcmp(ds[0].images, ds[d].images, P * 3), "%s: images differ", dirs[d]);
        CHECK_MSG(!memcmp(ds[0].masks, ds[d].masks, P), "%s: masks differ", dirs[d]);
    }
    size_t fg = 0;
    for (size_t k = 0; k < P; k++) fg += ds[0].masks[k];
    printf("    5 forms, %d images at %d px: caches identical (%zu foreground pixels)\n", NIMG, DS_S, fg);
    CHECK(fg > 0);
    for (int d = 0; d < 5; d++) km_dataset_free(&ds[d]);

    /* check-data names the layout and the kinds */
    char out[2048];
    snprintf(out, sizeof out, "%s/k_out.txt", km_test_tmpdir());
    CHECK(km_test_sh("'%s' check-data --data '%s' --label polyp --size 64 > '%s' 2>&1", bin(), nn3, out) == 0);
    CHECK(km_test_sh("grep -q 'nnU-Net (three grey channel files per case) layout, 10 image/mask pairs' '%s'", out) == 0);
    CHECK(km_test_sh("grep -q \"masks: label 'polyp' (value 2); 10 label maps (files: 10 grey PNG)\" '%s'", out) == 0);
    CHECK(km_test_sh("'%s' check-data --data '%s' --size 64 > '%s' 2>&1", bin(), pal, out) == 0);
    CHECK(km_test_sh("grep -q '10 binary 0/1 (files: 10 palette PNG (read by index))' '%s'", out) == 0);
}

static int has_issue(const km_issues *l, const char *path, const char *needle) {
    for (int i = 0; i < l->n; i++)
        if (l->items[i].is_error && !strcmp(l->items[i].path, path) && strstr(l->items[i].msg, needle)) return 1;
    return 0;
}

static void scan_verify(const char *dir, const char *label, km_issues *iss) {
    km_dataset_index idx;
    km_issues_init(iss);
    CHECK_OK(km_dataset_scan(dir, label, &idx, iss));
    km_dataset_verify(&idx, DS_S, iss, NULL);
    km_issues_print(iss, stdout, 0);
    km_dataset_index_free(&idx);
}

KM_TEST(datasets_nnunet_bad_inputs_listed) {
    if (!load_sources()) return;
    km_set_threads(2);
    char p[2048];
    km_issues iss;
    /* 1. dataset.json missing fields and naming a file that does not exist;
     * numTraining wrong; a case with channel files of different sizes; a case
     * with one file among three-file cases (mixed layouts) */
    const char *bad = sub("nn_bad");
    build_nnunet(bad, 1, 1, 0, "{}");
    snprintf(p, sizeof p, "%s/dataset.json", bad);
    write_text(p, "{\"labels\": {\"background\": 0, \"polyp\": 1}, \"numTraining\": 12, "
                  "\"training\": [{\"image\": \"./imagesTr/nothere.png\", \"label\": \"./labelsTr/nothere.png\"}]}");
    km_image small = {32, 32, 1, km_calloc(32 * 32)};
    snprintf(p, sizeof p, "%s/imagesTr/%s_0001.png", bad, g_ids[1]);
    CHECK_OK(km_image_save_png(p, &small));
    km_image_free(&small);
    CHECK(km_test_sh("rm '%s/imagesTr/%s_0001.png' '%s/imagesTr/%s_0002.png'", bad, g_ids[2], bad, g_ids[2]) == 0);
    scan_verify(bad, NULL, &iss);
    char m1[300], m2[300], m3[300];
    snprintf(m1, sizeof m1, "imagesTr/%s_0000.png", g_ids[1]);
    snprintf(m2, sizeof m2, "imagesTr/%s_0000.png", g_ids[2]);
    snprintf(m3, sizeof m3, "%s_0001.png: channel file is 32x32", g_ids[1]);
    CHECK(has_issue(&iss, "dataset.json", "missing 'channel_names'"));
    CHECK(has_issue(&iss, "dataset.json", "missing 'file_ending'"));
    CHECK(has_issue(&iss, "dataset.json", "numTraining is 12 but imagesTr/ holds 10 cases"));
    CHECK(has_issue(&iss, "dataset.json", "training[0]: label './labelsTr/nothere.png' does not exist"));
    CHECK(has_issue(&iss, "dataset.json", "names the case 'nothere'"));
    CHECK(has_issue(&iss, m1, m3));
    CHECK(has_issue(&iss, m2, "mixed layouts"));
    CHECK_MSG(iss.n_err == 7, "%d errors", iss.n_err);
    km_issues_free(&iss);

    /* 2. labels: two foreground labels without --label; a label in no mask;
     * a mask value that is not a label */
    const char *lab = sub("nn_lab");
    build_nnunet(lab, 0, 2, 1, "{\"background\": 0, \"other\": 1, \"polyp\": 2, \"tumour\": 3}");
    scan_verify(lab, NULL, &iss);
    CHECK(has_issue(&iss, "dataset.json", "3 foreground labels: choose one with --label NAME|VALUE (labels: "
                                          "background = 0, other = 1, polyp = 2, tumour = 3)"));
    km_issues_free(&iss);
    scan_verify(lab, "tumour", &iss);
    CHECK(has_issue(&iss, "labelsTr", "label 'tumour' (value 3) is in none of the 10 masks"));
    CHECK_MSG(iss.n_err == 1, "%d errors", iss.n_err);
    km_issues_free(&iss);
    scan_verify(lab, "9", &iss);
    CHECK(has_issue(&iss, "dataset.json", "--label 9: no such label name or value"));
    km_issues_free(&iss);
    snprintf(p, sizeof p, "%s/dataset.json", lab);
    dataset_json(lab, 1, "{\"background\": 0, \"polyp\": 2}", NIMG);
    scan_verify(lab, NULL, &iss);
    snprintf(m1, sizeof m1, "labelsTr/%s.png", g_ids[0]);
    CHECK(has_issue(&iss, m1, "value 1 is not a label of dataset.json (values in this mask: 0, 1, 2)"));
    km_issues_free(&iss);

    /* 3. both layouts in one folder */
    const char *mix = sub("nn_mix");
    build_nnunet(mix, 0, 1, 0, "{\"background\": 0, \"polyp\": 1}");
    CHECK(km_test_sh("mkdir -p '%s/images' '%s/masks'", mix, mix) == 0);
    scan_verify(mix, NULL, &iss);
    CHECK(has_issue(&iss, "", "mixed layouts: both dataset.json"));
    km_issues_free(&iss);

    /* 4. the commands: check-data lists all, train stops at the first and
     * names the file */
    char out[2048];
    snprintf(out, sizeof out, "%s/bad_out.txt", km_test_tmpdir());
    CHECK(km_test_sh("'%s' check-data --data '%s' --size 64 > '%s' 2>&1", bin(), bad, out) == 1);
    CHECK(km_test_sh("grep -q '7 errors, ' '%s' && grep -q 'error: dataset.json: missing .channel_names.' '%s'", out, out) == 0);
    CHECK(km_test_sh("'%s' train --data '%s' --out '%s/run_bad' --size 64 --quiet > '%s' 2>&1", bin(), bad,
                     km_test_tmpdir(), out) == 1);
    CHECK(km_test_sh("grep -q 'errors, first: dataset.json: missing .channel_names.' '%s'", out) == 0);
    CHECK(km_test_sh("'%s' train --data '%s' --out '%s/run_lab' --size 64 --quiet > '%s' 2>&1", bin(), lab,
                     km_test_tmpdir(), out) == 1);
    CHECK(km_test_sh("grep -q 'labelsTr/.*value 1 is not a label of dataset.json' '%s'", out) == 0);
    CHECK(km_test_sh("cat '%s'", out) == 0);
}

/* splits_final.json folds; predictions for imagesTs named and valued as
 * nnU-Net's, equal to the binary run's masks on the same images. */
KM_TEST(datasets_nnunet_splits_and_predict) {
    if (!load_sources()) return;
    const char *nn = sub("sp_nn"), *ref = sub("sp_ref");
    build_nnunet(nn, 0, 1, 0, "{\"background\": 0, \"polyp\": 1}");
    build_folders(ref, 0);
    char p[2048], j[4096];
    size_t n = (size_t)snprintf(j, sizeof j, "[");
    for (int f = 0; f < 2; f++) {
        n += (size_t)snprintf(j + n, sizeof j - n, "%s{\"train\": [", f ? ", " : "");
        for (int i = 0, k = 0; i < NIMG; i++)
            if (i / 2 != f + 1) n += (size_t)snprintf(j + n, sizeof j - n, "%s\"%s\"", k++ ? ", " : "", g_ids[i]);
        n += (size_t)snprintf(j + n, sizeof j - n, "], \"val\": [\"%s\", \"%s\"]}", g_ids[2 * f + 2], g_ids[2 * f + 3]);
    }
    snprintf(j + n, sizeof j - n, "]");
    snprintf(p, sizeof p, "%s/splits_final.json", km_test_tmpdir());
    write_text(p, j);
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(nn, NULL, &idx, &iss));
    km_split sp;
    CHECK_OK(km_split_from_path(&idx, p, 1, &sp, &iss));
    CHECK(sp.n_train == 8 && sp.n_val == 2 && sp.n_test == 0);
    if (sp.n_val == 2) CHECK(!strcmp(idx.items[sp.val[0]].id, g_ids[4]) && !strcmp(idx.items[sp.val[1]].id, g_ids[5]));
    km_split_free(&sp);
    CHECK_ERR(km_split_from_path(&idx, p, 2, &sp, &iss), KM_EARG, "has 2 folds (0..1)");
    km_dataset_index_free(&idx);
    km_issues_free(&iss);

    /* train on fold 1 of the nnU-Net form == train on the same lists in the images/masks form */
    char r1[1024], r2[1024], lists[1100];
    snprintf(r1, sizeof r1, "%s/sp_run_nn", km_test_tmpdir());
    snprintf(r2, sizeof r2, "%s/sp_run_ref", km_test_tmpdir());
    CHECK(km_test_sh("'%s' train --data '%s' --split-file '%s' --fold 1 --out '%s' --size 64 --resnet 18 --batch 4 "
                     "--epochs 2 --threads 1 --lr 1e-3 --quiet", bin(), nn, p, r1) == 0);
    snprintf(lists, sizeof lists, "%s/splits", r1);
    CHECK(km_test_sh("grep -qx '%s' '%s/val.txt'", g_ids[4], lists) == 0);
    CHECK(km_test_sh("'%s' train --data '%s' --split-dir '%s' --out '%s' --size 64 --resnet 18 --batch 4 "
                     "--epochs 2 --threads 1 --lr 1e-3 --quiet", bin(), ref, lists, r2) == 0);
    char a[2300], b[2300];
    snprintf(a, sizeof a, "%s/best.safetensors", r1);
    snprintf(b, sizeof b, "%s/best.safetensors", r2);
    CHECK(same_tensors(b, a, "nnU-Net --split-file fold 1 vs the same lists"));
    char mb[64];
    CHECK(!strcmp(meta_of(a, "data.label_value", mb, sizeof mb), "1") && !strcmp(meta_of(a, "data.label", mb, sizeof mb), "polyp"));
    CHECK(!strcmp(meta_of(b, "data.label_value", mb, sizeof mb), ""));
    CHECK(km_test_sh("'%s' train --data '%s' --split-file '%s' --split-dir '%s' --out '%s/x' > /dev/null 2>&1", bin(),
                     nn, p, lists, km_test_tmpdir()) == 2);

    /* predict on imagesTs: <case>.png with value 1; the binary run writes 0/255 */
    CHECK(km_test_sh("cp '%s/imagesTr/%s_0000.png' '%s/imagesTr/%s_0000.png' '%s/imagesTs/'", nn, g_ids[4], nn, g_ids[5],
                     nn) == 0);
    CHECK(km_test_sh("mkdir -p '%s/imgs' && cp '%s/images/%s.jpg' '%s/images/%s.jpg' '%s/imgs/'", ref, ref, g_ids[4], ref,
                     g_ids[5], ref) == 0);
    CHECK(km_test_sh("'%s' predict --weights '%s' --images '%s/imagesTs' --out '%s/pred_nn' --size 64 > /dev/null", bin(),
                     a, nn, km_test_tmpdir()) == 0);
    CHECK(km_test_sh("'%s' predict --weights '%s' --images '%s/imgs' --out '%s/pred_ref' --size 64 > /dev/null", bin(), b,
                     ref, km_test_tmpdir()) == 0);
    for (int i = 4; i < 6; i++) {
        km_mask x, y;
        snprintf(a, sizeof a, "%s/pred_nn/masks/%s.png", km_test_tmpdir(), g_ids[i]);
        snprintf(b, sizeof b, "%s/pred_ref/masks/%s.png", km_test_tmpdir(), g_ids[i]);
        CHECK_OK(km_mask_load(a, &x));
        CHECK_OK(km_mask_load(b, &y));
        int same = x.w == y.w && x.h == y.h && x.depth == 8, bad = 0;
        size_t fg = 0;
        for (size_t k = 0; same && k < (size_t)x.w * x.h; k++) {
            bad += !(x.data[k] == 0 || x.data[k] == 1) || (x.data[k] ? 255 : 0) != y.data[k];
            fg += x.data[k];
        }
        printf("    predict %s.png: %dx%d, %zu pixels of value 1, %d differ from the 0/255 run\n", g_ids[i], x.w, x.h, fg,
               bad);
        CHECK(same && !bad);
        km_mask_free(&x);
        km_mask_free(&y);
    }
}

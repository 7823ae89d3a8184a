/* test_image.c - PNG/JPEG decoding against known pixels and against PIL,
 * PNG round trips, and every kind of bad input (truncated, flipped bytes,
 * empty, not an image, absurd sizes, CMYK, missing). The small images live in
 * tests/data/image/ and are made by make_images.py there. */
#include "test.h"
#include "../src/io/image.h"

#include <dirent.h>

#define IMG_DIR "tests/data/image/"

/* Pixel formulas of make_images.py (23 x 17 PNGs). */
static int grey_f(int x, int y) { return (x * 29 + y * 13) & 255; }
static int red_f(int x, int y) { return (x * 37 + y * 11) & 255; }
static int green_f(int x, int y) { return (x * 5 + y * 53 + 7) & 255; }
static int blue_f(int x, int y) { return (x * y * 3 + 100) & 255; }
static int pal_index_f(int x, int y) { return (x + 2 * y) % 16; }

/* FNV-1a 64 over the pixel bytes; the PIL checksums below use the same. */
static uint64_t fnv64(const km_image *im) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = (size_t)im->w * im->h * im->c;
    for (size_t i = 0; i < n; i++) {
        h ^= im->data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t byte_sum(const km_image *im) {
    uint64_t s = 0;
    size_t n = (size_t)im->w * im->h * im->c;
    for (size_t i = 0; i < n; i++) s += im->data[i];
    return s;
}

static const uint8_t *px(const km_image *im, int x, int y) {
    return im->data + ((size_t)y * im->w + x) * im->c;
}

/* Expected 8-bit value(s) of pixel (x, y) of a test PNG, by kind. */
enum { K_GREY, K_BIT, K_RGB, K_PAL };
static void expect_px(int kind, int x, int y, uint8_t out[3]) {
    static const int palette_step = 16;
    int i = pal_index_f(x, y);
    switch (kind) {
    case K_GREY: out[0] = out[1] = out[2] = (uint8_t)grey_f(x, y); break;
    case K_BIT: out[0] = out[1] = out[2] = ((x ^ y) & 1) ? 255 : 0; break;
    case K_RGB:
        out[0] = (uint8_t)red_f(x, y);
        out[1] = (uint8_t)green_f(x, y);
        out[2] = (uint8_t)blue_f(x, y);
        break;
    default:
        out[0] = (uint8_t)(i * palette_step);
        out[1] = (uint8_t)(255 - i * palette_step);
        out[2] = (uint8_t)(i * 7);
        break;
    }
}

/* Pillow's convert("L") (Convert.c, L24). */
static uint8_t luma(const uint8_t *p) {
    return (uint8_t)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
}

KM_TEST(image_png_every_colour_type_and_depth) {
    static const struct {
        const char *file;
        int kind, c;
    } cases[] = {
        {"grey8.png", K_GREY, 1},     {"grey1.png", K_BIT, 1},      {"grey16.png", K_GREY, 1},
        {"ga8.png", K_GREY, 1},       {"ga16.png", K_GREY, 1},      {"rgb8.png", K_RGB, 3},
        {"rgb16.png", K_RGB, 3},      {"rgba8.png", K_RGB, 3},      {"rgba16.png", K_RGB, 3},
        {"pal4_trns.png", K_PAL, 3},  {"pal8.png", K_PAL, 3},       {"rgb8_adam7.png", K_RGB, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[256];
        snprintf(path, sizeof path, IMG_DIR "%s", cases[k].file);
        for (int want = 0; want <= 3; want++) {
            if (want == 2) continue;
            km_image im;
            km_status s = km_image_load(path, &im, want);
            CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
            if (s) continue;
            int c = want ? want : cases[k].c;
            CHECK_MSG(im.w == 23 && im.h == 17 && im.c == c, "%s want %d: got %dx%dx%d", path,
                      want, im.w, im.h, im.c);
            int bad = 0;
            for (int y = 0; y < im.h; y++)
                for (int x = 0; x < im.w; x++) {
                    uint8_t e[3];
                    expect_px(cases[k].kind, x, y, e);
                    const uint8_t *p = px(&im, x, y);
                    if (c == 3)
                        bad += p[0] != e[0] || p[1] != e[1] || p[2] != e[2];
                    else
                        bad += p[0] != (cases[k].c == 1 ? e[0] : luma(e));
                }
            CHECK_MSG(bad == 0, "%s want %d: %d of %d pixels differ", path, want, bad,
                      im.w * im.h);
            km_image_free(&im);
        }
    }
}

/* PIL reference values, made once with Debian's python3-pil 9.4.0 (which
 * links the same libjpeg-turbo 2.1.5):
 *   im = Image.open(f).convert(mode); fnv1a64(im.tobytes()), sum(im.tobytes()),
 *   im.getpixel((0,0)), im.getpixel((w//2,h//3)), im.getpixel((w-1,h-1)) */
typedef struct {
    const char *rel; /* under tests/data/image/ or, with shared = 1, under ../shared */
    int shared, want_c, w, h;
    uint64_t fnv, sum;
    uint8_t px[3][3];
} pil_ref;

static const pil_ref pil_refs[] = {
    {"rgb.jpg", 0, 3, 32, 24, 0x1f2ee871237eb111ull, 294480,
     {{0, 12, 78}, {255, 216, 245}, {131, 109, 145}}},
    {"rgb_progressive.jpg", 0, 3, 32, 24, 0x1f2ee871237eb111ull, 294480,
     {{0, 12, 78}, {255, 216, 245}, {131, 109, 145}}},
    {"grey.jpg", 0, 1, 32, 24, 0x13f23e6fda587d64ull, 97969, {{14}, {233}, {120}}},
    {"rgb.jpg", 0, 1, 32, 24, 0x9bd03ae2f156dbcbull, 97966, {{16}, {231}, {120}}},
    {"data/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg", 1, 3, 622, 529,
     0xce64760218445a45ull, 112815370, {{0, 0, 0}, {249, 133, 94}, {0, 0, 0}}},
    {"data/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg", 1, 1, 622, 529,
     0x4a710cd542731623ull, 38653490, {{0}, {163}, {0}}},
    {"data/kvasir-seg/masks/cju0qkwl35piu0993l0dewei2.jpg", 1, 1, 622, 529,
     0x242a0bc9918e37cbull, 23725754, {{0}, {255}, {0}}},
    {"data/kvasir-seg/masks/cju0qkwl35piu0993l0dewei2.jpg", 1, 3, 622, 529,
     0xdde3f0367183c4e7ull, 71177262, {{0, 0, 0}, {255, 255, 255}, {0, 0, 0}}},
    {"data/covid-qu-ex/train/images/covid_1.png", 1, 1, 256, 256, 0x74c613c29df97a5aull,
     9545159, {{118}, {173}, {174}}},
    {"data/covid-qu-ex/train/images/covid_1.png", 1, 3, 256, 256, 0xeec54bb85a23509cull,
     28635477, {{118, 118, 118}, {173, 173, 173}, {174, 174, 174}}},
    {"data/covid-qu-ex/train/masks/covid_1.png", 1, 1, 256, 256, 0xa5fd0bd498cbf761ull, 2613750,
     {{0}, {0}, {0}}},
};

KM_TEST(image_decodes_exactly_like_pil) {
    for (size_t k = 0; k < sizeof pil_refs / sizeof pil_refs[0]; k++) {
        const pil_ref *r = &pil_refs[k];
        char path[1024];
        if (r->shared)
            snprintf(path, sizeof path, "%s", km_test_path(r->rel));
        else
            snprintf(path, sizeof path, IMG_DIR "%s", r->rel);
        km_image im;
        km_status s = km_image_load(path, &im, r->want_c);
        CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
        if (s) continue;
        CHECK_MSG(im.w == r->w && im.h == r->h && im.c == r->want_c, "%s: %dx%dx%d", path, im.w,
                  im.h, im.c);
        if (im.w != r->w || im.h != r->h) continue;
        uint64_t f = fnv64(&im), sum = byte_sum(&im);
        printf("    %-60s c=%d fnv=%016llx sum=%llu\n", r->rel, im.c, (unsigned long long)f,
               (unsigned long long)sum);
        CHECK_MSG(f == r->fnv && sum == r->sum, "%s want %d: fnv %016llx sum %llu, PIL %016llx %llu",
                  path, r->want_c, (unsigned long long)f, (unsigned long long)sum,
                  (unsigned long long)r->fnv, (unsigned long long)r->sum);
        const int xy[3][2] = {{0, 0}, {r->w / 2, r->h / 3}, {r->w - 1, r->h - 1}};
        for (int j = 0; j < 3; j++)
            CHECK(!memcmp(px(&im, xy[j][0], xy[j][1]), r->px[j], (size_t)im.c));
        km_image_free(&im);
    }
}

KM_TEST(image_grey_replicates_to_rgb) {
    km_image g, rgb;
    const char *path = km_test_path("data/covid-qu-ex/train/images/covid_1.png");
    CHECK_OK(km_image_load(path, &g, 0));
    CHECK_OK(km_image_load(path, &rgb, 3));
    CHECK(g.c == 1 && rgb.c == 3 && g.w == rgb.w && g.h == rgb.h);
    int bad = 0;
    if (g.data && rgb.data)
        for (int i = 0; i < g.w * g.h; i++)
            bad += rgb.data[3 * i] != g.data[i] || rgb.data[3 * i + 1] != g.data[i] ||
                   rgb.data[3 * i + 2] != g.data[i];
    CHECK(bad == 0);
    km_image_free(&g);
    km_image_free(&rgb);
}

static int tmp_leftovers(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

KM_TEST(image_png_round_trip) {
    const char *dir = km_test_tmpdir();
    char path[512];
    for (int c = 1; c <= 3; c += 2) {
        km_image im = {.w = 37, .h = 11, .c = c};
        im.data = km_malloc((size_t)im.w * im.h * c);
        for (int i = 0; i < im.w * im.h * c; i++) im.data[i] = (uint8_t)(i * 131 + 7 * c);
        snprintf(path, sizeof path, "%s/round_trip_c%d.png", dir, c);
        CHECK_OK(km_image_save_png(path, &im));
        /* Overwriting an existing file goes through the same atomic rename. */
        im.data[5] ^= 0xFF;
        CHECK_OK(km_image_save_png(path, &im));
        km_image back;
        CHECK_OK(km_image_load(path, &back, 0));
        CHECK(back.w == im.w && back.h == im.h && back.c == c);
        CHECK(back.data && !memcmp(back.data, im.data, (size_t)im.w * im.h * c));
        km_image_free(&back);
        km_image_free(&im);
    }
    CHECK(tmp_leftovers(dir) == 0);

    km_image two = {.w = 2, .h = 2, .c = 2, .data = (uint8_t[8]){0}};
    snprintf(path, sizeof path, "%s/two.png", dir);
    CHECK_ERR(km_image_save_png(path, &two), KM_EARG, "two.png");
    km_image one = {.w = 2, .h = 2, .c = 1, .data = (uint8_t[4]){0}};
    snprintf(path, sizeof path, "%s/no/such/dir/one.png", dir);
    CHECK_ERR(km_image_save_png(path, &one), KM_EIO, "one.png");
}

static uint8_t *slurp(const char *path, size_t *n) {
    uint8_t *buf = NULL;
    *n = 0;
    km_status s = km_read_file(path, 1 << 26, &buf, n);
    CHECK_MSG(s == KM_OK, "%s", km_errmsg());
    return buf;
}

static const char *truncation_files[] = {
    IMG_DIR "rgb8.png", IMG_DIR "rgb8_adam7.png", IMG_DIR "grey16.png",
    IMG_DIR "rgb.jpg",  IMG_DIR "rgb_progressive.jpg", IMG_DIR "grey.jpg",
    "data/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg",
    "data/covid-qu-ex/train/images/covid_1.png",
};

KM_TEST(image_rejects_truncated_files) {
    for (size_t k = 0; k < sizeof truncation_files / sizeof truncation_files[0]; k++) {
        const char *f = truncation_files[k];
        const char *path = strncmp(f, "data/", 5) ? f : km_test_path(f);
        size_t n;
        uint8_t *buf = slurp(path, &n);
        if (!buf) continue;
        /* The whole file decodes; every shorter prefix is an error: inside the
         * signature, the header, the data, and cut just before / inside the end
         * marker (PNG IEND is the last 12 bytes, JPEG EOI the last 2). */
        km_image im;
        CHECK_OK(km_image_load_mem(path, buf, n, &im, 0));
        km_image_free(&im);
        size_t cuts[] = {1, 2, 3, 7, 8, 20, 33, 100, n / 4, n / 2, 3 * n / 4, n - 100,
                         n - 13, n - 12, n - 11, n - 4, n - 2, n - 1};
        for (size_t j = 0; j < sizeof cuts / sizeof cuts[0]; j++) {
            if (cuts[j] >= n) continue;
            char name[64];
            snprintf(name, sizeof name, "cut%zu-of-%zu", cuts[j], n);
            /* A copy of exactly the prefix, so ASan sees any read past it. */
            uint8_t *p = km_malloc(cuts[j]);
            memcpy(p, buf, cuts[j]);
            CHECK_ERR(km_image_load_mem(name, p, cuts[j], &im, 3), KM_EFORMAT, name);
            CHECK(im.data == NULL);
            km_free(p);
        }
        km_free(buf);
    }
}

/* Flips every byte (or a stride of them in larger files) one at a time. The
 * decoder must return either an error naming the file or an image of the
 * right size; for PNG, where every critical chunk has a CRC, a success must
 * also reproduce the original pixels. */
KM_TEST(image_survives_flipped_bytes) {
    static const char *files[] = {IMG_DIR "rgb8.png", IMG_DIR "pal4_trns.png",
                                  IMG_DIR "rgb.jpg", IMG_DIR "rgb_progressive.jpg",
                                  "data/kvasir-seg/masks/cju0qkwl35piu0993l0dewei2.jpg"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        const char *path = strncmp(files[k], "data/", 5) ? files[k] : km_test_path(files[k]);
        size_t n;
        uint8_t *buf = slurp(path, &n);
        if (!buf) continue;
        km_image ref;
        CHECK_OK(km_image_load_mem(path, buf, n, &ref, 3));
        int is_png = buf[0] == 0x89;
        size_t stride = n > 4000 ? n / 199 : 1;
        int errors = 0, oks = 0, wrong = 0;
        for (size_t pos = 0; pos < n; pos += stride) {
            buf[pos] ^= 0x5A;
            km_image im;
            km_err_clear();
            km_status s = km_image_load_mem("flipped.img", buf, n, &im, 3);
            if (s) {
                errors++;
                CHECK_MSG(strstr(km_errmsg(), "flipped.img"), "pos %zu: '%s'", pos, km_errmsg());
                CHECK(im.data == NULL);
            } else {
                oks++;
                CHECK(im.c == 3 && im.w > 0 && im.h > 0 && im.data);
                if (is_png)
                    wrong += im.w != ref.w || im.h != ref.h ||
                             memcmp(im.data, ref.data, (size_t)im.w * im.h * 3);
                km_image_free(&im);
            }
            buf[pos] ^= 0x5A;
        }
        printf("    %-60s %d flips rejected, %d decoded\n", files[k], errors, oks);
        CHECK(errors > 0);
        CHECK_MSG(wrong == 0, "%s: %d flipped PNGs decoded to different pixels", path, wrong);
        km_image_free(&ref);
        km_free(buf);
    }
}

KM_TEST(image_rejects_bad_files) {
    const char *dir = km_test_tmpdir();
    char path[512];
    km_image im;

    snprintf(path, sizeof path, "%s/empty.png", dir);
    CHECK_OK(km_write_file_atomic(path, "", 0));
    CHECK_ERR(km_image_load(path, &im, 0), KM_EFORMAT, path);
    CHECK(strstr(km_errmsg(), "empty"));

    snprintf(path, sizeof path, "%s/notes (1).png", dir);
    const char *text = "this is a text file, not a PNG\n";
    CHECK_OK(km_write_file_atomic(path, text, strlen(text)));
    CHECK_ERR(km_image_load(path, &im, 0), KM_EFORMAT, path);
    CHECK(strstr(km_errmsg(), "not a PNG or JPEG"));

    snprintf(path, sizeof path, "%s/missing.jpg", dir);
    CHECK_ERR(km_image_load(path, &im, 0), KM_EIO, path);
    /* A directory: km_read_file's status (EIO or ENOMEM, from the size it
     * reports) is passed up; the message names it. */
    km_err_clear();
    CHECK(km_image_load(dir, &im, 0) != KM_OK && strstr(km_errmsg(), dir));

    CHECK_ERR(km_image_load(IMG_DIR "bad_wide.png", &im, 0), KM_ENOMEM, "bad_wide.png");
    CHECK(strstr(km_errmsg(), "40000x1"));
    CHECK_ERR(km_image_load(IMG_DIR "bad_pixels.png", &im, 0), KM_ENOMEM, "bad_pixels.png");
    CHECK(strstr(km_errmsg(), "20000x20000"));
    CHECK_ERR(km_image_load(IMG_DIR "bad_zero.png", &im, 0), KM_EFORMAT, "bad_zero.png");
    CHECK_ERR(km_image_load(IMG_DIR "bad_wide.jpg", &im, 0), KM_ENOMEM, "bad_wide.jpg");
    CHECK(strstr(km_errmsg(), "30001x8"));
    CHECK_ERR(km_image_load(IMG_DIR "cmyk.jpg", &im, 3), KM_EFORMAT, "cmyk.jpg");
    CHECK(strstr(km_errmsg(), "CMYK"));
    CHECK(im.data == NULL);

    /* A JPEG whose SOF0 says height 0 (libjpeg: DNL not supported). */
    size_t n;
    uint8_t *buf = slurp(IMG_DIR "rgb.jpg", &n);
    if (buf) {
        size_t sof = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (buf[i] == 0xFF && buf[i + 1] == 0xC0) {
                sof = i;
                break;
            }
        CHECK(sof > 0);
        buf[sof + 5] = buf[sof + 6] = 0;
        CHECK_ERR(km_image_load_mem("zero_height.jpg", buf, n, &im, 0), KM_EFORMAT,
                  "zero_height.jpg");
        km_free(buf);
    }
    /* The lower limit of the _max variant (used by the fuzzers). */
    buf = slurp(IMG_DIR "rgb8.png", &n);
    if (buf) {
        CHECK_ERR(km_image_load_mem_max("small_cap.png", buf, n, &im, 0, 100), KM_ENOMEM,
                  "small_cap.png");
        CHECK_OK(km_image_load_mem_max("small_cap.png", buf, n, &im, 0, 23 * 17));
        km_image_free(&im);
        km_free(buf);
    }
}

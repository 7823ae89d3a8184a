/* test_data.c - dataset scanning and checks (check-data on a scratch folder
 * of real Kvasir-SEG / COVID-QU-Ex files plus broken ones), preprocessing
 * against torchvision Resize + CenterCrop on PIL images (Pillow 9.4,
 * torchvision 0.14; expected bytes pasted below), augmentation as pixel
 * permutations, batch assembly, splits and split lists. */
#include "test.h"
#include "../src/core/rng.h"
#include "../src/io/image.h"
#include "../src/train/augment.h"
#include "../src/train/dataset.h"
#include "../src/train/splits.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ preprocessing */

/* The synthetic pattern of the Python generator: (x*37 + y*91 + c*53 +
 * ((x*y) % 17) * 7) % 256, high-frequency on purpose. */
static uint8_t *synth(int w, int h, int c) {
    uint8_t *a = km_malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                a[((size_t)y * w + x) * c + k] = (uint8_t)((x * 37 + y * 91 + k * 53 + ((x * y) % 17) * 7) % 256);
    return a;
}

static int hexcmp(const uint8_t *got, const char *hex, size_t n, const char *label) {
    size_t bad = 0, first = (size_t)-1;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        int d = abs((int)got[i] - (int)v);
        if (d) {
            bad++;
            if (first == (size_t)-1) first = i;
            if (d > maxd) maxd = d;
        }
    }
    printf("    %s: %zu bytes, %zu differ (max |diff| %d)\n", label, n, bad, maxd);
    return bad == 0 && strlen(hex) == 2 * n;
}

/* Expected: T.CenterCrop(S)(T.Resize(S, interpolation)(PIL image)) bytes,
 * bilinear then nearest, generated with /usr/bin/python3 (torchvision 0.14.1,
 * Pillow 9.4.0) from the same pattern. */
KM_TEST(data_resize_crop_matches_torchvision_pil) {
    static const struct {
        int w, h, c, S;
        const char *bil, *near;
    } cases[] = {
        {53, 37, 3, 12, /* downscale 3.08x; long side int(12*53/37) = 17, crop left round(2.5) = 2 */
         "727a866e7e7c7f7d667f77888b8881788283839a837375888a96867b80798785737e6f76827e7579807c77788f807f888778748b86847e7b918a918888847c867a7778747e877e6c857f848c847b8687"
         "777e846b7c7177798487897c8a8284817b7a897b8b897d7d7a7f7b757a926b7c93918586776a80777b6f797394646f717a85857a7c709984777e739a647b8883848c816b969e7b7885718d7d6e8c6f7d"
         "8563976b68997d698082897477836b9663749f727875856a939c8c7974798379877975787b87a489717b6b798183807b70877f8d82786a7f6e807e787986826f7f7d6a93767679898c7c8988867c7e8a"
         "7c8377797b787d788086747379787b767987827c7e8c868082757f898c8975797b72848a7c7e80788e877e808c868c6d7184867a7a847f8287748a7a797186778d6e7d7f807e73738579918a7d9b8299"
         "72857a8d8a966a7aa57d62887d6f937b77837279a06972697c908b72847b96828d7b75a65e84a86d7279a36c97a87e878b77857f70877c8780769f6e658f70607a768a79718d7393776781927f667e7d"
         "8a988d6e6d6d74907e73707b88849f8f71817a878a9e8a7a83887f888c6e7184",
         "8fc4f913487dc3f82dd0053a5489bed80d425c91c6e0154a6499ce71a6dbf52a5fa5da0fbcf126083d7295caffe1164ba4d90ef0255a3c71a6ff34694b80b597cc015a8fc4e71c51e91e53fd3267de13"
         "48f2275c7db2e7083d7293c8fd1e538832679cbdf227487db2b2e71c9fd409699ed3b0e51a03386dcd023720558a73a8ddc6fb3090c5fae3184d366ba0f4295ecc01365e93c8f92e6314497ea6db1038"
         "6da2caff34e51a4f77ace1093e7324598ebff429f92e635388bdcb0035255a8ff62b605085baaadf1404396e5e93c82f649989bef301366b3b70a5e91e535a8fc491c6fb3f74a976abe024598e5b90c5"
         "093e734075aaee23585f94c9689dd2de1348a3d80da2d70c184d828ec3f804396e7aafe4f0255a669bd0dc1146a1d60b95caffd3083d75aadfb3e81d689dd2a6db105b90c599ce034e83b88cc1f6caff"
         "346ca1d6c2f72cc8fd32bef328c4f92e4176abbef3283b70a5b8ed22356a9fb2e71c2f6499aee31878ade234699e90c5fad50a3f91c6fbd60b4092c7fcd70c411c5186d80d421d528779aee3a5da0f29"
         "5e93d90e43e61b506a9fd4ee235872a7dcf62b607aafe487bcf10b4075bbf025"},
        {45, 83, 1, 16, /* grey, downscale 2.8x; long int(16*83/45) = 29, crop top round(6.5) = 6 */
         "7d7f7f6f8e8075737a9478807e748577867869787a838089917f7a78757b869e83857879818988837b766c7c788a7985879f72796f726d7b71798b878f8e749b7d838f8b64666f787d7c99837e707882"
         "6f7d795f82837d6d8ea288757b717c4a89888179986e7e79869e84877c7f81667b797485848e8c90818077847f847d888f9084848e8c777e82796a837f7a7b907d9e7d84777b767d7276898a9b987393"
         "858b9b955b677982897aa68e88798388798782668289866a9695877f847e88557177736d977584768b8b62837f7d7b70807979908e92766d7d7d7d717c7f687f9783728984976f7e8b8472708787767e"
         "7399898e7786828b7d8090878c9f767a",
         "92169af276fa078be367eb6f7cd458dcb87bc7d295e12df0fb470a56a22470bcde69f429b4c853de139e293dc8fd88130457aa095c2679cc2b7ed19bee4da0f32a45d7607b0d9fba43d5f0821426b84a"
         "ee33781d62a763a8d692d71cd8064b079d21a5fd81051296ee72f67a87df63e7c386d2dda0ec38fb06521561ad2f7bc7e974ff34bfd35ee91ea93448d308931e0f62b514673184d73689dca6f958abfe"
         "3550e26b8618aac54ee0fb8d1f31c3555bb50f4ba5ffd02a66c01a744581db35a82cb0088c101da1f97d018592ea6ef2ce91dde8abf74306115d206cb83a86d2f47f0a3fcade69f429b43f53de139e29"
         "1a6dc01f723c8fe24194e7b10463b609"},
        {10, 7, 3, 12, /* upscale; long int(12*10/7) = 17, crop left round(2.5) = 2 */
         "24598e3a6fa44f84b9659acf7bb0e591c6fba7dc91bcdb26d25a3ca41d5223336813487d497eb3609595779e818e7d98877bb06692c775aa8f8cb356a36c6d90508549679c497e8882b7ec9cd17db5c6"
         "29ce4f4399285d234277275c8b4074a05a88ba719ed385b8ed9cd19abb699a898275688c5c8463797b6095517cb164998880a85f9b737b9362975e7fb4659a9bd32f5d75487d3065964f84a16e99b88c"
         "a4d69bc085abc933d35b47b42d623c4b8034699e7764966e83b86fa4be90c574b1ab65d16186987282668576c04865bd366b47568b4378ad669b878994a8a297b199ba6aa9a35dcc5b80835d9243689d"
         "9f5a8fb261836a857a7488939fd430c47c4eca40706c65835680a07b93c55d82b74173a87090c593b0aaa5d64cc79951669b468a726a9f5e81758564679c826fa4cf72a7a170a56e538897657b8cb283"
         "42b0664e184d7b3b709f669ba18dc23891c34b79a4c394c37ea3d82d3b7055362b60ae1247802c5c4d82b477ac8799ce559acf1ea5a62eb85b7991767b5e9371275c722b467b75598e807f6e6fa4d99d"
         "d278baef24a3d80db2941ce02c4a8f447932679c1b508523588d5186bb80b579",
         "255a8f4a7fb44a7fb46fa4d96fa4d994c9feb9ee23b9ee23de1348de134803386d03386d255a8f4a7fb44a7fb46fa4d96fa4d994c9feb9ee23b9ee23de1348de134803386d03386d87bcf1b3e81db3e8"
         "1ddf1449df14490b4075376ca1376ca16398cd6398cd8fc4f98fc4f9e91e531c51861c51864f84b94f84b982b7ecb5ea1fb5ea1fe81d52e81d521b50851b5085e91e531c51861c51864f84b94f84b982"
         "b7ecb5ea1fb5ea1fe81d52e81d521b50851b50854b80b585baef85baefbff429bff429f92e6333689d33689df62b60f62b6030659a30659a4b80b585baef85baefbff429bff429f92e6333689d33689d"
         "f62b60f62b6030659a30659aade217ee2358ee23582f64992f649970a5da3a6fa43a6fa47bb0e57bb0e5bcf126bcf126ade217ee2358ee23582f64992f649970a5da3a6fa43a6fa47bb0e57bb0e5bcf1"
         "26bcf1260f4479578cc1578cc19fd4099fd40970a5dab8ed22b8ed2200356a00356ad1063bd1063b71a6dbc0f52ac0f52a98cd0298cd02e71c51366ba0366ba00e43780e43785d92c75d92c771a6dbc0"
         "f52ac0f52a98cd0298cd02e71c51366ba0366ba00e43780e43785d92c75d92c7"},
    };
    for (int i = 0; i < 3; i++) {
        int w = cases[i].w, h = cases[i].h, c = cases[i].c, S = cases[i].S;
        uint8_t *src = synth(w, h, c), *out = km_malloc((size_t)S * S * c);
        char label[128];
        km_resize_crop_bilinear_u8(src, w, h, c, S, out);
        snprintf(label, sizeof label, "%dx%dx%d -> %d bilinear vs PIL", w, h, c, S);
        CHECK(hexcmp(out, cases[i].bil, (size_t)S * S * c, label));
        km_resize_crop_nearest_u8(src, w, h, c, S, out);
        snprintf(label, sizeof label, "%dx%dx%d -> %d nearest vs PIL", w, h, c, S);
        CHECK(hexcmp(out, cases[i].near, (size_t)S * S * c, label));
        km_free(src);
        km_free(out);
    }
}

KM_TEST(data_geometry_rules) {
    km_geom g;
    km_geom_compute(622, 529, 224, &g); /* Kvasir cju0qkwl35piu0993l0dewei2 */
    CHECK(g.rw == 263 && g.rh == 224 && g.left == 20 && g.top == 0); /* int(263.39); round(19.5) = 20 */
    km_geom_compute(332, 487, 224, &g);
    CHECK(g.rw == 224 && g.rh == 328 && g.top == 52 && g.left == 0);
    km_geom_compute(1920, 1072, 224, &g);
    CHECK(g.rw == 401 && g.rh == 224 && g.left == 88); /* int(401.19); round(88.5) = 88 */
    km_geom_compute(256, 256, 224, &g);
    CHECK(g.rw == 224 && g.rh == 224 && g.left == 0 && g.top == 0);
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* Real files through decoder + preprocessing, against torchvision on PIL
 * (hashes of the uint8 crop and the {0,1} mask at S = 64). Measured when
 * written: all 1000 Kvasir-SEG pairs at 224 and 30 COVID pairs were
 * bit-identical to torchvision + PIL. */
KM_TEST(data_real_files_match_torchvision_pil) {
    struct {
        const char *dir, *name;
        uint64_t himg, hmask;
        int fg, px0, px_31_40;
    } cases[] = {
        {"data/kvasir-seg", "cju0qkwl35piu0993l0dewei2.jpg", 0xb92657311696b9c0ULL, 0xa1b128d5c8610249ULL, 1356, 0, 230},
        {"data/covid-qu-ex/train", "covid_1.png", 0xa925e6b53065d5f8ULL, 0x158fe680f50c56d3ULL, 640, 20, 119},
    };
    const int S = 64;
    for (int i = 0; i < 2; i++) {
        char p[1024];
        km_image im, mk;
        snprintf(p, sizeof p, "%s/images/%s", cases[i].dir, cases[i].name);
        CHECK_OK(km_image_load(km_test_path(p), &im, 3));
        snprintf(p, sizeof p, "%s/masks/%s", cases[i].dir, cases[i].name);
        CHECK_OK(km_image_load(km_test_path(p), &mk, 1));
        uint8_t rgb[64 * 64 * 3], m[64 * 64];
        CHECK_OK(km_preprocess_image(&im, S, rgb));
        km_preprocess_mask(&mk, S, m);
        int fg = 0;
        for (int k = 0; k < S * S; k++) fg += m[k];
        printf("    %s: image hash %016llx, mask hash %016llx, %d fg pixels\n", cases[i].name,
               (unsigned long long)fnv1a(rgb, sizeof rgb), (unsigned long long)fnv1a(m, sizeof m), fg);
        CHECK(fnv1a(rgb, sizeof rgb) == cases[i].himg);
        CHECK(fnv1a(m, sizeof m) == cases[i].hmask);
        CHECK(fg == cases[i].fg && rgb[0] == cases[i].px0 && rgb[(31 * 64 + 40) * 3] == cases[i].px_31_40);
        km_image_free(&im);
        km_image_free(&mk);
    }
}

/* ------------------------------------------------------------- augmentation */

KM_TEST(aug_ops_are_aligned_pixel_permutations) {
    /* numpy references on m = arange(9).reshape(3, 3) */
    const uint8_t m[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    const struct {
        uint8_t code;
        uint8_t want[9];
    } ref[] = {
        {KM_AUG_HFLIP, {2, 1, 0, 5, 4, 3, 8, 7, 6}},     /* m[:, ::-1] */
        {KM_AUG_VFLIP, {6, 7, 8, 3, 4, 5, 0, 1, 2}},     /* m[::-1] */
        {KM_AUG_ROT90, {2, 5, 8, 1, 4, 7, 0, 3, 6}},     /* np.rot90(m) */
        {KM_AUG_TRANSPOSE, {0, 3, 6, 1, 4, 7, 2, 5, 8}}, /* m.T */
        {KM_AUG_HFLIP | KM_AUG_ROT90, {0, 3, 6, 1, 4, 7, 2, 5, 8}}, /* np.rot90(m[:, ::-1]) == m.T */
        {KM_AUG_VFLIP | KM_AUG_ROT90 | KM_AUG_TRANSPOSE, {8, 7, 6, 5, 4, 3, 2, 1, 0}}, /* np.rot90(m[::-1]).T */
        {KM_AUG_HFLIP | KM_AUG_VFLIP | KM_AUG_ROT90, {6, 3, 0, 7, 4, 1, 8, 5, 2}}, /* np.rot90(m[::-1, ::-1]) */
    };
    for (int i = 0; i < 7; i++) {
        uint8_t out[9];
        km_aug_apply_u8(ref[i].code, 3, 1, m, out);
        CHECK_MSG(!memcmp(out, ref[i].want, 9), "code %d differs from numpy", ref[i].code);
    }
    /* every code at S = 7: a permutation; out[map(p)] = in[p]; inverse
     * undoes forward; image and mask (and f32 maps) move together */
    const int S = 7, P = S * S;
    uint8_t img[7 * 7 * 3], msk[7 * 7], oi[7 * 7 * 3], om[7 * 7];
    float f[7 * 7], of[7 * 7];
    for (int p = 0; p < P; p++) {
        img[3 * p] = (uint8_t)p;
        img[3 * p + 1] = (uint8_t)(p * 3);
        img[3 * p + 2] = (uint8_t)(200 - p);
        msk[p] = (uint8_t)(p % 5 == 0);
        f[p] = (float)p * 0.5f;
    }
    int bad = 0;
    for (int code = 0; code < 16; code++) {
        km_aug_apply_u8((uint8_t)code, S, 3, img, oi);
        km_aug_apply_u8((uint8_t)code, S, 1, msk, om);
        km_aug_apply_f32((uint8_t)code, S, f, of);
        int seen[49] = {0};
        for (int q = 0; q < P; q++) seen[oi[3 * q]]++;
        for (int p = 0; p < P; p++) bad += seen[p] != 1;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int u, v, bx, by;
                km_aug_map_point((uint8_t)code, S, x, y, 0, &u, &v);
                km_aug_map_point((uint8_t)code, S, u, v, 1, &bx, &by);
                bad += bx != x || by != y;
                int q = v * S + u, p = y * S + x;
                bad += oi[3 * q] != img[3 * p] || oi[3 * q + 1] != img[3 * p + 1] || oi[3 * q + 2] != img[3 * p + 2];
                bad += om[q] != msk[p] || of[q] != f[p];
            }
        int box[4] = {1, 2, 4, 3}, fb[4], back[4];
        km_aug_map_box((uint8_t)code, S, box, 0, fb);
        km_aug_map_box((uint8_t)code, S, fb, 1, back);
        bad += memcmp(box, back, sizeof box) != 0 || fb[0] > fb[2] || fb[1] > fb[3];
        /* box area is preserved by a symmetry */
        bad += (fb[2] - fb[0] + 1) * (fb[3] - fb[1] + 1) != 4 * 2;
    }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
    /* rot90 forward of a concrete point, (x, y) -> (y, S-1-x) */
    int u, v;
    km_aug_map_point(KM_AUG_ROT90, 7, 1, 2, 0, &u, &v);
    CHECK(u == 2 && v == 5);
}

KM_TEST(aug_draw_is_seeded_and_uniform) {
    km_rng a, b;
    km_rng_seed(&a, 7);
    km_rng_seed(&b, 7);
    int hist[16] = {0}, same = 1;
    for (int i = 0; i < 16000; i++) {
        uint8_t x = km_aug_draw(&a), y = km_aug_draw(&b);
        same &= x == y;
        hist[x]++;
    }
    CHECK(same);
    for (int i = 0; i < 16; i++) CHECK_MSG(hist[i] > 850 && hist[i] < 1150, "code %d drawn %d times", i, hist[i]);
    /* exactly 4 uniforms per draw */
    km_rng_seed(&a, 9);
    km_rng_seed(&b, 9);
    km_aug_draw(&a);
    for (int i = 0; i < 4; i++) km_rng_uniform(&b);
    CHECK(km_rng_u64(&a) == km_rng_u64(&b));
}

KM_TEST(data_batch_fill_normalises_and_aligns) {
    const int S = 8, P = S * S;
    km_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n = 2;
    ds.size = S;
    ds.images = km_malloc((size_t)2 * P * 3);
    ds.masks = km_malloc((size_t)2 * P);
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < P; p++) {
            int fg = (p % S) < 3 && (p / S) < 2 + k; /* a corner block */
            ds.masks[k * P + p] = (uint8_t)fg;
            ds.images[(k * P + p) * 3 + 0] = fg ? 255 : 0;
            ds.images[(k * P + p) * 3 + 1] = (uint8_t)p;
            ds.images[(k * P + p) * 3 + 2] = 128;
        }
    float *x = km_malloc(sizeof(float) * 3 * 3 * P), *y = km_malloc(sizeof(float) * 3 * P);
    const int which[3] = {1, 0, 1};
    const uint8_t aug[3] = {0, KM_AUG_ROT90 | KM_AUG_VFLIP, KM_AUG_TRANSPOSE | KM_AUG_HFLIP};
    km_batch_fill(&ds, which, aug, 3, x, y);
    /* torchvision: ToTensor then Normalize, float32 */
    const float lo = (0.0f / 255.0f - 0.485f) / 0.229f, hi = (255.0f / 255.0f - 0.485f) / 0.229f;
    CHECK_NEAR(lo, -2.1179039, 1e-6);
    CHECK_NEAR(hi, 2.2489083, 1e-6);
    int bad = 0;
    for (int b = 0; b < 3; b++)
        for (int q = 0; q < P; q++) {
            float r = x[(size_t)b * 3 * P + q], m = y[(size_t)b * P + q];
            bad += (m == 1.0f) != (r == hi) || (m == 0.0f) != (r == lo);
            bad += x[(size_t)b * 3 * P + 2 * P + q] != (128.0f / 255.0f - 0.406f) / 0.225f;
            /* the green channel carries the source pixel index: check the map */
            int u = q % S, v = q / S, sx, sy;
            km_aug_map_point(aug[b], S, u, v, 1, &sx, &sy);
            bad += x[(size_t)b * 3 * P + P + q] != ((float)(sy * S + sx) / 255.0f - 0.456f) / 0.224f;
        }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
    /* no augmentation = identity */
    km_batch_fill(&ds, which, NULL, 1, x, NULL);
    CHECK(x[P + 5] == ((float)5 / 255.0f - 0.456f) / 0.224f);
    km_free(x);
    km_free(y);
    km_free(ds.images);
    km_free(ds.masks);
}

/* ------------------------------------------------------------------ splits */

static int disjoint_cover(const km_split *s, int n) {
    int *seen = km_calloc(sizeof(int) * (size_t)n);
    const int *l[3] = {s->train, s->val, s->test};
    int ln[3] = {s->n_train, s->n_val, s->n_test}, ok = 1;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < ln[k]; i++) {
            ok &= l[k][i] >= 0 && l[k][i] < n && !seen[l[k][i]];
            seen[l[k][i]] = 1;
            if (i) ok &= l[k][i] > l[k][i - 1]; /* ascending */
        }
    for (int i = 0; i < n; i++) ok &= seen[i];
    km_free(seen);
    return ok;
}

static int is_subset(const int *a, int na, const int *b, int nb) {
    int j = 0;
    for (int i = 0; i < na; i++) {
        while (j < nb && b[j] < a[i]) j++;
        if (j == nb || b[j] != a[i]) return 0;
    }
    return 1;
}

KM_TEST(splits_sizes_disjoint_nested_deterministic) {
    const int ns[4] = {1000, 1864, 7, 1}, want[4][3] = {{800, 100, 100}, {1492, 186, 186}, {5, 1, 1}, {1, 0, 0}};
    for (int t = 0; t < 4; t++) {
        km_split s;
        km_split_random(ns[t], 42, 0.1, 0.1, &s);
        CHECK_MSG(s.n_train == want[t][0] && s.n_val == want[t][1] && s.n_test == want[t][2], "n=%d: %d/%d/%d",
                  ns[t], s.n_train, s.n_val, s.n_test);
        CHECK(disjoint_cover(&s, ns[t]));
        km_split_free(&s);
    }
    km_split a, b, c;
    km_split_random(1000, 42, 0.1, 0.1, &a);
    km_split_random(1000, 42, 0.1, 0.1, &b);
    km_split_random(1000, 43, 0.1, 0.1, &c);
    CHECK(!memcmp(a.val, b.val, sizeof(int) * 100) && !memcmp(a.test, b.test, sizeof(int) * 100));
    CHECK(memcmp(a.val, c.val, sizeof(int) * 100) != 0);
    /* nested labelled fractions of the train split */
    const double fr[4] = {0.25, 0.5, 0.75, 1.0};
    const int nl_want[4] = {200, 400, 600, 800};
    int *lab[4], *unl[4], nl[4], nu[4];
    for (int i = 0; i < 4; i++) {
        km_split_labelled(&a, fr[i], 42, &lab[i], &nl[i], &unl[i], &nu[i]);
        CHECK(nl[i] == nl_want[i] && nu[i] == 800 - nl_want[i]);
        CHECK(is_subset(lab[i], nl[i], a.train, a.n_train) && is_subset(unl[i], nu[i], a.train, a.n_train));
        if (i) CHECK(is_subset(lab[i - 1], nl[i - 1], lab[i], nl[i]));
    }
    CHECK(!memcmp(lab[3], a.train, sizeof(int) * 800));
    /* labelled and unlabelled are disjoint */
    int overlap = 0;
    for (int i = 0; i < nl[1]; i++)
        for (int j = 0; j < nu[1]; j++) overlap += lab[1][i] == unl[1][j];
    CHECK(overlap == 0);
    int *l2, *u2, n2, m2;
    km_split_labelled(&a, 0.5, 42, &l2, &n2, &u2, &m2);
    CHECK(n2 == 400 && !memcmp(l2, lab[1], sizeof(int) * 400));
    km_free(l2);
    km_free(u2);
    km_split_labelled(&a, 0.5, 44, &l2, &n2, &u2, &m2);
    CHECK(memcmp(l2, lab[1], sizeof(int) * 400) != 0);
    km_free(l2);
    km_free(u2);
    km_split_labelled(&a, 0.333, 1, &l2, &n2, &u2, &m2);
    CHECK(n2 == 266); /* floor(0.333 * 800 + 0.5) = floor(266.9) */
    km_free(l2);
    km_free(u2);
    for (int i = 0; i < 4; i++) {
        km_free(lab[i]);
        km_free(unl[i]);
    }
    km_split_free(&a);
    km_split_free(&b);
    km_split_free(&c);
}

/* ---------------------------------------------------------- scratch dataset */

static const char *K1 = "cju0qkwl35piu0993l0dewei2", *K2 = "cju0qoxqj9q6s0835b43399p4",
                  *K3 = "cju0qx73cjw570799j4n5cjze";

static void sh_ok(const char *cmd) {
    int r = km_test_sh("%s", cmd);
    CHECK_MSG(r == 0, "shell command failed (%d): %s", r, cmd);
}

static void write_png(const char *path, int w, int h, int mode) {
    km_image m = {w, h, 1, km_malloc((size_t)w * h)};
    for (int i = 0; i < w * h; i++)
        m.data[i] = mode == 0 ? 0 : mode == 1 ? (uint8_t)(i % 256) : (uint8_t)((i % w) * 3 / w); /* 2: a 0/1/2 label map */
    CHECK_OK(km_image_save_png(path, &m));
    km_image_free(&m);
}

/* (COVID ids of the official set are not contiguous; copies are renamed.)
 * dir/good: 5 valid pairs (one with an empty mask). dir/bad: the same plus
 * every kind of problem. */
static void build_scratch(const char *dir) {
    static char cmd[65536];
    char kv[PATH_MAX], cv[PATH_MAX]; /* absolute: the commands cd first */
    if (!realpath(km_test_path("data/kvasir-seg"), kv) || !realpath(km_test_path("data/covid-qu-ex/train"), cv)) {
        CHECK_MSG(0, "shared data not found under %s", km_test_shared());
        return;
    }
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; for d in good bad; do mkdir -p $d/images $d/masks;"
             " cp '%s/images/%s.jpg' '%s/images/%s.jpg' $d/images/; cp '%s/masks/%s.jpg' '%s/masks/%s.jpg' $d/masks/;"
             " cp '%s/images/covid_1.png' \"$d/images/Non_COVID (28).png\"; cp '%s/masks/covid_1.png' \"$d/masks/Non_COVID (28).PNG\";"
             " cp '%s/images/covid_11.png' $d/images/covid_10.png; cp '%s/masks/covid_11.png' $d/masks/covid_10.png;"
             " cp '%s/images/covid_12.png' $d/images/empty.png; done",
             dir, kv, K1, kv, K2, kv, K1, kv, K2, cv, cv, cv, cv, cv);
    sh_ok(cmd);
    char p[1024];
    snprintf(p, sizeof p, "%s/good/masks/empty.png", dir);
    write_png(p, 256, 256, 0);
    snprintf(p, sizeof p, "%s/bad/masks/empty.png", dir);
    write_png(p, 256, 256, 0);
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s/bad'; head -c 3000 '%s/images/%s.jpg' > images/trunc.jpg; cp '%s/masks/%s.jpg' masks/trunc.jpg;"
             " cp '%s/images/covid_14.png' images/nomask.png;"
             " cp '%s/masks/covid_15.png' masks/orphan.png;"
             " cp '%s/images/%s.jpg' images/sizemis.jpg; cp '%s/masks/covid_4.png' masks/sizemis.png;"
             " cp '%s/images/covid_5.png' images/nonbin.png; cp '%s/images/covid_6.png' images/labelmap.png;"
             " echo hello > images/notes.txt; touch images/.DS_Store;"
             " cp '%s/images/covid_7.png' images/dup.png; cp '%s/images/covid_7.png' images/dup.jpg; cp '%s/masks/covid_7.png' masks/dup.png;"
             " cp '%s/images/covid_16.png' images/badmask.png; head -c 500 /dev/zero > masks/badmask.png",
             dir, kv, K3, kv, K3, cv, cv, kv, K3, cv, cv, cv, cv, cv, cv, cv);
    sh_ok(cmd);
    snprintf(p, sizeof p, "%s/bad/masks/nonbin.png", dir);
    write_png(p, 256, 256, 1);
    snprintf(p, sizeof p, "%s/bad/masks/labelmap.png", dir);
    write_png(p, 256, 256, 2);
}

static int has_issue(const km_issues *l, int is_error, const char *path, const char *needle) {
    for (int i = 0; i < l->n; i++)
        if (l->items[i].is_error == is_error && !strcmp(l->items[i].path, path) && strstr(l->items[i].msg, needle))
            return 1;
    return 0;
}

KM_TEST(data_check_lists_every_problem) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/ds", km_test_tmpdir());
    mkdir(dir, 0755);
    build_scratch(dir);
    snprintf(p, sizeof p, "%s/bad", dir);
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(p, NULL, &idx, &iss));
    km_data_stats st;
    km_set_threads(2);
    km_dataset_verify(&idx, 64, &iss, &st);
    km_issues_print(&iss, stdout, 0);
    /* indexed pairs: K1 K2 Non_COVID (28) covid_10 empty trunc sizemis nonbin labelmap badmask */
    CHECK_MSG(idx.n == 10, "indexed %d", idx.n);
    if (idx.n != 10) return;
    CHECK(idx.n_hidden == 1);
    CHECK(has_issue(&iss, 1, "images/trunc.jpg", "unreadable image"));
    CHECK(has_issue(&iss, 1, "images/nomask.png", "no mask"));
    CHECK(has_issue(&iss, 1, "masks/orphan.png", "mask without an image"));
    CHECK(has_issue(&iss, 1, "masks/sizemis.png", "mask is 256x256 but its image is"));
    CHECK(has_issue(&iss, 1, "masks/nonbin.png", "non-binary mask"));
    CHECK(has_issue(&iss, 1, "masks/labelmap.png", "a label map (values 0, 1, 2): choose the foreground value with --label"));
    CHECK(has_issue(&iss, 1, "images/notes.txt", "unsupported file type"));
    CHECK(has_issue(&iss, 1, "images/dup.jpg", "ambiguous") && has_issue(&iss, 1, "images/dup.png", "ambiguous"));
    CHECK(has_issue(&iss, 1, "masks/dup.png", "mask without an image"));
    CHECK(has_issue(&iss, 1, "masks/badmask.png", "unreadable mask"));
    CHECK(has_issue(&iss, 0, "masks/empty.png", "empty mask"));
    CHECK_MSG(iss.n_err == 11 && iss.n_warn == 1, "%d errors, %d warnings", iss.n_err, iss.n_warn);
    CHECK(st.n_pairs == 5 && st.n_empty == 1 && st.n_rgb == 3 && st.n_grey == 6);
    CHECK(km_issues_status(&iss, "x") == KM_EFORMAT && strstr(km_errmsg(), "11 errors"));
    /* loading the bad folder fails with the count and the first problem */
    int all[10];
    for (int i = 0; i < 10; i++) all[i] = i;
    km_dataset ds;
    CHECK_ERR(km_dataset_load(&idx, all, 10, 64, 1, &ds, NULL), KM_EFORMAT, "check-data");
    km_dataset_index_free(&idx);
    km_issues_free(&iss);

    /* the command: every problem printed, non-zero exit; good folder passes */
    const char *bin = getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg";
    int r = km_test_sh("'%s' check-data --data '%s/bad' --size 64 > '%s/out_bad.txt' 2>&1", bin, dir, dir);
    CHECK(r == 1);
    snprintf(p, sizeof p, "%s/out_bad.txt", dir);
    uint8_t *txt;
    size_t n;
    CHECK_OK(km_read_file(p, 1 << 20, &txt, &n));
    char *s = km_malloc(n + 1);
    memcpy(s, txt, n);
    s[n] = 0;
    printf("%s", s);
    const char *needles[] = {"error: images/trunc.jpg: unreadable image", "error: images/nomask.png: no mask",
                             "error: masks/orphan.png", "error: masks/sizemis.png", "error: masks/nonbin.png",
                             "error: masks/labelmap.png", "error: images/notes.txt", "error: masks/badmask.png",
                             "warning: masks/empty.png: empty mask", "11 errors, 1 warning", "11 errors found"};
    for (int i = 0; i < 11; i++) CHECK_MSG(strstr(s, needles[i]), "output lacks '%s'", needles[i]);
    km_free(s);
    km_free(txt);
    r = km_test_sh("'%s' check-data --data '%s/good' --size 64 > '%s/out_good.txt' 2>&1", bin, dir, dir);
    CHECK(r == 0);
    r = km_test_sh("grep -q '0 errors, 1 warning' '%s/out_good.txt'", dir);
    CHECK(r == 0);
    r = km_test_sh("'%s' check-data --data '%s/nothere' > /dev/null 2>&1", bin, dir);
    CHECK(r == 1);
}

KM_TEST(data_load_cache_and_split_lists) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/ds2", km_test_tmpdir());
    mkdir(dir, 0755);
    build_scratch(dir);
    snprintf(p, sizeof p, "%s/good", dir);
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan(p, NULL, &idx, &iss));
    CHECK(iss.n == 0 && idx.n == 5);
    if (idx.n != 5) return;
    /* sorted by id, byte order */
    CHECK(!strcmp(idx.items[0].id, "Non_COVID (28)") && !strcmp(idx.items[1].id, K1) &&
          !strcmp(idx.items[4].id, "empty"));
    CHECK(km_dataset_find(&idx, "Non_COVID (28).png") == 0 && km_dataset_find(&idx, "covid_10.JPG") == 3);
    CHECK(km_dataset_find(&idx, "nothere") == -1);
    int all[5] = {0, 1, 2, 3, 4};
    km_dataset a, b;
    km_set_threads(1);
    CHECK_OK(km_dataset_load(&idx, all, 5, 64, 1, &a, &iss));
    km_set_threads(2);
    CHECK_OK(km_dataset_load(&idx, all, 5, 64, 1, &b, &iss));
    CHECK(iss.n_err == 0 && iss.n_warn == 2); /* the empty mask, once per load */
    CHECK(!memcmp(a.images, b.images, (size_t)5 * 64 * 64 * 3) && !memcmp(a.masks, b.masks, (size_t)5 * 64 * 64));
    CHECK(a.orig_w[1] == 622 && a.orig_h[1] == 529 && a.orig_w[0] == 256);
    int fg[5] = {0}, binary = 1;
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < 64 * 64; i++) {
            fg[k] += a.masks[k * 64 * 64 + i];
            binary &= a.masks[k * 64 * 64 + i] <= 1;
        }
    CHECK(binary && fg[0] == 640 && fg[1] == 1356 && fg[4] == 0); /* torchvision counts (see above) */
    /* grey replicated: R == G == B for the COVID image */
    CHECK(a.images[300 * 3] == a.images[300 * 3 + 1] && a.images[300 * 3] == a.images[300 * 3 + 2]);
    km_dataset_free(&a);
    km_dataset_free(&b);

    /* split lists: extensions, spaces, comments, CRLF accepted */
    char tr[800], va[800], te[800];
    snprintf(tr, sizeof tr, "%s/train_ok.txt", dir);
    snprintf(va, sizeof va, "%s/val_ok.txt", dir);
    snprintf(te, sizeof te, "%s/test_ok.txt", dir);
    char body[512];
    snprintf(body, sizeof body, "%s.jpg\nNon_COVID (28)\n\n# comment\n  covid_10 \r\n", K1);
    CHECK_OK(km_write_file_atomic(tr, body, strlen(body)));
    CHECK_OK(km_write_file_atomic(va, "empty\n", 6));
    snprintf(body, sizeof body, "%s\n", K2);
    CHECK_OK(km_write_file_atomic(te, body, strlen(body)));
    km_split sp;
    CHECK_OK(km_split_from_lists(&idx, tr, va, te, &sp, &iss));
    CHECK(sp.n_train == 3 && sp.n_val == 1 && sp.n_test == 1 && disjoint_cover(&sp, 5));
    /* written to a run folder and read back identically */
    snprintf(p, sizeof p, "%s/run", dir);
    mkdir(p, 0755);
    CHECK_OK(km_split_write(&idx, &sp, p));
    km_split back;
    CHECK_OK(km_split_from_dir(&idx, p, &back, NULL));
    CHECK(back.n_train == 3 && !memcmp(back.train, sp.train, sizeof(int) * 3) && back.val[0] == sp.val[0] &&
          back.test[0] == sp.test[0]);
    snprintf(p, sizeof p, "grep -qx 'Non_COVID (28)' '%s/run/train.txt'", dir);
    CHECK(km_test_sh("%s", p) == 0);
    km_split_free(&back);
    km_split_free(&sp);

    /* bad lists: unknown id, duplicate, overlap - all reported */
    snprintf(body, sizeof body, "%s\nnosuch\ncovid_10\ncovid_10.png\n", K1);
    CHECK_OK(km_write_file_atomic(tr, body, strlen(body)));
    CHECK_OK(km_write_file_atomic(va, "covid_10\nempty\n", 15));
    km_issues_free(&iss);
    km_issues_init(&iss);
    CHECK_ERR(km_split_from_lists(&idx, tr, va, NULL, &sp, &iss), KM_EFORMAT, "3 errors");
    km_issues_print(&iss, stdout, 0);
    CHECK(iss.n_err == 3);
    CHECK(strstr(iss.items[0].msg, "unknown id 'nosuch'") && strstr(iss.items[0].path, ":2"));
    CHECK(strstr(iss.items[1].msg, "duplicate id 'covid_10.png'"));
    CHECK(strstr(iss.items[2].msg, "'covid_10' is in both the train and the val list"));
    CHECK_ERR(km_split_from_dir(&idx, dir, &sp, NULL), KM_EMISSING, "train.txt");
    /* the command reports split problems too */
    const char *bin = getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg";
    int r = km_test_sh("'%s' check-data --data '%s/good' --train-list '%s' --val-list '%s' > '%s/o.txt' 2>&1 && exit 9;"
                       " grep -q \"unknown id 'nosuch'\" '%s/o.txt'", bin, dir, tr, va, dir, dir);
    CHECK(r == 0);
    km_issues_free(&iss);
    km_dataset_index_free(&idx);
}

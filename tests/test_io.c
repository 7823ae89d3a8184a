/* test_io.c - checkpoint and array file I/O: .pth (zip + legacy pickle stream),
 * safetensors, .npy, JSON, content sniffing and `kmseg info`.
 *
 * Expected values come from tests/data/io/, written by tools/make_io_testdata.py
 * with torch 1.13 / numpy 1.24 (and the safetensors package for
 * ref.safetensors); the fixtures' state dicts are checked against their
 * manifest.json listing and torch-computed sums. Bad-input tests cut, flip and
 * hand-craft files and require an error that names the file, never a crash (the
 * suite also runs under make DEBUG=1, ASan + UBSan). */
#include "test.h"

#include "../src/core/rng.h"
#include "../src/io/json.h"
#include "../src/io/load.h"
#include "../src/io/npy.h"
#include "../src/io/pth.h"
#include "../src/io/safetensors.h"

#define D "tests/data/io/"

/* ---- helpers ------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *n) {
    uint8_t *b = NULL;
    if (km_read_file(path, (size_t)1 << 30, &b, n) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "cannot read %s: %s", path, km_errmsg());
        return NULL;
    }
    return b;
}

static double elem(const void *p, km_dtype dt, int64_t i) {
    switch (dt) {
    case KM_F32: return ((const float *)p)[i];
    case KM_F16: return km_f16_to_f32(((const uint16_t *)p)[i]);
    case KM_BF16: return km_bf16_to_f32(((const uint16_t *)p)[i]);
    case KM_F64: return ((const double *)p)[i];
    case KM_I64: return (double)((const int64_t *)p)[i];
    case KM_I32: return ((const int32_t *)p)[i];
    case KM_I16: return ((const int16_t *)p)[i];
    case KM_I8: return ((const int8_t *)p)[i];
    case KM_U8: case KM_BOOL: return ((const uint8_t *)p)[i];
    }
    return NAN;
}

static int same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Tensor `name` of d must equal the array in `npy` exactly (shape and every
 * value; float16/bfloat16 references are stored as their float32 values). */
static void check_vs_npy(const km_tdict *d, const char *name, const char *npy, km_dtype want_dt) {
    km_tensor *t = km_tdict_find(d, name);
    CHECK_MSG(t != NULL, "missing tensor %s", name);
    if (!t) return;
    CHECK_MSG(t->dtype == want_dt, "%s: dtype %s, expected %s", name, km_dtype_name(t->dtype),
              km_dtype_name(want_dt));
    km_tensor r;
    CHECK_OK(km_npy_load(npy, &r));
    if (!r.name) return;
    CHECK_MSG(same_shape(t->ndim, t->shape, r.ndim, r.shape), "%s: shape differs from %s", name, npy);
    if (same_shape(t->ndim, t->shape, r.ndim, r.shape)) {
        int64_t n = km_numel(t->ndim, t->shape), bad = 0;
        for (int64_t i = 0; i < n; i++) bad += elem(t->data, t->dtype, i) != elem(r.data, r.dtype, i);
        CHECK_MSG(bad == 0, "%s: %lld of %lld values differ from %s", name, (long long)bad,
                  (long long)n, npy);
    }
    km_tensor_free(&r);
}

static const char *k_tiny_keys[] = {"0.weight",       "1.weight",     "1.bias",
                                    "1.running_mean", "1.running_var", "1.num_batches_tracked",
                                    "3.weight",       "3.bias"};

static void check_tiny(const km_tdict *d) {
    CHECK(d->n == 8);
    for (int i = 0; i < 8 && i < d->n; i++)
        CHECK_MSG(!strcmp(d->items[i].name, k_tiny_keys[i]), "key %d is %s, expected %s", i,
                  d->items[i].name, k_tiny_keys[i]);
    char p[256];
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof p, D "tiny.%s.npy", k_tiny_keys[i]);
        check_vs_npy(d, k_tiny_keys[i], p, i == 5 ? KM_I64 : KM_F32);
    }
    km_tensor *nbt = km_tdict_find(d, "1.num_batches_tracked");
    if (nbt) CHECK(nbt->ndim == 0 && ((int64_t *)nbt->data)[0] == 7);
}

/* ---- .pth: good files ------------------------------------------------------ */

KM_TEST(io_pth_zip_and_legacy_match_torch) {
    const char *files[] = {D "tiny_zip.pth", D "tiny_legacy.pth", D "nested_state_dict.pth"};
    for (int f = 0; f < 3; f++) {
        km_tdict d;
        CHECK_OK(km_pth_load(files[f], &d));
        check_tiny(&d);
        km_tdict_free(&d);
    }
}

KM_TEST(io_pth_half_bfloat16_double_int_bool) {
    const char *files[] = {D "mixed_zip.pth", D "mixed_legacy.pth"};
    const char *keys[] = {"h", "b", "d", "i32", "u8", "flag", "scalar", "empty"};
    km_dtype dts[] = {KM_F16, KM_BF16, KM_F64, KM_I32, KM_U8, KM_BOOL, KM_F32, KM_F32};
    for (int f = 0; f < 2; f++) {
        km_tdict d;
        CHECK_OK(km_pth_load_raw(files[f], &d));
        CHECK(d.n == 8);
        char p[256];
        for (int i = 0; i < 8; i++) {
            snprintf(p, sizeof p, D "mixed.%s.npy", keys[i]);
            check_vs_npy(&d, keys[i], p, dts[i]);
        }
        /* Conversion to float32 keeps integers, turns h/b/d into float32 with
         * the same values (d rounded to float). */
        km_tdict_to_f32(&d);
        km_tensor *h = km_tdict_find(&d, "h"), *dd = km_tdict_find(&d, "d"), *i = km_tdict_find(&d, "i32");
        CHECK(h && h->dtype == KM_F32 && dd && dd->dtype == KM_F32 && i && i->dtype == KM_I32);
        check_vs_npy(&d, "h", D "mixed.h.npy", KM_F32);
        check_vs_npy(&d, "b", D "mixed.b.npy", KM_F32);
        km_tensor r;
        CHECK_OK(km_npy_load(D "mixed.d.npy", &r));
        for (int k = 0; k < 3 && dd; k++) CHECK(((float *)dd->data)[k] == (float)((double *)r.data)[k]);
        km_tensor_free(&r);
        km_tdict_free(&d);
        /* km_pth_load converts itself. */
        CHECK_OK(km_pth_load(files[f], &d));
        check_vs_npy(&d, "b", D "mixed.b.npy", KM_F32);
        check_vs_npy(&d, "flag", D "mixed.flag.npy", KM_BOOL);
        km_tdict_free(&d);
    }
}

KM_TEST(io_pth_noncontiguous_views_are_materialised) {
    const char *files[] = {D "noncontig_zip.pth", D "noncontig_legacy.pth"};
    const char *keys[] = {"t", "s", "p", "row", "e"};
    for (int f = 0; f < 2; f++) {
        km_tdict d;
        CHECK_OK(km_pth_load(files[f], &d));
        CHECK(d.n == 5);
        char p[256];
        for (int i = 0; i < 5; i++) {
            snprintf(p, sizeof p, D "noncontig.%s.npy", keys[i]);
            check_vs_npy(&d, keys[i], p, KM_F32);
        }
        km_tdict_free(&d);
    }
}

KM_TEST(io_pth_nested_dicts_are_flattened) {
    km_tdict d;
    CHECK_OK(km_pth_load(D "nested_multi.pth", &d));
    /* {"model": {"enc": {"w"}, "b"}, "epoch": 3, "opt": {...}}: two tensors,
     * non-tensor leaves skipped. */
    CHECK(d.n == 2);
    if (d.n == 2) {
        CHECK(!strcmp(d.items[0].name, "model.enc.w") && !strcmp(d.items[1].name, "model.b"));
    }
    check_vs_npy(&d, "model.enc.w", D "tiny.3.weight.npy", KM_F32);
    check_vs_npy(&d, "model.b", D "tiny.3.bias.npy", KM_F32);
    km_tdict_free(&d);
}

KM_TEST(io_pth_legacy_2017_torchvision_style) {
    /* _rebuild_tensor (v1) + 6-element storage ids, no num_batches_tracked,
     * fc.* present, as in resnet34-333f7ec4.pth. */
    km_tdict d;
    CHECK_OK(km_pth_load(D "resnet_legacy_v1.pth", &d));
    CHECK(d.n == 52);
    for (int i = 0; i < d.n; i++) CHECK(!strstr(d.items[i].name, "num_batches_tracked"));
    CHECK(d.n > 1 && !strcmp(d.items[d.n - 2].name, "fc.weight") &&
          !strcmp(d.items[d.n - 1].name, "fc.bias"));
    const char *keys[] = {"conv1.weight", "layer2.0.downsample.0.weight", "fc.weight", "fc.bias"};
    char p[256];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, D "resnet.%s.npy", keys[i]);
        check_vs_npy(&d, keys[i], p, KM_F32);
    }
    km_tdict_free(&d);
}

/* Checks a fixture checkpoint against its manifest's state_dict listing (keys,
 * order, shapes, dtypes) and torch-computed sums / first values. */
static void check_fixture(const char *dir, const char *pth, const char *tag, const char **keys,
                          int nkeys, int expect_n) {
    char p[512], m[512];
    snprintf(p, sizeof p, "fixtures/%s/%s", dir, pth);
    snprintf(m, sizeof m, "fixtures/%s/manifest.json", dir);
    char *path = km_strdup(km_test_path(p)), *mpath = km_strdup(km_test_path(m));
    km_tdict d;
    double t0 = km_now();
    CHECK_OK(km_pth_load(path, &d));
    double dt = km_now() - t0;
    printf("    %s: %d tensors loaded in %.3f s\n", pth, d.n, dt);
    CHECK(dt < 2.0);
    CHECK(d.n == expect_n);
    size_t n;
    uint8_t *mb = slurp(mpath, &n);
    km_json j;
    if (mb && km_json_parse(mpath, (const char *)mb, n, &j) == KM_OK) {
        const km_json *sd = km_json_get(km_json_get(&j, "weights"), "state_dict");
        CHECK(sd && sd->type == KM_JSON_ARR && sd->n == d.n);
        int bad = 0;
        for (int i = 0; sd && i < sd->n && i < d.n; i++) {
            const km_json *e = &sd->items[i];
            const km_tensor *t = &d.items[i];
            if (e->type != KM_JSON_ARR || e->n != 3 || e->items[0].type != KM_JSON_STR ||
                e->items[1].type != KM_JSON_ARR || e->items[2].type != KM_JSON_STR) {
                bad++;
                continue;
            }
            int ok = !strcmp(e->items[0].str, t->name) && e->items[1].n == t->ndim &&
                     !strcmp(e->items[2].str, km_dtype_name(t->dtype));
            for (int k = 0; ok && k < t->ndim; k++) ok = e->items[1].items[k].i == t->shape[k];
            if (!ok && bad++ < 3) printf("    mismatch at %d: %s\n", i, t->name);
        }
        CHECK_MSG(bad == 0, "%d state_dict entries differ from %s", bad, mpath);
        km_json_free(&j);
    } else {
        CHECK_MSG(0, "cannot parse %s: %s", mpath, km_errmsg());
    }
    km_free(mb);
    km_tensor sums, first;
    snprintf(p, sizeof p, D "fix_%s_sums.npy", tag);
    CHECK_OK(km_npy_load(p, &sums));
    snprintf(p, sizeof p, D "fix_%s_first.npy", tag);
    CHECK_OK(km_npy_load(p, &first));
    for (int k = 0; k < nkeys && sums.data && first.data; k++) {
        km_tensor *t = km_tdict_find(&d, keys[k]);
        CHECK_MSG(t != NULL, "missing %s", keys[k]);
        if (!t) continue;
        double s = 0;
        int64_t ne = km_numel(t->ndim, t->shape);
        for (int64_t i = 0; i < ne; i++) s += ((float *)t->data)[i];
        double ref = ((double *)sums.data)[k];
        CHECK_NEAR(s, ref, 1e-9 * (fabs(ref) + ne));
        for (int i = 0; i < 4; i++) CHECK(((float *)t->data)[i] == ((double *)first.data)[k * 4 + i]);
    }
    km_tensor_free(&sums);
    km_tensor_free(&first);
    km_tdict_free(&d);
    km_free(path);
    km_free(mpath);
}

KM_TEST(io_pth_fixture_unetpp_r18_matches_manifest) {
    const char *keys[] = {"encoder.conv1.weight", "encoder.layer4.1.bn2.running_var",
                          "decoder.blocks.x_0_3.conv1.0.weight", "segmentation_head.0.weight",
                          "decoder.blocks.x_0_0.conv1.1.running_mean"};
    check_fixture("unetpp_small", "unetpp_r18.pth", "unetpp", keys, 5, 254);
}

KM_TEST(io_pth_fixture_sam_tiny_matches_manifest) {
    const char *keys[] = {"image_encoder.pos_embed", "image_encoder.blocks.0.attn.rel_pos_h",
                          "mask_decoder.iou_prediction_head.layers.2.bias",
                          "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"};
    check_fixture("sam_tiny", "sam_tiny.pth", "sam", keys, 4, 202);
}

/* ---- .pth: bad input --------------------------------------------------------- */

KM_TEST(io_pth_hostile_globals_are_refused) {
    km_tdict d;
    CHECK_ERR(km_pth_load(D "hostile_zip.pth", &d), KM_EFORMAT, "refusing to load: pickle references 'posix.system'");
    CHECK_ERR(km_pth_load(D "hostile_zip.pth", &d), KM_EFORMAT, D "hostile_zip.pth");
    CHECK_ERR(km_pth_load(D "hostile_legacy.pth", &d), KM_EFORMAT, "'posix.system'");
    CHECK_ERR(km_pth_load(D "hostile_legacy.pth", &d), KM_EFORMAT, D "hostile_legacy.pth");
    CHECK_ERR(km_pth_load(D "hostile_eval.pth", &d), KM_EFORMAT, "'builtins.eval'");
    CHECK(d.n == 0 && d.items == NULL);
}

KM_TEST(io_pth_compressed_missing_and_foreign_files) {
    km_tdict d;
    CHECK_ERR(km_pth_load(D "tiny_deflate.pth", &d), KM_EFORMAT, "is compressed (method 8");
    CHECK_ERR(km_pth_load(D "tiny_deflate.pth", &d), KM_EFORMAT, "tiny_deflate.pth");
    CHECK_ERR(km_pth_load(D "no_such_file.pth", &d), KM_EIO, "no_such_file.pth");
    CHECK_ERR(km_pth_load(D "npy_f4.npy", &d), KM_EFORMAT, "not a PyTorch checkpoint");
    const uint8_t junk[] = "hello, world";
    CHECK_ERR(km_pth_load_mem("junk.pth", junk, sizeof junk, &d), KM_EFORMAT, "junk.pth");
    CHECK_ERR(km_pth_load_mem("empty.pth", junk, 0, &d), KM_EFORMAT, "empty.pth");
}

/* Every proper prefix of a valid file must be rejected with a message naming
 * the file. */
static void check_prefixes(km_status (*load)(const char *, const uint8_t *, size_t, km_tdict *),
                           const char *path, int step) {
    size_t n;
    uint8_t *b = slurp(path, &n);
    if (!b) return;
    int fails = 0;
    for (size_t k = 0; k < n; k += (size_t)step) {
        uint8_t *c = km_malloc(k ? k : 1); /* exact-size copy so ASan sees overreads */
        memcpy(c, b, k);
        km_tdict d;
        km_err_clear();
        km_status s = load("cut.file", c, k, &d);
        if (s == KM_OK || !strstr(km_errmsg(), "cut.file")) {
            if (fails++ < 3) printf("    %s prefix %zu: status %d, '%s'\n", path, k, s, km_errmsg());
            if (s == KM_OK) km_tdict_free(&d);
        }
        km_free(c);
    }
    CHECK_MSG(fails == 0, "%s: %d prefixes not rejected properly", path, fails);
    km_free(b);
}

KM_TEST(io_pth_truncated_at_every_offset) {
    check_prefixes(km_pth_load_mem, D "tiny_zip.pth", 1);
    check_prefixes(km_pth_load_mem, D "tiny_legacy.pth", 1);
    check_prefixes(km_pth_load_mem, D "noncontig_legacy.pth", 1);
    check_prefixes(km_pth_load_mem, D "mixed_zip.pth", 3);
    check_prefixes(km_pth_load_mem, D "resnet_legacy_v1.pth", 7);
}

/* Random byte flips: never crash; either a clean error naming the file or, when
 * the flip lands somewhere harmless, a successful load. */
static void flip_file(const char *path, int iters, uint64_t seed, int *nok, int *nerr) {
    size_t n;
    uint8_t *b = slurp(path, &n);
    if (!b) return;
    km_rng r;
    km_rng_seed(&r, seed);
    uint8_t *c = km_malloc(n);
    for (int it = 0; it < iters; it++) {
        memcpy(c, b, n);
        int k = 1 + (int)km_rng_below(&r, 4);
        for (int j = 0; j < k; j++) c[km_rng_below(&r, n)] ^= (uint8_t)(1 + km_rng_below(&r, 255));
        km_tdict d;
        km_err_clear();
        if (km_pth_load_mem("flip.pth", c, n, &d) == KM_OK) {
            (*nok)++;
            km_tdict_free(&d);
        } else {
            (*nerr)++;
            CHECK_MSG(strstr(km_errmsg(), "flip.pth") != NULL, "message lacks file: %s", km_errmsg());
        }
    }
    km_free(c);
    km_free(b);
}

KM_TEST(io_pth_random_byte_flips) {
    int ok = 0, err = 0;
    flip_file(D "tiny_zip.pth", 1500, 11, &ok, &err);
    flip_file(D "tiny_legacy.pth", 1500, 12, &ok, &err);
    flip_file(D "noncontig_legacy.pth", 1000, 13, &ok, &err);
    printf("    %d flipped files loaded, %d rejected\n", ok, err);
    CHECK(err > 1000);
}

/* Builds a legacy stream: magic, 1001, {} sys_info, `obj`, `keys`, then raw. */
static size_t legacy(uint8_t *out, const char *obj, size_t on, const char *keys, size_t kn,
                     const uint8_t *raw, size_t rn) {
    static const uint8_t hdr[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20,
                                  0x6a, 0xa8, 0x50, 0x19, '.',  0x80, 0x02, 'M',  0xe9, 0x03,
                                  '.',  0x80, 0x02, '}',  '.'};
    size_t k = 0;
    memcpy(out + k, hdr, sizeof hdr);
    k += sizeof hdr;
    memcpy(out + k, obj, on);
    k += on;
    memcpy(out + k, keys, kn);
    k += kn;
    if (rn) memcpy(out + k, raw, rn);
    return k + rn;
}

#define S(lit) lit, sizeof(lit) - 1
/* {'w': _rebuild_tensor_v2(storage('0', numel), 0, SIZE, STRIDE)} with the
 * storage numel and size/stride tuples spliced in as raw pickle bytes. */
#define TENSOR_PICKLE(NUMEL, OFFSET, SIZE, STRIDE)                                                   \
    "\x80\x02}(X\x01\x00\x00\x00w" "ctorch._utils\n_rebuild_tensor_v2\n"                           \
    "((X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\n" "X\x01\x00\x00\x00" "0"                  \
    "X\x03\x00\x00\x00" "cpu" NUMEL "tQ" OFFSET SIZE STRIDE "\x89Nt" "Ru."
#define KEYS0 "\x80\x02]X\x01\x00\x00\x00" "0a."

KM_TEST(io_pth_crafted_sizes_offsets_and_pickles) {
    uint8_t buf[4096];
    km_tdict d;
    const uint8_t raw4[8 + 16] = {4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40,
                                  0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40};
    /* Sanity: the well-formed version loads: w = [1, 2, 3, 4]. */
    size_t n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x00", "(K\x04t", "(K\x01t")), S(KEYS0), raw4, 24);
    CHECK_OK(km_pth_load_mem("ok.pth", buf, n, &d));
    if (d.n == 1) CHECK(((float *)d.items[0].data)[3] == 4.0f);
    km_tdict_free(&d);
    /* Size 5 in a 4-element storage. */
    n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x00", "(K\x05t", "(K\x01t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("big.pth", buf, n, &d), KM_EFORMAT, "big.pth: tensor 'w' (shape [5]");
    /* Offset 3 + 2 elements. */
    n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x03", "(K\x02t", "(K\x01t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("off.pth", buf, n, &d), KM_EFORMAT, "reaches element 4");
    /* Huge stride. */
    n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x00", "(K\x02t", "(J\x00\x00\x00\x40t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("stride.pth", buf, n, &d), KM_EFORMAT, "tensor 'w'");
    /* Shape whose product overflows int64 (2^62 * 2^62). */
    n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x00",
                                    "(\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40t",
                                    "(K\x01K\x01t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("ovf.pth", buf, n, &d), KM_EFORMAT, "overflows");
    /* Storage declared with 2^40 elements (and so on disk): truncated. */
    const uint8_t rawhuge[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    n = legacy(buf, S(TENSOR_PICKLE("\x8a\x06\x00\x00\x00\x00\x00\x01", "K\x00", "(K\x04t", "(K\x01t")),
               S(KEYS0), rawhuge, 8);
    CHECK_ERR(km_pth_load_mem("huge.pth", buf, n, &d), KM_EFORMAT, "truncated inside storage '0'");
    /* Disk count disagreeing with the pickle. */
    n = legacy(buf, S(TENSOR_PICKLE("K\x03", "K\x00", "(K\x02t", "(K\x01t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("cnt.pth", buf, n, &d), KM_EFORMAT, "has 4 elements on disk");
    /* Negative size (BININT -1). */
    n = legacy(buf, S(TENSOR_PICKLE("K\x04", "K\x00", "(J\xff\xff\xff\xfft", "(K\x01t")), S(KEYS0), raw4, 24);
    CHECK_ERR(km_pth_load_mem("neg.pth", buf, n, &d), KM_EFORMAT, "non-negative");
    /* Pickle VM errors. */
    n = legacy(buf, S("\x80\x02h\x05."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("memo.pth", buf, n, &d), KM_EFORMAT, "memo GET of an index never PUT");
    n = legacy(buf, S("\x80\x02r\xff\xff\xff\x7f."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("put.pth", buf, n, &d), KM_EFORMAT, "stack underflow");
    n = legacy(buf, S("\x80\x02}r\xff\xff\xff\x7f."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("put2.pth", buf, n, &d), KM_EFORMAT, "memo index out of range");
    n = legacy(buf, S("\x80\x02(}u."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("under.pth", buf, n, &d), KM_EFORMAT, "stack underflow");
    n = legacy(buf, S("\x80\x02]."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("list.pth", buf, n, &d), KM_EFORMAT, "is a list, expected a dict");
    n = legacy(buf, S("\x80\x02}X\x40\x00\x00\x00short."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("str.pth", buf, n, &d), KM_EFORMAT, "truncated");
    n = legacy(buf, S("\x80\x02I1\n."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("op.pth", buf, n, &d), KM_EFORMAT, "unsupported opcode 'I'");
    n = legacy(buf, S("\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00idR."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("sys.pth", buf, n, &d), KM_EFORMAT, "'posix.system'");
    n = legacy(buf, S("\x80\x04\x8c\x08" "builtins\x8c\x04" "exec\x93."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("exec.pth", buf, n, &d), KM_EFORMAT, "'builtins.exec'");
    /* Nesting: {'a': {'a': ... 40 deep ... {}}}. */
    char deep[1024];
    size_t k = 0;
    memcpy(deep, "\x80\x02", 2);
    k = 2;
    for (int i = 0; i < 40; i++) {
        memcpy(deep + k, "}X\x01\x00\x00\x00" "a", 7);
        k += 7;
    }
    deep[k++] = '}';
    for (int i = 0; i < 40; i++) deep[k++] = 's';
    deep[k++] = '.';
    n = legacy(buf, deep, k, S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("deep.pth", buf, n, &d), KM_EFORMAT, "nested more than 32 deep");
    /* A dict that contains itself. */
    n = legacy(buf, S("\x80\x02}q\x00X\x01\x00\x00\x00" "ah\x00s."), S(KEYS0), NULL, 0);
    CHECK_ERR(km_pth_load_mem("cycle.pth", buf, n, &d), KM_EFORMAT, "nested more than 32 deep");
}

/* ---- safetensors -------------------------------------------------------------- */

KM_TEST(io_safetensors_reads_reference_writer_output) {
    km_tdict d;
    CHECK_OK(km_safetensors_load(D "ref.safetensors", &d));
    CHECK(d.n == 5);
    check_vs_npy(&d, "a.weight", D "ref_st.a.weight.npy", KM_F32);
    check_vs_npy(&d, "a.half", D "ref_st.a.half.npy", KM_F16);
    check_vs_npy(&d, "a.bf", D "ref_st.a.bf.npy", KM_BF16);
    check_vs_npy(&d, "a.long", D "ref_st.a.long.npy", KM_I64);
    check_vs_npy(&d, "a.flag", D "ref_st.a.flag.npy", KM_BOOL);
    const char *f = km_tdict_get_meta(&d, "format"), *note = km_tdict_get_meta(&d, "note");
    CHECK(f && !strcmp(f, "pt"));
    CHECK(note && !strcmp(note, "kmseg \"ref\""));
    km_tdict_free(&d);
}

static void make_dict(km_tdict *d) {
    km_tdict_init(d);
    float w[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    int64_t s23[] = {2, 3}, s3[] = {3}, s1[] = {1};
    km_tdict_add(d, "enc.w", KM_F32, 2, s23, w);
    int64_t nbt = 42;
    km_tdict_add(d, "enc.nbt", KM_I64, 0, NULL, &nbt);
    uint16_t h[3] = {0x3c00, 0xc000, 0x7bff};
    km_tdict_add(d, "half", KM_F16, 1, s3, h);
    km_tdict_add(d, "bf", KM_BF16, 1, s3, h);
    uint8_t u[1] = {200};
    km_tdict_add(d, "u8", KM_U8, 1, s1, u);
    km_tdict_add(d, "quote\"d", KM_BOOL, 1, s1, u);
    km_tdict_set_meta(d, "format", "pt");
    km_tdict_set_meta(d, "kmseg", "{\"epoch\": 3}\n");
}

KM_TEST(io_safetensors_save_exact_bytes_and_roundtrip) {
    km_tdict d, e;
    make_dict(&d);
    char path[512];
    snprintf(path, sizeof path, "%s/io_rt.safetensors", km_test_tmpdir());
    CHECK_OK(km_safetensors_save(path, &d));
    size_t n;
    uint8_t *b = slurp(path, &n);
    if (!b) return;
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\",\"kmseg\":\"{\\\"epoch\\\": 3}\\u000a\"},"
        "\"enc.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"enc.nbt\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]},"
        "\"half\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[32,38]},"
        "\"bf\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[38,44]},"
        "\"u8\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[44,45]},"
        "\"quote\\\"d\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[45,46]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = len << 8 | b[i];
    CHECK(len == padded && (8 + len) % 8 == 0);
    CHECK(n == 8 + padded + 46);
    if (n == 8 + padded + 46) {
        CHECK(!memcmp(b + 8, hdr, hl));
        for (size_t i = hl; i < padded; i++) CHECK(b[8 + i] == ' ');
        const uint8_t *data = b + 8 + padded;
        CHECK(!memcmp(data, d.items[0].data, 24));
        CHECK(data[24] == 42 && data[31] == 0);
        CHECK(data[32] == 0x00 && data[33] == 0x3c && data[44] == 200 && data[45] == 200);
    }
    km_free(b);
    CHECK_OK(km_safetensors_load(path, &e));
    CHECK(e.n == d.n && e.nmeta == 2);
    for (int i = 0; i < d.n && i < e.n; i++) {
        CHECK(!strcmp(d.items[i].name, e.items[i].name) && d.items[i].dtype == e.items[i].dtype);
        CHECK(same_shape(d.items[i].ndim, d.items[i].shape, e.items[i].ndim, e.items[i].shape));
        CHECK(d.items[i].nbytes == e.items[i].nbytes &&
              !memcmp(d.items[i].data, e.items[i].data, d.items[i].nbytes));
    }
    const char *m = km_tdict_get_meta(&e, "kmseg");
    CHECK(m && !strcmp(m, "{\"epoch\": 3}\n"));
    km_tdict_free(&e);
    check_prefixes(km_safetensors_load_mem, path, 1);
    /* Every km dtype safetensors knows can be written, I16 included. */
    km_tdict_init(&e);
    int64_t s1[] = {1};
    km_tdict_add(&e, "x", KM_I16, 1, s1, NULL);
    snprintf(path, sizeof path, "%s/io_i16.safetensors", km_test_tmpdir());
    CHECK_OK(km_safetensors_save(path, &e));
    km_tdict_free(&e);
    km_tdict_free(&d);
}

/* Builds "<len><header><data>" in buf. */
static size_t st_file(uint8_t *buf, const char *hdr, size_t datalen) {
    size_t hl = strlen(hdr);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, 0x11, datalen);
    return 8 + hl + datalen;
}

KM_TEST(io_safetensors_rejects_bad_headers) {
    uint8_t buf[1024];
    km_tdict d;
    size_t n = st_file(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    CHECK_OK(km_safetensors_load_mem("ok.st", buf, n, &d));
    km_tdict_free(&d);
    struct {
        const char *hdr;
        size_t dlen;
        const char *needle;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "cover 8 bytes of the 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor 'a': data ends at byte 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "tensor 'a': data_offsets [0, 8] hold 8 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "tensor 'b': data starts at byte 8, expected 4"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'b': data starts at byte 4"},
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a': unsupported dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "tensor 'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown header field 'x'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "'a' appears twice"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ entry 'k' is not a string"},
        {"{\"__metadata__\":[]}", 0, "__metadata__ is a array"},
        {"{\"a\":[1]}", 4, "tensor 'a': header entry is a array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4, "invalid JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "trailing characters"},
        {"[1,2]", 0, "does not start with '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        n = st_file(buf, cases[i].hdr, cases[i].dlen);
        CHECK_ERR(km_safetensors_load_mem("bad.st", buf, n, &d), KM_EFORMAT, cases[i].needle);
        CHECK_ERR(km_safetensors_load_mem("bad.st", buf, n, &d), KM_EFORMAT, "bad.st");
    }
    /* Header length larger than the file / than 100 MB. */
    n = st_file(buf, "{}", 0);
    buf[0] = 0xff;
    CHECK_ERR(km_safetensors_load_mem("len.st", buf, n, &d), KM_EFORMAT, "exceeds the");
    for (int i = 0; i < 8; i++) buf[i] = 0xff;
    CHECK_ERR(km_safetensors_load_mem("len.st", buf, n, &d), KM_EFORMAT, "len.st");
    CHECK_ERR(km_safetensors_load(D "missing.safetensors", &d), KM_EIO, "missing.safetensors");
}

/* ---- JSON --------------------------------------------------------------------- */

KM_TEST(io_json_strict_parser) {
    const char *ok = " {\"a\": [1, -0, 2.5e3, 9007199254740993, true, false, null],"
                     " \"s\": \"x\\u00e9\\ud83d\\ude00\\n\\\"\", \"e\": {}, \"l\": []} ";
    km_json j;
    CHECK_OK(km_json_parse("t.json", ok, strlen(ok), &j));
    const km_json *a = km_json_get(&j, "a"), *s = km_json_get(&j, "s");
    CHECK(a && a->n == 7 && a->items[0].i == 1 && a->items[2].num == 2500 && !a->items[2].is_int);
    CHECK(a && a->items[3].is_int && a->items[3].i == 9007199254740993LL);
    CHECK(a && a->items[4].type == KM_JSON_BOOL && a->items[4].b && a->items[6].type == KM_JSON_NULL);
    CHECK(s && !strcmp(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n\""));
    CHECK(km_json_get(&j, "e")->type == KM_JSON_OBJ && km_json_get(&j, "nope") == NULL);
    km_json_free(&j);
    const char *bad[] = {"[1,]", "{\"a\":1,}", "01", "[1 2]", "\"a\x01\"", "\"\xc3\x28\"",
                         "\"\\ud800\"", "\"\\udc00\"", "\"\\x\"", "NaN", "[1] 2", "{\"a\"}", "",
                         "tru", "\"abc", "-", "1.", "1e", "{1:2}", "\"\\u12\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(km_json_parse("b.json", bad[i], strlen(bad[i]), &j), KM_EFORMAT, "b.json: invalid JSON");
    }
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    CHECK_ERR(km_json_parse("d.json", deep, 200, &j), KM_EFORMAT, "nested more than 64");
    CHECK_OK(km_json_parse("d.json", deep + 40, 120, &j));
    km_json_free(&j);
}

/* ---- .npy ------------------------------------------------------------------------ */

KM_TEST(io_npy_reads_numpy_files) {
    km_tensor f4, t;
    CHECK_OK(km_npy_load(D "npy_f4.npy", &f4));
    CHECK(f4.dtype == KM_F32 && f4.ndim == 2 && f4.shape[0] == 3 && f4.shape[1] == 4);
    CHECK(!strcmp(f4.name, D "npy_f4.npy"));
    if (!f4.data) return;
    const float *a = f4.data;
    CHECK_OK(km_npy_load(D "npy_f8.npy", &t));
    CHECK(t.dtype == KM_F64 && t.ndim == 2);
    for (int i = 0; i < 12 && t.data; i++) CHECK(((double *)t.data)[i] == (double)a[i] / 3);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_f2.npy", &t));
    CHECK(t.dtype == KM_F16);
    for (int i = 0; i < 12 && t.data; i++)
        CHECK_NEAR(km_f16_to_f32(((uint16_t *)t.data)[i]), a[i], fabs(a[i]) * 0x1p-11);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_i8.npy", &t));
    CHECK(t.dtype == KM_I64 && t.ndim == 2 && t.shape[1] == 4);
    for (int i = 0; i < 8 && t.data; i++) CHECK(((int64_t *)t.data)[i] == i - 3);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_i4.npy", &t));
    for (int i = 0; i < 12 && t.data; i++) CHECK(((int32_t *)t.data)[i] == i - 6);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_u1.npy", &t));
    CHECK(t.dtype == KM_U8 && t.ndim == 3 && t.shape[2] == 1);
    for (int i = 0; i < 6 && t.data; i++) CHECK(((uint8_t *)t.data)[i] == 250 + i);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_b1.npy", &t));
    CHECK(t.dtype == KM_BOOL && t.nbytes == 3 && ((uint8_t *)t.data)[0] == 1 && ((uint8_t *)t.data)[1] == 0);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_scalar.npy", &t));
    CHECK(t.ndim == 0 && *(float *)t.data == 2.5f);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load(D "npy_empty.npy", &t));
    CHECK(t.ndim == 2 && t.shape[0] == 0 && t.shape[1] == 3 && t.nbytes == 0);
    km_tensor_free(&t);
    const char *vers[] = {D "npy_v2.npy", D "npy_v3.npy"};
    for (int v = 0; v < 2; v++) {
        CHECK_OK(km_npy_load(vers[v], &t));
        CHECK(t.nbytes == 48 && t.data && !memcmp(t.data, a, 48));
        km_tensor_free(&t);
    }
    /* Conversions and shape checks. */
    int64_t want[] = {-1, 4};
    CHECK_OK(km_npy_load_f32(D "npy_i8.npy", 2, want, &t));
    CHECK(t.dtype == KM_F32 && ((float *)t.data)[0] == -3.0f);
    km_tensor_free(&t);
    CHECK_OK(km_npy_load_f32(D "npy_b1.npy", -1, NULL, &t));
    CHECK(t.dtype == KM_F32 && ((float *)t.data)[2] == 1.0f);
    km_tensor_free(&t);
    int64_t wrong[] = {3, 5};
    CHECK_ERR(km_npy_load_f32(D "npy_f4.npy", 2, wrong, &t), KM_ESHAPE, "has shape [3, 4], expected [3, 5]");
    CHECK(t.data == NULL);
    km_tensor_free(&f4);
}

KM_TEST(io_npy_save_matches_numpy_bytes) {
    /* What we write must be byte-identical to numpy.save's output. */
    const char *files[] = {"npy_f4", "npy_f2", "npy_i8", "npy_i4", "npy_u1", "npy_b1",
                           "npy_scalar", "npy_empty", "npy_f8"};
    char src[256], dst[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        km_tensor t;
        snprintf(src, sizeof src, D "%s.npy", files[i]);
        snprintf(dst, sizeof dst, "%s/io_%s.npy", km_test_tmpdir(), files[i]);
        CHECK_OK(km_npy_load(src, &t));
        CHECK_OK(km_npy_save(dst, t.dtype, t.ndim, t.shape, t.data));
        size_t na, nb;
        uint8_t *a = slurp(src, &na), *b = slurp(dst, &nb);
        CHECK_MSG(a && b && na == nb && !memcmp(a, b, na), "%s: saved bytes differ from numpy's", files[i]);
        km_free(a);
        km_free(b);
        km_tensor_free(&t);
    }
    int64_t s[] = {2};
    CHECK_ERR(km_npy_save("x.npy", KM_BF16, 1, s, "\0\0\0\0"), KM_EARG, "x.npy");
}

static km_status npy_as_dict(const char *name, const uint8_t *b, size_t n, km_tdict *d) {
    km_tensor t;
    km_tdict_init(d);
    km_status s = km_npy_load_mem(name, b, n, &t);
    if (s) return s;
    km_tdict_add_owned(d, "x", t.dtype, t.ndim, t.shape, t.data);
    km_free(t.name);
    return KM_OK;
}

KM_TEST(io_npy_rejects_bad_files) {
    km_tensor t;
    CHECK_ERR(km_npy_load(D "npy_fortran.npy", &t), KM_EFORMAT, "Fortran-order");
    CHECK_ERR(km_npy_load(D "npy_bigendian.npy", &t), KM_EFORMAT, "big-endian");
    CHECK_ERR(km_npy_load(D "npy_bigendian.npy", &t), KM_EFORMAT, "npy_bigendian.npy");
    CHECK_ERR(km_npy_load(D "nope.npy", &t), KM_EIO, "nope.npy");
    CHECK_ERR(km_npy_load(D "tiny_zip.pth", &t), KM_EFORMAT, "not a .npy file");
    check_prefixes(npy_as_dict, D "npy_f4.npy", 1);
    check_prefixes(npy_as_dict, D "npy_v3.npy", 1);
    size_t n;
    uint8_t *b = slurp(D "npy_f4.npy", &n);
    if (!b) return;
    uint8_t *c = km_malloc(n + 4);
    memcpy(c, b, n);
    CHECK_ERR(km_npy_load_mem("trail.npy", c, n + 4, &t), KM_EFORMAT, "trailing bytes");
    c[6] = 4;
    CHECK_ERR(km_npy_load_mem("ver.npy", c, n, &t), KM_EFORMAT, "version 4");
    const char *hdrs[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 1}",
        "{'descr': '<c8', 'fortran_order': False, 'shape': (3, 4), }",
        "{'descr': '<f4', 'shape': (3, 4), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4), }",
        "{'descr': '<f4', 'fortran_order': maybe, 'shape': (3, 4), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } junk",
        "{'descr': '<f4' 'fortran_order': False, 'shape': (3, 4), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        size_t hl = strlen(hdrs[i]);
        uint8_t buf[256];
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = (uint8_t)hl;
        buf[9] = 0;
        memcpy(buf + 10, hdrs[i], hl);
        memcpy(buf + 10 + hl, b + 128, 48);
        CHECK_ERR(km_npy_load_mem("hdr.npy", buf, 10 + hl + 48, &t), KM_EFORMAT, "hdr.npy");
    }
    km_free(c);
    km_free(b);
}

/* ---- sniffing loader and the info command ---------------------------------- */

KM_TEST(io_load_checkpoint_sniffs_and_converts) {
    km_tdict d;
    CHECK_OK(km_load_checkpoint(D "tiny_zip.pth", &d));
    check_tiny(&d);
    km_tdict_free(&d);
    CHECK_OK(km_load_checkpoint(D "resnet_legacy_v1.pth", &d));
    CHECK(d.n == 52);
    km_tdict_free(&d);
    CHECK_OK(km_load_checkpoint(D "ref.safetensors", &d));
    check_vs_npy(&d, "a.half", D "ref_st.a.half.npy", KM_F32);
    check_vs_npy(&d, "a.bf", D "ref_st.a.bf.npy", KM_F32);
    check_vs_npy(&d, "a.long", D "ref_st.a.long.npy", KM_I64);
    CHECK(km_tdict_get_meta(&d, "format") != NULL);
    km_tdict_free(&d);
    CHECK_OK(km_load_checkpoint(D "mixed_legacy.pth", &d));
    check_vs_npy(&d, "h", D "mixed.h.npy", KM_F32);
    check_vs_npy(&d, "u8", D "mixed.u8.npy", KM_U8);
    km_tdict_free(&d);
    CHECK_ERR(km_load_checkpoint(D "npy_f4.npy", &d), KM_EFORMAT, "unknown checkpoint format");
    CHECK_ERR(km_load_checkpoint(D "hostile_legacy.pth", &d), KM_EFORMAT, "posix.system");
    CHECK_ERR(km_load_checkpoint(D "absent.pth", &d), KM_EIO, "absent.pth");
}

KM_TEST(io_cli_info_lists_tensors) {
    const char *bin = getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg";
    const char *tmp = km_test_tmpdir();
    CHECK(km_test_sh("%s info " D "tiny_legacy.pth > %s/io_info.txt", bin, tmp) == 0);
    char p[512];
    snprintf(p, sizeof p, "%s/io_info.txt", tmp);
    size_t n;
    uint8_t *b = slurp(p, &n);
    if (b) {
        b[n] = 0; /* km_read_file leaves one spare byte */
        CHECK(strstr((char *)b, "torch.save legacy checkpoint"));
        CHECK(strstr((char *)b, "1.num_batches_tracked  int64     []"));
        CHECK(strstr((char *)b, "0.weight               float32   [4, 3, 3, 3]          108"));
        CHECK(strstr((char *)b, "8 tensors, 135 elements (134 floating-point, 1 other)"));
    }
    km_free(b);
    CHECK(km_test_sh("%s info " D "ref.safetensors | grep -q 'metadata format = pt'", bin) == 0);
    CHECK(km_test_sh("%s info " D "npy_i8.npy | grep -q 'int64     \\[2, 4\\]  *8'", bin) == 0);
    CHECK(km_test_sh("%s info " D "hostile_zip.pth 2>&1 | grep -q \"refusing to load: pickle references 'posix.system'\"", bin) == 0);
    CHECK(km_test_sh("%s info " D "hostile_zip.pth 2>/dev/null", bin) == 1);
    CHECK(km_test_sh("%s info 2>/dev/null", bin) == 2);
}

/* test_unetpp_depth.c - smp's encoder_depth (--encoder-depth 3, 4): the
 * student against smp 0.3.4 UnetPlusPlus(resnet18, encoder_depth=D) with
 * weights rebuilt here from the exact formula of
 * tools/make_encoder_depth_fixture.py (tests/data/encoder_depth/, no weight
 * file stored): state-dict keys and shapes, eval and train logits, parameter
 * gradients and BatchNorm running statistics; a finite-difference gradient
 * check of a depth-3 network and encoder; save/load round trips; the
 * refusals; and the command line on real Kvasir-SEG images. Depth 5 is
 * test_unetpp.c's (shared fixtures, unchanged). */
#include "cli.h"
#include "gradcheck.h"
#include "test.h"
#include "unetpp_same.h"

#include "../src/io/load.h"
#include "../src/io/npy.h"
#include "../src/io/safetensors.h"
#include "../src/models/unetpp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXD "tests/data/encoder_depth/"

static const int DEC3[3] = {16, 8, 8}, DEC4[4] = {16, 16, 8, 8};

/* ------------------------------------------------ the fixture's weights */

/* u(t, k) of the fixture script: exact in double. */
static double u_of(uint64_t t, uint64_t k) {
    return (double)((k * 2654435761ULL + t * 40503ULL + 12345ULL) & 0xffffffffULL) / 4294967296.0;
}

static int ends(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* The value of element k of the t-th state-dict tensor (the script's fill). */
static float fill_value(const char *name, int ndim, const int64_t *shape, uint64_t t, uint64_t k) {
    double u = u_of(t, k);
    if (ends(name, "running_mean")) return (float)((u - 0.5) * 0.2);
    if (ends(name, "running_var")) return (float)(0.5 + u);
    if (ndim >= 2) {
        int64_t fan = 1;
        for (int i = 1; i < ndim; i++) fan *= shape[i];
        return (float)((u - 0.5) * 2.0 * (1.0 / sqrt((double)fan)));
    }
    if (ends(name, ".weight")) return (float)(1.0 + 0.1 * (u - 0.5));
    return (float)((u - 0.5) * 2.0 * 0.1);
}

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
} key_line;

/* d{D}_keys.txt: smp's state dict, "name dims" per line. Returns the count. */
static int read_keys(int D, key_line *k, int cap) {
    char path[256], line[256];
    snprintf(path, sizeof path, FIXD "d%d_keys.txt", D);
    FILE *f = fopen(path, "r");
    if (!f) {
        km_test_fail(__FILE__, __LINE__, "cannot open %s", path);
        return 0;
    }
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        char dims[64];
        if (sscanf(line, "%95s %63s", k[n].name, dims) != 2) continue;
        k[n].ndim = 0;
        for (char *p = dims; *p != '-' && *p;) {
            k[n].shape[k[n].ndim++] = strtoll(p, &p, 10);
            if (*p == ',') p++;
        }
        n++;
    }
    fclose(f);
    return n;
}

/* The formula's state dict over smp's full key list (unused layers included). */
static void formula_tdict(const key_line *k, int n, km_tdict *sd) {
    for (int t = 0; t < n; t++) {
        if (ends(k[t].name, "num_batches_tracked")) {
            int64_t z = 0;
            km_tdict_add(sd, k[t].name, KM_I64, 0, NULL, &z);
            continue;
        }
        size_t ne = 1;
        for (int i = 0; i < k[t].ndim; i++) ne *= (size_t)k[t].shape[i];
        float *v = malloc(sizeof(float) * ne);
        for (size_t i = 0; i < ne; i++) v[i] = fill_value(k[t].name, k[t].ndim, k[t].shape, (uint64_t)t, i);
        km_tdict_add(sd, k[t].name, KM_F32, k[t].ndim, k[t].shape, v);
        free(v);
    }
}

/* smp's layers past stage D: 'encoder.layerK.*', K >= D. */
static int unused_layer(const char *name, int D) {
    return !strncmp(name, "encoder.layer", 13) && name[13] - '0' >= D && name[14] == '.';
}

enum { NX = 2 * 3 * 64 * 64, NL = 2 * 64 * 64 };

static void formula_input(float *x, float *R) {
    for (size_t i = 0; i < NX; i++) x[i] = (float)((u_of(1000, i) - 0.5) * 4.0);
    for (size_t i = 0; i < NL; i++) R[i] = (float)((u_of(2000, i) - 0.5) * 2.0);
}

/* ------------------------------------------------------------ smp parity */

static const km_tensor *fixture(const km_tdict *f, const char *name) {
    const km_tensor *t = km_tdict_find(f, name);
    if (!t) km_test_fail(__FILE__, __LINE__, "fixture has no '%s'", name);
    return t;
}

/* Keys: kmseg's list is smp's without the unused layers, in smp's order,
 * shapes equal. */
static void check_keys(const km_unetpp *m, const key_line *k, int n, int D) {
    int j = 0, bad = 0;
    for (int t = 0; t < n; t++) {
        if (unused_layer(k[t].name, D)) continue;
        const km_unetpp_entry *e = j < km_unetpp_num_entries(m) ? km_unetpp_entry_at(m, j) : NULL;
        int same = e && !strcmp(e->name, k[t].name) && e->ndim == k[t].ndim;
        for (int i = 0; same && i < e->ndim; i++) same = e->shape[i] == k[t].shape[i];
        if (!same && bad++ < 3)
            km_test_fail(__FILE__, __LINE__, "entry %d: '%s' (%d dims), smp has '%s' (%d dims)", j,
                         e ? e->name : "(none)", e ? e->ndim : -1, k[t].name, k[t].ndim);
        j++;
    }
    CHECK_MSG(j == km_unetpp_num_entries(m), "kmseg has %d entries, smp %d without its unused layers",
              km_unetpp_num_entries(m), j);
    printf("    depth %d: %d kmseg entries = smp's %d minus %d of unused layers; %zu parameters\n", D,
           km_unetpp_num_entries(m), n, n - j, km_unetpp_num_params(m));
}

/* Tolerances. The fixture records torch's own float32-vs-float64 distance
 * (eval 5e-8 at max|logit| 0.15, train 3e-5 at 3.6); our convolutions sum in
 * another order (OpenBLAS / Winograd vs oneDNN): logits within 1e-4 of
 * max|ref| (measured 1.4e-6 eval, 2.5e-5 train), running statistics after
 * the train forward within 1e-5 (measured 2.8e-6).
 *
 * Gradients of L = sum(logits * R) are compared with torch's float64 run
 * (grad64.*), and torch's float32 distance to it is printed. The head and the
 * last block's conv2 BatchNorm come before any ReLU kink our forward could
 * flip: within 10x torch's float32 error (measured 2.4x). Behind them, as in
 * test_unetpp.c, a few of the ~10^5 ReLU inputs sit closer to 0 than the two
 * forwards' 1e-5 distance and take the other branch (depth 3: at
 * x_0_2.conv1, one of its 8 BatchNorm biases is off by 0.11% of the
 * tensor's max, 7 match to 1e-6): every
 * gradient behind carries it, ~0.1-2% of its largest value. Those are judged
 * as test_unetpp.c's Winograd mode: p99 <= 2.5% of max|ref| and at most 0.1%
 * of the elements (or 2) off by more than 5% (measured: p99 <= 1.6%, one
 * element, at depth 4's 4x4-pixel layer3.1.bn1 whose batch statistics come
 * from 32 values). A wrong wiring, channel count or offset moves most
 * elements by O(1) and fails. */
static void parity(int D, const int *dec) {
    static key_line k[260];
    int n = read_keys(D, k, 260);
    if (!n) return;
    km_tdict sd, fx;
    km_tdict_init(&sd);
    km_tdict_init(&fx);
    formula_tdict(k, n, &sd);
    char fp[256];
    snprintf(fp, sizeof fp, FIXD "d%d.safetensors", D);
    km_unetpp *m = NULL;
    CHECK_OK(km_unetpp_from_tdict(&m, &sd, "smp state dict")); /* the unused layers are ignored */
    CHECK_OK(km_safetensors_load(fp, &fx));
    if (!m || !fx.n) goto done;
    CHECK(km_unetpp_encoder_depth(m) == D && km_unetpp_resnet_depth(m) == 18);
    CHECK(!memcmp(km_unetpp_decoder_channels(m), dec, sizeof(int) * (size_t)D));
    check_keys(m, k, n, D);
    const char *np = km_tdict_get_meta(&fx, "num_params_without_unused_layers");
    CHECK_MSG(np && strtoull(np, NULL, 10) == km_unetpp_num_params(m), "parameters %zu, the script counted %s",
              km_unetpp_num_params(m), np ? np : "?");
    static float x[NX], R[NL], lg[NL];
    formula_input(x, R);
    const km_tensor *ev = fixture(&fx, "eval_logits"), *tr = fixture(&fx, "train_logits");
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 0, lg));
    if (ev) CHECK(km_compare("eval logits", lg, ev->data, NL).max_rel <= 1e-4);
    km_unetpp_zero_grad(m);
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 1, lg));
    if (tr) CHECK(km_compare("train logits", lg, tr->data, NL).max_rel <= 1e-4);
    km_unetpp_backward(m, R, NULL);
    int ng = 0, nb = 0;
    size_t n_off = 0;
    double worst_g = 0, worst_p99 = 0, worst_h = 0, worst_b = 0;
    for (int i = 0; i < fx.n; i++) {
        const km_tensor *t = &fx.items[i];
        int g = !strncmp(t->name, "grad64.", 7), b = !strncmp(t->name, "after.", 6);
        if (!g && !b) continue;
        const char *name = t->name + (g ? 7 : 6);
        const float *mine = km_unetpp_tensor(m, name, g);
        if (!mine) {
            km_test_fail(__FILE__, __LINE__, "the model has no %s '%s'", g ? "gradient of" : "buffer", name);
            continue;
        }
        size_t ne = (size_t)km_numel(t->ndim, t->shape);
        km_cmp c = km_compare(t->name, mine, t->data, ne);
        if (b) {
            CHECK_MSG(c.max_rel <= 1e-5, "%s: max_abs %.3g, %.3g of max|ref|", t->name, c.max_abs, c.max_rel);
            worst_b = fmax(worst_b, c.max_rel), nb++;
            continue;
        }
        char t32[128], top[64];
        snprintf(t32, sizeof t32, "grad.%s", name);
        snprintf(top, sizeof top, "decoder.blocks.x_0_%d.conv2.", D - 1);
        const km_tensor *g32 = fixture(&fx, t32);
        if (!g32) continue;
        km_cmp ct = km_compare("  torch float32", g32->data, t->data, ne);
        ng++;
        if (!strncmp(name, "segmentation_head.", 18) || !strncmp(name, top, strlen(top))) {
            /* before the first ReLU: as close as torch's own float32 */
            CHECK_MSG(c.max_abs <= 10 * ct.max_abs + 1e-6 * c.max_ref, "%s: max_abs %.3g, torch float32 %.3g", name,
                      c.max_abs, ct.max_abs);
            worst_h = fmax(worst_h, c.max_abs / fmax(ct.max_abs, 1e-6 * c.max_ref));
            continue;
        }
        size_t off = 0;
        for (size_t j = 0; j < ne; j++) off += fabs((double)mine[j] - ((const float *)t->data)[j]) > 0.05 * c.max_ref;
        CHECK_MSG(c.p99_abs <= 0.025 * c.max_ref && off <= (ne / 1000 > 2 ? ne / 1000 : 2),
                  "%s: p99 %.3g of max|ref|, %zu of %zu elements off by > 5%%", name, c.p99_abs / c.max_ref, off, ne);
        worst_p99 = fmax(worst_p99, c.p99_abs / c.max_ref);
        worst_g = fmax(worst_g, c.max_rel);
        n_off += off;
    }
    printf("    depth %d: %d gradients: before the first ReLU at most %.3g x torch's float32 error; behind it "
           "max %.3g, p99 %.3g of max|ref|, %zu elements off by > 5%%; %d running statistics (worst %.3g)\n", D, ng,
           worst_h, worst_g, worst_p99, n_off, nb, worst_b);
    CHECK(ng > 0 && nb > 0);
done:
    km_unetpp_free(m);
    km_tdict_free(&sd);
    km_tdict_free(&fx);
}

KM_TEST(unetpp_depth3_smp_parity) { parity(3, DEC3); }
KM_TEST(unetpp_depth4_smp_parity) { parity(4, DEC4); }

/* ------------------------------------------------- finite differences */

/* L = sum(out * R), train-mode BatchNorm, 2 x 3 x 64 x 64; out: the logits,
 * or with enc the encoder's last stage (SimCLR's input). */
typedef struct {
    km_unetpp *m;
    float *x, *R, *out;
    size_t n;
    int enc;
} net_ctx;

static double net_loss(void *p) {
    net_ctx *c = p;
    if (c->enc) km_unetpp_encoder_forward(c->m, c->x, 2, 64, 64, 1, c->out);
    else km_unetpp_forward(c->m, c->x, 2, 64, 64, 1, c->out);
    return km_gc_dot(c->out, c->R, c->n);
}

/* The 4 largest-gradient weights of `name` against central differences of
 * step h, within 3% + 1e-3 of the tensor's largest gradient
 * (km_gradcheck_top; test_unetpp_decoder.c's rule). Not the stem: its 7x7
 * weights move every pixel of a channel, and the max-pool's ties (windows of
 * ReLU zeros) bias a one-sided difference by 2-4% at any step (measured 2.6%
 * at h = 2.5e-4, 2.2% at 5e-5); the stem's gradients are judged against smp
 * by the parity tests (encoder.bn1). */
static void top4(net_ctx *c, const char *name, float h) {
    const km_unetpp_entry *e = NULL;
    for (int i = 0; i < km_unetpp_num_entries(c->m); i++)
        if (!strcmp(km_unetpp_entry_at(c->m, i)->name, name)) e = km_unetpp_entry_at(c->m, i);
    CHECK_MSG(e && !km_gradcheck_top(name, net_loss, c, km_unetpp_tensor(c->m, name, 0),
                                     km_unetpp_tensor(c->m, name, 1), e->numel, h, 4, 0.03, 1e-3),
              "%s: a finite difference is off (or no such tensor)", name);
}

/* Depth 3 (decoder 16,8,8): the head through tests/gradcheck.h (after the
 * last ReLU: 2e-3 of the largest gradient), then the top-4 rule in the last
 * block, the deepest decoder block x_0_0 (reads layer2 and layer1), x_1_1,
 * the last two encoder stages; then the encoder alone
 * (km_unetpp_encoder_forward/backward, feat [2, 128, 8, 8]). A wrong skip,
 * stage or resolution gives O(1) errors. */
KM_TEST(unetpp_depth3_gradient) {
    static float x[NX], R[NL], lg[NL], Rf[2 * 128 * 8 * 8], feat[2 * 128 * 8 * 8];
    formula_input(x, R);
    for (size_t i = 0; i < sizeof Rf / 4; i++) Rf[i] = (float)((u_of(3000, i) - 0.5) * 2.0);
    net_ctx c = {km_unetpp_create_arch(18, 3, DEC3, 5), x, R, lg, NL, 0};
    km_unetpp_zero_grad(c.m);
    net_loss(&c);
    km_unetpp_backward(c.m, R, NULL);
    float *hw = km_unetpp_tensor(c.m, "segmentation_head.0.weight", 0);
    CHECK(km_gradcheck("segmentation_head.0.weight", net_loss, &c, hw, km_unetpp_tensor(c.m, "segmentation_head.0.weight", 1),
                       72, 1e-3, 72) < 2e-3);
    const char *names[] = {"decoder.blocks.x_0_2.conv2.0.weight", "decoder.blocks.x_0_0.conv1.0.weight",
                           "decoder.blocks.x_1_1.conv1.0.weight", "encoder.layer2.1.conv2.weight",
                           "encoder.layer1.1.conv2.weight"};
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) top4(&c, names[t], 1e-3f);
    CHECK(km_unetpp_feature_channels(c.m) == 128);
    net_ctx e = {c.m, x, Rf, feat, sizeof Rf / 4, 1};
    km_unetpp_zero_grad(c.m);
    net_loss(&e);
    km_unetpp_encoder_backward(c.m, Rf, NULL);
    top4(&e, "encoder.layer2.1.conv2.weight", 1e-3f);
    top4(&e, "encoder.layer1.0.conv1.weight", 1e-3f);
    km_unetpp_free(c.m);
}

/* Depth 4: the stage only it has (layer3, F0 at 4x4) and the x_0_0 block
 * reading it. */
KM_TEST(unetpp_depth4_gradient) {
    static float x[NX], R[NL], lg[NL];
    km_rng r;
    km_rng_seed(&r, 9);
    for (size_t i = 0; i < NX; i++) x[i] = (float)km_rng_normal(&r);
    for (size_t i = 0; i < NL; i++) R[i] = (float)km_rng_normal(&r);
    net_ctx c = {km_unetpp_create_arch(18, 4, DEC4, 6), x, R, lg, NL, 0};
    km_unetpp_zero_grad(c.m);
    net_loss(&c);
    km_unetpp_backward(c.m, R, NULL);
    top4(&c, "encoder.layer3.1.conv2.weight", 1e-3f);
    top4(&c, "decoder.blocks.x_0_0.conv1.0.weight", 1e-3f);
    top4(&c, "decoder.blocks.x_2_2.conv1.0.weight", 1e-3f);
    km_unetpp_free(c.m);
}

/* ------------------------------------------------ save, load, refusals */

/* Depth 3 and 4: a trained-mode forward moves the running statistics, then
 * save -> load gives the same depth, channels, parameters, buffers and eval
 * logits bit for bit; the file has no tensor of the unused layers. */
static void round_trip(int D, const int *dec, const char *file) {
    km_unetpp *m = km_unetpp_create_arch(18, D, dec, 9);
    static float x[NX], R[NL], la[NL], lb[NL];
    formula_input(x, R);
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 1, la));
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 0, la));
    const char *p = km_test_sub(file);
    CHECK_OK(km_unetpp_save(m, p, NULL));
    km_tdict d;
    km_tdict_init(&d);
    CHECK_OK(km_safetensors_load(p, &d));
    int unused = 0;
    for (int i = 0; i < d.n; i++) unused += unused_layer(d.items[i].name, D);
    CHECK(d.n == km_unetpp_num_entries(m) && unused == 0);
    km_tdict_free(&d);
    km_unetpp *l = NULL;
    CHECK_OK(km_unetpp_load(&l, p));
    if (!l) goto done;
    CHECK(km_unetpp_encoder_depth(l) == D && !memcmp(km_unetpp_decoder_channels(l), dec, sizeof(int) * (size_t)D));
    km_test_unetpp_same(m, l);
    CHECK_OK(km_unetpp_forward(l, x, 2, 64, 64, 0, lb));
    CHECK(!memcmp(la, lb, sizeof la));
    CHECK_OK(km_unetpp_check_arch(l, D, D == 3 ? "16,8,8" : "16,16,8,8", p));
    km_unetpp_free(l);
done:
    km_unetpp_free(m);
}

KM_TEST(unetpp_depth_save_load) {
    round_trip(3, DEC3, "d3.safetensors");
    round_trip(4, DEC4, "d4.safetensors");
}

/* The 'encoder.*' tensors of m (what `kmseg pretrain` writes). */
static void save_encoder(const km_unetpp *m, const char *path) {
    km_tdict all, enc;
    km_tdict_init(&all);
    km_tdict_init(&enc);
    km_unetpp_to_tdict(m, &all);
    for (int i = 0; i < all.n; i++)
        if (!strncmp(all.items[i].name, "encoder.", 8))
            km_tdict_add(&enc, all.items[i].name, all.items[i].dtype, all.items[i].ndim, all.items[i].shape,
                         all.items[i].data);
    CHECK_OK(km_safetensors_save(path, &enc));
    km_tdict_free(&all);
    km_tdict_free(&enc);
}

/* Every refusal names the flag or the file and what is wrong. */
KM_TEST(unetpp_depth_refusals) {
    int ch[5];
    CHECK_OK(km_unetpp_parse_decoder("16,8,8", 3, ch));
    CHECK(ch[0] == 16 && ch[1] == 8 && ch[2] == 8);
    CHECK_ERR(km_unetpp_parse_decoder(NULL, 3, ch), KM_EARG, "--encoder-depth 3 needs --decoder-channels with 3 entries");
    CHECK_ERR(km_unetpp_parse_decoder("16,8,8,8", 3, ch), KM_EARG, "--decoder-channels '16,8,8,8': expected 3 comma");
    CHECK_ERR(km_unetpp_parse_decoder("16,8", 3, ch), KM_EARG, "expected 3 comma-separated");
    CHECK_ERR(km_unetpp_parse_decoder("16,16,8,8,8", 4, ch), KM_EARG, "expected 4 comma-separated");
    CHECK_ERR(km_unetpp_parse_decoder("16,8", 2, ch), KM_EARG, "--encoder-depth 2: expected 3, 4 or 5");
    CHECK_ERR(km_unetpp_parse_decoder(NULL, 6, ch), KM_EARG, "--encoder-depth 6");
    CHECK_OK(km_unetpp_check_size(40, 3));
    CHECK_ERR(km_unetpp_check_size(40, 4), KM_EARG, "--size 40: expected a positive multiple of 16");
    CHECK_ERR(km_unetpp_check_size(48, 5), KM_EARG, "--size 48: expected a positive multiple of 32");
    CHECK_ERR(km_unetpp_check_size(4, 3), KM_EARG, "--size 4");
    km_unetpp *m = km_unetpp_create_arch(18, 3, DEC3, 1);
    static float x[2 * 3 * 40 * 40];
    CHECK_ERR(km_unetpp_reserve(m, 2, 36, 40), KM_ESHAPE, "multiples of 8 (encoder depth 3)");
    CHECK_OK(km_unetpp_reserve(m, 2, 40, 40)); /* 2^3 divides 40: smp accepts it too */
    CHECK_OK(km_unetpp_forward(m, x, 2, 40, 40, 0, x));
    const char *p = km_test_sub("r3.safetensors");
    CHECK_OK(km_unetpp_save(m, p, NULL));
    km_unetpp *l = NULL;
    CHECK_OK(km_unetpp_load(&l, p));
    if (l) {
        CHECK_ERR(km_unetpp_check_arch(l, 5, NULL, p), KM_EARG,
                  "r3.safetensors: a model of encoder depth 3, but --encoder-depth 5 (the default)");
        CHECK_ERR(km_unetpp_check_arch(l, 4, "16,16,8,8", p), KM_EARG, "r3.safetensors: a model of encoder depth 3");
        CHECK_ERR(km_unetpp_check_arch(l, 3, "16,8,4", p), KM_EARG,
                  "r3.safetensors: decoder channels 16,8,8, but --decoder-channels 16,8,4");
    }
    km_unetpp_free(l);
    /* the encoder: a depth-5 encoder file into depth 3 ignores layer3/layer4 (smp loads and never runs them);
     * a depth-3 one into a depth-5 model misses layer3 */
    km_unetpp *d5 = km_unetpp_create(18, 3);
    const char *p5 = km_test_sub("d5_encoder.safetensors"), *p3 = km_test_sub("d3_encoder.safetensors");
    save_encoder(d5, p5);
    save_encoder(m, p3);
    int ign = -1;
    CHECK_OK(km_unetpp_load_encoder(m, p5, &ign));
    CHECK_MSG(ign == 60, "%d tensors ignored, expected 60 (layer3 and layer4 of resnet18)", ign);
    CHECK(!memcmp(km_unetpp_params(m), km_unetpp_params(d5), 4 * km_unetpp_num_encoder_params(m)));
    CHECK_ERR(km_unetpp_load_encoder(d5, p3, &ign), KM_EMISSING,
              "d3_encoder.safetensors: missing encoder tensor 'layer3.0.conv1.weight'");
    km_unetpp_free(d5);
    km_unetpp_free(m);
}

/* ------------------------------------------------------- command line */

static void run_ok(const char *args, const char *what) {
    char *o = NULL;
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0, "%s exited %d: %s", what, rc, o ? o : "");
    km_free(o);
}

/* `train --encoder-depth 3 --decoder-channels 16,8,8 --size 64` on 12
 * Kvasir-SEG images writes both settings to config.json (a default run
 * writes neither) and a depth-3 checkpoint without the unused layers; eval,
 * predict and forward take the depth from it; --init of it under another
 * depth, a --size the encoder cannot halve 3 times, a missing or wrong
 * --decoder-channels and a depth-3 encoder for a depth-5 student are refused
 * naming the file or flag; `pretrain --encoder-depth 3` writes an encoder of
 * stages 0..3 and a 128 -> 128 -> 128 head. */
KM_TEST(unetpp_depth_cli) {
    char a[3072], p[1024];
    const char *data = km_test_path("data/kvasir-seg"), *run = km_test_sub("d3run");
    const char *common = "--max-images 12 --size 64 --resnet 18 --batch 2 --epochs 1 --max-steps 2 --threads 1 --quiet";
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-depth 3 --decoder-channels 16,8,8 --out '%s'", data, common,
             run);
    run_ok(a, "train --encoder-depth 3");
    snprintf(p, sizeof p, "%s/config.json", run);
    char *cfg = km_test_slurp(p);
    CHECK(cfg && strstr(cfg, "\"decoder_channels\": \"16,8,8\"") && strstr(cfg, "\"encoder_depth\": 3"));
    km_free(cfg);
    snprintf(p, sizeof p, "%s/best.safetensors", run);
    km_unetpp *m = NULL;
    CHECK_OK(km_unetpp_load(&m, p));
    if (m) CHECK(km_unetpp_encoder_depth(m) == 3 && !memcmp(km_unetpp_decoder_channels(m), DEC3, sizeof DEC3));
    if (m) printf("    depth-3 student: %zu parameters\n", km_unetpp_num_params(m));
    km_unetpp_free(m);
    snprintf(a, sizeof a, "eval --weights '%s' --data '%s' --split-dir '%s/splits' --split val --out '%s' --threads 1",
             p, data, run, km_test_sub("eval"));
    run_ok(a, "eval");
    snprintf(a, sizeof a, "%s/summary.json", km_test_sub("eval"));
    cfg = km_test_slurp(a);
    CHECK(cfg && strstr(cfg, "\"size\": 64"));
    km_free(cfg);
    const char *imgs = km_test_sub("imgs");
    CHECK(km_test_sh("mkdir -p '%s' && ls '%s/images' | head -3 | while read f; do cp \"%s/images/$f\" '%s/'; done",
                     imgs, data, data, imgs) == 0);
    snprintf(a, sizeof a, "predict --weights '%s' --images '%s' --out '%s' --threads 1", p, imgs, km_test_sub("pred"));
    run_ok(a, "predict");
    snprintf(a, sizeof a, "ls '%s/masks' | grep -c png | grep -qx 3", km_test_sub("pred"));
    CHECK_MSG(km_test_sh("%s", a) == 0, "predict did not write 3 masks");
    /* forward on a 40 x 40 input (a multiple of 8, not of 32): the model's logits, bit for bit */
    float xin[3 * 40 * 40];
    for (int i = 0; i < 3 * 40 * 40; i++) xin[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    int64_t xs[4] = {1, 3, 40, 40};
    char xp[600], yp[600];
    snprintf(xp, sizeof xp, "%s/x40.npy", km_test_tmpdir());
    snprintf(yp, sizeof yp, "%s/y40.npy", km_test_tmpdir());
    CHECK_OK(km_npy_save(xp, KM_F32, 4, xs, xin));
    snprintf(a, sizeof a, "forward --weights '%s' --input '%s' --output '%s'", p, xp, yp);
    run_ok(a, "forward 40 x 40 (depth 3)");
    km_tensor yk;
    int64_t ys[4] = {1, 1, 40, 40};
    m = NULL;
    CHECK_OK(km_unetpp_load(&m, p));
    if (m && !km_npy_load_f32(yp, 4, ys, &yk)) {
        float *y = malloc(sizeof(float) * 40 * 40);
        CHECK_OK(km_unetpp_forward(m, xin, 1, 40, 40, 0, y));
        CHECK_MSG(!memcmp(y, yk.data, sizeof(float) * 40 * 40), "kmseg forward's logits differ from the library's");
        free(y);
        km_tensor_free(&yk);
    } else {
        CHECK_MSG(0, "%s: no 1 x 1 x 40 x 40 output", yp);
    }
    km_unetpp_free(m);
    /* eval --size 40: a multiple of 8 suits the depth-3 student; the depth-5 one below refuses it, naming its file */
    snprintf(a, sizeof a, "eval --weights '%s' --data '%s' --split all --size 40 --out '%s' --threads 1", p, data,
             km_test_sub("eval40"));
    run_ok(a, "eval --size 40 (depth 3)");
    /* a default run: neither key */
    snprintf(a, sizeof a, "train --data '%s' %s --decoder-channels 16,16,8,8,8 --max-steps 1 --out '%s'", data, common,
             km_test_sub("d5run"));
    run_ok(a, "train (depth 5)");
    snprintf(a, sizeof a, "%s/config.json", km_test_sub("d5run"));
    cfg = km_test_slurp(a);
    CHECK(cfg && !strstr(cfg, "encoder_depth"));
    km_free(cfg);
    snprintf(a, sizeof a, "eval --weights '%s/best.safetensors' --data '%s' --split all --size 40 --out '%s' "
             "--threads 1", km_test_sub("d5run"), data, km_test_sub("eval40b"));
    KM_CLI_EXPECT_FAIL(a, "d5run/best.safetensors: --size 40: expected a positive multiple of 32");
    snprintf(a, sizeof a, "eval --weights '%s' --data '%s' --split all --size 36 --out '%s' --threads 1", p, data,
             km_test_sub("eval36"));
    KM_CLI_EXPECT_FAIL(a, "--size 36: expected a positive multiple of 8");
    /* refusals */
    snprintf(a, sizeof a, "train --data '%s' %s --init '%s' --out '%s'", data, common, p, km_test_sub("i1"));
    KM_CLI_EXPECT_FAIL(a, "best.safetensors: a model of encoder depth 3, but --encoder-depth 5 (the default)");
    snprintf(a, sizeof a, "train --data '%s' %s --init '%s' --encoder-depth 4 --decoder-channels 16,16,8,8 --out '%s'",
             data, common, p, km_test_sub("i2"));
    KM_CLI_EXPECT_FAIL(a, "best.safetensors: a model of encoder depth 3, but --encoder-depth 4");
    snprintf(a, sizeof a, "train --data '%s' %s --size 36 --encoder-depth 3 --decoder-channels 16,8,8 --out '%s'", data,
             common, km_test_sub("b1"));
    KM_CLI_EXPECT_FAIL(a, "--size 36: expected a positive multiple of 8");
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-depth 3 --out '%s'", data, common, km_test_sub("b2"));
    KM_CLI_EXPECT_FAIL(a, "--encoder-depth 3 needs --decoder-channels with 3 entries");
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-depth 3 --decoder-channels 16,16,8,8,8 --out '%s'", data,
             common, km_test_sub("b3"));
    KM_CLI_EXPECT_FAIL(a, "--decoder-channels '16,16,8,8,8': expected 3 comma-separated integers");
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-depth 6 --out '%s'", data, common, km_test_sub("b4"));
    KM_CLI_EXPECT_FAIL(a, "--encoder-depth");
    /* pretrain at depth 3, its encoder into a depth-3 student; refused by a depth-5 one */
    const char *pre = km_test_sub("pre3");
    snprintf(a, sizeof a, "pretrain --data '%s' --max-images 12 --size 64 --resnet 18 --batch 4 --epochs 1 "
             "--max-steps 2 --threads 1 --encoder-depth 3 --decoder-channels 16,8,8 --out '%s'", data, pre);
    run_ok(a, "pretrain --encoder-depth 3");
    km_tdict d;
    km_tdict_init(&d);
    snprintf(p, sizeof p, "%s/encoder.safetensors", pre);
    CHECK_OK(km_safetensors_load(p, &d));
    int deep = 0;
    for (int i = 0; i < d.n; i++) deep += unused_layer(d.items[i].name, 3);
    CHECK(d.n > 0 && deep == 0 && km_tdict_find(&d, "encoder.layer2.1.bn2.running_var"));
    km_tdict_free(&d);
    km_tdict_init(&d);
    snprintf(a, sizeof a, "%s/projection_head.safetensors", pre);
    CHECK_OK(km_safetensors_load(a, &d));
    const km_tensor *w1 = km_tdict_find(&d, "projection_head.0.weight"), *w2 = km_tdict_find(&d, "projection_head.2.weight");
    CHECK(w1 && w1->shape[0] == 128 && w1->shape[1] == 128 && w2 && w2->shape[0] == 128 && w2->shape[1] == 128);
    km_tdict_free(&d);
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-depth 3 --decoder-channels 16,8,8 --encoder-weights '%s' "
             "--out '%s'", data, common, p, km_test_sub("ft3"));
    run_ok(a, "train --encoder-weights (depth 3)");
    snprintf(a, sizeof a, "train --data '%s' %s --encoder-weights '%s' --out '%s'", data, common, p, km_test_sub("ft5"));
    KM_CLI_EXPECT_FAIL(a, "encoder.safetensors: missing encoder tensor 'layer3.0.conv1.weight'");
}

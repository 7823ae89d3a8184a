/* test_unetpp_decoder.c - smp's decoder_channels (--decoder-channels): a
 * U-Net++ with a tiny decoder (16,16,8,8,8) has the shapes smp gives it,
 * passes a finite-difference gradient check through the whole network,
 * round-trips through safetensors bit for bit, and a checkpoint loaded with
 * other channels than it has is refused naming the file. The default decoder
 * is covered by test_unetpp.c's smp parity tests. */
#include "cli.h"
#include "gradcheck.h"
#include "test.h"
#include "unetpp_same.h"

#include "../src/io/npy.h"
#include "../src/models/unetpp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const int TINY[5] = {16, 16, 8, 8, 8};

static const km_unetpp_entry *entry(km_unetpp *m, const char *name) {
    for (int i = 0; i < km_unetpp_num_entries(m); i++)
        if (!strcmp(km_unetpp_entry_at(m, i)->name, name)) return km_unetpp_entry_at(m, i);
    return NULL;
}

/* Shapes as smp UnetPlusPlus(decoder_channels=(16,16,8,8,8)) names them: the
 * d = 0 column takes the decoder channels, d > 0 blocks keep the encoder's. */
KM_TEST(unetpp_decoder_channels_shapes) {
    km_unetpp *m = km_unetpp_create_dec(18, TINY, 1), *d = km_unetpp_create(18, 1);
    struct {
        const char *name;
        int64_t cout, cin;
    } want[] = {
        {"decoder.blocks.x_0_0.conv1.0.weight", 16, 512 + 256},
        {"decoder.blocks.x_0_1.conv1.0.weight", 16, 16 + 128 * 2},
        {"decoder.blocks.x_1_1.conv1.0.weight", 128, 256 + 128},
        {"decoder.blocks.x_0_3.conv1.0.weight", 8, 8 + 64 * 4},
        {"decoder.blocks.x_0_4.conv1.0.weight", 8, 8},
        {"decoder.blocks.x_0_4.conv2.0.weight", 8, 8},
        {"segmentation_head.0.weight", 1, 8},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const km_unetpp_entry *e = entry(m, want[i].name);
        CHECK_MSG(e && e->shape[0] == want[i].cout && e->shape[1] == want[i].cin, "%s: [%lld, %lld], expected [%lld, %lld]",
                  want[i].name, e ? (long long)e->shape[0] : -1LL, e ? (long long)e->shape[1] : -1LL,
                  (long long)want[i].cout, (long long)want[i].cin);
    }
    CHECK(km_unetpp_num_entries(m) == km_unetpp_num_entries(d));
    CHECK(km_unetpp_num_encoder_params(m) == km_unetpp_num_encoder_params(d));
    printf("    parameters: %zu (default decoder: %zu)\n", km_unetpp_num_params(m), km_unetpp_num_params(d));
    /* Only the d = 0 column and the head change. By hand, per block l: conv1 C*Cin*9, conv2 C*C*9, two
     * BatchNorms 4*C; head C4*9 + 1. Default: 2360320 + 737792 + 221440 + 101504 + 6976 + 145 = 3428177;
     * tiny: 112960 + 41536 + 15584 + 19616 + 1184 + 73 = 190953. */
    CHECK(km_unetpp_num_params(d) - km_unetpp_num_params(m) == 3428177 - 190953);
    CHECK(!memcmp(km_unetpp_decoder_channels(d), km_unetpp_default_decoder, sizeof TINY));
    CHECK(!memcmp(km_unetpp_decoder_channels(m), TINY, sizeof TINY));
    km_unetpp_free(m);
    km_unetpp_free(d);
}

/* L = sum(logits * R), train-mode BatchNorm (batch statistics), 2 x 64 x 64. */
typedef struct {
    km_unetpp *m;
    float *x, *R, *lg;
} net_ctx;

static double net_loss(void *p) {
    net_ctx *c = p;
    km_unetpp_forward(c->m, c->x, 2, 64, 64, 1, c->lg);
    return km_gc_dot(c->lg, c->R, 2 * 64 * 64);
}

/* Analytic gradients of the tiny-decoder network against central differences
 * of L = sum(logits * R). The head sits after the last ReLU: all of its
 * weights go through tests/gradcheck.h (float forward: ~3e-4 of the largest
 * gradient). Behind ReLUs and the max-pool a step of h crosses kinks, so,
 * as in test_unetpp.c's encoder check, the 4 largest-gradient weights of
 * each tensor are compared (within 3% + 1e-3 of the tensor's largest
 * gradient): in the d = 0 blocks whose widths changed, a d = 1 block that
 * reads their neighbours, a decoder BatchNorm and the stem. A wrong channel
 * count or offset gives O(1) errors. */
KM_TEST(unetpp_decoder_tiny_gradient) {
    static float x[2 * 3 * 64 * 64], R[2 * 64 * 64], lg[2 * 64 * 64];
    km_rng r;
    km_rng_seed(&r, 8);
    for (size_t i = 0; i < sizeof x / 4; i++) x[i] = (float)km_rng_normal(&r);
    for (size_t i = 0; i < sizeof R / 4; i++) R[i] = (float)km_rng_normal(&r);
    net_ctx c = {km_unetpp_create_dec(18, TINY, 5), x, R, lg};
    km_unetpp_zero_grad(c.m);
    net_loss(&c);
    km_unetpp_backward(c.m, R, NULL);
    const char *head = "segmentation_head.0.weight";
    CHECK(km_gradcheck(head, net_loss, &c, km_unetpp_tensor(c.m, head, 0), km_unetpp_tensor(c.m, head, 1), 72, 1e-3,
                       72) < 2e-3);
    const char *names[] = {"decoder.blocks.x_0_4.conv2.0.weight", "decoder.blocks.x_0_3.conv1.0.weight",
                           "decoder.blocks.x_0_2.conv1.0.weight", "decoder.blocks.x_1_2.conv1.0.weight",
                           "encoder.conv1.weight"};
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        const km_unetpp_entry *e = entry(c.m, names[t]);
        CHECK_MSG(e && !km_gradcheck_top(names[t], net_loss, &c, km_unetpp_tensor(c.m, names[t], 0),
                                         km_unetpp_tensor(c.m, names[t], 1), e->numel, 1e-3f, 4, 0.03, 1e-3),
                  "%s: a finite difference is off (or no such tensor)", names[t]);
    }
    km_unetpp_free(c.m);
}

/* Save and load: channels read from the tensor shapes, parameters, buffers
 * and eval logits bit-identical; the flag's channels checked against them. */
KM_TEST(unetpp_decoder_save_load_and_mismatch) {
    km_unetpp *m = km_unetpp_create_dec(18, TINY, 9);
    static float x[2 * 3 * 64 * 64], la[2 * 64 * 64], lb[2 * 64 * 64];
    km_rng r;
    km_rng_seed(&r, 2);
    for (size_t i = 0; i < sizeof x / 4; i++) x[i] = (float)km_rng_normal(&r);
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 1, la)); /* moves the running statistics off 0/1 */
    CHECK_OK(km_unetpp_forward(m, x, 2, 64, 64, 0, la));
    const char *p = km_test_sub("tiny.safetensors");
    CHECK_OK(km_unetpp_save(m, p, NULL));
    km_unetpp *l = NULL;
    CHECK_OK(km_unetpp_load(&l, p));
    if (!l) goto done;
    CHECK(!memcmp(km_unetpp_decoder_channels(l), TINY, sizeof TINY));
    km_test_unetpp_same(m, l);
    CHECK_OK(km_unetpp_forward(l, x, 2, 64, 64, 0, lb));
    CHECK(!memcmp(la, lb, sizeof la));
    CHECK_OK(km_unetpp_check_arch(l, 5, "16,16,8,8,8", p));
    CHECK_ERR(km_unetpp_check_arch(l, 5, NULL, p), KM_EARG, "tiny.safetensors: decoder channels 16,16,8,8,8, but --decoder-channels 256,128,64,32,16");
    CHECK_ERR(km_unetpp_check_arch(l, 5, "16,16,8,8,4", p), KM_EARG, "tiny.safetensors");
    km_unetpp_free(l);
done:
    km_unetpp_free(m);
}

KM_TEST(unetpp_decoder_channels_parse) {
    int ch[5];
    CHECK_OK(km_unetpp_parse_decoder(NULL, 5, ch));
    CHECK(!memcmp(ch, km_unetpp_default_decoder, sizeof ch));
    CHECK_OK(km_unetpp_parse_decoder("32,16,8,4,2", 5, ch));
    CHECK(ch[0] == 32 && ch[1] == 16 && ch[2] == 8 && ch[3] == 4 && ch[4] == 2);
    const char *bad[] = {"", "16,16,8,8", "16,16,8,8,8,8", "16,16,0,8,8", "16,-1,8,8,8", "16,16,8,8,x",
                         "16,16,8,8,8 ", "16,16,,8,8", "16,16,8,8,99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_ERR(km_unetpp_parse_decoder(bad[i], 5, ch), KM_EARG, "--decoder-channels");
}

/* The command line: `train --decoder-channels` writes the setting to
 * config.json (a default run does not: earlier folders re-write byte for
 * byte) and a checkpoint of those channels; `forward` takes the channels from
 * the checkpoint; `train --init` of it without the flag, or with other
 * channels, fails naming the file. 8 Kvasir-SEG images, 64 px, one step. */
KM_TEST(unetpp_decoder_channels_cli) {
    char a[2048], *o = NULL;
    const char *common = "--max-images 8 --size 64 --resnet 18 --batch 2 --epochs 1 --max-steps 1 --threads 1 --quiet";
    const char *run = km_test_sub("tiny"), *data = km_test_path("data/kvasir-seg");
    snprintf(a, sizeof a, "train --data '%s' %s --decoder-channels 16,16,8,8,8 --out '%s'", data, common, run);
    int rc = km_test_kmseg(&o, a);
    CHECK_MSG(rc == 0, "train exited %d: %s", rc, o);
    km_free(o);
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", run);
    char *cfg = km_test_slurp(p);
    CHECK(cfg && strstr(cfg, "\"decoder_channels\": \"16,16,8,8,8\""));
    km_free(cfg);
    snprintf(p, sizeof p, "%s/best.safetensors", run);
    km_unetpp *m = NULL;
    CHECK_OK(km_unetpp_load(&m, p));
    if (m) CHECK(!memcmp(km_unetpp_decoder_channels(m), TINY, sizeof TINY));
    km_unetpp_free(m);
    /* forward of the tiny checkpoint: channels from the file */
    static float x[3 * 64 * 64];
    int64_t shp[4] = {1, 3, 64, 64};
    const char *in = km_test_sub("x.npy"), *lo = km_test_sub("logits.npy");
    CHECK_OK(km_npy_save(in, KM_F32, 4, shp, x));
    snprintf(a, sizeof a, "forward --weights '%s' --input '%s' --output '%s'", p, in, lo);
    rc = km_test_kmseg(&o, a);
    CHECK_MSG(rc == 0, "forward exited %d: %s", rc, o);
    km_free(o);
    /* --init of it: the flag must name its channels */
    snprintf(a, sizeof a, "train --data '%s' %s --init '%s' --out '%s'", data, common, p, km_test_sub("init1"));
    KM_CLI_EXPECT_FAIL(a, "best.safetensors: decoder channels 16,16,8,8,8, but --decoder-channels 256,128,64,32,16");
    snprintf(a, sizeof a, "train --data '%s' %s --init '%s' --decoder-channels 16,16,8,8,4 --out '%s'", data, common,
             p, km_test_sub("init2"));
    KM_CLI_EXPECT_FAIL(a, "best.safetensors: decoder channels 16,16,8,8,8, but --decoder-channels 16,16,8,8,4");
    snprintf(a, sizeof a, "train --data '%s' %s --decoder-channels 16,16,8 --out '%s'", data, common, km_test_sub("bad"));
    KM_CLI_EXPECT_FAIL(a, "--decoder-channels '16,16,8': expected 5 comma-separated integers");
    snprintf(a, sizeof a, "pretrain --data '%s' --max-images 8 --size 64 --resnet 18 --batch 2 --epochs 1 "
             "--decoder-channels 16,16,0,8,8 --out '%s'", data, km_test_sub("pbad"));
    KM_CLI_EXPECT_FAIL(a, "--decoder-channels '16,16,0,8,8'");
}

/* bench_tinyvit.c - kmseg's side of bench/run_tinyvit.sh: the TinyViT image
 * encoder, timed like bench/ref_tinyvit.py.
 *
 *   bench_tinyvit --model lite [--checkpoint lite_medsam.pth]
 *       the real LiteMedSAM checkpoint (default $KMSEG_TEACHER or
 *       ~/.local/share/kmseg/teachers/lite_medsam.pth), input 256x256
 *   bench_tinyvit --model mobile
 *       a MobileSAM-shaped TinyViT-5M state dict built in memory (3x3
 *       stride-2 patch embedding, widths 64/128/160/320, depths 2/2/6/2,
 *       heads 2/4/5/10, windows 7/7/14/7, classifier head included as in
 *       mobile_sam.pt; random weights, seed 1), input 1024x1024
 *   common: [--threads 2] [--warmup 1] [--repeats 5]
 * Loads the encoder (km_tinyvit_load), then times km_tinyvit_forward on a
 * seeded random-normal input; prints one JSON line: median, min/max, CPU
 * time (all threads) and the process's peak RSS.
 * Build: see bench/run_tinyvit.sh (links build/release/libkmseg.a). */
#include "../src/core/km.h"
#include "../src/core/rng.h"
#include "../src/io/load.h"
#include "../src/models/tinyvit.h"
#include "../src/nn/gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double peak_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A float tensor of N(mean, std^2) values (std 0 -> constant mean). */
static void add(km_tdict *sd, km_rng *r, const char *name, int ndim, int64_t a, int64_t b,
                int64_t c, int64_t d, double mean, double std) {
    int64_t shape[4] = {a, b, c, d};
    km_tensor *t = km_tdict_add(sd, name, KM_F32, ndim, shape, NULL);
    KM_ASSERT(t);
    float *p = t->data;
    int64_t n = km_numel(ndim, shape);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + std * km_rng_normal(r));
}

static void add_cbn(km_tdict *sd, km_rng *r, const char *pfx, int O, int I, int k) {
    char n[200];
    snprintf(n, sizeof n, "%s.c.weight", pfx);
    add(sd, r, n, 4, O, I, k, k, 0, 1.0 / sqrt((double)I * k * k));
    snprintf(n, sizeof n, "%s.bn.weight", pfx);
    add(sd, r, n, 1, O, 0, 0, 0, 1, 0.1);
    snprintf(n, sizeof n, "%s.bn.bias", pfx);
    add(sd, r, n, 1, O, 0, 0, 0, 0, 0.1);
    snprintf(n, sizeof n, "%s.bn.running_mean", pfx);
    add(sd, r, n, 1, O, 0, 0, 0, 0, 0.1);
    snprintf(n, sizeof n, "%s.bn.running_var", pfx);
    add(sd, r, n, 1, O, 0, 0, 0, 1, 0);
}

static void add_vit_block(km_tdict *sd, km_rng *r, int i, int j, int D, int nH, int ws) {
    char p[160], n[200];
    snprintf(p, sizeof p, "image_encoder.layers.%d.blocks.%d", i, j);
#define F(field, nd, a, b_, mean, std)                                                             \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", p, field);                                                  \
        add(sd, r, n, nd, a, b_, 0, 0, mean, std);                                                 \
    } while (0)
    F("attn.attention_biases", 2, nH, ws * ws, 0, 0.5);
    F("attn.norm.weight", 1, D, 0, 1, 0.1);
    F("attn.norm.bias", 1, D, 0, 0, 0.1);
    F("attn.qkv.weight", 2, 3 * D, D, 0, 1 / sqrt(D));
    F("attn.qkv.bias", 1, 3 * D, 0, 0, 0.1);
    F("attn.proj.weight", 2, D, D, 0, 1 / sqrt(D));
    F("attn.proj.bias", 1, D, 0, 0, 0.1);
    F("mlp.norm.weight", 1, D, 0, 1, 0.1);
    F("mlp.norm.bias", 1, D, 0, 0, 0.1);
    F("mlp.fc1.weight", 2, 4 * D, D, 0, 1 / sqrt(D));
    F("mlp.fc1.bias", 1, 4 * D, 0, 0, 0.1);
    F("mlp.fc2.weight", 2, D, 4 * D, 0, 1 / sqrt(4 * D));
    F("mlp.fc2.bias", 1, D, 0, 0, 0.1);
#undef F
    snprintf(n, sizeof n, "%s.local_conv", p);
    add_cbn(sd, r, n, D, 1, 3);
}

/* MobileSAM's image encoder (TinyViT-5M, build_sam_vit_t), random weights. */
static void make_mobile(km_tdict *sd) {
    static const int E[4] = {64, 128, 160, 320}, dep[4] = {2, 2, 6, 2}, nH[4] = {0, 4, 5, 10},
                     ws[4] = {0, 7, 14, 7};
    km_rng r;
    km_rng_seed(&r, 1);
    char n[200];
    add_cbn(sd, &r, "image_encoder.patch_embed.seq.0", 32, 3, 3);
    add_cbn(sd, &r, "image_encoder.patch_embed.seq.2", 64, 32, 3);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < dep[i]; j++) {
            if (i > 0) {
                add_vit_block(sd, &r, i, j, E[i], nH[i], ws[i]);
                continue;
            }
            snprintf(n, sizeof n, "image_encoder.layers.0.blocks.%d.conv1", j);
            add_cbn(sd, &r, n, 4 * E[0], E[0], 1);
            snprintf(n, sizeof n, "image_encoder.layers.0.blocks.%d.conv2", j);
            add_cbn(sd, &r, n, 4 * E[0], 1, 3);
            snprintf(n, sizeof n, "image_encoder.layers.0.blocks.%d.conv3", j);
            add_cbn(sd, &r, n, E[0], 4 * E[0], 1);
        }
        if (i == 3) break;
        snprintf(n, sizeof n, "image_encoder.layers.%d.downsample.conv1", i);
        add_cbn(sd, &r, n, E[i + 1], E[i], 1);
        snprintf(n, sizeof n, "image_encoder.layers.%d.downsample.conv2", i);
        add_cbn(sd, &r, n, E[i + 1], 1, 3);
        snprintf(n, sizeof n, "image_encoder.layers.%d.downsample.conv3", i);
        add_cbn(sd, &r, n, E[i + 1], E[i + 1], 1);
    }
    add(sd, &r, "image_encoder.norm_head.weight", 1, 320, 0, 0, 0, 1, 0);
    add(sd, &r, "image_encoder.norm_head.bias", 1, 320, 0, 0, 0, 0, 0);
    add(sd, &r, "image_encoder.head.weight", 2, 1000, 320, 0, 0, 0, 0.05);
    add(sd, &r, "image_encoder.head.bias", 1, 1000, 0, 0, 0, 0, 0);
    add(sd, &r, "image_encoder.neck.0.weight", 4, 256, 320, 1, 1, 0, 1 / sqrt(320));
    add(sd, &r, "image_encoder.neck.1.weight", 1, 256, 0, 0, 0, 1, 0);
    add(sd, &r, "image_encoder.neck.1.bias", 1, 256, 0, 0, 0, 0, 0);
    add(sd, &r, "image_encoder.neck.2.weight", 4, 256, 256, 3, 3, 0, 1 / sqrt(256 * 9));
    add(sd, &r, "image_encoder.neck.3.weight", 1, 256, 0, 0, 0, 1, 0);
    add(sd, &r, "image_encoder.neck.3.bias", 1, 256, 0, 0, 0, 0, 0);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_tinyvit --model lite|mobile [--checkpoint lite_medsam.pth] "
                    "[--threads N] [--warmup N] [--repeats N]\n");
    return 2;
}

int main(int argc, char **argv) {
    km_set_omp_policy(argv); /* as kmseg's main: OMP_WAIT_POLICY=PASSIVE unless set */
    const char *model = "lite", *ck = getenv("KMSEG_TEACHER");
    static char def[1024];
    snprintf(def, sizeof def, "%s/.local/share/kmseg/teachers/lite_medsam.pth",
             getenv("HOME") ? getenv("HOME") : "");
    if (!ck || !*ck) ck = def;
    int threads = 2, warmup = 1, repeats = 5;
    for (int i = 1; i < argc; i += 2) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(f, "--model")) model = v;
        else if (!strcmp(f, "--checkpoint")) ck = v;
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--warmup")) warmup = atoi(v);
        else if (!strcmp(f, "--repeats")) repeats = atoi(v);
        else return usage();
    }
    int mobile = !strcmp(model, "mobile");
    if ((!mobile && strcmp(model, "lite")) || threads < 1 || repeats < 1 || warmup < 0)
        return usage();
    km_set_threads(threads);
    km_tdict sd;
    km_tdict_init(&sd);
    if (mobile) make_mobile(&sd);
    else if (km_load_checkpoint(ck, &sd)) {
        fprintf(stderr, "bench_tinyvit: %s\n", km_errmsg());
        return 1;
    }
    km_tinyvit *e = NULL;
    if (km_tinyvit_load(&e, &sd, mobile ? "mobilesam (random)" : ck)) {
        fprintf(stderr, "bench_tinyvit: %s\n", km_errmsg());
        return 1;
    }
    km_tdict_free(&sd);
    const km_tinyvit_config *c = km_tinyvit_config_of(e);
    const int S = c->img_size;
    float *img = km_malloc(sizeof(float) * 3 * S * S);
    float *emb = km_malloc(sizeof(float) * (size_t)c->out_chans * 64 * 64);
    km_rng r;
    km_rng_seed(&r, 0);
    for (size_t i = 0; i < (size_t)3 * S * S; i++) img[i] = (float)km_rng_normal(&r);
    for (int i = 0; i < warmup; i++) km_tinyvit_forward(e, img, emb, NULL);
    double *t = km_malloc(sizeof(double) * repeats), *cs = km_malloc(sizeof(double) * repeats);
    for (int i = 0; i < repeats; i++) {
        double t0 = km_now(), c0 = cpu_s();
        km_tinyvit_forward(e, img, emb, NULL);
        t[i] = km_now() - t0;
        cs[i] = cpu_s() - c0;
    }
    double sum = 0;
    for (size_t i = 0; i < (size_t)c->out_chans * 64 * 64; i++) sum += emb[i];
    qsort(t, repeats, sizeof(double), cmp_d);
    qsort(cs, repeats, sizeof(double), cmp_d);
    printf("{\"impl\": \"kmseg\", \"model\": \"%s\", \"input\": [1, 3, %d, %d], "
           "\"forward_s\": %.4f, \"forward_min_max_s\": [%.4f, %.4f], \"forward_cpu_s\": %.4f, "
           "\"peak_rss_mb\": %.1f, \"embedding_sum\": %.6g, \"gemm\": \"%s\", \"threads\": %d, "
           "\"warmup\": %d, \"repeats\": %d}\n",
           mobile ? "MobileSAM TinyViT-5M (random)" : "LiteMedSAM TinyViT (real weights)", S, S,
           t[repeats / 2], t[0], t[repeats - 1], cs[repeats / 2], peak_mb(), sum,
           km_gemm_backend(), threads, warmup, repeats);
    km_free(t); km_free(cs); km_free(img); km_free(emb);
    km_tinyvit_free(e);
    return 0;
}

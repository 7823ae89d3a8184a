/* bench_sam_encoder.c - one 1024x1024 SAM ViT-B image-encoder forward with
 * random weights (D 768, depth 12, 12 heads, window 14, global 2/5/8/11).
 * Not part of the tests; build by hand:
 *
 *   make && gcc -std=c11 -O2 -march=native -fopenmp -o build/bench_sam_encoder \
 *       bench/bench_sam_encoder.c build/release/libkmseg.a -lm -ldl -lpthread -lpng -ljpeg
 *   /usr/bin/time -v build/bench_sam_encoder [threads] [runs]     (default 2, 2)
 *
 * Prints the load time, each forward's wall and CPU time (the CPU time is the
 * useful number on a shared machine: wall ~ CPU / threads when the cores are
 * free) and the peak RSS after loading
 * (weights are copied out of the state dict, which is then freed) and after
 * the forwards. Reference (task author's measurement, same 2 threads):
 * PyTorch 1.13 takes 13 s with an AVX-512 SGEMM, 36 s with Debian's default. */
#include "../src/core/km.h"
#include "../src/core/rng.h"
#include "../src/models/sam_encoder.h"
#include "../src/nn/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <math.h>
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

static void add(km_tdict *sd, km_rng *r, const char *name, int ndim, int64_t a, int64_t b,
                int64_t c, int64_t d, double std) {
    int64_t shape[4] = {a, b, c, d};
    km_tensor *t = km_tdict_add(sd, name, KM_F32, ndim, shape, NULL);
    KM_ASSERT(t);
    float *p = t->data;
    int64_t n = km_numel(ndim, shape);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(std * km_rng_normal(r));
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, runs = argc > 2 ? atoi(argv[2]) : 2;
    const int D = 768, depth = 12, hd = 64, M = 3072, OC = 256;
    km_set_threads(threads);
    km_rng r;
    km_rng_seed(&r, 1);
    km_tdict sd;
    km_tdict_init(&sd);
    char n[128];
    double ws = 1.0 / sqrt((double)D), ms = 1.0 / sqrt((double)M);
    add(&sd, &r, "image_encoder.pos_embed", 4, 1, 64, 64, D, 0.2);
    add(&sd, &r, "image_encoder.patch_embed.proj.weight", 4, D, 3, 16, 16, 1.0 / 28);
    add(&sd, &r, "image_encoder.patch_embed.proj.bias", 1, D, 0, 0, 0, 0.1);
    for (int i = 0; i < depth; i++) {
        int L = (i % 3 == 2) ? 127 : 27;
#define A(field, nd, a, b, s)                                                                      \
    snprintf(n, sizeof n, "image_encoder.blocks.%d.%s", i, field);                                \
    add(&sd, &r, n, nd, a, b, 0, 0, s)
        A("norm1.weight", 1, D, 0, 1.0);
        A("norm1.bias", 1, D, 0, 0.1);
        A("attn.rel_pos_h", 2, L, hd, 0.2);
        A("attn.rel_pos_w", 2, L, hd, 0.2);
        A("attn.qkv.weight", 2, 3 * D, D, ws);
        A("attn.qkv.bias", 1, 3 * D, 0, 0.1);
        A("attn.proj.weight", 2, D, D, ws);
        A("attn.proj.bias", 1, D, 0, 0.1);
        A("norm2.weight", 1, D, 0, 1.0);
        A("norm2.bias", 1, D, 0, 0.1);
        A("mlp.lin1.weight", 2, M, D, ws);
        A("mlp.lin1.bias", 1, M, 0, 0.1);
        A("mlp.lin2.weight", 2, D, M, ms);
        A("mlp.lin2.bias", 1, D, 0, 0.1);
#undef A
    }
    add(&sd, &r, "image_encoder.neck.0.weight", 4, OC, D, 1, 1, ws);
    add(&sd, &r, "image_encoder.neck.1.weight", 1, OC, 0, 0, 0, 1.0);
    add(&sd, &r, "image_encoder.neck.1.bias", 1, OC, 0, 0, 0, 0.1);
    add(&sd, &r, "image_encoder.neck.2.weight", 4, OC, OC, 3, 3, 1.0 / 48);
    add(&sd, &r, "image_encoder.neck.3.weight", 1, OC, 0, 0, 0, 1.0);
    add(&sd, &r, "image_encoder.neck.3.bias", 1, OC, 0, 0, 0, 0.1);

    double t0 = km_now();
    km_sam_encoder *e;
    if (km_sam_encoder_load(&e, &sd, "random ViT-B")) {
        fprintf(stderr, "%s\n", km_errmsg());
        return 1;
    }
    km_tdict_free(&sd);
    const km_sam_encoder_config *c = km_sam_encoder_config_of(e);
    printf("config: D %d depth %d heads %d window %d globals %d; GEMM %s; threads %d\n",
           c->embed_dim, c->depth, c->num_heads, c->window_size, c->n_global, km_gemm_backend(),
           threads);
    printf("load (copy weights): %.2f s, peak RSS so far %.0f MB (state dict + copy)\n",
           km_now() - t0, peak_mb());

    float *img = km_malloc(sizeof(float) * 3 * 1024 * 1024);
    float *emb = km_malloc(sizeof(float) * 256 * 64 * 64);
    for (int i = 0; i < 3 * 1024 * 1024; i++) img[i] = (float)km_rng_normal(&r);
    for (int k = 0; k < runs; k++) {
        t0 = km_now();
        double c0 = cpu_s();
        km_sam_encoder_forward(e, img, emb, NULL);
        printf("forward %d: %.2f s wall, %.2f s CPU (all threads)\n", k, km_now() - t0,
               cpu_s() - c0);
    }
    double s = 0;
    for (int i = 0; i < 256 * 64 * 64; i++) s += emb[i];
    printf("checksum %.6f; peak RSS %.0f MB\n", s, peak_mb());
    km_free(img);
    km_free(emb);
    km_sam_encoder_free(e);
    return 0;
}

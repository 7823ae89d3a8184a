/* bench_sam.c - kmseg's side of bench/run_sam.sh: Segment Anything ViT-B with
 * random weights through the same path as `kmseg sam` (checkpoint load,
 * SamPredictor set_image, predict), timed like bench/ref_sam.py.
 *
 *   bench_sam --make-checkpoint FILE.safetensors
 *       writes a ViT-B-shaped SAM state dict: image encoder D 768, depth 12,
 *       12 heads, window 14, global blocks 2/5/8/11 with random weights (seed
 *       1), and the prompt encoder / mask decoder of the sam_tiny fixture
 *       (every SAM variant shares that 256-wide decoder, so its shapes are
 *       ViT-B's). Speed does not depend on the values.
 *   bench_sam --checkpoint FILE --image IMG.jpg --box x0,y0,x1,y1
 *             [--threads 2] [--warmup 1] [--repeats 3] [--predict-repeats 20]
 *       km_sam_load (mmap + copy, as the CLI), then set_image (resize,
 *       normalise, pad, encoder) and predict (box centre as a positive point
 *       + the box, single mask) as ref_sam.py does; prints one JSON line:
 *       medians, min/max, CPU times (all threads; less inflated by a busy
 *       machine than wall time) and the process's peak RSS.
 * Build: see bench/run_sam.sh (links build/release/libkmseg.a). */
#include "../src/core/km.h"
#include "../src/core/rng.h"
#include "../src/io/image.h"
#include "../src/io/load.h"
#include "../src/io/safetensors.h"
#include "../src/models/sam.h"
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

static void add(km_tdict *sd, km_rng *r, const char *name, int ndim, int64_t a, int64_t b,
                int64_t c, int64_t d, double std) {
    int64_t shape[4] = {a, b, c, d};
    km_tensor *t = km_tdict_add(sd, name, KM_F32, ndim, shape, NULL);
    KM_ASSERT(t);
    float *p = t->data;
    int64_t n = km_numel(ndim, shape);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(std * km_rng_normal(r));
}

static int make_checkpoint(const char *path, const char *tiny) {
    const int D = 768, depth = 12, hd = 64, M = 3072, OC = 256;
    km_rng r;
    km_rng_seed(&r, 1);
    km_tdict sd, t;
    km_tdict_init(&sd);
    char n[128];
    double ws = 1.0 / sqrt((double)D), ms = 1.0 / sqrt((double)M);
    add(&sd, &r, "image_encoder.pos_embed", 4, 1, 64, 64, D, 0.2);
    add(&sd, &r, "image_encoder.patch_embed.proj.weight", 4, D, 3, 16, 16, 1.0 / 28);
    add(&sd, &r, "image_encoder.patch_embed.proj.bias", 1, D, 0, 0, 0, 0.1);
    for (int i = 0; i < depth; i++) {
        int L = (i % 3 == 2) ? 127 : 27; /* global blocks 2, 5, 8, 11 */
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
    km_tdict_init(&t);
    km_status s = km_load_checkpoint(tiny, &t);
    for (int i = 0; !s && i < t.n; i++) {
        const km_tensor *x = &t.items[i];
        if (!strncmp(x->name, "prompt_encoder.", 15) || !strncmp(x->name, "mask_decoder.", 13))
            km_tdict_add(&sd, x->name, x->dtype, x->ndim, x->shape, x->data);
    }
    km_tdict_set_meta(&sd, "description", "SAM ViT-B shapes, random image encoder (seed 1), "
                      "sam_tiny prompt encoder and mask decoder; for benchmarks only");
    if (!s) s = km_safetensors_save(path, &sd);
    km_tdict_free(&t);
    km_tdict_free(&sd);
    if (s) {
        fprintf(stderr, "bench_sam: %s\n", km_errmsg());
        return 1;
    }
    return 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fail(void) {
    fprintf(stderr, "bench_sam: %s\n", km_errmsg());
    exit(1);
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *image = NULL, *box_s = NULL, *make = NULL, *tiny = NULL;
    int threads = 2, warmup = 1, repeats = 3, prepeats = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--make-checkpoint")) make = v;
        else if (!strcmp(f, "--tiny")) tiny = v;
        else if (!strcmp(f, "--checkpoint")) ckpt = v;
        else if (!strcmp(f, "--image")) image = v;
        else if (!strcmp(f, "--box")) box_s = v;
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--warmup")) warmup = atoi(v);
        else if (!strcmp(f, "--repeats")) repeats = atoi(v);
        else if (!strcmp(f, "--predict-repeats")) prepeats = atoi(v);
        else {
            fprintf(stderr, "bench_sam: unknown flag %s\n", f);
            return 2;
        }
    }
    if (make) {
        if (!tiny) {
            fprintf(stderr, "bench_sam: --make-checkpoint needs --tiny sam_tiny.pth\n");
            return 2;
        }
        return make_checkpoint(make, tiny);
    }
    float box[4];
    if (!ckpt || !image || !box_s ||
        sscanf(box_s, "%f,%f,%f,%f", &box[0], &box[1], &box[2], &box[3]) != 4 || repeats < 1 ||
        prepeats < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_sam --checkpoint F --image IMG --box x0,y0,x1,y1 [--threads N] "
                        "[--warmup N] [--repeats N] [--predict-repeats N]\n");
        return 2;
    }
    km_set_threads(threads);
    double t0 = km_now();
    km_sam m;
    if (km_sam_load(&m, ckpt, 1)) fail();
    double t_load = km_now() - t0, rss_model = peak_mb();
    km_image img;
    if (km_image_load(image, &img, 3)) fail();
    km_sam_predictor p;
    km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_SAM);

    double *ts = km_malloc(sizeof(double) * repeats), *cs = km_malloc(sizeof(double) * repeats);
    double *tp = km_malloc(sizeof(double) * prepeats), *cp = km_malloc(sizeof(double) * prepeats);
    for (int k = 0; k < warmup + repeats; k++) {
        double w = km_now(), c = cpu_s();
        if (km_sam_set_image(&p, img.data, img.w, img.h, img.c)) fail();
        if (k >= warmup) {
            ts[k - warmup] = km_now() - w;
            cs[k - warmup] = cpu_s() - c;
        }
    }
    double rss_set = peak_mb();
    float pt[2] = {(box[0] + box[2]) / 2, (box[1] + box[3]) / 2};
    int lab = 1;
    km_sam_prompts pr = {pt, &lab, 1, box, NULL, 0, 0, 0};
    km_sam_result r;
    long fg = 0;
    for (int k = 0; k < warmup + prepeats; k++) {
        double w = km_now(), c = cpu_s();
        if (km_sam_predict(&p, &pr, &r)) fail();
        if (k >= warmup) {
            tp[k - warmup] = km_now() - w;
            cp[k - warmup] = cpu_s() - c;
        }
        if (k == 0)
            for (long i = 0; i < (long)r.w * r.h; i++) fg += r.masks[i];
        km_sam_result_free(&r);
    }
    const km_sam_encoder_config *c = km_sam_encoder_config_of(m.encoder);
    double smin = ts[0], smax = ts[0], pmin = tp[0], pmax = tp[0];
    for (int k = 0; k < repeats; k++) smin = fmin(smin, ts[k]), smax = fmax(smax, ts[k]);
    for (int k = 0; k < prepeats; k++) pmin = fmin(pmin, tp[k]), pmax = fmax(pmax, tp[k]);
    printf("{\"impl\": \"kmseg\", \"model\": \"sam_vit_b shapes (random encoder)\", "
           "\"encoder\": \"D %d depth %d heads %d window %d globals %d\", \"gemm\": \"%s\", "
           "\"image_hw\": [%d, %d], \"input_hw\": [%d, %d], \"load_s\": %.3f, "
           "\"set_image_s\": %.4f, \"predict_s\": %.5f, \"set_image_min_max_s\": [%.4f, %.4f], "
           "\"predict_min_max_s\": [%.5f, %.5f], \"set_image_cpu_s\": %.4f, \"predict_cpu_s\": %.5f, "
           "\"peak_rss_mb\": %.1f, \"rss_mb_after_load\": %.1f, \"rss_mb_after_set_image\": %.1f, "
           "\"mask_fg_pixels\": %ld, \"threads\": %d, \"warmup\": %d, \"repeats\": %d, "
           "\"predict_repeats\": %d}\n",
           c->embed_dim, c->depth, c->num_heads, c->window_size, c->n_global, km_gemm_backend(),
           img.h, img.w, p.input_h, p.input_w, t_load, median(ts, repeats), median(tp, prepeats),
           smin, smax, pmin, pmax, median(cs, repeats), median(cp, prepeats), peak_mb(), rss_model,
           rss_set, fg, threads, warmup, repeats, prepeats);
    km_free(ts);
    km_free(cs);
    km_free(tp);
    km_free(cp);
    km_sam_predictor_free(&p);
    km_image_free(&img);
    km_sam_free(&m);
    return 0;
}

/* simclr.c - SimCLR augmentations and the pretraining loop (simclr.h). */
#include "simclr.h"

#include "dataset.h"
#include "splits.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../io/safetensors.h"
#include "../models/unetpp.h"
#include "../nn/basic.h"
#include "../nn/ops.h"
#include "../nn/simclr_ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static const float k_mean[3] = {0.485f, 0.456f, 0.406f};
static const float k_std[3] = {0.229f, 0.224f, 0.225f};

#define KM_SIMCLR_HEAD_SALT 0x70726f6a68656164ULL /* "projhead" */
#define KM_SIMCLR_AUG_SALT 0x73696d636c726167ULL  /* "simclrag" */

void km_simclr_aug_default(km_simclr_aug_cfg *a) {
    a->scale_min = 0.2f;
    a->scale_max = 1.0f;
    a->p_jitter = 0.8f;
    a->jitter_bcs = 0.4f;
    a->jitter_hue = 0.1f;
    a->p_grey = 0.2f;
    a->p_blur = 0.5f;
    a->sigma_min = 0.1f;
    a->sigma_max = 2.0f;
}

static double uni(km_rng *r, double lo, double hi) { return lo + (hi - lo) * km_rng_uniform(r); }

void km_simclr_draw(km_rng *r, int S, const km_simclr_aug_cfg *a, km_simclr_view *v) {
    memset(v, 0, sizeof *v);
    /* torchvision RandomResizedCrop.get_params on an S x S source */
    double area = (double)S * S, lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
    v->x0 = v->y0 = 0;
    v->w = v->h = S;
    for (int t = 0; t < 10; t++) {
        double ta = area * uni(r, a->scale_min, a->scale_max);
        double ar = exp(uni(r, lr0, lr1));
        int w = (int)lround(sqrt(ta * ar)), h = (int)lround(sqrt(ta / ar));
        if (w > 0 && h > 0 && w <= S && h <= S) {
            v->y0 = (int)km_rng_below(r, (uint64_t)(S - h + 1));
            v->x0 = (int)km_rng_below(r, (uint64_t)(S - w + 1));
            v->w = w;
            v->h = h;
            break;
        }
    }
    v->flip = km_rng_uniform(r) < 0.5;
    v->jitter = km_rng_uniform(r) < a->p_jitter;
    float j = a->jitter_bcs;
    v->bright = (float)uni(r, 1.0 - j, 1.0 + j);
    v->contrast = (float)uni(r, 1.0 - j, 1.0 + j);
    v->sat = (float)uni(r, 1.0 - j, 1.0 + j);
    v->hue = (float)uni(r, -a->jitter_hue, a->jitter_hue);
    for (int i = 0; i < 4; i++) v->order[i] = i;
    km_rng_shuffle(r, v->order, 4);
    v->grey = km_rng_uniform(r) < a->p_grey;
    int blur = km_rng_uniform(r) < a->p_blur;
    float sigma = (float)uni(r, a->sigma_min, a->sigma_max);
    v->sigma = blur ? sigma : 0.0f;
}

/* apply: image [S,S,3] + blur temporary [S,S,3] + kernel taps (<= S) */
size_t km_simclr_apply_work_floats(int S) { return (size_t)S * S * 6 + (size_t)S + 16; }

static inline float clamp01(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float grey_of(const float *p) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }

/* torchvision _rgb2hsv / _hsv2rgb (tensor versions), one pixel. */
static void hue_shift(float *p, float dh) {
    float r = p[0], g = p[1], b = p[2];
    float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
    float cr = maxc - minc;
    float s = cr / (maxc == 0.0f ? 1.0f : maxc);
    float crd = cr == 0.0f ? 1.0f : cr;
    float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    float h;
    if (maxc == r) h = bc - gc;
    else if (maxc == g) h = 2.0f + rc - bc;
    else h = 4.0f + gc - rc;
    h = fmodf(h / 6.0f + 1.0f, 1.0f);
    h = fmodf(h + dh + 1.0f, 1.0f);
    float v = maxc;
    float h6 = h * 6.0f;
    int i = (int)floorf(h6);
    float f = h6 - (float)i;
    i %= 6;
    float pp = clamp01(v * (1.0f - s)), q = clamp01(v * (1.0f - s * f)), t = clamp01(v * (1.0f - s * (1.0f - f)));
    switch (i) {
    case 0: p[0] = v, p[1] = t, p[2] = pp; break;
    case 1: p[0] = q, p[1] = v, p[2] = pp; break;
    case 2: p[0] = pp, p[1] = v, p[2] = t; break;
    case 3: p[0] = pp, p[1] = q, p[2] = v; break;
    case 4: p[0] = t, p[1] = pp, p[2] = v; break;
    default: p[0] = v, p[1] = pp, p[2] = q; break;
    }
}

static inline int reflect(int i, int n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

void km_simclr_apply_rgb(const uint8_t *src, int S, const km_simclr_view *v, float *work, float *img) {
    KM_ASSERT(v->w >= 1 && v->h >= 1 && v->x0 >= 0 && v->y0 >= 0 && v->x0 + v->w <= S && v->y0 + v->h <= S);
    size_t P = (size_t)S * S;
    /* 1-2. crop + bilinear resize (half-pixel, PyTorch source-index rule) + flip */
    float sx = (float)v->w / (float)S, sy = (float)v->h / (float)S;
    for (int oy = 0; oy < S; oy++) {
        float fy = fmaxf(0.0f, ((float)oy + 0.5f) * sy - 0.5f);
        int y0 = (int)fy, y1 = y0 + 1 < v->h ? y0 + 1 : v->h - 1;
        float ly = fy - (float)y0;
        const uint8_t *r0 = src + ((size_t)(v->y0 + y0) * S + v->x0) * 3;
        const uint8_t *r1 = src + ((size_t)(v->y0 + y1) * S + v->x0) * 3;
        for (int ox = 0; ox < S; ox++) {
            int cx = v->flip ? S - 1 - ox : ox;
            float fx = fmaxf(0.0f, ((float)cx + 0.5f) * sx - 0.5f);
            int x0 = (int)fx, x1 = x0 + 1 < v->w ? x0 + 1 : v->w - 1;
            float lx = fx - (float)x0;
            float *o = img + ((size_t)oy * S + ox) * 3;
            for (int c = 0; c < 3; c++) {
                float a = (1.0f - lx) * r0[3 * x0 + c] + lx * r0[3 * x1 + c];
                float b = (1.0f - lx) * r1[3 * x0 + c] + lx * r1[3 * x1 + c];
                o[c] = ((1.0f - ly) * a + ly * b) / 255.0f;
            }
        }
    }
    /* 3. colour jitter */
    if (v->jitter) {
        for (int k = 0; k < 4; k++) {
            switch (v->order[k]) {
            case 0:
                for (size_t i = 0; i < 3 * P; i++) img[i] = clamp01(img[i] * v->bright);
                break;
            case 1: {
                double m = 0.0;
                for (size_t i = 0; i < P; i++) m += grey_of(img + 3 * i);
                float mean = (float)(m / (double)P), c = v->contrast;
                for (size_t i = 0; i < 3 * P; i++) img[i] = clamp01(c * img[i] + (1.0f - c) * mean);
                break;
            }
            case 2: {
                float s = v->sat;
                for (size_t i = 0; i < P; i++) {
                    float *p = img + 3 * i, g = grey_of(p);
                    for (int c = 0; c < 3; c++) p[c] = clamp01(s * p[c] + (1.0f - s) * g);
                }
                break;
            }
            default:
                for (size_t i = 0; i < P; i++) hue_shift(img + 3 * i, v->hue);
                break;
            }
        }
    }
    /* 4. greyscale */
    if (v->grey)
        for (size_t i = 0; i < P; i++) {
            float *p = img + 3 * i, g = grey_of(p);
            p[0] = p[1] = p[2] = g;
        }
    /* 5. separable Gaussian blur, reflect padding */
    if (v->sigma > 0.0f) {
        int k = (int)(0.1 * S);
        if (k % 2 == 0) k++;
        if (k > 2 * S - 1) k = 2 * S - 1; /* reflect needs radius < S */
        int rad = k / 2;
        float *tmp = work, *kw = work + 3 * P;
        double sum = 0.0;
        for (int i = 0; i < k; i++) {
            double x = (double)(i - rad) / v->sigma;
            kw[i] = (float)exp(-0.5 * x * x);
            sum += kw[i];
        }
        for (int i = 0; i < k; i++) kw[i] = (float)(kw[i] / sum);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    float acc = 0.0f;
                    for (int i = 0; i < k; i++) acc += kw[i] * img[((size_t)y * S + reflect(x + i - rad, S)) * 3 + c];
                    tmp[((size_t)y * S + x) * 3 + c] = acc;
                }
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    float acc = 0.0f;
                    for (int i = 0; i < k; i++) acc += kw[i] * tmp[((size_t)reflect(y + i - rad, S) * S + x) * 3 + c];
                    img[((size_t)y * S + x) * 3 + c] = acc;
                }
    }
}

void km_simclr_apply(const uint8_t *src, int S, const km_simclr_view *v, float *work, float *x) {
    size_t P = (size_t)S * S;
    float *img = work, *rest = work + 3 * P;
    km_simclr_apply_rgb(src, S, v, rest, img);
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < P; i++) x[c * P + i] = (img[3 * i + c] - k_mean[c]) / k_std[c];
}

/* ------------------------------------------------------------------ training */

void km_simclr_config_default(km_simclr_config *c) {
    memset(c, 0, sizeof *c);
    c->epochs = 100;
    c->batch = 16;
    c->size = 224;
    c->resnet = 34;
    c->threads = 0;
    c->lr = 3e-4;
    c->temperature = 0.1;
    c->weight_decay = 0.0;
    c->seed = 0;
    km_simclr_aug_default(&c->aug);
}

static km_status write_config(const km_simclr_config *c, const char *path, int n_train) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    km_json_escape(&buf, &len, &cap, c->data);
    char txt[2048];
    int n = snprintf(txt, sizeof txt,
                     "{\n  \"command\": \"pretrain\",\n  \"data\": %s,\n  \"n_train_images\": %d,\n"
                     "  \"epochs\": %d,\n  \"batch\": %d,\n  \"lr\": %.9g,\n  \"temperature\": %.9g,\n"
                     "  \"weight_decay\": %.9g,\n  \"size\": %d,\n  \"resnet\": %d,\n  \"seed\": %llu,\n"
                     "  \"threads\": %d,\n  \"max_images\": %d,\n  \"max_steps\": %d,\n"
                     "  \"crop_scale\": [%.9g, %.9g],\n  \"p_jitter\": %.9g,\n  \"p_grey\": %.9g,\n"
                     "  \"p_blur\": %.9g,\n  \"kmseg_version\": \"%s\"\n}\n",
                     buf, n_train, c->epochs, c->batch, c->lr, c->temperature, c->weight_decay, c->size,
                     c->resnet, (unsigned long long)c->seed, km_get_threads(), c->max_images, c->max_steps,
                     c->aug.scale_min, c->aug.scale_max, c->aug.p_jitter, c->aug.p_grey, c->aug.p_blur,
                     KM_VERSION);
    km_free(buf);
    if (n >= (int)sizeof txt) return km_err(KM_EINTERNAL, "config.json too long");
    return km_write_file_atomic(path, txt, (size_t)n);
}

/* Encoder tensors only ('encoder.*'), smp names, plus metadata. */
static km_status save_encoder(km_unetpp *m, const char *path, const km_simclr_config *c, int epochs) {
    km_tdict all, enc;
    km_tdict_init(&all);
    km_tdict_init(&enc);
    km_unetpp_to_tdict(m, &all);
    for (int i = 0; i < all.n; i++) {
        km_tensor *t = &all.items[i];
        if (strncmp(t->name, "encoder.", 8)) continue;
        km_tdict_add(&enc, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    char b[64];
    km_tdict_set_meta(&enc, "format", "pt");
    km_tdict_set_meta(&enc, "kmseg_version", KM_VERSION);
    km_tdict_set_meta(&enc, "arch", "ResNetEncoder");
    km_tdict_set_meta(&enc, "encoder_name", c->resnet == 34 ? "resnet34" : "resnet18");
    km_tdict_set_meta(&enc, "pretraining", "simclr");
    snprintf(b, sizeof b, "%d", epochs);
    km_tdict_set_meta(&enc, "epochs", b);
    km_status s = km_safetensors_save(path, &enc);
    km_tdict_free(&all);
    km_tdict_free(&enc);
    return s;
}

enum { HD = 512, PD = 128 }; /* head: 512 -> 512 -> 128 */
#define HEAD_W1 0
#define HEAD_B1 (HD * HD)
#define HEAD_W2 (HEAD_B1 + HD)
#define HEAD_B2 (HEAD_W2 + PD * HD)
#define HEAD_N (HEAD_B2 + PD)

static km_status save_head(const float *h, const char *path) {
    km_tdict d;
    km_tdict_init(&d);
    int64_t s1[2] = {HD, HD}, s2[1] = {HD}, s3[2] = {PD, HD}, s4[1] = {PD};
    km_tdict_add(&d, "projection_head.0.weight", KM_F32, 2, s1, h + HEAD_W1);
    km_tdict_add(&d, "projection_head.0.bias", KM_F32, 1, s2, h + HEAD_B1);
    km_tdict_add(&d, "projection_head.2.weight", KM_F32, 2, s3, h + HEAD_W2);
    km_tdict_add(&d, "projection_head.2.bias", KM_F32, 1, s4, h + HEAD_B2);
    km_tdict_set_meta(&d, "format", "pt");
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

static km_status check_config(const km_simclr_config *c) {
    if (!c->data) return km_err(KM_EARG, "missing required flag --data (dataset folder with images/ and masks/)");
    if (!c->out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
    if (c->resnet != 18 && c->resnet != 34) return km_err(KM_EARG, "--resnet %d: expected 18 or 34", c->resnet);
    if (c->size < 32 || c->size % 32)
        return km_err(KM_EARG, "--size %d: expected a positive multiple of 32", c->size);
    if (c->batch < 2) return km_err(KM_EARG, "--batch %d: expected >= 2 (NT-Xent needs negatives)", c->batch);
    if (c->epochs < 1) return km_err(KM_EARG, "--epochs %d: expected >= 1", c->epochs);
    if (!(c->lr > 0)) return km_err(KM_EARG, "--lr %g: expected > 0", c->lr);
    if (!(c->temperature > 0)) return km_err(KM_EARG, "--temperature %g: expected > 0", c->temperature);
    if (c->weight_decay < 0) return km_err(KM_EARG, "--weight-decay %g: expected >= 0", c->weight_decay);
    if (c->max_images < 0) return km_err(KM_EARG, "--max-images %d: expected >= 0", c->max_images);
    if (c->max_steps < 0) return km_err(KM_EARG, "--max-steps %d: expected >= 0", c->max_steps);
    if (c->threads < 0) return km_err(KM_EARG, "--threads %d: expected >= 0", c->threads);
    return KM_OK;
}

km_status km_simclr_run(const km_simclr_config *c, FILE *log, km_simclr_result *res) {
    memset(res, 0, sizeof *res);
    km_status s = check_config(c);
    if (s) return s;
    if (c->threads > 0) km_set_threads(c->threads);

    km_dataset_index idx;
    km_issues iss;
    km_issues_init(&iss);
    s = km_dataset_scan(c->data, &idx, &iss);
    if (s) {
        km_issues_free(&iss);
        return s;
    }
    s = km_issues_status(&iss, c->data);
    km_issues_free(&iss);
    if (s) {
        km_dataset_index_free(&idx);
        return s;
    }
    int n_all = c->max_images && c->max_images < idx.n ? c->max_images : idx.n;
    km_split sp;
    km_split_random(n_all, c->seed, 0.1, 0.1, &sp);
    if (sp.n_train < 2) {
        km_split_free(&sp);
        km_dataset_index_free(&idx);
        return km_err(KM_EARG, "%s: %d training images after the 80/10/10 split; SimCLR needs at least 2", c->data,
                      sp.n_train);
    }
    int N = c->batch < sp.n_train ? c->batch : sp.n_train;
    if (N < c->batch && log)
        fprintf(log, "warning: batch %d > %d training images: using batch %d\n", c->batch, sp.n_train, N);
    km_dataset ds;
    s = km_dataset_load(&idx, sp.train, sp.n_train, c->size, 0, &ds, NULL);
    km_dataset_index_free(&idx);
    if (s) {
        km_split_free(&sp);
        return s;
    }
    s = km_mkdir_p(c->out);
    char *p_cfg = km_path_join(c->out, "config.json"), *p_met = km_path_join(c->out, "metrics.csv");
    char *p_enc = km_path_join(c->out, "encoder.safetensors"), *p_head = km_path_join(c->out, "projection_head.safetensors");
    if (!s) s = write_config(c, p_cfg, sp.n_train);

    int S = c->size, B = 2 * N, fh = S / 32, HW = fh * fh;
    km_unetpp *m = km_unetpp_create(c->resnet, c->seed);
    /* the encoder's parameters are the first block of the smp state dict */
    size_t n_enc = 0;
    for (int i = 0; i < km_unetpp_num_entries(m); i++) {
        const km_unetpp_entry *e = km_unetpp_entry_at(m, i);
        if (e->is_buffer || strncmp(e->name, "encoder.", 8)) continue;
        if (e->offset + e->numel > n_enc) n_enc = e->offset + e->numel;
    }
    for (int i = 0; i < km_unetpp_num_entries(m); i++) {
        const km_unetpp_entry *e = km_unetpp_entry_at(m, i);
        if (!e->is_buffer && strncmp(e->name, "encoder.", 8)) KM_ASSERT(e->offset >= n_enc);
    }
    float *head = km_malloc(sizeof(float) * HEAD_N), *ghead = km_malloc(sizeof(float) * HEAD_N);
    float *hm = km_calloc(sizeof(float) * HEAD_N), *hv = km_calloc(sizeof(float) * HEAD_N);
    float *em = km_calloc(sizeof(float) * n_enc), *ev = km_calloc(sizeof(float) * n_enc);
    {
        km_rng hr;
        km_rng_seed(&hr, c->seed ^ KM_SIMCLR_HEAD_SALT);
        double b1 = 1.0 / sqrt((double)HD);
        for (int i = 0; i < HEAD_N; i++) head[i] = (float)uni(&hr, -b1, b1); /* both layers have fan-in 512 */
    }
    size_t wf = km_simclr_apply_work_floats(S);
    int T = km_get_threads() > 0 ? km_get_threads() : 1;
    float *x = km_malloc(sizeof(float) * B * 3 * S * S);
    float *work = km_malloc(sizeof(float) * wf * T);
    float *feat = km_malloc(sizeof(float) * B * 512 * HW), *dfeat = km_malloc(sizeof(float) * B * 512 * HW);
    float *g = km_malloc(sizeof(float) * B * 512), *dg = km_malloc(sizeof(float) * B * 512);
    float *h1 = km_malloc(sizeof(float) * B * HD), *dh1 = km_malloc(sizeof(float) * B * HD);
    float *a1 = km_malloc(sizeof(float) * B * HD);
    float *pr = km_malloc(sizeof(float) * B * PD), *dpr = km_malloc(sizeof(float) * B * PD);
    float *ntw = km_malloc(sizeof(float) * km_ntxent_work_floats(B, PD));
    km_simclr_view *views = km_malloc(sizeof(km_simclr_view) * B);
    int *order = km_malloc(sizeof(int) * ds.n);
    for (int i = 0; i < ds.n; i++) order[i] = i;
    km_rng rs, ra;
    km_rng_seed(&rs, c->seed ^ 0x5348554646ULL); /* shuffling */
    km_rng_seed(&ra, c->seed ^ KM_SIMCLR_AUG_SALT);

    km_csv csv;
    const char *cols[] = {"epoch", "steps", "images", "loss", "lr", "seconds", "img_per_s"};
    int csv_open = 0;
    if (!s) {
        s = km_csv_open(&csv, p_met, cols, 7, 0);
        csv_open = !s;
    }
    if (!s) s = km_unetpp_reserve(m, B, S, S);
    int steps_per_epoch = ds.n / N, stop = 0;
    if (!s && log)
        fprintf(log, "SimCLR pretraining: resnet%d, %d train images, %dx%d, batch %d (%d views), %d steps/epoch, "
                     "lr %g, T %g, %d threads\n",
                c->resnet, ds.n, S, S, N, B, steps_per_epoch, c->lr, c->temperature, T);
    for (int ep = 1; ep <= c->epochs && !s && !stop; ep++) {
        km_rng_shuffle(&rs, order, ds.n);
        km_progress pg = {0};
        char lbl[64], extra[64];
        snprintf(lbl, sizeof lbl, "pretrain %d/%d", ep, c->epochs);
        if (log) km_progress_start(&pg, log, lbl, (int64_t)steps_per_epoch * N, "img");
        double esum = 0.0, t0 = km_now();
        int esteps = 0;
        for (int st = 0; st < steps_per_epoch && !s; st++) {
            if (c->max_steps && res->steps >= c->max_steps) {
                stop = 1;
                break;
            }
            int fill = !(c->fixed_batch && res->steps > 0);
            if (fill)
                for (int b = 0; b < B; b++) km_simclr_draw(&ra, S, &c->aug, &views[b]);
            const int *bi = order + (size_t)st * N;
#pragma omp parallel for schedule(dynamic, 1) if (fill)
            for (int b = 0; b < B * fill; b++) {
                int tid = 0;
#ifdef _OPENMP
                tid = omp_get_thread_num();
#endif
                km_simclr_apply(ds.images + (size_t)bi[b % N] * S * S * 3, S, &views[b], work + wf * tid,
                                x + (size_t)b * 3 * S * S);
            }
            s = km_unetpp_encoder_forward(m, x, B, S, S, 1, feat);
            if (s) break;
            km_gap_forward(g, feat, B, 512, HW);
            km_linear_forward(h1, g, head + HEAD_W1, head + HEAD_B1, B, 512, HD);
            km_relu_forward(a1, h1, (size_t)B * HD);
            km_linear_forward(pr, a1, head + HEAD_W2, head + HEAD_B2, B, HD, PD);
            double loss = km_ntxent_forward(pr, B, PD, (float)c->temperature, ntw);
            if (!isfinite(loss)) {
                s = km_err(KM_EINTERNAL, "epoch %d step %d: the NT-Xent loss is %g (diverged; lower --lr)", ep, st + 1,
                           loss);
                break;
            }
            km_unetpp_zero_grad(m);
            memset(ghead, 0, sizeof(float) * HEAD_N);
            memset(dpr, 0, sizeof(float) * B * PD);
            memset(dh1, 0, sizeof(float) * B * HD);
            memset(dg, 0, sizeof(float) * B * 512);
            memset(dfeat, 0, sizeof(float) * B * 512 * HW);
            km_ntxent_backward(dpr, pr, B, PD, (float)c->temperature, 1.0f, ntw);
            /* dh1 first holds d(loss)/d(a1), then is masked by the ReLU in place */
            km_linear_backward(dh1, ghead + HEAD_W2, ghead + HEAD_B2, dpr, a1, head + HEAD_W2, B, HD, PD);
            for (size_t i = 0; i < (size_t)B * HD; i++) dh1[i] = a1[i] > 0.0f ? dh1[i] : 0.0f;
            km_linear_backward(dg, ghead + HEAD_W1, ghead + HEAD_B1, dh1, g, head + HEAD_W1, B, 512, HD);
            km_gap_backward(dfeat, dg, B, 512, HW);
            km_unetpp_encoder_backward(m, dfeat, NULL);
            res->steps++;
            km_adam_step(km_unetpp_params(m), km_unetpp_grads(m), em, ev, n_enc, (float)c->lr, 0.9f, 0.999f, 1e-8f,
                         (float)c->weight_decay, res->steps);
            km_adam_step(head, ghead, hm, hv, HEAD_N, (float)c->lr, 0.9f, 0.999f, 1e-8f, (float)c->weight_decay,
                         res->steps);
            if (res->steps == 1) res->first_loss = loss;
            res->last_loss = loss;
            res->images += N;
            esum += loss;
            esteps++;
            if (log) {
                snprintf(extra, sizeof extra, "loss %.4f", loss);
                km_progress_update(&pg, (int64_t)(st + 1) * N, extra);
            }
        }
        double dt = km_now() - t0;
        res->seconds += dt;
        pg.total = (int64_t)esteps * N; /* an epoch cut short by --max-steps ends at what was done */
        if (s || !esteps) {
            if (log) km_progress_end(&pg, NULL);
            break;
        }
        double el = esum / esteps;
        if (ep == 1) res->first_epoch_loss = el;
        res->last_epoch_loss = el;
        res->epochs_done = ep;
        if (log) {
            snprintf(extra, sizeof extra, "loss %.4f", el);
            km_progress_end(&pg, extra);
        }
        km_csv_int(&csv, ep);
        km_csv_int(&csv, esteps);
        km_csv_int(&csv, (int64_t)esteps * N);
        km_csv_num(&csv, el);
        km_csv_num(&csv, c->lr);
        km_csv_num(&csv, dt);
        km_csv_num(&csv, dt > 0 ? esteps * N / dt : 0.0);
        s = km_csv_end_row(&csv);
        /* checkpoint every epoch, so a killed run keeps its last complete epoch */
        if (!s) s = save_encoder(m, p_enc, c, ep);
        if (!s) s = save_head(head, p_head);
    }
    if (!s && res->epochs_done == 0)
        s = km_err(KM_EARG, "no training step was run (--max-steps %d, %d steps per epoch)", c->max_steps,
                   steps_per_epoch);
    if (csv_open) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (!s && log)
        fprintf(log, "wrote %s (encoder) and %s after %d epochs, %d steps\n", p_enc, p_head, res->epochs_done,
                res->steps);
    km_free(p_cfg), km_free(p_met), km_free(p_enc), km_free(p_head);
    km_free(head), km_free(ghead), km_free(hm), km_free(hv), km_free(em), km_free(ev);
    km_free(x), km_free(work), km_free(feat), km_free(dfeat), km_free(g), km_free(dg), km_free(h1), km_free(dh1);
    km_free(a1), km_free(pr), km_free(dpr), km_free(ntw), km_free(views), km_free(order);
    km_unetpp_free(m);
    km_dataset_free(&ds);
    km_split_free(&sp);
    return s;
}

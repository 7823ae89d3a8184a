/* simclr.c - SimCLR augmentations and the pretraining loop (simclr.h). */
#include "simclr.h"

#include "dataset.h"
#include "microbatch.h"
#include "runfolder.h"
#include "splits.h"
#include "../core/dist.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../io/json.h"
#include "../io/safetensors.h"
#include "../io/settings.h"
#include "../models/unetpp.h"
#include "../nn/basic.h"
#include "../nn/ops.h"
#include "../nn/simclr_ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

static const float k_mean[3] = {0.485f, 0.456f, 0.406f};
static const float k_std[3] = {0.229f, 0.224f, 0.225f};

#define KM_SIMCLR_HEAD_SALT 0x70726f6a68656164ULL /* "projhead" */
#define KM_SIMCLR_AUG_SALT 0x73696d636c726167ULL  /* "simclrag" */
#define KM_SIMCLR_SHUFFLE_SALT 0x5348554646ULL    /* "SHUFF" */

void km_simclr_aug_default(km_simclr_aug_cfg *a) {
    km_simclr_config c;
    km_simclr_config_default(&c); /* the defaults are rows of km_simclr_settings */
    *a = c.aug;
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

/* The table of every setting (settings.h). Row order = config.json order
 * (after "command", with n_train_images after data) = --help order. The
 * augmentation is saved as written since the first version (floats %.9g,
 * the pairs as arrays); jitter and blur_sigma were not recorded before
 * --resume existed and default when absent. */
#define O(f) offsetof(km_simclr_config, f)
#define P_ KM_SET_PASS
static const km_setting k_rows[] = {
    {"data", "--data", KM_SET_STR, O(data), 0, 0, 0, 0, 0, NULL, KM_SET_REQUIRED,
     "dataset folder: images/ + masks/ or nnU-Net raw (train split used, masks ignored)", NULL, NULL},
    {NULL, "--out", KM_SET_STR, O(out), 0, 0, 0, 0, 0, NULL, 0,
     "run folder (encoder.safetensors, projection_head.safetensors, metrics.csv)", NULL, NULL},
    {"epochs", "--epochs", KM_SET_INT, O(epochs), 100, 0, KM_SET_GE, 1, 0, NULL, 0, "number of epochs", NULL, NULL},
    {"batch", "--batch", KM_SET_INT, O(batch), 16, 0, KM_SET_GE, 2, 0, "NT-Xent needs negatives", 0,
     "images per step (2 views each)", NULL, NULL},
    {"lr", "--lr", KM_SET_DBL, O(lr), 3e-4, 0, KM_SET_GT, 0, 0, NULL, 0, "Adam learning rate (constant)", NULL, NULL},
    {"temperature", "--temperature", KM_SET_DBL, O(temperature), 0.1, 0, KM_SET_GT, 0, 0, NULL, 0, "NT-Xent temperature",
     NULL, NULL},
    {"weight_decay", "--weight-decay", KM_SET_DBL, O(weight_decay), 0, 0, KM_SET_GE, 0, 0, NULL, 0,
     "Adam weight decay (L2, torch Adam)", NULL, NULL},
    {"size", "--size", KM_SET_INT, O(size), 224, 0, 0, 0, 0, NULL, P_,
     "crop size (shortest side resized to it, centre crop), multiple of 32 (of 2^D with --encoder-depth D)", NULL,
     NULL},
    {"resnet", "--resnet", KM_SET_INT, O(resnet), 34, 0, 0, 0, 0, NULL, P_, "ResNet variant of the encoder: 34 or 18", NULL, NULL},
    {"seed", "--seed", KM_SET_U64, O(seed), 0, 0, 0, 0, 0, NULL, 0,
     "seed of the split (same as kmseg train's), init, shuffling and views", NULL, NULL},
    {"threads", "--threads", KM_SET_INT, O(threads), 0, 0, KM_SET_GE, 0, 0, NULL, P_ | KM_SET_NEUTRAL,
     "compute threads (results are bit-identical for a given count; 0 = the default)", NULL, NULL},
    {"max_images", "--max-images", KM_SET_INT, O(max_images), 0, 0, KM_SET_GE, 0, 0, NULL, P_,
     "random split over the first N ids only (0 = all)", NULL, NULL},
    {"max_steps", "--max-steps", KM_SET_INT, O(max_steps), 0, 0, KM_SET_GE, 0, 0, NULL, 0,
     "stop after this many optimiser steps (0 = no limit)", NULL, NULL},
    {"crop_scale", NULL, KM_SET_F32PAIR, O(aug.scale_min), 0.2, 1.0, 0, 0, 0, NULL, 0, NULL, NULL, NULL},
    {NULL, "--crop-scale-min", KM_SET_F32, O(aug.scale_min), 0.2, 0, KM_SET_GT | KM_SET_LE, 0, 1, NULL, 0,
     "random resized crop: smallest area fraction", NULL, NULL},
    {"p_jitter", NULL, KM_SET_F32, O(aug.p_jitter), 0.8, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL},
    {"jitter", NULL, KM_SET_F32PAIR, O(aug.jitter_bcs), 0.4, 0.1, 0, 0, 0, NULL, KM_SET_OPTIONAL, NULL, NULL, NULL},
    {"p_grey", NULL, KM_SET_F32, O(aug.p_grey), 0.2, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL},
    {"p_blur", NULL, KM_SET_F32, O(aug.p_blur), 0.5, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL},
    {"blur_sigma", NULL, KM_SET_F32PAIR, O(aug.sigma_min), 0.1, 2.0, 0, 0, 0, NULL, KM_SET_OPTIONAL, NULL, NULL, NULL},
    {"micro_batch", "--micro-batch", KM_SET_INT, O(micro_batch), 0, 0, KM_SET_GE, 0, 0, NULL, KM_SET_OPTIONAL,
     "split each batch into micro-batches of M images (NT-Xent and BatchNorm per micro-batch, gradients summed in "
     "a fixed order; `mpirun -np N` shares them: any N dividing batch/M gives the same weights; 0 = off)", NULL,
     NULL},
    {"sync_bn", "--sync-bn", KM_SET_BOOL, O(sync_bn), 0, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT,
     KM_HELP_SYNC_BN, NULL, NULL},
    {"decoder_channels", "--decoder-channels", KM_SET_STR, O(decoder_channels), 0, 0, 0, 0, 0, NULL,
     KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT | P_,
     KM_HELP_DECODER_CHANNELS, NULL, NULL},
    {"encoder_depth", "--encoder-depth", KM_SET_INT, O(encoder_depth), 5, 0, KM_SET_GE | KM_SET_LE, 3, 5, NULL,
     KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT | P_, KM_HELP_ENCODER_DEPTH, NULL, NULL},
    {NULL, "--step-timeout", KM_SET_DBL, O(step_timeout), 0, 0, KM_SET_GE, 0, 0, NULL, KM_SET_NEUTRAL,
     "end the job (MPI_Abort) when one optimiser step takes longer than SEC seconds (0 = no watchdog)", NULL, NULL},
};
#undef P_
#undef O
const km_settings km_simclr_settings = {"pretrain", k_rows, (int)(sizeof k_rows / sizeof k_rows[0])};

void km_simclr_config_default(km_simclr_config *c) {
    memset(c, 0, sizeof *c);
    km_settings_default(&km_simclr_settings, c);
}

km_status km_simclr_config_save(const km_simclr_config *c, const char *path, int n_train) {
    static const char *const skip[] = {"data", NULL}, *const skip0[] = {"data", "micro_batch", NULL};
    km_simclr_config w = *c;
    if (w.threads < 1) w.threads = km_get_threads();
    km_jw j = {0};
    km_jw_str(&j, "command", "pretrain");
    km_jw_setting(&j, &km_simclr_settings, &w, "data");
    km_jw_int(&j, "n_train_images", n_train);
    km_jw_settings(&j, &km_simclr_settings, &w, c->micro_batch ? skip : skip0); /* 0: as before it existed */
    km_jw_str(&j, "kmseg_version", KM_VERSION);
    return km_jw_write(&j, path);
}

km_status km_simclr_config_load(const char *dir, km_simclr_config *c) {
    km_simclr_config_default(c);
    char *path = km_path_join(dir, "config.json");
    km_json j;
    km_status s = km_json_load(path, "--resume %s: ", dir, &j);
    if (s) {
        km_free(path);
        return s;
    }
    const km_json *v = km_json_get(&j, "command");
    if (j.type != KM_JSON_OBJ) s = km_err(KM_EFORMAT, "%s: expected a JSON object", path);
    else if (!v || v->type != KM_JSON_STR || strcmp(v->str, "pretrain"))
        s = km_err(KM_EFORMAT, "%s: not the config of a kmseg pretrain run (\"command\" is not \"pretrain\")", path);
    if (!s) s = km_settings_from_json(&km_simclr_settings, &j, path, NULL, c);
    if (!s && c->threads < 1) s = km_err(KM_EFORMAT, "%s: 'threads' must be >= 1", path);
    km_json_free(&j);
    km_free(path);
    if (s) km_simclr_config_free(c);
    return s;
}

void km_simclr_config_free(km_simclr_config *c) {
    km_free((char *)c->data);
    km_free((char *)c->decoder_channels);
    c->data = c->decoder_channels = NULL;
}

/* Encoder tensors only ('encoder.*'), smp names, plus metadata. */
static km_status save_encoder(const km_unetpp *m, const char *path, const km_simclr_config *c, int epochs) {
    km_tdict all, enc;
    km_tdict_init(&all);
    km_tdict_init(&enc);
    km_unetpp_to_tdict(m, &all);
    for (int i = 0; i < all.n; i++) {
        km_tensor *t = &all.items[i];
        if (strncmp(t->name, "encoder.", 8)) continue;
        km_tdict_add(&enc, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    km_meta_model(&enc, "ResNetEncoder", c->resnet);
    km_tdict_set_meta(&enc, "pretraining", "simclr");
    km_meta_set_int(&enc, "epochs", epochs);
    km_status s = km_safetensors_save(path, &enc);
    km_tdict_free(&all);
    km_tdict_free(&enc);
    return s;
}

/* head: C -> C -> 128, C = the encoder's last-stage channels (km_unetpp_feature_channels: 512 at encoder
 * depth 5, 256 at 4, 128 at 3); the float offsets of its four tensors for C = hd. */
enum { PD = 128 };
#define HEAD_W1 0
#define HEAD_B1(hd) ((size_t)(hd) * (size_t)(hd))
#define HEAD_W2(hd) (HEAD_B1(hd) + (size_t)(hd))
#define HEAD_B2(hd) (HEAD_W2(hd) + (size_t)PD * (size_t)(hd))
#define HEAD_N(hd) (HEAD_B2(hd) + PD)

static const char *const k_head_names[4] = {"projection_head.0.weight", "projection_head.0.bias",
                                             "projection_head.2.weight", "projection_head.2.bias"};
static const int k_head_ndim[4] = {2, 1, 2, 1};

static void head_layout(int hd, int64_t shape[4][2], size_t off[4]) {
    const int64_t sh[4][2] = {{hd, hd}, {hd, 0}, {PD, hd}, {PD, 0}};
    memcpy(shape, sh, sizeof sh);
    off[0] = HEAD_W1;
    off[1] = HEAD_B1(hd);
    off[2] = HEAD_W2(hd);
    off[3] = HEAD_B2(hd);
}

static void head_to_tdict(const float *h, int hd, km_tdict *d) {
    int64_t shape[4][2];
    size_t off[4];
    head_layout(hd, shape, off);
    for (int i = 0; i < 4; i++) km_tdict_add(d, k_head_names[i], KM_F32, k_head_ndim[i], shape[i], h + off[i]);
}

static km_status save_head(const float *h, int hd, const char *path) {
    km_tdict d;
    km_tdict_init(&d);
    head_to_tdict(h, hd, &d);
    km_tdict_set_meta(&d, "format", "pt");
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}


/* ---- the resumable checkpoint (last.safetensors, simclr.h) ---- */

typedef struct {
    float *head, *em, *ev, *hm, *hv; /* head weights; Adam moments of encoder and head */
    size_t n_enc;                    /* the encoder's parameters, the prefix of the student's */
    int hd;                          /* the head's width C (km_unetpp_feature_channels) */
    int *order, n;                   /* the image order (permuted further every epoch) */
    int epoch, steps, done;
    km_rng rs, ra; /* shuffling, views */
    /* A stop request (SIGTERM/SIGUSR1, dist.h) in mid-epoch saves the state
     * as the epoch began (order, RNGs) plus the steps done and their loss
     * sum; a resumed run reshuffles, redraws the done steps' views and goes
     * on from there. */
    int *ep_order, part_steps;
    km_rng ep_rs, ep_ra;
    double part_esum;
} sc_state;

static km_status save_last(const char *path, const km_unetpp *m, const km_simclr_config *c, const sc_state *st) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    head_to_tdict(st->head, st->hd, &d);
    int64_t ne = (int64_t)st->n_enc, nh = (int64_t)HEAD_N(st->hd), no = st->n;
    km_tdict_add(&d, "adam.encoder.exp_avg", KM_F32, 1, &ne, st->em);
    km_tdict_add(&d, "adam.encoder.exp_avg_sq", KM_F32, 1, &ne, st->ev);
    km_tdict_add(&d, "adam.head.exp_avg", KM_F32, 1, &nh, st->hm);
    km_tdict_add(&d, "adam.head.exp_avg_sq", KM_F32, 1, &nh, st->hv);
    _Static_assert(sizeof(int) == 4, "pretrain.order is stored as int32");
    int part = st->part_steps > 0;
    km_tdict_add(&d, "pretrain.order", KM_I32, 1, &no, part ? st->ep_order : st->order);
    km_meta_model(&d, "UnetPlusPlus+SimCLRProjectionHead", c->resnet);
    km_meta_set_int(&d, "size", c->size);
    km_meta_set_int(&d, "seed", (long long)c->seed);
    km_meta_set_int(&d, "pretrain.epoch", st->epoch);
    km_meta_set_int(&d, "pretrain.steps", st->steps);
    km_meta_set_int(&d, "pretrain.done", st->done);
    km_meta_set_int(&d, "pretrain.n_train", st->n);
    km_meta_set_rng(&d, "pretrain.rng_shuffle", part ? &st->ep_rs : &st->rs);
    km_meta_set_rng(&d, "pretrain.rng_aug", part ? &st->ep_ra : &st->ra);
    if (part) {
        km_meta_set_int(&d, "pretrain.partial_steps", st->part_steps);
        km_meta_set_num(&d, "pretrain.partial_loss_sum", st->part_esum);
    }
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

/* last.safetensors' metadata: epoch, steps, done, image count, RNGs. */
static km_status load_meta(const km_tdict *d, const char *path, const km_simclr_config *c, sc_state *st) {
    long long epoch = 0, steps = 0, done = 0, n = 0;
    km_status s = km_meta_get_int(d, "pretrain.epoch", path, &epoch);
    if (!s) s = km_meta_get_int(d, "pretrain.steps", path, &steps);
    if (!s) s = km_meta_get_int(d, "pretrain.done", path, &done);
    if (!s) s = km_meta_get_int(d, "pretrain.n_train", path, &n);
    long long part = 0;
    if (!s && km_tdict_get_meta(d, "pretrain.partial_steps")) { /* stopped mid-epoch */
        s = km_meta_get_int(d, "pretrain.partial_steps", path, &part);
        const char *v = km_tdict_get_meta(d, "pretrain.partial_loss_sum");
        if (!s && !v) s = km_err(KM_EMISSING, "%s: missing metadata 'pretrain.partial_loss_sum'", path);
        if (!s) st->part_esum = strtod(v, NULL);
        st->part_steps = (int)part;
    }
    if (!s && (epoch < (part ? 0 : 1) || epoch > c->epochs || steps < 1 || (done != 0 && done != 1)))
        s = km_err(KM_EFORMAT, "%s: inconsistent metadata (epoch %lld of %d, %lld steps, done %lld)", path, epoch,
                   c->epochs, steps, done);
    if (!s && n != st->n)
        s = km_err(KM_EFORMAT, "%s: checkpoint of a run over %lld training images, but %s gives %d now", path, n,
                   c->data, st->n);
    if (!s) s = km_meta_get_rng(d, "pretrain.rng_shuffle", path, &st->rs);
    if (!s) s = km_meta_get_rng(d, "pretrain.rng_aug", path, &st->ra);
    st->epoch = (int)epoch;
    st->steps = (int)steps;
    st->done = (int)done;
    return s;
}

/* The student's state dict: every tensor but the head, Adam and order. */
static km_status load_model(const km_tdict *d, const char *path, const km_simclr_config *c, km_unetpp **m) {
    km_tdict md;
    km_tdict_init(&md);
    for (int i = 0; i < d->n; i++) {
        const km_tensor *t = &d->items[i];
        if (strncmp(t->name, "projection_head.", 16) && strncmp(t->name, "adam.", 5) && strncmp(t->name, "pretrain.", 9))
            km_tdict_add(&md, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    km_status s = km_unetpp_from_tdict(m, &md, path);
    if (!s && km_unetpp_resnet_depth(*m) != c->resnet)
        s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", path,
                   km_unetpp_resnet_depth(*m), c->resnet);
    if (!s) s = km_unetpp_check_arch(*m, c->encoder_depth, c->decoder_channels, path);
    km_tdict_free(&md);
    return s;
}

/* The head, the Adam moments and the image order (a permutation of 0..n-1). */
static km_status load_tensors(const km_tdict *d, const char *path, sc_state *st) {
    const float *w;
    km_status s = KM_OK;
    int64_t shape[4][2];
    size_t off[4];
    head_layout(st->hd, shape, off);
    for (int i = 0; i < 4 && !s; i++) {
        s = km_tdict_get_f32(d, path, k_head_names[i], k_head_ndim[i], shape[i], &w);
        if (!s) memcpy(st->head + off[i], w, sizeof(float) * (size_t)km_numel(k_head_ndim[i], shape[i]));
    }
    int64_t ne = (int64_t)st->n_enc, nh = (int64_t)HEAD_N(st->hd);
    const char *an[4] = {"adam.encoder.exp_avg", "adam.encoder.exp_avg_sq", "adam.head.exp_avg", "adam.head.exp_avg_sq"};
    float *ad[4] = {st->em, st->ev, st->hm, st->hv};
    for (int i = 0; i < 4 && !s; i++) {
        s = km_tdict_get_f32(d, path, an[i], 1, i < 2 ? &ne : &nh, &w);
        if (!s) memcpy(ad[i], w, sizeof(float) * (size_t)(i < 2 ? ne : nh));
    }
    if (s) return s;
    const km_tensor *o = km_tdict_find(d, "pretrain.order");
    if (!o || o->dtype != KM_I32 || o->ndim != 1 || o->shape[0] != st->n)
        return km_err(o ? KM_EFORMAT : KM_EMISSING, "%s: missing or malformed 'pretrain.order' (int32 [%d] expected)",
                      path, st->n);
    char *seen = km_calloc((size_t)st->n + 1);
    const int32_t *ov = o->data;
    for (int i = 0; i < st->n && !s; i++) {
        if (ov[i] < 0 || ov[i] >= st->n || seen[ov[i]])
            s = km_err(KM_EFORMAT, "%s: 'pretrain.order' is not a permutation of 0..%d", path, st->n - 1);
        else
            seen[ov[i]] = 1, st->order[i] = ov[i];
    }
    km_free(seen);
    return s;
}

/* Reads last.safetensors into *m (a new model) and st (buffers allocated by
 * the caller, sizes st->n_enc and st->n); errors name the file. */
static km_status load_last(const char *path, const km_simclr_config *c, km_unetpp **m, sc_state *st) {
    *m = NULL;
    km_tdict d;
    km_tdict_init(&d);
    km_status s = km_safetensors_load(path, &d);
    if (s) return km_err_prefix(s, "--resume: ");
    s = load_meta(&d, path, c, st);
    if (!s) s = load_model(&d, path, c, m);
    if (!s) s = load_tensors(&d, path, st);
    km_tdict_free(&d);
    if (s && *m) {
        km_unetpp_free(*m);
        *m = NULL;
    }
    return s;
}

static km_status check_config(const km_simclr_config *c) {
    if (!c->data) return km_err(KM_EARG, "missing required flag --data (dataset folder with images/ and masks/)");
    if (!c->out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
    if (c->resnet != 18 && c->resnet != 34) return km_err(KM_EARG, "--resnet %d: expected 18 or 34", c->resnet);
    km_status s = km_settings_check(&km_simclr_settings, c);
    if (!s) s = km_unetpp_check_size(c->size, c->encoder_depth);
    int dec[5];
    if (!s) s = km_unetpp_parse_decoder(c->decoder_channels, c->encoder_depth, dec);
    if (s) return s;
    if (c->stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", c->stop_after);
    if (c->resume && c->fixed_batch) return km_err(KM_EARG, "fixed_batch runs cannot be resumed");
    if (c->sync_bn && !c->micro_batch)
        return km_err(KM_EARG,
                      "--sync-bn needs --micro-batch M (without micro-batches BatchNorm already sees the whole batch)");
    return KM_OK;
}

/* ---- the run, in phases ---- */

static const char *const k_cols[] = {"epoch", "steps", "images", "loss", "lr", "seconds", "img_per_s"};

/* Step buffers, sized for B = 2N views of S x S. */
typedef struct {
    float *x, *work, *feat, *dfeat, *g, *dg, *h1, *dh1, *a1, *pr, *dpr, *ntw, *ghead;
    km_simclr_view *views;
    size_t wf; /* work floats per thread */
} sc_bufs;

/* Everything one run holds: zeroed by pt_open, released by pt_close on
 * every path (the one cleanup of the run). */
typedef struct {
    const km_simclr_config *c;
    FILE *log;
    km_simclr_result *res;
    km_run run;
    km_split sp;
    km_dataset ds;
    int N, B, S, HW;         /* images per step, views per step, crop size, feature map pixels */
    int steps_per_epoch, nstep; /* nstep: this process's steps */
    km_unetpp *m;
    sc_state st;
    sc_bufs b;
    km_micro mb;  /* micro_batch > 0 (microbatch.h) */
    float *gcat;  /* micro-batches: encoder then head gradients, one vector */
    float *gsync; /* --sync-bn: the head gradients of each local micro-batch */
} pretrainer;

/* The train split of the seeded 80/10/10 split, decoded once. */
static km_status pt_data(pretrainer *P) {
    const km_simclr_config *c = P->c;
    km_dataset_index idx;
    km_issues iss;
    km_issues_init(&iss);
    km_status s = km_dataset_scan(c->data, NULL, &idx, &iss); /* images only: no label needed */
    if (!s) {
        s = km_issues_status(&iss, c->data);
        if (s) km_dataset_index_free(&idx);
    }
    km_issues_free(&iss);
    if (s) return s;
    int n_all = c->max_images && c->max_images < idx.n ? c->max_images : idx.n;
    km_split_random(n_all, c->seed, 0.1, 0.1, &P->sp);
    if (P->sp.n_train < 2) {
        s = km_err(KM_EARG, "%s: %d training images after the 80/10/10 split; SimCLR needs at least 2", c->data,
                   P->sp.n_train);
    } else {
        P->N = c->batch < P->sp.n_train ? c->batch : P->sp.n_train;
        if (P->N < c->batch && P->log)
            fprintf(P->log, "warning: batch %d > %d training images: using batch %d\n", c->batch, P->sp.n_train, P->N);
        s = km_dataset_load(&idx, P->sp.train, P->sp.n_train, c->size, 0, &P->ds, NULL);
    }
    km_dataset_index_free(&idx);
    return s;
}

/* Phase 1: settings, run folder, data; a new run writes config.json and
 * removes an earlier run's checkpoint (it must not be resumed). */
static km_status pt_open(pretrainer *P, const km_simclr_config *c, FILE *log, km_simclr_result *res) {
    memset(P, 0, sizeof *P);
    P->c = c;
    P->res = res;
    km_status s = km_dist_init();
    if (s) return s;
    P->log = km_dist_rank() ? NULL : log;
    const char *wdir = km_dist_rank() ? NULL : c->out; /* rank 0 alone writes files */
    s = check_config(c);
    if (!s) s = km_micro_check(c->batch, c->micro_batch);
    /* a resumed folder is checked first; a new one is created once the data is good */
    if (!s && c->resume) s = km_run_open(&P->run, wdir, "config.json", "pretrain", 1);
    if (s) return s;
    if (c->threads > 0) km_set_threads(c->threads);
    s = pt_data(P);
    if (!s && !c->resume) s = km_run_open(&P->run, wdir, "config.json", "pretrain", 0);
    if (!s && !c->resume && wdir) s = km_simclr_config_save(c, P->run.config, P->sp.n_train);
    if (!s && !c->resume) s = km_run_remove(&P->run, "last.safetensors");
    return s;
}

/* Phase 2: the student (seeded), the head, the optimiser state, the image
 * order and the RNGs, then last.safetensors over them when resuming; the
 * metric file (a resumed run drops the rows after its checkpoint). */
static km_status pt_state(pretrainer *P) {
    const km_simclr_config *c = P->c;
    sc_state *st = &P->st;
    int dec[5];
    km_status s0 = km_unetpp_parse_decoder(c->decoder_channels, c->encoder_depth, dec); /* checked: check_config */
    if (s0) return s0;
    P->m = km_unetpp_create_arch(c->resnet, c->encoder_depth, dec, c->seed);
    st->n_enc = km_unetpp_num_encoder_params(P->m);
    int hd = st->hd = km_unetpp_feature_channels(P->m);
    st->n = P->ds.n;
    st->head = km_malloc(sizeof(float) * HEAD_N(hd));
    st->hm = km_calloc(sizeof(float) * HEAD_N(hd));
    st->hv = km_calloc(sizeof(float) * HEAD_N(hd));
    st->em = km_calloc(sizeof(float) * st->n_enc);
    st->ev = km_calloc(sizeof(float) * st->n_enc);
    km_rng hr;
    km_rng_seed(&hr, c->seed ^ KM_SIMCLR_HEAD_SALT);
    double b1 = 1.0 / sqrt((double)hd);
    for (size_t i = 0; i < HEAD_N(hd); i++) st->head[i] = (float)uni(&hr, -b1, b1); /* both layers have fan-in C */
    st->order = km_malloc(sizeof(int) * (P->ds.n + 1));
    st->ep_order = km_malloc(sizeof(int) * (P->ds.n + 1));
    for (int i = 0; i < P->ds.n; i++) st->order[i] = i;
    km_rng_seed(&st->rs, c->seed ^ KM_SIMCLR_SHUFFLE_SALT);
    km_rng_seed(&st->ra, c->seed ^ KM_SIMCLR_AUG_SALT);
    char *p = km_path_join(c->out, "last.safetensors"); /* every rank reads it */
    struct stat sb;
    int have_last = c->resume && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    km_unetpp *lm = NULL;
    km_status s = have_last ? load_last(p, c, &lm, st) : KM_OK;
    km_free(p);
    if (s) return s;
    if (lm) {
        km_unetpp_free(P->m);
        P->m = lm;
    }
    P->res->resumed_epoch = st->epoch;
    if (have_last && !st->done && (s = km_run_note_resume(&P->run, st->epoch))) return s;
    if (c->resume && P->log) {
        if (have_last)
            fprintf(P->log, "resuming %s after epoch %d (%d steps)%s\n", c->out, st->epoch, st->steps,
                    st->done ? ": the run had already finished" : "");
        else
            fprintf(P->log, "resuming %s: no checkpoint yet (killed in epoch 1), starting over\n", c->out);
    }
    return km_run_metrics_open(&P->run, k_cols, 7, 3, 0, have_last ? st->epoch : -1);
}

/* Several ranks: rank 0's initial weights and head go to every rank (a
 * resumed run: each read the same checkpoint), then every rank checks that
 * its whole state hashes like rank 0's. */
static km_status pt_sync(pretrainer *P) {
    int hd = P->st.hd;
    if (km_dist_size() == 1) return KM_OK;
    sc_state *st = &P->st;
    if (!P->c->resume) {
        km_dist_bcast(km_unetpp_params(P->m), sizeof(float) * km_unetpp_num_params(P->m));
        km_dist_bcast(st->head, sizeof(float) * HEAD_N(hd));
    }
    uint64_t h = km_unetpp_state_hash(P->m);
    float *f[5] = {st->head, st->hm, st->hv, st->em, st->ev};
    size_t n[5] = {HEAD_N(hd), HEAD_N(hd), HEAD_N(hd), st->n_enc, st->n_enc};
    for (int i = 0; i < 5; i++) h = km_dist_hash(h, f[i], sizeof(float) * n[i]);
    h = km_dist_hash(h, st->order, sizeof(int) * (size_t)st->n);
    int v[3] = {st->epoch, st->steps, st->done};
    h = km_dist_hash(km_dist_hash(h, v, sizeof v), &st->rs, sizeof st->rs);
    return km_dist_check_same(km_dist_hash(h, &st->ra, sizeof st->ra), "the pretraining state");
}

/* Phase 3: the step buffers and the model's activations. */
static km_status pt_buffers(pretrainer *P) {
    int S = P->c->size, fh = S >> P->c->encoder_depth, hd = P->st.hd;
    P->S = S;
    P->B = 2 * P->N;
    P->HW = fh * fh;
    size_t B = (size_t)P->B, HW = (size_t)P->HW;
    int T = km_get_threads() > 0 ? km_get_threads() : 1;
    sc_bufs *b = &P->b;
    b->wf = km_simclr_apply_work_floats(S);
    b->x = km_malloc(sizeof(float) * B * 3 * S * S);
    b->work = km_malloc(sizeof(float) * b->wf * T);
    b->feat = km_malloc(sizeof(float) * B * hd * HW);
    b->dfeat = km_malloc(sizeof(float) * B * hd * HW);
    b->g = km_malloc(sizeof(float) * B * hd);
    b->dg = km_malloc(sizeof(float) * B * hd);
    b->h1 = km_malloc(sizeof(float) * B * hd);
    b->dh1 = km_malloc(sizeof(float) * B * hd);
    b->a1 = km_malloc(sizeof(float) * B * hd);
    b->pr = km_malloc(sizeof(float) * B * PD);
    b->dpr = km_malloc(sizeof(float) * B * PD);
    b->ntw = km_malloc(sizeof(float) * km_ntxent_work_floats(P->B, PD));
    b->ghead = km_malloc(sizeof(float) * HEAD_N(hd));
    b->views = km_malloc(sizeof(km_simclr_view) * B);
    P->steps_per_epoch = P->ds.n / P->N;
    km_status s = km_unetpp_reserve(P->m, P->B, S, S);
    if (!s && P->c->micro_batch) {
        s = km_micro_open(&P->mb, P->N, P->c->micro_batch, P->st.n_enc + HEAD_N(hd), P->m);
        P->gcat = km_malloc(sizeof(float) * (P->st.n_enc + HEAD_N(hd)));
    }
    if (!s && P->c->sync_bn) {
        s = km_micro_sync_open(&P->mb, P->m);
        P->gsync = km_malloc(sizeof(float) * HEAD_N(hd) * (size_t)P->mb.Kl);
    }
    if (!s && P->log && !P->st.done)
        fprintf(P->log, "SimCLR pretraining: resnet%d, %d train images, %dx%d, batch %d (%d views), %d steps/epoch, "
                        "lr %g, T %g, %d threads\n",
                P->c->resnet, P->ds.n, S, S, P->N, P->B, P->steps_per_epoch, P->c->lr, P->c->temperature, T);
    return s;
}

/* The view behind row d of this process's views: the whole batch (rows
 * 0..N-1 view 1 of the images, N..2N-1 view 2) or, in micro-batches, local
 * micro-batch d / 2M's images in the same pattern. */
static int pt_row_view(const pretrainer *P, int d) {
    const km_micro *u = &P->mb;
    if (!u->M) return d;
    int M = u->M, r = d % (2 * M), j0 = km_micro_global(u, d / (2 * M)) * M;
    return r < M ? j0 + r : P->N + j0 + r - M;
}

/* The two views of the step's images, every view drawn (the same random
 * stream for any number of processes), this process's built (fill = 0: keep
 * the last step's). */
static void pt_views(pretrainer *P, const int *bi, int fill) {
    sc_bufs *b = &P->b;
    int S = P->S, N = P->N, B = P->B, rows = P->mb.M ? 2 * P->mb.M * P->mb.Kl : B;
    if (fill)
        for (int k = 0; k < B; k++) km_simclr_draw(&P->st.ra, S, &P->c->aug, &b->views[k]);
#pragma omp parallel for schedule(dynamic, 1) if (fill)
    for (int d = 0; d < rows * fill; d++) {
        int tid = 0, k = pt_row_view(P, d);
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        km_simclr_apply(P->ds.images + (size_t)bi[k % N] * S * S * 3, S, &b->views[k], b->work + b->wf * tid,
                        b->x + (size_t)d * 3 * S * S);
    }
}

/* The head's part of a step on the nv views whose encoder features are rows
 * r0.. of b->feat: GAP -> head -> NT-Xent, its backward (times scale) into
 * ghead (replaced) and rows r0.. of b->dfeat (replaced). */
static km_status pt_head_fb(pretrainer *P, size_t r0, int nv, float scale, float *ghead, int ep, int sti,
                            double *loss) {
    int hd = P->st.hd;
    const km_simclr_config *c = P->c;
    sc_bufs *b = &P->b;
    int B = nv, HW = P->HW;
    float *head = P->st.head, *feat = b->feat + r0 * hd * HW, *dfeat = b->dfeat + r0 * hd * HW;
    km_gap_forward(b->g, feat, B, hd, HW);
    km_linear_forward(b->h1, b->g, head + HEAD_W1, head + HEAD_B1(hd), B, hd, hd);
    km_relu_forward(b->a1, b->h1, (size_t)B * hd);
    km_linear_forward(b->pr, b->a1, head + HEAD_W2(hd), head + HEAD_B2(hd), B, hd, PD);
    *loss = km_ntxent_forward(b->pr, B, PD, (float)c->temperature, b->ntw);
    if (!isfinite(*loss))
        return km_err(KM_EINTERNAL, "epoch %d step %d: the NT-Xent loss is %g (diverged; lower --lr)", ep, sti + 1, *loss);
    memset(ghead, 0, sizeof(float) * HEAD_N(hd));
    memset(b->dpr, 0, sizeof(float) * B * PD);
    memset(b->dh1, 0, sizeof(float) * B * hd);
    memset(b->dg, 0, sizeof(float) * B * hd);
    memset(dfeat, 0, sizeof(float) * B * hd * HW);
    km_ntxent_backward(b->dpr, b->pr, B, PD, (float)c->temperature, scale, b->ntw);
    /* dh1 first holds d(loss)/d(a1), then is masked by the ReLU in place */
    km_linear_backward(b->dh1, ghead + HEAD_W2(hd), ghead + HEAD_B2(hd), b->dpr, b->a1, head + HEAD_W2(hd), B, hd, PD);
    for (size_t i = 0; i < (size_t)B * hd; i++) b->dh1[i] = b->a1[i] > 0.0f ? b->dh1[i] : 0.0f;
    km_linear_backward(b->dg, ghead + HEAD_W1, ghead + HEAD_B1(hd), b->dh1, b->g, head + HEAD_W1, B, hd, hd);
    km_gap_backward(dfeat, b->dg, B, hd, HW);
    return KM_OK;
}

/* Forward and backward of nv views x (rows 0..nv/2-1 view 1, then view 2):
 * encoder -> GAP -> head -> NT-Xent; the gradients (times scale) replace
 * the model's and ghead. */
static km_status pt_fb(pretrainer *P, const float *x, int nv, float scale, int ep, int sti, double *loss) {
    sc_bufs *b = &P->b;
    km_status s = km_unetpp_encoder_forward(P->m, x, nv, P->S, P->S, 1, b->feat);
    if (!s) s = pt_head_fb(P, 0, nv, scale, b->ghead, ep, sti, loss);
    if (s) return s;
    km_unetpp_zero_grad(P->m);
    km_unetpp_encoder_backward(P->m, b->dfeat, NULL);
    return KM_OK;
}

/* The micro-batches of this process, then the sum over all (microbatch.h):
 * leaves the summed gradients in the model and ghead. */
static km_status pt_fb_micro(pretrainer *P, int ep, int sti, double *loss) {
    int hd = P->st.hd;
    km_micro *u = &P->mb;
    size_t ne = P->st.n_enc, view = (size_t)3 * P->S * P->S;
    float *genc = km_unetpp_grads(P->m);
    float share = (float)(1.0 / u->K); /* every batch is full: M of N images each */
    for (int i = 0; i < u->Kl; i++) {
        double l = 0;
        km_micro_begin(u, P->m, i);
        km_status s = pt_fb(P, P->b.x + view * 2 * u->M * (size_t)i, 2 * u->M, share, ep, sti, &l);
        if (s) {
            km_unetpp_bn_capture(P->m, NULL);
            return s;
        }
        memcpy(P->gcat, genc, sizeof(float) * ne);
        memcpy(P->gcat + ne, P->b.ghead, sizeof(float) * HEAD_N(hd));
        km_micro_end(u, P->m, i, l, P->gcat);
    }
    *loss = km_micro_finish(u, P->m, P->N, P->gcat);
    memcpy(genc, P->gcat, sizeof(float) * ne);
    memcpy(P->b.ghead, P->gcat + ne, sizeof(float) * HEAD_N(hd));
    return KM_OK;
}

/* --sync-bn (microbatch.h): this process's micro-batches as one encoder
 * forward and backward with whole-batch BatchNorm, the head and NT-Xent per
 * micro-batch (head gradients kept per micro-batch in P->gsync), then the
 * sum over all; leaves the summed gradients in the model and ghead. */
static km_status pt_fb_sync(pretrainer *P, int ep, int sti, double *loss) {
    int hd = P->st.hd;
    km_micro *u = &P->mb;
    size_t ne = P->st.n_enc;
    int V = 2 * u->M, rows = km_micro_sync_batch(u, P->N, 2);
    float share = (float)(1.0 / u->K);
    km_status s = km_unetpp_encoder_forward(P->m, P->b.x, rows, P->S, P->S, 1, P->b.feat);
    for (int i = 0; i < u->Kl && !s; i++) /* u->ls: micro-batch i's loss */
        s = pt_head_fb(P, (size_t)i * V, V, share, P->gsync + (size_t)HEAD_N(hd) * i, ep, sti, &u->ls[i]);
    if (s) return s;
    km_unetpp_zero_grad(P->m);
    km_unetpp_encoder_backward(P->m, P->b.dfeat, NULL);
    for (int i = 0; i < u->Kl; i++) {
        memcpy(P->gcat, km_unetpp_group_grads(P->m, i), sizeof(float) * ne);
        memcpy(P->gcat + ne, P->gsync + (size_t)HEAD_N(hd) * i, sizeof(float) * HEAD_N(hd));
        km_micro_end(u, P->m, i, u->ls[i], P->gcat);
    }
    *loss = km_micro_finish(u, P->m, P->N, P->gcat);
    memcpy(km_unetpp_grads(P->m), P->gcat, sizeof(float) * ne);
    memcpy(P->b.ghead, P->gcat + ne, sizeof(float) * HEAD_N(hd));
    return KM_OK;
}

/* One optimiser step on images bi[0..N): views, gradients (whole or in
 * micro-batches), Adam on encoder and head. */
static km_status pt_step(pretrainer *P, const int *bi, int fill, int ep, int sti, double *loss) {
    int hd = P->st.hd;
    const km_simclr_config *c = P->c;
    sc_state *st = &P->st;
    pt_views(P, bi, fill);
    km_status s = P->mb.sync ? pt_fb_sync(P, ep, sti, loss)
                  : P->mb.M  ? pt_fb_micro(P, ep, sti, loss)
                             : pt_fb(P, P->b.x, P->B, 1.0f, ep, sti, loss);
    if (s) return s;
    st->steps++; /* Adam's step counter */
    P->nstep++;
    km_adam_step(km_unetpp_params(P->m), km_unetpp_grads(P->m), st->em, st->ev, st->n_enc, (float)c->lr, 0.9f, 0.999f,
                 1e-8f, (float)c->weight_decay, st->steps);
    km_adam_step(st->head, P->b.ghead, st->hm, st->hv, HEAD_N(hd), (float)c->lr, 0.9f, 0.999f, 1e-8f,
                 (float)c->weight_decay, st->steps);
    return KM_OK;
}

/* The epoch's files: log row -> encoder -> head -> last.safetensors (the
 * resumable state last: a killed run keeps its last complete epoch). */
static km_status pt_save_epoch(pretrainer *P, int esteps, double el, double dt) {
    const km_simclr_config *c = P->c;
    int ep = P->st.epoch, N = P->N;
    double row[7] = {ep, esteps, (double)esteps * N, el, c->lr, dt, dt > 0 ? esteps * N / dt : 0.0};
    km_dist_barrier(); /* files only once every rank has finished the epoch */
    if (!P->run.dir) return KM_OK; /* ranks > 0 */
    km_status s = km_run_metrics_row(&P->run, row);
    char *pe = km_run_path(&P->run, "encoder.safetensors"), *ph = km_run_path(&P->run, "projection_head.safetensors");
    char *pl = km_run_path(&P->run, "last.safetensors");
    if (!s) s = save_encoder(P->m, pe, c, ep);
    if (!s) s = save_head(P->st.head, P->st.hd, ph);
    if (!s) s = save_last(pl, P->m, c, &P->st);
    km_free(pe);
    km_free(ph);
    km_free(pl);
    return s;
}

/* A stop request in mid-epoch: last.safetensors with the epoch's start and
 * its done steps (no log row), and the run ends. */
static km_status pt_stop_mid_epoch(pretrainer *P, int *stop) {
    sc_state *st = &P->st;
    *stop = 1;
    km_dist_barrier();
    if (!P->run.dir) return KM_OK;
    char *pl = km_run_path(&P->run, "last.safetensors");
    km_status s = save_last(pl, P->m, P->c, st);
    km_free(pl);
    if (!s && P->log)
        fprintf(P->log, "stop requested (SIGTERM/SIGUSR1): checkpoint after step %d (%d of epoch %d); continue with "
                "--resume %s\n", st->steps, st->part_steps, st->epoch + 1, P->c->out);
    return s;
}

/* One epoch (shuffle, steps, files). *stop: nothing was trained (the step
 * budget was spent) or an error. */
static km_status pt_epoch(pretrainer *P, int *stop) {
    const km_simclr_config *c = P->c;
    sc_state *st = &P->st;
    km_simclr_result *res = P->res;
    int ep = st->epoch + 1, N = P->N, esteps = st->part_steps;
    memcpy(st->ep_order, st->order, sizeof(int) * (size_t)P->ds.n);
    st->ep_rs = st->rs;
    st->ep_ra = st->ra;
    km_rng_shuffle(&st->rs, st->order, P->ds.n);
    for (int sti = 0; sti < esteps; sti++) /* resumed in mid-epoch: the done steps' views */
        for (int k = 0; k < P->B; k++) km_simclr_draw(&st->ra, P->S, &c->aug, &P->b.views[k]);
    km_progress pg = {0};
    char lbl[64], extra[64];
    snprintf(lbl, sizeof lbl, "pretrain %d/%d", ep, c->epochs);
    if (P->log) km_progress_start(&pg, P->log, lbl, (int64_t)P->steps_per_epoch * N, "img");
    double esum = st->part_esum, t0 = km_now(), loss = NAN;
    km_status s = KM_OK;
    int sti0 = st->part_steps;
    st->part_steps = 0;
    st->part_esum = 0;
    for (int sti = sti0; sti < P->steps_per_epoch && !s; sti++) {
        if (c->max_steps && st->steps >= c->max_steps) break;
        km_dist_step_begin(st->steps + 1);
        s = pt_step(P, st->order + (size_t)sti * N, !(c->fixed_batch && P->nstep > 0), ep, sti, &loss);
        km_dist_step_end();
        if (s) break;
        if (P->nstep == 1) res->first_loss = loss;
        res->last_loss = loss;
        res->images += N;
        esum += loss;
        esteps++;
        if (P->log) {
            snprintf(extra, sizeof extra, "loss %.4f", loss);
            km_progress_update(&pg, (int64_t)(sti + 1) * N, extra);
        }
        km_dist_test_fault(st->steps);
        if (km_dist_stop_requested() && sti + 1 < P->steps_per_epoch &&
            !(c->max_steps && st->steps >= c->max_steps)) {
            st->part_steps = esteps; /* mid-epoch (an epoch's end stops after its files) */
            st->part_esum = esum;
            break;
        }
    }
    if (!s && st->part_steps) {
        if (P->log) km_progress_end(&pg, NULL);
        return pt_stop_mid_epoch(P, stop);
    }
    double dt = km_now() - t0;
    res->seconds += dt;
    pg.total = (int64_t)esteps * N; /* an epoch cut short by --max-steps ends at what was done */
    if (s || !esteps) {
        if (P->log) km_progress_end(&pg, NULL);
        *stop = 1;
        return s;
    }
    double el = esum / esteps;
    if (isnan(res->first_epoch_loss)) res->first_epoch_loss = el;
    res->last_epoch_loss = el;
    st->epoch = ep;
    st->done = ep >= c->epochs || (c->max_steps && st->steps >= c->max_steps);
    if (P->log) {
        snprintf(extra, sizeof extra, "loss %.4f", el);
        km_progress_end(&pg, extra);
    }
    return pt_save_epoch(P, esteps, el, dt);
}

static km_status pt_close(pretrainer *P, km_status s) {
    s = km_run_close(&P->run, s);
    sc_state *st = &P->st;
    sc_bufs *b = &P->b;
    km_free(st->head), km_free(st->hm), km_free(st->hv), km_free(st->em), km_free(st->ev), km_free(st->order);
    km_free(st->ep_order);
    km_free(b->x), km_free(b->work), km_free(b->feat), km_free(b->dfeat), km_free(b->g), km_free(b->dg);
    km_free(b->h1), km_free(b->dh1), km_free(b->a1), km_free(b->pr), km_free(b->dpr), km_free(b->ntw);
    km_free(b->ghead), km_free(b->views);
    km_micro_close(&P->mb);
    km_free(P->gcat);
    km_free(P->gsync);
    if (P->m) km_unetpp_free(P->m);
    km_dataset_free(&P->ds);
    km_split_free(&P->sp);
    return s;
}

km_status km_simclr_run(const km_simclr_config *c, FILE *log, km_simclr_result *res) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->last_loss = res->first_epoch_loss = res->last_epoch_loss = NAN;
    pretrainer P;
    km_status s = pt_open(&P, c, log, res);
    if (!s) s = pt_state(&P);
    if (!s) s = pt_sync(&P);
    if (!s) s = pt_buffers(&P);
    int stop = 0;
    if (!s) s = km_dist_watchdog_start(c->step_timeout);
    while (!s && !stop && !P.st.done && !(c->stop_after && P.st.epoch >= c->stop_after)) {
        s = pt_epoch(&P, &stop);
        if (!s && !stop && !P.st.done && km_dist_stop_requested()) {
            if (P.log)
                fprintf(P.log, "stop requested (SIGTERM/SIGUSR1): checkpoint after epoch %d; continue with --resume "
                        "%s\n", P.st.epoch, c->out);
            break;
        }
    }
    km_dist_watchdog_stop();
    res->epochs_done = P.st.epoch;
    res->steps = P.st.steps;
    res->finished = P.st.done;
    int stopped = km_dist_stop_pending();
    if (!s && P.st.epoch == 0 && !stopped)
        s = km_err(KM_EARG, "no training step was run (--max-steps %d, %d steps per epoch)", c->max_steps,
                   P.steps_per_epoch);
    if (!s && P.log && P.nstep && P.st.epoch > 0)
        fprintf(P.log, "wrote %s/encoder.safetensors (encoder) and %s/projection_head.safetensors after %d epochs, "
                     "%d steps\n", c->out, c->out, P.st.epoch, P.st.steps);
    s = pt_close(&P, s);
    return s ? km_dist_fail(s) : s; /* a failed rank ends the job */
}

/* simclr.c - SimCLR augmentations and the pretraining loop (simclr.h). */
#include "simclr.h"

#include "dataset.h"
#include "splits.h"
#include "train.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../io/json.h"
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

/* Doubles with %.17g (they round-trip); the float augmentation settings with
 * %.9g (float round-trip). km_simclr_config_load reads every setting back. */
static km_status write_config(const km_simclr_config *c, const char *path, int n_train) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    km_json_escape(&buf, &len, &cap, c->data);
    char txt[2048];
    const km_simclr_aug_cfg *a = &c->aug;
    int n = snprintf(txt, sizeof txt,
                     "{\n  \"command\": \"pretrain\",\n  \"data\": %s,\n  \"n_train_images\": %d,\n"
                     "  \"epochs\": %d,\n  \"batch\": %d,\n  \"lr\": %.17g,\n  \"temperature\": %.17g,\n"
                     "  \"weight_decay\": %.17g,\n  \"size\": %d,\n  \"resnet\": %d,\n  \"seed\": %llu,\n"
                     "  \"threads\": %d,\n  \"max_images\": %d,\n  \"max_steps\": %d,\n"
                     "  \"crop_scale\": [%.9g, %.9g],\n  \"p_jitter\": %.9g,\n  \"jitter\": [%.9g, %.9g],\n"
                     "  \"p_grey\": %.9g,\n  \"p_blur\": %.9g,\n  \"blur_sigma\": [%.9g, %.9g],\n"
                     "  \"kmseg_version\": \"%s\"\n}\n",
                     buf, n_train, c->epochs, c->batch, c->lr, c->temperature, c->weight_decay, c->size,
                     c->resnet, (unsigned long long)c->seed, km_get_threads(), c->max_images, c->max_steps,
                     a->scale_min, a->scale_max, a->p_jitter, a->jitter_bcs, a->jitter_hue, a->p_grey, a->p_blur,
                     a->sigma_min, a->sigma_max, KM_VERSION);
    km_free(buf);
    if (n >= (int)sizeof txt) return km_err(KM_EINTERNAL, "config.json too long");
    return km_write_file_atomic(path, txt, (size_t)n);
}

/* A pair [lo, hi] of numbers into floats; absent and optional: unchanged. */
static km_status cfg_pair(const km_json *j, const char *path, const char *key, int optional, float *lo, float *hi) {
    const km_json *v = km_json_get(j, key);
    if (!v) return optional ? KM_OK : km_err(KM_EMISSING, "%s: missing setting '%s'", path, key);
    if (v->type != KM_JSON_ARR || v->n != 2 || v->items[0].type != KM_JSON_NUM || v->items[1].type != KM_JSON_NUM)
        return km_err(KM_EFORMAT, "%s: '%s' must be an array of two numbers", path, key);
    *lo = (float)v->items[0].num;
    *hi = (float)v->items[1].num;
    return KM_OK;
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
    v = s ? NULL : km_json_get(&j, "data");
    if (!s && (!v || v->type != KM_JSON_STR)) s = km_err(KM_EFORMAT, "%s: 'data' must be a string", path);
    if (!s) c->data = km_strdup(v->str);
    double p_jitter = 0, p_grey = 0, p_blur = 0;
    if (!s) s = km_json_setting_int(&j, path, "epochs", &c->epochs);
    if (!s) s = km_json_setting_int(&j, path, "batch", &c->batch);
    if (!s) s = km_json_setting_num(&j, path, "lr", &c->lr);
    if (!s) s = km_json_setting_num(&j, path, "temperature", &c->temperature);
    if (!s) s = km_json_setting_num(&j, path, "weight_decay", &c->weight_decay);
    if (!s) s = km_json_setting_int(&j, path, "size", &c->size);
    if (!s) s = km_json_setting_int(&j, path, "resnet", &c->resnet);
    v = s ? NULL : km_json_get(&j, "seed");
    if (!s && (!v || v->type != KM_JSON_NUM || !v->is_int || v->i < 0))
        s = km_err(v ? KM_EFORMAT : KM_EMISSING, "%s: 'seed' must be an integer >= 0", path);
    if (!s) c->seed = (uint64_t)v->i;
    if (!s) s = km_json_setting_int(&j, path, "threads", &c->threads);
    if (!s) s = km_json_setting_int(&j, path, "max_images", &c->max_images);
    if (!s) s = km_json_setting_int(&j, path, "max_steps", &c->max_steps);
    if (!s) s = cfg_pair(&j, path, "crop_scale", 0, &c->aug.scale_min, &c->aug.scale_max);
    if (!s) s = km_json_setting_num(&j, path, "p_jitter", &p_jitter);
    if (!s) s = km_json_setting_num(&j, path, "p_grey", &p_grey);
    if (!s) s = km_json_setting_num(&j, path, "p_blur", &p_blur);
    /* not recorded before --resume existed: the (fixed) defaults */
    if (!s) s = cfg_pair(&j, path, "jitter", 1, &c->aug.jitter_bcs, &c->aug.jitter_hue);
    if (!s) s = cfg_pair(&j, path, "blur_sigma", 1, &c->aug.sigma_min, &c->aug.sigma_max);
    c->aug.p_jitter = (float)p_jitter;
    c->aug.p_grey = (float)p_grey;
    c->aug.p_blur = (float)p_blur;
    if (!s && c->threads < 1) s = km_err(KM_EFORMAT, "%s: 'threads' must be >= 1", path);
    km_json_free(&j);
    km_free(path);
    if (s) km_simclr_config_free(c);
    return s;
}

void km_simclr_config_free(km_simclr_config *c) {
    km_free((char *)c->data);
    c->data = NULL;
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

static const char *const k_head_names[4] = {"projection_head.0.weight", "projection_head.0.bias",
                                             "projection_head.2.weight", "projection_head.2.bias"};
static const int k_head_ndim[4] = {2, 1, 2, 1};
static const int64_t k_head_shape[4][2] = {{HD, HD}, {HD, 0}, {PD, HD}, {PD, 0}};
static const size_t k_head_off[4] = {HEAD_W1, HEAD_B1, HEAD_W2, HEAD_B2};

static void head_to_tdict(const float *h, km_tdict *d) {
    for (int i = 0; i < 4; i++) km_tdict_add(d, k_head_names[i], KM_F32, k_head_ndim[i], k_head_shape[i], h + k_head_off[i]);
}

static km_status save_head(const float *h, const char *path) {
    km_tdict d;
    km_tdict_init(&d);
    head_to_tdict(h, &d);
    km_tdict_set_meta(&d, "format", "pt");
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

/* ---- the resumable checkpoint (last.safetensors, simclr.h) ---- */

typedef struct {
    float *head, *em, *ev, *hm, *hv; /* head weights; Adam moments of encoder and head */
    size_t n_enc;
    int *order, n; /* the image order (permuted further every epoch) */
    int epoch, steps, done;
    km_rng rs, ra; /* shuffling, views */
} sc_state;

static void meta_put_int(km_tdict *d, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    km_tdict_set_meta(d, key, b);
}

static void meta_put_rng(km_tdict *d, const char *key, const km_rng *r) {
    char b[80];
    snprintf(b, sizeof b, "%016llx %016llx %016llx %016llx", (unsigned long long)r->s[0], (unsigned long long)r->s[1],
             (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
    km_tdict_set_meta(d, key, b);
}

static km_status meta_get_rng(const km_tdict *d, const char *key, const char *file, km_rng *r) {
    const char *v = km_tdict_get_meta(d, key);
    unsigned long long x[4];
    char tail;
    if (!v || sscanf(v, "%16llx %16llx %16llx %16llx%c", &x[0], &x[1], &x[2], &x[3], &tail) != 4)
        return km_err(KM_EFORMAT, "%s: missing or malformed metadata '%s'", file, key);
    for (int i = 0; i < 4; i++) r->s[i] = x[i];
    return KM_OK;
}

static km_status save_last(const char *path, const km_unetpp *m, const km_simclr_config *c, const sc_state *st) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    head_to_tdict(st->head, &d);
    int64_t ne = (int64_t)st->n_enc, nh = HEAD_N, no = st->n;
    km_tdict_add(&d, "adam.encoder.exp_avg", KM_F32, 1, &ne, st->em);
    km_tdict_add(&d, "adam.encoder.exp_avg_sq", KM_F32, 1, &ne, st->ev);
    km_tdict_add(&d, "adam.head.exp_avg", KM_F32, 1, &nh, st->hm);
    km_tdict_add(&d, "adam.head.exp_avg_sq", KM_F32, 1, &nh, st->hv);
    _Static_assert(sizeof(int) == 4, "pretrain.order is stored as int32");
    km_tdict_add(&d, "pretrain.order", KM_I32, 1, &no, st->order);
    km_tdict_set_meta(&d, "format", "pt");
    km_tdict_set_meta(&d, "kmseg_version", KM_VERSION);
    km_tdict_set_meta(&d, "arch", "UnetPlusPlus+SimCLRProjectionHead");
    km_tdict_set_meta(&d, "encoder_name", c->resnet == 34 ? "resnet34" : "resnet18");
    meta_put_int(&d, "size", c->size);
    meta_put_int(&d, "seed", (long long)c->seed);
    meta_put_int(&d, "pretrain.epoch", st->epoch);
    meta_put_int(&d, "pretrain.steps", st->steps);
    meta_put_int(&d, "pretrain.done", st->done);
    meta_put_int(&d, "pretrain.n_train", st->n);
    meta_put_rng(&d, "pretrain.rng_shuffle", &st->rs);
    meta_put_rng(&d, "pretrain.rng_aug", &st->ra);
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

/* Reads last.safetensors into *m (a new model) and st (buffers allocated by
 * the caller, sizes st->n_enc and st->n); errors name the file. */
static km_status load_last(const char *path, const km_simclr_config *c, km_unetpp **m, sc_state *st) {
    *m = NULL;
    km_tdict d, md;
    km_tdict_init(&d);
    km_tdict_init(&md);
    km_status s = km_safetensors_load(path, &d);
    if (s) return km_err_prefix(s, "--resume: ");
    long long epoch = 0, steps = 0, done = 0, n = 0;
    s = km_train_meta_int(&d, "pretrain.epoch", path, &epoch);
    if (!s) s = km_train_meta_int(&d, "pretrain.steps", path, &steps);
    if (!s) s = km_train_meta_int(&d, "pretrain.done", path, &done);
    if (!s) s = km_train_meta_int(&d, "pretrain.n_train", path, &n);
    if (!s && (epoch < 1 || epoch > c->epochs || steps < 1 || (done != 0 && done != 1)))
        s = km_err(KM_EFORMAT, "%s: inconsistent metadata (epoch %lld of %d, %lld steps, done %lld)", path, epoch,
                   c->epochs, steps, done);
    if (!s && n != st->n)
        s = km_err(KM_EFORMAT, "%s: checkpoint of a run over %lld training images, but %s gives %d now", path, n,
                   c->data, st->n);
    if (!s) s = meta_get_rng(&d, "pretrain.rng_shuffle", path, &st->rs);
    if (!s) s = meta_get_rng(&d, "pretrain.rng_aug", path, &st->ra);
    /* the student's state dict: everything but the head, Adam and order */
    for (int i = 0; i < d.n && !s; i++) {
        const km_tensor *t = &d.items[i];
        if (strncmp(t->name, "projection_head.", 16) && strncmp(t->name, "adam.", 5) && strncmp(t->name, "pretrain.", 9))
            km_tdict_add(&md, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    if (!s) s = km_unetpp_from_tdict(m, &md, path);
    if (!s && km_unetpp_resnet_depth(*m) != c->resnet)
        s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", path,
                   km_unetpp_resnet_depth(*m), c->resnet);
    const float *w;
    for (int i = 0; i < 4 && !s; i++) {
        s = km_tdict_get_f32(&d, path, k_head_names[i], k_head_ndim[i], k_head_shape[i], &w);
        if (!s) memcpy(st->head + k_head_off[i], w, sizeof(float) * (size_t)km_numel(k_head_ndim[i], k_head_shape[i]));
    }
    int64_t ne = (int64_t)st->n_enc, nh = HEAD_N;
    const char *an[4] = {"adam.encoder.exp_avg", "adam.encoder.exp_avg_sq", "adam.head.exp_avg", "adam.head.exp_avg_sq"};
    float *ad[4] = {st->em, st->ev, st->hm, st->hv};
    for (int i = 0; i < 4 && !s; i++) {
        s = km_tdict_get_f32(&d, path, an[i], 1, i < 2 ? &ne : &nh, &w);
        if (!s) memcpy(ad[i], w, sizeof(float) * (size_t)(i < 2 ? ne : nh));
    }
    const km_tensor *o = s ? NULL : km_tdict_find(&d, "pretrain.order");
    if (!s && (!o || o->dtype != KM_I32 || o->ndim != 1 || o->shape[0] != st->n))
        s = km_err(o ? KM_EFORMAT : KM_EMISSING, "%s: missing or malformed 'pretrain.order' (int32 [%d] expected)", path,
                   st->n);
    if (!s) {
        /* a permutation of 0..n-1 */
        char *seen = km_calloc((size_t)st->n + 1);
        const int32_t *ov = o->data;
        for (int i = 0; i < st->n && !s; i++) {
            if (ov[i] < 0 || ov[i] >= st->n || seen[ov[i]])
                s = km_err(KM_EFORMAT, "%s: 'pretrain.order' is not a permutation of 0..%d", path, st->n - 1);
            else
                seen[ov[i]] = 1, st->order[i] = ov[i];
        }
        km_free(seen);
    }
    km_tdict_free(&md);
    km_tdict_free(&d);
    st->epoch = (int)epoch;
    st->steps = (int)steps;
    st->done = (int)done;
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
    if (c->stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", c->stop_after);
    if (c->resume && c->fixed_batch) return km_err(KM_EARG, "fixed_batch runs cannot be resumed");
    return KM_OK;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

km_status km_simclr_run(const km_simclr_config *c, FILE *log, km_simclr_result *res) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->last_loss = res->first_epoch_loss = res->last_epoch_loss = NAN;
    km_status s = check_config(c);
    if (s) return s;
    char *p_cfg = km_path_join(c->out, "config.json"), *p_last = km_path_join(c->out, "last.safetensors");
    /* resuming a folder without config.json: not a pretraining run */
    if (c->resume && !file_exists(p_cfg)) {
        s = km_err(KM_EIO, "--resume %s: %s: no such file (not a kmseg pretrain run folder)", c->out, p_cfg);
        km_free(p_cfg), km_free(p_last);
        return s;
    }
    if (c->threads > 0) km_set_threads(c->threads);

    km_dataset_index idx;
    km_issues iss;
    km_issues_init(&iss);
    s = km_dataset_scan(c->data, NULL, &idx, &iss); /* images only: no label needed */
    if (s) {
        km_issues_free(&iss);
        km_free(p_cfg), km_free(p_last);
        return s;
    }
    s = km_issues_status(&iss, c->data);
    km_issues_free(&iss);
    if (s) {
        km_dataset_index_free(&idx);
        km_free(p_cfg), km_free(p_last);
        return s;
    }
    int n_all = c->max_images && c->max_images < idx.n ? c->max_images : idx.n;
    km_split sp;
    km_split_random(n_all, c->seed, 0.1, 0.1, &sp);
    if (sp.n_train < 2) {
        km_split_free(&sp);
        km_dataset_index_free(&idx);
        km_free(p_cfg), km_free(p_last);
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
        km_free(p_cfg), km_free(p_last);
        return s;
    }
    char *p_met = km_path_join(c->out, "metrics.csv");
    char *p_enc = km_path_join(c->out, "encoder.safetensors"), *p_head = km_path_join(c->out, "projection_head.safetensors");
    int have_last = c->resume && file_exists(p_last);
    if (!c->resume) {
        s = km_mkdir_p(c->out);
        if (!s) s = write_config(c, p_cfg, sp.n_train);
        /* a checkpoint of an earlier run in this folder must not be resumed */
        if (!s && remove(p_last) && errno != ENOENT)
            s = km_err(KM_EIO, "%s: cannot remove the earlier run's checkpoint: %s", p_last, strerror(errno));
    }

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
    sc_state st;
    memset(&st, 0, sizeof st);
    st.n_enc = n_enc;
    st.n = ds.n;
    float *head = st.head = km_malloc(sizeof(float) * HEAD_N), *ghead = km_malloc(sizeof(float) * HEAD_N);
    float *hm = st.hm = km_calloc(sizeof(float) * HEAD_N), *hv = st.hv = km_calloc(sizeof(float) * HEAD_N);
    float *em = st.em = km_calloc(sizeof(float) * n_enc), *ev = st.ev = km_calloc(sizeof(float) * n_enc);
    {
        km_rng hr;
        km_rng_seed(&hr, c->seed ^ KM_SIMCLR_HEAD_SALT);
        double b1 = 1.0 / sqrt((double)HD);
        for (int i = 0; i < HEAD_N; i++) head[i] = (float)uni(&hr, -b1, b1); /* both layers have fan-in 512 */
    }
    int *order = st.order = km_malloc(sizeof(int) * ds.n);
    for (int i = 0; i < ds.n; i++) order[i] = i;
    km_rng_seed(&st.rs, c->seed ^ 0x5348554646ULL); /* shuffling */
    km_rng_seed(&st.ra, c->seed ^ KM_SIMCLR_AUG_SALT);
    if (!s && have_last) {
        km_unetpp *lm = NULL;
        s = load_last(p_last, c, &lm, &st);
        if (!s) {
            km_unetpp_free(m);
            m = lm;
        }
    }
    res->resumed_epoch = st.epoch;
    if (!s && c->resume && log) {
        if (have_last)
            fprintf(log, "resuming %s after epoch %d (%d steps)%s\n", c->out, st.epoch, st.steps,
                    st.done ? ": the run had already finished" : "");
        else
            fprintf(log, "resuming %s: no checkpoint yet (killed in epoch 1), starting over\n", c->out);
    }
    /* drop log rows written after the checkpoint (killed between the log
     * write and the checkpoint write) */
    if (!s && have_last) s = km_text_keep_lines(p_met, st.epoch + 1);

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
    km_rng *rs = &st.rs, *ra = &st.ra;

    km_csv csv;
    const char *cols[] = {"epoch", "steps", "images", "loss", "lr", "seconds", "img_per_s"};
    int csv_open = 0;
    if (!s) {
        s = km_csv_open(&csv, p_met, cols, 7, have_last);
        csv_open = !s;
    }
    if (!s) s = km_unetpp_reserve(m, B, S, S);
    int steps_per_epoch = ds.n / N, nstep = 0; /* nstep: this process's steps */
    if (!s && log && !st.done)
        fprintf(log, "SimCLR pretraining: resnet%d, %d train images, %dx%d, batch %d (%d views), %d steps/epoch, "
                     "lr %g, T %g, %d threads\n",
                c->resnet, ds.n, S, S, N, B, steps_per_epoch, c->lr, c->temperature, T);
    while (!s && !st.done && !(c->stop_after && st.epoch >= c->stop_after)) {
        int ep = st.epoch + 1;
        km_rng_shuffle(rs, order, ds.n);
        km_progress pg = {0};
        char lbl[64], extra[64];
        snprintf(lbl, sizeof lbl, "pretrain %d/%d", ep, c->epochs);
        if (log) km_progress_start(&pg, log, lbl, (int64_t)steps_per_epoch * N, "img");
        double esum = 0.0, t0 = km_now();
        int esteps = 0;
        for (int sti = 0; sti < steps_per_epoch && !s; sti++) {
            if (c->max_steps && st.steps >= c->max_steps) break;
            int fill = !(c->fixed_batch && nstep > 0);
            if (fill)
                for (int b = 0; b < B; b++) km_simclr_draw(ra, S, &c->aug, &views[b]);
            const int *bi = order + (size_t)sti * N;
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
                s = km_err(KM_EINTERNAL, "epoch %d step %d: the NT-Xent loss is %g (diverged; lower --lr)", ep, sti + 1,
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
            st.steps++; /* Adam's step counter */
            nstep++;
            km_adam_step(km_unetpp_params(m), km_unetpp_grads(m), em, ev, n_enc, (float)c->lr, 0.9f, 0.999f, 1e-8f,
                         (float)c->weight_decay, st.steps);
            km_adam_step(head, ghead, hm, hv, HEAD_N, (float)c->lr, 0.9f, 0.999f, 1e-8f, (float)c->weight_decay,
                         st.steps);
            if (nstep == 1) res->first_loss = loss;
            res->last_loss = loss;
            res->images += N;
            esum += loss;
            esteps++;
            if (log) {
                snprintf(extra, sizeof extra, "loss %.4f", loss);
                km_progress_update(&pg, (int64_t)(sti + 1) * N, extra);
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
        if (isnan(res->first_epoch_loss)) res->first_epoch_loss = el;
        res->last_epoch_loss = el;
        st.epoch = ep;
        st.done = ep >= c->epochs || (c->max_steps && st.steps >= c->max_steps);
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
        /* checkpoint every epoch, the resumable state last: a killed run
         * keeps its last complete epoch */
        if (!s) s = save_encoder(m, p_enc, c, ep);
        if (!s) s = save_head(head, p_head);
        if (!s) s = save_last(p_last, m, c, &st);
    }
    res->epochs_done = st.epoch;
    res->steps = st.steps;
    res->finished = st.done;
    if (!s && st.epoch == 0)
        s = km_err(KM_EARG, "no training step was run (--max-steps %d, %d steps per epoch)", c->max_steps,
                   steps_per_epoch);
    if (csv_open) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (!s && log && nstep)
        fprintf(log, "wrote %s (encoder) and %s after %d epochs, %d steps\n", p_enc, p_head, st.epoch, st.steps);
    km_free(p_cfg), km_free(p_met), km_free(p_enc), km_free(p_head), km_free(p_last);
    km_free(head), km_free(ghead), km_free(hm), km_free(hv), km_free(em), km_free(ev);
    km_free(x), km_free(work), km_free(feat), km_free(dfeat), km_free(g), km_free(dg), km_free(h1), km_free(dh1);
    km_free(a1), km_free(pr), km_free(dpr), km_free(ntw), km_free(views), km_free(order);
    km_unetpp_free(m);
    km_dataset_free(&ds);
    km_split_free(&sp);
    return s;
}

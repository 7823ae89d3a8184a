/* unetpp.c - smp UnetPlusPlus (v0.3.4) with a torchvision ResNet18/34 encoder.
 *
 * Matches segmentation_models_pytorch/decoders/unetplusplus/{decoder,model}.py,
 * encoders/resnet.py and torchvision/models/resnet.py (BasicBlock). See
 * reference-arch.md section 2 for the wiring table this file implements.
 *
 * Memory layout: one parameter block (smp state_dict order), a mirrored
 * gradient block and two Adam moment blocks; one activation block and a
 * mirrored activation-gradient block, carved once per (N, H, W) by
 * km_unetpp_reserve. */
#include "unetpp.h"

#include "../io/load.h"
#include "../io/safetensors.h"
#include "../nn/conv2d.h"
#include "../nn/ops.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#define MAXENT 400
#define NAMELEN 64
#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

/* A conv (no bias) + BatchNorm2d (+ ReLU) unit: torchvision's conv/bn pairs and
 * smp's Conv2dReLU. */
typedef struct {
    size_t w, gamma, beta; /* parameter offsets */
    size_t rm, rv;         /* buffer offsets */
    int bn;                /* BatchNorm index (num_batches_tracked) */
    int cin, cout, k, s, p, relu;
    km_conv_dims d;
    float *in, *gin;     /* input activation (not owned) */
    float *conv, *gconv; /* conv output = BN input */
    float *out, *gout;   /* BN (+ReLU) output */
    float *mean, *invstd;
} unit;

typedef struct {
    unit c1, c2, ds;
    int has_ds;
    float *in, *gin;
    float *res, *gres; /* relu(c2 + identity) */
} resblock;

typedef struct {
    int d, l;
    unit c1, c2;
    int cup, nskip, skipc[4], h, w; /* h, w: size of the upsampled input */
    float *xin, *gxin;              /* input to upsample */
    float *skip[4], *gskip[4];
    float *cat, *gcat;
} decblock;

struct km_unetpp {
    int depth;
    int edepth;    /* smp encoder_depth D (3..5): encoder stages 1..D, decoder blocks on D levels */
    int dec_ch[5]; /* smp decoder_channels: the output channels of blocks x_0_0 .. x_0_{D-1} (D used) */
    int ndec;      /* decoder blocks: D(D-1)/2 + 1 (11 for D = 5) */
    km_unetpp_entry ent[MAXENT];
    char names[MAXENT][NAMELEN];
    int nent;
    float *params, *grads, *adam_m, *adam_v;
    size_t nparams, nparams_enc; /* nparams_enc: the encoder's prefix of params */
    float *bufs;
    size_t nbufs;
    int64_t nbt[128];
    int nbn;
    int adam_t;

    unit stem;
    resblock blocks[16];
    int nblocks, layer_start[5];
    decblock dec[11];
    size_t head_w, head_b;

    /* activations for the reserved batch geometry */
    int rN, rH, rW, rT, planned; /* rT: threads at reserve (conv workspace depends on it) */
    float *act, *gact;
    size_t nact, ngact, ngact_enc; /* ngact_enc: the encoder's prefix of gact */
    /* Gradients that are produced and consumed inside one unit / block
     * (BatchNorm input gradient, concat gradient) share two scratch buffers
     * instead of each having its own: ~40% less memory for the backward. */
    float *gscr_conv, *gscr_cat;
    size_t nscr_conv, nscr_cat;
    float *work;
    size_t nwork;
    int32_t *argmax;
    float *x, *gx;           /* input copy */
    float *pool, *gpool;     /* maxpool output */
    int32_t *pool_arg;
    float *logits, *glogits; /* head output */
    float *F[5], *gF[5];     /* decoder inputs F0..F{D-1}: encoder stages D..1 */
    int FC[5];
    int lastN, lastH, lastW, last_train, last_encoder_only;
    km_unetpp_profile *prof;
    float *bn_cap; /* km_unetpp_bn_capture */
    const km_bn_sync *sync; /* km_unetpp_set_sync */
    int last_sync;          /* the last forward ran with sync (its backward does too) */
    float *ggrads;          /* sync: G gradient blocks of nparams */
    int ng;                 /* blocks allocated in ggrads */
};

void km_unetpp_set_profile(km_unetpp *m, km_unetpp_profile *p) { m->prof = p; }

static double conv_flop(const km_conv_dims *d) {
    return 2.0 * d->N * d->K * d->C * d->kh * d->kw * d->OH * d->OW;
}

/* Convolution calls with optional profiling. Backward costs two GEMMs (dW and
 * dX) when din is wanted, one otherwise. */
static void conv_fwd(km_unetpp *m, float *out, const float *in, const float *w, const float *b,
                     const km_conv_dims *d) {
    double t0 = m->prof ? km_now() : 0;
    km_conv2d_forward(out, in, w, b, d, m->work);
    if (m->prof) {
        m->prof->fwd_s += km_now() - t0;
        m->prof->fwd_flop += conv_flop(d);
        m->prof->fwd_gemm_flop += km_conv2d_gemm_flop(d);
        if (getenv("KMSEG_CONV_TRACE")) /* per-layer timings for bench/ */
            fprintf(stderr, "F %d %d %d %d %d %d %d %d %.5f\n", d->N, d->C, d->H, d->W, d->K,
                    d->kh, d->sh, d->ph, km_now() - t0);
    }
}

static void conv_bwd(km_unetpp *m, float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, const km_conv_dims *d) {
    double t0 = m->prof ? km_now() : 0;
    km_conv2d_backward(din, dw, db, dout, in, w, d, m->work);
    if (m->prof) {
        m->prof->bwd_s += km_now() - t0;
        m->prof->bwd_flop += conv_flop(d) * (din ? 2 : 1);
        m->prof->bwd_gemm_flop += km_conv2d_gemm_flop(d) * (din ? 2 : 1);
        if (getenv("KMSEG_CONV_TRACE"))
            fprintf(stderr, "B %d %d %d %d %d %d %d %d %d %.5f\n", d->N, d->C, d->H, d->W, d->K,
                    d->kh, d->sh, d->ph, din != NULL, km_now() - t0);
    }
}

/* Synchronised BatchNorm (km_unetpp_set_sync): the forward's images are the
 * local groups one after the other and every convolution runs per group with
 * the group's images alone, as a separate forward of that micro-batch would
 * (a GEMM's summation order depends on the images it batches); parameter
 * gradients go to the group's block of ggrads. */
static int group_images(const km_unetpp *m, int g) { return m->sync->count[m->sync->g0 + g]; }

static void conv_fwd_groups(km_unetpp *m, float *out, const float *in, const float *w, const float *b,
                            const km_conv_dims *d) {
    size_t xin = (size_t)d->C * d->H * d->W, xout = (size_t)d->K * d->OH * d->OW;
    for (int g = 0, i0 = 0; g < m->sync->G; i0 += group_images(m, g), g++) {
        if (!group_images(m, g)) continue;
        km_conv_dims dg = *d;
        dg.N = group_images(m, g);
        conv_fwd(m, out + xout * i0, in + xin * i0, w, b, &dg);
    }
}

/* dw, db: offsets into a gradient block (db: (size_t)-1 for none). */
static void conv_bwd_groups(km_unetpp *m, float *din, size_t dw, size_t db, const float *dout, const float *in,
                            const float *w, const km_conv_dims *d) {
    size_t xin = (size_t)d->C * d->H * d->W, xout = (size_t)d->K * d->OH * d->OW;
    for (int g = 0, i0 = 0; g < m->sync->G; i0 += group_images(m, g), g++) {
        if (!group_images(m, g)) continue;
        km_conv_dims dg = *d;
        dg.N = group_images(m, g);
        float *gg = m->ggrads + m->nparams * (size_t)g;
        conv_bwd(m, din ? din + xin * i0 : NULL, gg + dw, db == (size_t)-1 ? NULL : gg + db, dout + xout * i0,
                 in + xin * i0, w, &dg);
    }
}

/* ------------------------------------------------------------------ entries */

static size_t add_entry(km_unetpp *m, const char *name, km_unetpp_kind kind, int ndim, int64_t a,
                        int64_t b, int64_t c, int64_t d) {
    KM_ASSERT(m->nent < MAXENT);
    km_unetpp_entry *e = &m->ent[m->nent];
    KM_ASSERT(strlen(name) < NAMELEN);
    strcpy(m->names[m->nent], name);
    e->name = m->names[m->nent];
    e->ndim = ndim;
    int64_t sh[4] = {a, b, c, d};
    e->numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = sh[i];
        e->numel *= (size_t)sh[i];
    }
    e->kind = kind;
    if (kind == KM_UNETPP_PARAM) {
        e->offset = m->nparams;
        m->nparams += e->numel;
    } else if (kind == KM_UNETPP_BUFFER) {
        e->offset = m->nbufs;
        m->nbufs += e->numel;
    } else {
        e->numel = 1;
        e->offset = (size_t)m->nbn++;
    }
    m->nent++;
    return e->offset;
}

static void def_unit(km_unetpp *m, unit *u, const char *conv_name, const char *bn_prefix, int cin,
                     int cout, int k, int s, int p, int relu) {
    char n[NAMELEN];
    memset(u, 0, sizeof *u);
    u->cin = cin;
    u->cout = cout;
    u->k = k;
    u->s = s;
    u->p = p;
    u->relu = relu;
    u->w = add_entry(m, conv_name, KM_UNETPP_PARAM, 4, cout, cin, k, k);
    snprintf(n, sizeof n, "%s.weight", bn_prefix);
    u->gamma = add_entry(m, n, KM_UNETPP_PARAM, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.bias", bn_prefix);
    u->beta = add_entry(m, n, KM_UNETPP_PARAM, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.running_mean", bn_prefix);
    u->rm = add_entry(m, n, KM_UNETPP_BUFFER, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.running_var", bn_prefix);
    u->rv = add_entry(m, n, KM_UNETPP_BUFFER, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.num_batches_tracked", bn_prefix);
    u->bn = (int)add_entry(m, n, KM_UNETPP_COUNTER, 0, 0, 0, 0, 0);
}

/* Decoder block (d, l): channels per reference-arch.md table 2.4. Only the
 * d = 0 column takes decoder_channels (smp UnetPlusPlusDecoder); the blocks
 * with d > 0 output the encoder's skip channels. */
const int km_unetpp_default_decoder[5] = {256, 128, 64, 32, 16};
static const int F_CH5[5] = {512, 256, 128, 64, 64}; /* ResNet stages 5..1 */

/* Channels of the decoder input F[i] (encoder stage D - i) and of block
 * (d > 0, l)'s output: smp's skip_channels, the next shallower stage's (none
 * for the last level). */
static int f_ch(const km_unetpp *m, int i) { return F_CH5[i + 5 - m->edepth]; }
static int skip_ch(const km_unetpp *m, int l) { return l < m->edepth - 1 ? f_ch(m, l + 1) : 0; }
static int dec_out_ch(const km_unetpp *m, int d, int l) { return d == 0 ? m->dec_ch[l] : skip_ch(m, l); }

static void define(km_unetpp *m, int depth) {
    static const int r18[4] = {2, 2, 2, 2}, r34[4] = {3, 4, 6, 3};
    const int *nb = depth == 34 ? r34 : r18;
    char cn[NAMELEN], bn[NAMELEN];
    m->depth = depth;
    def_unit(m, &m->stem, "encoder.conv1.weight", "encoder.bn1", 3, 64, 7, 2, 3, 1);
    int inp = 64, nl = m->edepth - 1; /* ResNet layers 1..D-1 (stages 2..D); smp's unused ones are left out */
    for (int L = 0; L < nl; L++) {
        int planes = 64 << L;
        m->layer_start[L] = m->nblocks;
        for (int i = 0; i < nb[L]; i++) {
            resblock *b = &m->blocks[m->nblocks++];
            memset(b, 0, sizeof *b);
            int stride = (i == 0 && L > 0) ? 2 : 1;
            snprintf(cn, sizeof cn, "encoder.layer%d.%d.conv1.weight", L + 1, i);
            snprintf(bn, sizeof bn, "encoder.layer%d.%d.bn1", L + 1, i);
            def_unit(m, &b->c1, cn, bn, inp, planes, 3, stride, 1, 1);
            snprintf(cn, sizeof cn, "encoder.layer%d.%d.conv2.weight", L + 1, i);
            snprintf(bn, sizeof bn, "encoder.layer%d.%d.bn2", L + 1, i);
            def_unit(m, &b->c2, cn, bn, planes, planes, 3, 1, 1, 0);
            if (stride != 1 || inp != planes) {
                b->has_ds = 1;
                snprintf(cn, sizeof cn, "encoder.layer%d.%d.downsample.0.weight", L + 1, i);
                snprintf(bn, sizeof bn, "encoder.layer%d.%d.downsample.1", L + 1, i);
                def_unit(m, &b->ds, cn, bn, inp, planes, 1, stride, 0, 0);
            }
            inp = planes;
        }
    }
    m->layer_start[nl] = m->nblocks;
    m->nparams_enc = m->nparams; /* every 'encoder.*' parameter so far, none after */
    /* decoder blocks in smp's registration order: for l < last, for d <= l; then x_0_last */
    int k = 0, last = m->edepth - 1;
    for (int l = 0; l <= last; l++)
        for (int d = 0; d <= (l == last ? 0 : l); d++) {
            decblock *b = &m->dec[k++];
            memset(b, 0, sizeof *b);
            b->d = d;
            b->l = l;
            b->cup = d == l ? f_ch(m, d) : dec_out_ch(m, d, l - 1);
            if (l < last) {
                for (int j = d + 1; j <= l; j++) b->skipc[b->nskip++] = dec_out_ch(m, j, l);
                b->skipc[b->nskip++] = f_ch(m, l + 1);
            }
            int cin = b->cup;
            for (int j = 0; j < b->nskip; j++) cin += b->skipc[j];
            int cout = dec_out_ch(m, d, l);
            snprintf(cn, sizeof cn, "decoder.blocks.x_%d_%d.conv1.0.weight", d, l);
            snprintf(bn, sizeof bn, "decoder.blocks.x_%d_%d.conv1.1", d, l);
            def_unit(m, &b->c1, cn, bn, cin, cout, 3, 1, 1, 1);
            snprintf(cn, sizeof cn, "decoder.blocks.x_%d_%d.conv2.0.weight", d, l);
            snprintf(bn, sizeof bn, "decoder.blocks.x_%d_%d.conv2.1", d, l);
            def_unit(m, &b->c2, cn, bn, cout, cout, 3, 1, 1, 1);
        }
    m->ndec = k;
    KM_ASSERT(k == last * (last + 1) / 2 + 1);
    m->head_w = add_entry(m, "segmentation_head.0.weight", KM_UNETPP_PARAM, 4, 1, m->dec_ch[last], 3, 3);
    m->head_b = add_entry(m, "segmentation_head.0.bias", KM_UNETPP_PARAM, 1, 1, 0, 0, 0);
}

static decblock *dec_at(km_unetpp *m, int d, int l) {
    for (int i = 0; i < m->ndec; i++)
        if (m->dec[i].d == d && m->dec[i].l == l) return &m->dec[i];
    KM_ASSERT(0);
}

static void init_unit_bn(km_unetpp *m, const unit *u) {
    for (int c = 0; c < u->cout; c++) {
        m->params[u->gamma + c] = 1.0f;
        m->params[u->beta + c] = 0.0f;
        m->bufs[u->rm + c] = 0.0f;
        m->bufs[u->rv + c] = 1.0f;
    }
}

/* torchvision ResNet: kaiming_normal_(mode="fan_out", relu): std = sqrt(2/(cout*k*k)). */
static void init_encoder_unit(km_unetpp *m, const unit *u, km_rng *r) {
    double std = sqrt(2.0 / ((double)u->cout * u->k * u->k));
    size_t n = (size_t)u->cout * u->cin * u->k * u->k;
    for (size_t i = 0; i < n; i++) m->params[u->w + i] = (float)(std * km_rng_normal(r));
    init_unit_bn(m, u);
}

/* smp initialize_decoder: kaiming_uniform_(fan_in, relu): bound sqrt(6/fan_in). */
static void init_decoder_unit(km_unetpp *m, const unit *u, km_rng *r) {
    double bound = sqrt(6.0 / ((double)u->cin * u->k * u->k));
    size_t n = (size_t)u->cout * u->cin * u->k * u->k;
    for (size_t i = 0; i < n; i++)
        m->params[u->w + i] = (float)((2.0 * km_rng_uniform(r) - 1.0) * bound);
    init_unit_bn(m, u);
}

km_unetpp *km_unetpp_create(int resnet_depth, uint64_t seed) {
    return km_unetpp_create_dec(resnet_depth, km_unetpp_default_decoder, seed);
}

km_unetpp *km_unetpp_create_dec(int resnet_depth, const int decoder_channels[5], uint64_t seed) {
    return km_unetpp_create_arch(resnet_depth, 5, decoder_channels, seed);
}

km_unetpp *km_unetpp_create_arch(int resnet_depth, int encoder_depth, const int *decoder_channels, uint64_t seed) {
    KM_ASSERT(resnet_depth == 18 || resnet_depth == 34);
    KM_ASSERT(encoder_depth >= KM_UNETPP_MIN_ENCODER_DEPTH && encoder_depth <= 5);
    km_unetpp *m = km_calloc(sizeof *m);
    m->edepth = encoder_depth;
    for (int i = 0; i < encoder_depth; i++) {
        KM_ASSERT(decoder_channels[i] > 0);
        m->dec_ch[i] = decoder_channels[i];
    }
    define(m, resnet_depth);
    m->params = km_calloc(sizeof(float) * m->nparams);
    m->grads = km_calloc(sizeof(float) * m->nparams);
    m->adam_m = km_calloc(sizeof(float) * m->nparams);
    m->adam_v = km_calloc(sizeof(float) * m->nparams);
    m->bufs = km_calloc(sizeof(float) * m->nbufs);
    km_rng r;
    km_rng_seed(&r, seed);
    init_encoder_unit(m, &m->stem, &r);
    for (int i = 0; i < m->nblocks; i++) {
        init_encoder_unit(m, &m->blocks[i].c1, &r);
        init_encoder_unit(m, &m->blocks[i].c2, &r);
        if (m->blocks[i].has_ds) init_encoder_unit(m, &m->blocks[i].ds, &r);
    }
    for (int i = 0; i < m->ndec; i++) {
        init_decoder_unit(m, &m->dec[i].c1, &r);
        init_decoder_unit(m, &m->dec[i].c2, &r);
    }
    /* head: xavier_uniform, bound sqrt(6/(fan_in+fan_out)) = sqrt(6/(C*9 + 1*9)), C = the last decoder
     * channel count (16 by default); bias 0 */
    int hc = m->dec_ch[m->edepth - 1];
    double hb = sqrt(6.0 / (hc * 9 + 9));
    for (int i = 0; i < hc * 9; i++)
        m->params[m->head_w + i] = (float)((2.0 * km_rng_uniform(&r) - 1.0) * hb);
    m->params[m->head_b] = 0.0f;
    return m;
}

/* The memory km_unetpp_reserve plans (activations, their gradients,
 * workspace, gradient scratch). */
static void free_activations(km_unetpp *m) {
    km_free(m->act);
    km_free(m->gact);
    km_free(m->work);
    km_free(m->gscr_conv);
    km_free(m->gscr_cat);
    m->act = m->gact = m->work = m->gscr_conv = m->gscr_cat = NULL;
    m->planned = 0;
}

void km_unetpp_free(km_unetpp *m) {
    if (!m) return;
    km_free(m->params);
    km_free(m->grads);
    km_free(m->adam_m);
    km_free(m->adam_v);
    km_free(m->bufs);
    km_free(m->ggrads);
    free_activations(m);
    km_free(m->argmax);
    km_free(m);
}

int km_unetpp_resnet_depth(const km_unetpp *m) { return m->depth; }
int km_unetpp_encoder_depth(const km_unetpp *m) { return m->edepth; }
int km_unetpp_feature_channels(const km_unetpp *m) { return f_ch(m, 0); }
const int *km_unetpp_decoder_channels(const km_unetpp *m) { return m->dec_ch; }
size_t km_unetpp_num_params(const km_unetpp *m) { return m->nparams; }
size_t km_unetpp_num_encoder_params(const km_unetpp *m) { return m->nparams_enc; }
int km_unetpp_num_entries(const km_unetpp *m) { return m->nent; }
const km_unetpp_entry *km_unetpp_entry_at(const km_unetpp *m, int i) { return &m->ent[i]; }
float *km_unetpp_params(km_unetpp *m) { return m->params; }
float *km_unetpp_grads(km_unetpp *m) { return m->grads; }
float *km_unetpp_buffers(km_unetpp *m) { return m->bufs; }

float *km_unetpp_tensor(km_unetpp *m, const char *name, int grad) {
    for (int i = 0; i < m->nent; i++) {
        const km_unetpp_entry *e = &m->ent[i];
        if (strcmp(e->name, name)) continue;
        if (e->kind == KM_UNETPP_PARAM) return (grad ? m->grads : m->params) + e->offset;
        if (e->kind == KM_UNETPP_BUFFER && !grad) return m->bufs + e->offset;
        return NULL;
    }
    return NULL;
}

/* ------------------------------------------------------------ state dicts */

void km_unetpp_to_tdict(const km_unetpp *m, km_tdict *out) {
    for (int i = 0; i < m->nent; i++) {
        const km_unetpp_entry *e = &m->ent[i];
        if (e->kind == KM_UNETPP_COUNTER)
            km_tdict_add(out, e->name, KM_I64, 0, NULL, &m->nbt[e->offset]);
        else
            km_tdict_add(out, e->name, KM_F32, e->ndim, e->shape,
                         (e->kind == KM_UNETPP_BUFFER ? m->bufs : m->params) + e->offset);
    }
}

static km_status copy_entry(km_unetpp *m, const km_unetpp_entry *e, const km_tdict *sd,
                            const char *key, const char *file) {
    if (e->kind == KM_UNETPP_COUNTER) {
        km_tensor *t = km_tdict_find(sd, key);
        if (!t) {
            m->nbt[e->offset] = 0; /* torchvision 2017 files have none: BatchNorm fills 0 */
            return KM_OK;
        }
        if (t->dtype != KM_I64 || km_numel(t->ndim, t->shape) != 1)
            return km_err(KM_EFORMAT, "%s: tensor '%s' should be an int64 scalar, found %s with %lld elements",
                          file, key, km_dtype_name(t->dtype), (long long)km_numel(t->ndim, t->shape));
        m->nbt[e->offset] = *(int64_t *)t->data;
        return KM_OK;
    }
    const float *src;
    km_status s = km_tdict_get_f32(sd, file, key, e->ndim, e->shape, &src);
    if (s) return s;
    memcpy((e->kind == KM_UNETPP_BUFFER ? m->bufs : m->params) + e->offset, src, sizeof(float) * e->numel);
    return KM_OK;
}

/* smp's encoder_depth D from the decoder: its blocks x_0_0 .. x_0_{D-1}
 * (0 when there is none). */
static int encoder_depth_from_tdict(const km_tdict *sd) {
    int D = 0;
    for (int l = 0; l < 5; l++) {
        char key[NAMELEN];
        snprintf(key, sizeof key, "decoder.blocks.x_0_%d.conv1.0.weight", l);
        if (km_tdict_find(sd, key)) D = l + 1;
    }
    return D;
}

/* decoder_channels from the output channels of blocks x_0_0 .. x_0_{D-1}
 * (smp's default where a block is absent: copy_entry then names the missing
 * tensor). */
static km_status decoder_from_tdict(const km_tdict *sd, const char *file, int D, int dec[5]) {
    for (int l = 0; l < D; l++) {
        char key[NAMELEN];
        snprintf(key, sizeof key, "decoder.blocks.x_0_%d.conv1.0.weight", l);
        const km_tensor *t = km_tdict_find(sd, key);
        dec[l] = km_unetpp_default_decoder[l + 5 - D];
        if (!t) continue;
        if (t->ndim != 4 || t->shape[0] < 1 || t->shape[0] > KM_UNETPP_MAX_DECODER_CH)
            return km_err(KM_ESHAPE, "%s: tensor '%s' should be [C, Cin, 3, 3] with 1 <= C <= %d (%d dims, "
                          "first %lld)", file, key, KM_UNETPP_MAX_DECODER_CH, t->ndim,
                          t->ndim ? (long long)t->shape[0] : 0LL);
        dec[l] = (int)t->shape[0];
    }
    return KM_OK;
}

/* A tensor of a ResNet layer past stage D ('encoder.layerK.*', K >= D): smp
 * keeps those layers in its state dict at any encoder_depth, unused by its
 * forward; kmseg leaves them out. */
static int beyond_depth(const char *name, int D) {
    if (strncmp(name, "encoder.layer", 13)) return 0;
    int K = name[13] - '0';
    return K >= D && K <= 4 && name[14] == '.';
}

void km_unetpp_format_decoder(const int *ch, int encoder_depth, char buf[64]) {
    int n = 0;
    buf[0] = '\0';
    for (int i = 0; i < encoder_depth && n < 64; i++) n += snprintf(buf + n, 64 - n, i ? ",%d" : "%d", ch[i]);
}

km_status km_unetpp_check_encoder_depth(int encoder_depth) {
    if (encoder_depth < KM_UNETPP_MIN_ENCODER_DEPTH || encoder_depth > 5)
        return km_err(KM_EARG, "--encoder-depth %d: expected %d, 4 or 5 (smp's encoder_depth for a ResNet U-Net++)",
                      encoder_depth, KM_UNETPP_MIN_ENCODER_DEPTH);
    return KM_OK;
}

km_status km_unetpp_check_size(int size, int encoder_depth) {
    km_status s = km_unetpp_check_encoder_depth(encoder_depth);
    int q = 1 << encoder_depth;
    if (!s && (size < q || size % q))
        s = km_err(KM_EARG, "--size %d: expected a positive multiple of %d (U-Net++ with encoder depth %d downsamples "
                   "%d times)", size, q, encoder_depth, encoder_depth);
    return s;
}

km_status km_unetpp_parse_decoder(const char *spec, int encoder_depth, int ch[5]) {
    int D = encoder_depth;
    km_status s = km_unetpp_check_encoder_depth(D);
    if (s) return s;
    if (!spec && D == 5) {
        memcpy(ch, km_unetpp_default_decoder, sizeof(int) * 5);
        return KM_OK;
    }
    if (!spec)
        return km_err(KM_EARG, "--encoder-depth %d needs --decoder-channels with %d entries (smp has no default "
                      "below depth 5), e.g. %s", D, D, D == 3 ? "64,32,16" : "128,64,32,16");
    const char *p = spec;
    for (int i = 0; i < D; i++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > KM_UNETPP_MAX_DECODER_CH || *end != (i < D - 1 ? ',' : '\0'))
            return km_err(KM_EARG, "--decoder-channels '%s': expected %d comma-separated integers in [1, %d], one "
                          "per decoder stage of --encoder-depth %d (smp's default at depth 5: 256,128,64,32,16)",
                          spec, D, KM_UNETPP_MAX_DECODER_CH, D);
        ch[i] = (int)v;
        p = end + 1;
    }
    return KM_OK;
}

km_status km_unetpp_check_arch(const km_unetpp *m, int encoder_depth, const char *spec, const char *file) {
    if (m->edepth != encoder_depth)
        return km_err(KM_EARG, "%s: a model of encoder depth %d, but --encoder-depth %d%s", file, m->edepth,
                      encoder_depth, encoder_depth == 5 ? " (the default)" : "");
    int want[5];
    km_status s = km_unetpp_parse_decoder(spec, encoder_depth, want);
    if (s || !memcmp(want, m->dec_ch, sizeof(int) * (size_t)encoder_depth)) return s;
    char have[64], w[64];
    km_unetpp_format_decoder(m->dec_ch, m->edepth, have);
    km_unetpp_format_decoder(want, encoder_depth, w);
    return km_err(KM_EARG, "%s: decoder channels %s, but --decoder-channels %s%s", file, have, w,
                  spec ? "" : " (the default)");
}

/* Strict, like load_state_dict(strict=True): no unexpected keys, except the
 * layers smp keeps past stage D (beyond_depth). */
static km_status check_unexpected(const km_unetpp *m, const km_tdict *sd, const char *file) {
    for (int i = 0; i < sd->n; i++) {
        const char *k = sd->items[i].name;
        int found = !strncmp(k, "adam.", 5) || beyond_depth(k, m->edepth);
        for (int j = 0; j < m->nent && !found; j++) found = !strcmp(k, m->ent[j].name);
        if (!found)
            return km_err(KM_EFORMAT, "%s: unexpected tensor '%s' for UnetPlusPlus/resnet%d with encoder depth %d",
                          file, k, m->depth, m->edepth);
    }
    return KM_OK;
}

km_status km_unetpp_from_tdict(km_unetpp **out, const km_tdict *sd, const char *file) {
    *out = NULL;
    int depth;
    if (km_tdict_find(sd, "encoder.layer1.2.conv1.weight")) depth = 34; /* resnet34's layer1 has 3 blocks */
    else if (km_tdict_find(sd, "encoder.layer1.1.conv1.weight")) depth = 18;
    else
        return km_err(KM_EMISSING,
                      "%s: not an smp UnetPlusPlus/ResNet checkpoint (no 'encoder.layer1.*' tensors; "
                      "%d tensors, first '%s')",
                      file, sd->n, sd->n ? sd->items[0].name : "none");
    int D = encoder_depth_from_tdict(sd), dec[5];
    if (D < KM_UNETPP_MIN_ENCODER_DEPTH)
        return km_err(KM_EMISSING, "%s: no decoder blocks 'decoder.blocks.x_0_0' .. 'x_0_%d' (an smp UnetPlusPlus "
                      "with encoder depth %d to 5 is expected)", file, KM_UNETPP_MIN_ENCODER_DEPTH - 1,
                      KM_UNETPP_MIN_ENCODER_DEPTH);
    km_status s = decoder_from_tdict(sd, file, D, dec);
    if (s) return s;
    km_unetpp *m = km_unetpp_create_arch(depth, D, dec, 0);
    for (int i = 0; i < m->nent && !s; i++) s = copy_entry(m, &m->ent[i], sd, m->ent[i].name, file);
    if (!s) s = check_unexpected(m, sd, file);
    if (s) {
        km_unetpp_free(m);
        return s;
    }
    *out = m;
    return KM_OK;
}

km_status km_unetpp_load(km_unetpp **out, const char *path) {
    km_tdict sd;
    km_tdict_init(&sd);
    km_status s = km_load_checkpoint(path, &sd);
    if (!s) s = km_unetpp_from_tdict(out, &sd, path);
    km_tdict_free(&sd);
    return s;
}

km_status km_unetpp_load_encoder(km_unetpp *m, const char *path, int *n_ignored) {
    km_tdict sd;
    km_tdict_init(&sd);
    km_status s = km_load_checkpoint(path, &sd);
    if (s) return s;
    int ign = 0;
    for (int i = 0; i < sd.n && !s; i++) {
        const char *k = sd.items[i].name;
        char full[NAMELEN + 16];
        snprintf(full, sizeof full, "%s%s", strncmp(k, "encoder.", 8) ? "encoder." : "", k);
        if (!strncmp(full + 8, "fc.", 3) || beyond_depth(full, m->edepth)) {
            ign++; /* the classifier; the stages past the encoder depth (smp loads and never runs them) */
            continue;
        }
        int found = 0;
        for (int j = 0; j < m->nent && !found; j++) found = !strcmp(full, m->ent[j].name);
        if (!found)
            s = km_err(KM_EFORMAT, "%s: unexpected tensor '%s' for a resnet%d encoder", path, k,
                       m->depth);
    }
    for (int j = 0; j < m->nent && !s; j++) {
        const km_unetpp_entry *e = &m->ent[j];
        if (strncmp(e->name, "encoder.", 8)) continue;
        const char *key = km_tdict_find(&sd, e->name) ? e->name : e->name + 8;
        if (e->kind != KM_UNETPP_COUNTER && !km_tdict_find(&sd, key))
            s = km_err(KM_EMISSING, "%s: missing encoder tensor '%s' (a torchvision resnet%d checkpoint, or an "
                       "encoder of depth >= %d, is expected)", path, e->name + 8, m->depth, m->edepth);
        else
            s = copy_entry(m, e, &sd, key, path);
    }
    km_tdict_free(&sd);
    if (n_ignored) *n_ignored = ign;
    return s;
}

km_status km_unetpp_save(const km_unetpp *m, const char *path, const km_tdict *extra_meta) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    km_tdict_set_meta(&d, "format", "pt");
    km_tdict_set_meta(&d, "kmseg_version", KM_VERSION);
    km_tdict_set_meta(&d, "arch", "UnetPlusPlus");
    km_tdict_set_meta(&d, "encoder_name", m->depth == 34 ? "resnet34" : "resnet18");
    if (extra_meta)
        for (int i = 0; i < extra_meta->nmeta; i++)
            km_tdict_set_meta(&d, extra_meta->meta[i].key, extra_meta->meta[i].value);
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

/* --------------------------------------------------------- optimiser state */

size_t km_unetpp_bn_stats_floats(const km_unetpp *m) { return m->nbufs + (size_t)m->nbn; }

void km_unetpp_bn_capture(km_unetpp *m, float *stats) {
    m->bn_cap = stats;
    if (stats) memset(stats, 0, sizeof(float) * km_unetpp_bn_stats_floats(m));
}

/* Entries are defined per unit as running_mean, running_var,
 * num_batches_tracked (def_unit): a counter's two predecessors are its
 * buffers. */
void km_unetpp_bn_apply(km_unetpp *m, const float *stats) {
    for (int i = 2; i < m->nent; i++) {
        const km_unetpp_entry *e = &m->ent[i];
        if (e->kind != KM_UNETPP_COUNTER || stats[m->nbufs + e->offset] == 0.0f) continue;
        const km_unetpp_entry *rm = &m->ent[i - 2], *rv = &m->ent[i - 1];
        km_bn_running_update(m->bufs + rm->offset, m->bufs + rv->offset, stats + rm->offset, stats + rv->offset,
                             (int)rm->numel, BN_MOMENTUM);
        m->nbt[e->offset]++;
    }
}

km_status km_unetpp_set_sync(km_unetpp *m, const km_bn_sync *s) {
    m->sync = s;
    if (!s || s->G <= m->ng) return KM_OK;
    km_free(m->ggrads);
    m->ng = 0;
    m->ggrads = km_try_malloc(sizeof(float) * m->nparams * (size_t)s->G);
    if (!m->ggrads) {
        m->sync = NULL;
        return km_err(KM_ENOMEM, "cannot allocate %d gradient blocks of %.1f MB for --sync-bn", s->G,
                      m->nparams * 4.0 / 1e6);
    }
    m->ng = s->G;
    return KM_OK;
}

float *km_unetpp_group_grads(km_unetpp *m, int g) {
    KM_ASSERT(m->sync && g >= 0 && g < m->sync->G);
    return m->ggrads + m->nparams * (size_t)g;
}

void km_unetpp_zero_grad(km_unetpp *m) {
    memset(m->grads, 0, sizeof(float) * m->nparams);
    if (m->sync) memset(m->ggrads, 0, sizeof(float) * m->nparams * (size_t)m->sync->G);
}

void km_unetpp_adam_step(km_unetpp *m, float lr, float beta1, float beta2, float eps,
                         float weight_decay) {
    m->adam_t++;
    km_adam_step(m->params, m->grads, m->adam_m, m->adam_v, m->nparams, lr, beta1, beta2, eps,
                 weight_decay, m->adam_t);
}

int km_unetpp_adam_t(const km_unetpp *m) { return m->adam_t; }

void km_unetpp_adam_reset(km_unetpp *m) {
    m->adam_t = 0;
    memset(m->adam_m, 0, sizeof(float) * m->nparams);
    memset(m->adam_v, 0, sizeof(float) * m->nparams);
}

void km_unetpp_optim_to_tdict(const km_unetpp *m, km_tdict *out) {
    int64_t n = (int64_t)m->nparams, t = m->adam_t;
    km_tdict_add(out, "adam.exp_avg", KM_F32, 1, &n, m->adam_m);
    km_tdict_add(out, "adam.exp_avg_sq", KM_F32, 1, &n, m->adam_v);
    km_tdict_add(out, "adam.step", KM_I64, 0, NULL, &t);
}

km_status km_unetpp_optim_from_tdict(km_unetpp *m, const km_tdict *d, const char *file) {
    int64_t n = (int64_t)m->nparams;
    const float *a, *b;
    km_status s = km_tdict_get_f32(d, file, "adam.exp_avg", 1, &n, &a);
    if (!s) s = km_tdict_get_f32(d, file, "adam.exp_avg_sq", 1, &n, &b);
    if (s) return s;
    km_tensor *t = km_tdict_find(d, "adam.step");
    if (!t || t->dtype != KM_I64 || km_numel(t->ndim, t->shape) != 1)
        return km_err(KM_EMISSING, "%s: missing int64 scalar 'adam.step'", file);
    memcpy(m->adam_m, a, sizeof(float) * m->nparams);
    memcpy(m->adam_v, b, sizeof(float) * m->nparams);
    m->adam_t = (int)*(int64_t *)t->data;
    return KM_OK;
}

/* ------------------------------------------------------------- activations */

/* Layout pass: with base == NULL only counts; otherwise assigns pointers. */
typedef struct {
    km_unetpp *m;
    size_t off, goff, max_conv, max_cat;
    int assign;
} carver;

/* Reserves n floats of activation and, if g is given, n floats of gradient. */
static void carve(carver *c, float **x, float **g, size_t n) {
    n = (n + 15) & ~(size_t)15; /* keep 64-byte alignment */
    if (c->assign) {
        *x = c->m->act + c->off;
        if (g) *g = c->m->gact + c->goff;
    }
    c->off += n;
    if (g) c->goff += n;
}

static size_t plan_unit(carver *c, unit *u, float *in, float *gin, int N, int H, int W) {
    u->in = in;
    u->gin = gin;
    u->d = km_conv2d_dims(N, u->cin, H, W, u->cout, u->k, u->k, u->s, u->s, u->p, u->p);
    size_t n = (size_t)N * u->cout * u->d.OH * u->d.OW;
    carve(c, &u->conv, NULL, n);
    u->gconv = c->m->gscr_conv;
    if (n > c->max_conv) c->max_conv = n;
    carve(c, &u->out, &u->gout, n);
    carve(c, &u->mean, NULL, (size_t)u->cout);
    carve(c, &u->invstd, NULL, (size_t)u->cout);
    return km_conv2d_work_floats(&u->d);
}

static size_t plan(carver *c, int N, int H, int W) {
    km_unetpp *m = c->m;
    size_t work = 0, w;
#define WORK(x) (w = (x), work = w > work ? w : work)
    carve(c, &m->x, &m->gx, (size_t)N * 3 * H * W);
    WORK(plan_unit(c, &m->stem, m->x, m->gx, N, H, W));
    int h = H / 2, wd = W / 2;
    int ph = (h + 2 - 3) / 2 + 1, pw = (wd + 2 - 3) / 2 + 1;
    carve(c, &m->pool, &m->gpool, (size_t)N * 64 * ph * pw);
    carve(c, (float **)&m->pool_arg, NULL, (size_t)N * 64 * ph * pw);
    int D = m->edepth, last = D - 1;
    m->F[last] = m->stem.out;
    m->gF[last] = m->stem.gout;
    float *in = m->pool, *gin = m->gpool;
    h = ph;
    wd = pw;
    for (int L = 0; L < last; L++) {
        for (int i = m->layer_start[L]; i < m->layer_start[L + 1]; i++) {
            resblock *b = &m->blocks[i];
            b->in = in;
            b->gin = gin;
            WORK(plan_unit(c, &b->c1, in, gin, N, h, wd));
            if (b->has_ds) WORK(plan_unit(c, &b->ds, in, gin, N, h, wd));
            int oh = b->c1.d.OH, ow = b->c1.d.OW;
            WORK(plan_unit(c, &b->c2, b->c1.out, b->c1.gout, N, oh, ow));
            carve(c, &b->res, &b->gres, (size_t)N * b->c2.cout * oh * ow);
            in = b->res;
            gin = b->gres;
            h = oh;
            wd = ow;
        }
        m->F[last - 1 - L] = in;
        m->gF[last - 1 - L] = gin;
    }
    m->ngact_enc = c->goff; /* encoder gradients are carved first */
    /* decoder in execution order */
    for (int l = 0; l <= last; l++)
        for (int d = (l == last ? 0 : l); d >= 0; d--) {
            decblock *b = dec_at(m, d, l);
            if (d == l) {
                b->xin = m->F[d];
                b->gxin = m->gF[d];
            } else {
                decblock *p = dec_at(m, d, l - 1);
                b->xin = p->c2.out;
                b->gxin = p->c2.gout;
            }
            b->h = (H >> D) << l; /* resolution of the upsample input */
            b->w = (W >> D) << l;
            int k = 0;
            for (int j = d + 1; j <= l && l < last; j++, k++) {
                decblock *s = dec_at(m, j, l);
                b->skip[k] = s->c2.out;
                b->gskip[k] = s->c2.gout;
            }
            if (l < last) {
                b->skip[k] = m->F[l + 1];
                b->gskip[k] = m->gF[l + 1];
            }
            int cin = b->c1.cin, OH = 2 * b->h, OW = 2 * b->w;
            size_t ncat = (size_t)N * cin * OH * OW;
            carve(c, &b->cat, NULL, ncat);
            b->gcat = m->gscr_cat;
            if (ncat > c->max_cat) c->max_cat = ncat;
            WORK(plan_unit(c, &b->c1, b->cat, b->gcat, N, OH, OW));
            WORK(plan_unit(c, &b->c2, b->c1.out, b->c1.gout, N, OH, OW));
        }
    km_conv_dims hd = km_conv2d_dims(N, m->dec_ch[last], H, W, 1, 3, 3, 1, 1, 1, 1);
    WORK(km_conv2d_work_floats(&hd));
    carve(c, &m->logits, &m->glogits, (size_t)N * H * W);
#undef WORK
    return work;
}

km_status km_unetpp_reserve(km_unetpp *m, int N, int H, int W) {
    int q = 1 << m->edepth;
    if (N < 1 || H < q || W < q || H % q || W % q)
        return km_err(KM_ESHAPE,
                      "input must be N x 3 x H x W with H, W positive multiples of %d (encoder depth %d); got %d x 3 "
                      "x %d x %d", q, m->edepth, N, H, W);
    if (m->planned && m->rN == N && m->rH == H && m->rW == W && m->rT == km_get_threads())
        return KM_OK;
    free_activations(m);
    carver c = {m, 0, 0, 0, 0, 0};
    plan(&c, N, H, W);
    m->nact = c.off;
    m->ngact = c.goff;
    m->nscr_conv = c.max_conv;
    m->nscr_cat = c.max_cat;
    m->act = km_try_malloc(sizeof(float) * m->nact);
    m->gact = km_try_malloc(sizeof(float) * m->ngact);
    m->gscr_conv = km_try_malloc(sizeof(float) * m->nscr_conv);
    m->gscr_cat = km_try_malloc(sizeof(float) * m->nscr_cat);
    carver c2 = {m, 0, 0, 0, 0, 1};
    m->nwork = plan(&c2, N, H, W);
    m->work = km_try_malloc(sizeof(float) * (m->nwork ? m->nwork : 1));
    if (!m->act || !m->gact || !m->work || !m->gscr_conv || !m->gscr_cat) {
        free_activations(m);
        return km_err(KM_ENOMEM, "cannot allocate %.1f GB of activations for batch %d x 3 x %d x %d",
                      (m->nact + m->ngact) * 4.0 / 1e9, N, H, W);
    }
    m->planned = 1;
    m->rT = km_get_threads();
    m->rN = N;
    m->rH = H;
    m->rW = W;
    return KM_OK;
}

/* ------------------------------------------------------------------ forward */

/* Train mode with km_unetpp_set_sync: whole-batch statistics, the running
 * statistics updated once from them (every process alike). */
static void unit_forward_sync(km_unetpp *m, unit *u) {
    const km_conv_dims *d = &u->d;
    int HW = d->OH * d->OW;
    float unbiased[512];
    KM_ASSERT(u->cout <= 512);
    conv_fwd_groups(m, u->conv, u->in, m->params + u->w, NULL, d);
    km_bn_sync_forward(u->out, u->mean, u->invstd, unbiased, u->conv, m->params + u->gamma, m->params + u->beta,
                       m->sync, u->cout, HW, BN_EPS);
    km_bn_running_update(m->bufs + u->rm, m->bufs + u->rv, u->mean, unbiased, u->cout, BN_MOMENTUM);
    m->nbt[u->bn]++;
    if (u->relu) km_relu_forward(u->out, u->out, (size_t)m->lastN * u->cout * HW);
}

static void unit_forward(km_unetpp *m, unit *u, int train) {
    if (train && m->sync) {
        unit_forward_sync(m, u);
        return;
    }
    const km_conv_dims *d = &u->d;
    conv_fwd(m, u->conv, u->in, m->params + u->w, NULL, d);
    int HW = d->OH * d->OW;
    if (train && m->bn_cap) {
        km_bn_forward_train_stats(u->out, u->mean, u->invstd, m->bn_cap + u->rv, u->conv, m->params + u->gamma,
                                  m->params + u->beta, NULL, NULL, d->N, u->cout, HW, BN_EPS, BN_MOMENTUM);
        memcpy(m->bn_cap + u->rm, u->mean, sizeof(float) * u->cout);
        m->bn_cap[m->nbufs + u->bn] = 1.0f;
    } else if (train) {
        km_bn_forward_train(u->out, u->mean, u->invstd, u->conv, m->params + u->gamma,
                            m->params + u->beta, m->bufs + u->rm, m->bufs + u->rv, d->N, u->cout,
                            HW, BN_EPS, BN_MOMENTUM);
        m->nbt[u->bn]++;
    } else {
        km_bn_forward_eval(u->out, u->conv, m->params + u->gamma, m->params + u->beta,
                           m->bufs + u->rm, m->bufs + u->rv, d->N, u->cout, HW, BN_EPS);
    }
    if (u->relu) km_relu_forward(u->out, u->out, (size_t)d->N * u->cout * HW);
}

static void dec_forward(km_unetpp *m, decblock *b, int N, int train) {
    int OH = 2 * b->h, OW = 2 * b->w, HW = OH * OW, ct = b->c1.cin;
    for (int n = 0; n < N; n++) {
        float *cat = b->cat + (size_t)n * ct * HW;
        km_upsample2x_forward(cat, b->xin + (size_t)n * b->cup * b->h * b->w, 1, b->cup, b->h, b->w);
        if (b->nskip) {
            const float *ins[4];
            for (int k = 0; k < b->nskip; k++) ins[k] = b->skip[k] + (size_t)n * b->skipc[k] * HW;
            km_concat_forward(cat + (size_t)b->cup * HW, ins, b->skipc, b->nskip, 1, HW);
        }
    }
    unit_forward(m, &b->c1, train);
    unit_forward(m, &b->c2, train);
}

static void encoder_forward(km_unetpp *m, const float *x, int N, int H, int W, int train) {
    m->lastN = N; /* the units' image count (sync: may be 0, see km_unetpp_set_sync) */
    m->last_sync = train && m->sync;
    memcpy(m->x, x, sizeof(float) * N * 3 * H * W);
    unit_forward(m, &m->stem, train);
    km_maxpool3s2_forward(m->pool, m->pool_arg, m->stem.out, N, 64, H / 2, W / 2);
    for (int i = 0; i < m->nblocks; i++) {
        resblock *b = &m->blocks[i];
        unit_forward(m, &b->c1, train);
        unit_forward(m, &b->c2, train);
        const float *id = b->in;
        if (b->has_ds) {
            unit_forward(m, &b->ds, train);
            id = b->ds.out;
        }
        size_t n = (size_t)N * b->c2.cout * b->c2.d.OH * b->c2.d.OW;
        km_add_forward(b->res, b->c2.out, id, n);
        km_relu_forward(b->res, b->res, n);
    }
    m->lastH = H;
    m->lastW = W;
    m->last_train = train;
}

/* Reserve for a forward; a synchronised train-mode forward of no images (a
 * process whose micro-batches are empty) keeps the reserved geometry. */
static km_status forward_reserve(km_unetpp *m, int N, int H, int W, int train) {
    if (N == 0 && train && m->sync && m->planned && m->rH == H && m->rW == W) return KM_OK;
    return km_unetpp_reserve(m, N, H, W);
}

km_status km_unetpp_forward(km_unetpp *m, const float *x, int N, int H, int W, int train,
                            float *logits) {
    km_status s = forward_reserve(m, N, H, W, train);
    if (s) return s;
    encoder_forward(m, x, N, H, W, train);
    int last = m->edepth - 1;
    for (int l = 0; l <= last; l++)
        for (int d = (l == last ? 0 : l); d >= 0; d--) dec_forward(m, dec_at(m, d, l), N, train);
    km_conv_dims hd = km_conv2d_dims(N ? N : 1, m->dec_ch[last], H, W, 1, 3, 3, 1, 1, 1, 1);
    const float *top = dec_at(m, 0, last)->c2.out;
    if (m->last_sync)
        conv_fwd_groups(m, m->logits, top, m->params + m->head_w, m->params + m->head_b, &hd);
    else
        conv_fwd(m, m->logits, top, m->params + m->head_w, m->params + m->head_b, &hd);
    memcpy(logits, m->logits, sizeof(float) * N * H * W);
    m->last_encoder_only = 0;
    return KM_OK;
}

km_status km_unetpp_encoder_forward(km_unetpp *m, const float *x, int N, int H, int W, int train,
                                    float *feat) {
    km_status s = forward_reserve(m, N, H, W, train);
    if (s) return s;
    encoder_forward(m, x, N, H, W, train);
    memcpy(feat, m->F[0], sizeof(float) * N * f_ch(m, 0) * (H >> m->edepth) * (W >> m->edepth));
    m->last_encoder_only = 1;
    return KM_OK;
}

/* ----------------------------------------------------------------- backward */

/* d(relu)/d(pre) applied in place: g stays where the forward output is > 0
 * (PyTorch: gradient 0 at exactly 0). */
static void relu_mask_inplace(float *g, const float *out, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] = out[i] > 0.0f ? g[i] : 0.0f; /* branch-free: vectorises */
}

static void unit_backward_sync(km_unetpp *m, unit *u, int want_din) {
    const km_conv_dims *d = &u->d;
    int HW = d->OH * d->OW;
    memset(u->gconv, 0, sizeof(float) * (size_t)m->lastN * u->cout * HW);
    km_bn_sync_backward(u->gconv, m->ggrads + u->gamma, m->ggrads + u->beta, m->nparams, u->gout,
                        u->relu ? u->out : NULL, u->conv, m->params + u->gamma, u->mean, u->invstd, m->sync, u->cout,
                        HW);
    conv_bwd_groups(m, want_din ? u->gin : NULL, u->w, (size_t)-1, u->gconv, u->in, m->params + u->w, d);
}

static void unit_backward(km_unetpp *m, unit *u, int want_din) {
    if (m->last_sync) {
        unit_backward_sync(m, u, want_din);
        return;
    }
    const km_conv_dims *d = &u->d;
    int HW = d->OH * d->OW;
    size_t n = (size_t)d->N * u->cout * HW;
    memset(u->gconv, 0, sizeof(float) * n); /* shared scratch; the backward accumulates */
    if (u->relu)
        km_bn_relu_backward(u->gconv, m->grads + u->gamma, m->grads + u->beta, u->gout, u->out,
                            u->conv, m->params + u->gamma, u->mean, u->invstd, d->N, u->cout, HW);
    else
        km_bn_backward(u->gconv, m->grads + u->gamma, m->grads + u->beta, u->gout, u->conv,
                       m->params + u->gamma, u->mean, u->invstd, d->N, u->cout, HW);
    conv_bwd(m, want_din ? u->gin : NULL, m->grads + u->w, NULL, u->gconv, u->in, m->params + u->w, d);
}

static void dec_backward(km_unetpp *m, decblock *b, int N) {
    unit_backward(m, &b->c2, 1);
    memset(b->gcat, 0, sizeof(float) * N * b->c1.cin * 4 * b->h * b->w);
    unit_backward(m, &b->c1, 1);
    int OH = 2 * b->h, OW = 2 * b->w, HW = OH * OW, ct = b->c1.cin;
    for (int n = 0; n < N; n++) {
        const float *gcat = b->gcat + (size_t)n * ct * HW;
        km_upsample2x_backward(b->gxin + (size_t)n * b->cup * b->h * b->w, gcat, 1, b->cup, b->h,
                               b->w);
        if (b->nskip) {
            float *outs[4];
            for (int k = 0; k < b->nskip; k++) outs[k] = b->gskip[k] + (size_t)n * b->skipc[k] * HW;
            km_concat_backward(outs, b->skipc, b->nskip, gcat + (size_t)b->cup * HW, 1, HW);
        }
    }
}

static void encoder_backward(km_unetpp *m, float *dx) {
    int N = m->lastN, H = m->lastH, W = m->lastW;
    for (int i = m->nblocks - 1; i >= 0; i--) {
        resblock *b = &m->blocks[i];
        size_t n = (size_t)N * b->c2.cout * b->c2.d.OH * b->c2.d.OW;
        relu_mask_inplace(b->gres, b->res, n);
        km_add_backward(b->c2.gout, b->has_ds ? b->ds.gout : b->gin, b->gres, n);
        unit_backward(m, &b->c2, 1);
        unit_backward(m, &b->c1, 1);
        if (b->has_ds) unit_backward(m, &b->ds, 1);
    }
    km_maxpool3s2_backward(m->stem.gout, m->gpool, m->pool_arg, N, 64, H / 2, W / 2);
    unit_backward(m, &m->stem, dx != NULL); /* the input gradient costs a GEMM: only on request */
    if (dx) km_add_backward(dx, NULL, m->gx, (size_t)N * 3 * H * W);
}

void km_unetpp_backward(km_unetpp *m, const float *dlogits, float *dx) {
    KM_ASSERT(m->planned && m->last_train && !m->last_encoder_only);
    int N = m->lastN, H = m->lastH, W = m->lastW;
    memset(m->gact, 0, sizeof(float) * m->ngact);
    memcpy(m->glogits, dlogits, sizeof(float) * N * H * W);
    int top = m->edepth - 1;
    km_conv_dims hd = km_conv2d_dims(N ? N : 1, m->dec_ch[top], H, W, 1, 3, 3, 1, 1, 1, 1);
    decblock *last = dec_at(m, 0, top);
    if (m->last_sync)
        conv_bwd_groups(m, last->c2.gout, m->head_w, m->head_b, m->glogits, last->c2.out, m->params + m->head_w, &hd);
    else
        conv_bwd(m, last->c2.gout, m->grads + m->head_w, m->grads + m->head_b, m->glogits, last->c2.out,
                 m->params + m->head_w, &hd);
    for (int l = top; l >= 0; l--)
        for (int d = 0; d <= (l == top ? 0 : l); d++) dec_backward(m, dec_at(m, d, l), N);
    encoder_backward(m, dx);
}

void km_unetpp_encoder_backward(km_unetpp *m, const float *dfeat, float *dx) {
    KM_ASSERT(m->planned && m->last_train && m->last_encoder_only);
    int N = m->lastN, H = m->lastH, W = m->lastW;
    memset(m->gact, 0, sizeof(float) * m->ngact_enc); /* the decoder's part stays untouched */
    memcpy(m->gF[0], dfeat, sizeof(float) * N * f_ch(m, 0) * (H >> m->edepth) * (W >> m->edepth));
    encoder_backward(m, dx);
}

/* -------------------------------------------------------------------- loss */

double km_seg_loss(const float *logits, const float *y, size_t n, double bce_weight, float scale,
                   float *dlogits, double *bce_out, double *dice_out) {
    double bce = km_bce_logits_forward(logits, y, n);
    double dice = km_dice_logits_forward(logits, y, n);
    if (dlogits) {
        memset(dlogits, 0, sizeof(float) * n);
        km_bce_logits_backward(dlogits, logits, y, n, (float)(scale * bce_weight));
        km_dice_logits_backward(dlogits, logits, y, n, (float)(scale * (1.0 - bce_weight)));
    }
    if (bce_out) *bce_out = bce;
    if (dice_out) *dice_out = dice;
    return bce_weight * bce + (1.0 - bce_weight) * dice;
}

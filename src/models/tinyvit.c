/* tinyvit.c - TinyViT image encoder of LiteMedSAM / MobileSAM (see tinyvit.h).
 * Spec: docs/teacher-tinyvit.md section 1. Every activation is a channels-last
 * token matrix [H*W, C] (row-major over the grid), also in the convolutional
 * stage 0, so 1x1 convolutions and Linears are the same GEMM, depthwise
 * convolutions vectorise over channels, and the reference's NCHW <->
 * tokens reshapes are free. BatchNorm (eval) is folded into the convolution
 * weights and a bias at load, as Conv2d_BN.fuse() does. */
#include "tinyvit.h"
#include "../nn/basic.h"
#include "../nn/fastmath.h"
#include "../nn/gemm.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define PFX "image_encoder."
#define BN_EPS 1e-5   /* BatchNorm2d */
#define LN_EPS 1e-5f  /* attn.norm, mlp.norm */
#define NECK_EPS 1e-6f /* LayerNorm2d */
#define NECK_GRID 64  /* forward_features' hard-coded view(B, 64, 64, C) */
#define MAX_BLOCKS 64
#define COL_ROWS 128  /* output pixels per im2col chunk of a full convolution */

/* A Conv2d_BN (or plain conv) after folding: y = conv(x, w) + b. Layouts:
 * 1x1 -> [O, I] (a Linear), depthwise -> [k*k, C] (tap-major, so a tap's
 * weights are contiguous over channels), full kxk -> [O, k, k, I] (matches
 * the channels-last im2col rows). */
typedef struct {
    const float *w, *b;
} conv;

typedef struct {
    conv c1, c2, c3; /* 1x1 C->Hd, dw 3x3 Hd, 1x1 Hd->C */
} mbconv;

typedef struct {
    conv c1, c2, c3; /* 1x1 D->O, dw 3x3 stride s, 1x1 O->O */
    int stride;
} merge;

typedef struct {
    const float *ab;              /* [nH, N, N] gathered attention biases, N = ws*ws */
    const float *an_w, *an_b;     /* attn.norm [D] */
    const float *qkv_w, *qkv_b;   /* [3D, D] per-head q|k|v, [3D] */
    const float *proj_w, *proj_b; /* [D, D], [D] */
    const float *mn_w, *mn_b;     /* mlp.norm [D] */
    const float *fc1_w, *fc1_b;   /* [M, D], [M] */
    const float *fc2_w, *fc2_b;   /* [D, M], [D] */
    conv lc;                      /* local_conv, depthwise k x k */
} vit_block;

struct km_tinyvit {
    km_tinyvit_config cfg;
    int res[4];   /* grid side of each stage (stage 0 = patches_resolution) */
    float *params;
    conv pe0, pe2;  /* patch_embed.seq.0 / .2 */
    mbconv *mb;     /* depths[0] */
    merge mg[3];
    vit_block *blk[4]; /* stages 1..3 */
    const float *neck0, *n1_w, *n1_b, *neck2, *n3_w, *n3_b;
    /* Scratch, allocated at load (sizes from scratch_sizes()). */
    float *buf[4];
    size_t buf_floats[4];
    float *thr;     /* per-thread: attention scores [N, N] or an im2col chunk */
    size_t thr_floats; /* per thread */
    int nthr;       /* threads the per-thread scratch is allocated for */
    int nt;         /* km_get_threads() of the running forward (<= nthr): the team
                     * size of every region that indexes `thr` by thread */
};

/* ---------------------------------------------------------------- config -- */

static int merge_stride(int out_dim) {
    /* tiny_vit_sam.py PatchMerging: stride_c = 1 only for these widths. */
    return (out_dim == 320 || out_dim == 448 || out_dim == 576) ? 1 : 2;
}

static km_status need(const km_tdict *sd, const char *file, const char *name, int ndim,
                      const km_tensor **t) {
    *t = km_tdict_find(sd, name);
    if (!*t)
        return km_err(KM_EMISSING, "%s: missing tensor '%s' (not a TinyViT (LiteMedSAM / "
                      "MobileSAM) checkpoint, or not its image encoder?)", file, name);
    if ((*t)->dtype != KM_F32)
        return km_err(KM_EFORMAT, "%s: tensor '%s' has dtype %s, expected float32", file, name,
                      km_dtype_name((*t)->dtype));
    if ((*t)->ndim != ndim) {
        char b[96];
        return km_err(KM_ESHAPE, "%s: tensor '%s' has shape %s, expected %d dimensions", file,
                      name, km_shape_str(b, sizeof b, (*t)->ndim, (*t)->shape), ndim);
    }
    return KM_OK;
}

static km_status bad_shape(const char *file, const char *name, const km_tensor *t,
                           const char *expected) {
    char b[96];
    return km_err(KM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", file, name,
                  km_shape_str(b, sizeof b, t->ndim, t->shape), expected);
}

/* Number of consecutive `fmt` (with stage i, block j) keys present. */
static int count_blocks(const km_tdict *sd, const char *fmt, int i) {
    char n[160];
    int j = 0;
    for (;; j++) {
        snprintf(n, sizeof n, fmt, i, j);
        if (!km_tdict_find(sd, n)) return j;
    }
}

/* Heads and window of stage i from every block's attention_biases [nH, ws*ws]. */
static km_status infer_attention(const km_tdict *sd, const char *file, km_tinyvit_config *c,
                                 int i) {
    char n[160];
    const km_tensor *t;
    km_status s;
    for (int j = 0; j < c->depths[i]; j++) {
        snprintf(n, sizeof n, PFX "layers.%d.blocks.%d.attn.attention_biases", i, j);
        if ((s = need(sd, file, n, 2, &t))) return s;
        int nH = (int)t->shape[0], nb = (int)t->shape[1], ws = (int)lround(sqrt((double)nb));
        if (nH < 1 || ws < 1 || ws * ws != nb || c->embed_dims[i] % nH)
            return bad_shape(file, n, t, "[heads, ws*ws] with heads dividing the stage width");
        if (j > 0 && (nH != c->num_heads[i] || ws != c->window_sizes[i]))
            return km_err(KM_ESHAPE, "%s: tensor '%s' says %d heads, window %d, but block 0 of "
                          "stage %d has %d heads, window %d", file, n, nH, ws, i,
                          c->num_heads[i], c->window_sizes[i]);
        c->num_heads[i] = nH;
        c->window_sizes[i] = ws;
    }
    return KM_OK;
}

/* The stage widths, from the patch embedding and the three merges. */
static km_status infer_widths(const km_tdict *sd, const char *file, km_tinyvit_config *c) {
    const km_tensor *t, *t2;
    char n[160];
    km_status s;
    if ((s = need(sd, file, PFX "patch_embed.seq.0.c.weight", 4, &t))) return s;
    int k = (int)t->shape[3];
    if (t->shape[1] != 3 || t->shape[2] != k || (k != 1 && k != 3))
        return bad_shape(file, PFX "patch_embed.seq.0.c.weight", t,
                         "[E0/2, 3, k, k] with k = 1 (LiteMedSAM) or 3 (MobileSAM)");
    c->patch_k = k;
    if ((s = need(sd, file, PFX "patch_embed.seq.2.c.weight", 4, &t2))) return s;
    if (t2->shape[1] != t->shape[0] || t2->shape[2] != k || t2->shape[3] != k)
        return bad_shape(file, PFX "patch_embed.seq.2.c.weight", t2, "[E0, E0/2, k, k]");
    c->embed_dims[0] = (int)t2->shape[0];
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, PFX "layers.%d.downsample.conv1.c.weight", i);
        if ((s = need(sd, file, n, 4, &t))) return s;
        if (t->shape[1] != c->embed_dims[i] || t->shape[2] != 1 || t->shape[3] != 1) {
            char e[64];
            snprintf(e, sizeof e, "[E%d, %d, 1, 1]", i + 1, c->embed_dims[i]);
            return bad_shape(file, n, t, e);
        }
        c->embed_dims[i + 1] = (int)t->shape[0];
    }
    int last = c->embed_dims[3];
    if (merge_stride(last) != 1)
        return km_err(KM_ESHAPE, "%s: the last stage width is %d (tensor '" PFX "layers.2."
                      "downsample.conv1.c.weight'), but TinyViT keeps the 64x64 grid the neck "
                      "needs only for a last width of 320, 448 or 576 (PatchMerging stride "
                      "rule)", file, last);
    return KM_OK;
}

/* Grid sides per stage; the last must be the neck's hard-coded 64. */
static km_status infer_grids(const char *file, const km_tinyvit_config *c, int res[4]) {
    res[0] = c->patch_k == 1 ? c->img_size : c->img_size / 4;
    for (int i = 0; i < 3; i++)
        res[i + 1] = merge_stride(c->embed_dims[i + 1]) == 2 ? (res[i] + 1) / 2 : res[i];
    if (res[3] != NECK_GRID)
        return km_err(KM_ESHAPE, "%s: stage widths %d/%d/%d/%d give a %dx%d last grid at input "
                      "%d (PatchMerging stride rule), but the neck needs 64x64", file,
                      c->embed_dims[0], c->embed_dims[1], c->embed_dims[2], c->embed_dims[3],
                      res[3], res[3], c->img_size);
    return KM_OK;
}

/* Depths, heads, windows and the ratios. */
static km_status infer_blocks(const km_tdict *sd, const char *file, km_tinyvit_config *c) {
    const km_tensor *t;
    char n[160];
    km_status s;
    c->depths[0] = count_blocks(sd, PFX "layers.%d.blocks.%d.conv1.c.weight", 0);
    for (int i = 1; i < 4; i++)
        c->depths[i] = count_blocks(sd, PFX "layers.%d.blocks.%d.attn.attention_biases", i);
    for (int i = 0; i < 4; i++) {
        if (c->depths[i] == 0)
            return km_err(KM_EMISSING, "%s: missing tensor '" PFX "layers.%d.blocks.0.%s' (no "
                          "blocks in stage %d)", file, i,
                          i ? "attn.attention_biases" : "conv1.c.weight", i);
        if (c->depths[i] > MAX_BLOCKS)
            return km_err(KM_EFORMAT, "%s: %d blocks in stage %d, at most %d supported", file,
                          c->depths[i], i, MAX_BLOCKS);
        if (i && (s = infer_attention(sd, file, c, i))) return s;
    }
    if ((s = need(sd, file, PFX "layers.0.blocks.0.conv1.c.weight", 4, &t))) return s;
    if (t->shape[0] % c->embed_dims[0] || t->shape[0] < 1)
        return bad_shape(file, PFX "layers.0.blocks.0.conv1.c.weight", t, "[E0 * expand, E0, 1, 1]");
    c->mbconv_expand = (int)(t->shape[0] / c->embed_dims[0]);
    if ((s = need(sd, file, PFX "layers.1.blocks.0.mlp.fc1.weight", 2, &t))) return s;
    if (t->shape[0] % c->embed_dims[1] || t->shape[0] < 1)
        return bad_shape(file, PFX "layers.1.blocks.0.mlp.fc1.weight", t, "[E1 * mlp_ratio, E1]");
    c->mlp_ratio = (int)(t->shape[0] / c->embed_dims[1]);
    snprintf(n, sizeof n, PFX "layers.1.blocks.0.local_conv.c.weight");
    if ((s = need(sd, file, n, 4, &t))) return s;
    c->local_conv_k = (int)t->shape[3];
    if (c->local_conv_k % 2 == 0 || t->shape[2] != t->shape[3])
        return bad_shape(file, n, t, "[E1, 1, k, k] with k odd");
    if ((s = need(sd, file, PFX "neck.0.weight", 4, &t))) return s;
    c->out_chans = (int)t->shape[0];
    return KM_OK;
}

int km_tinyvit_detect(const km_tdict *sd) {
    return km_tdict_find(sd, PFX "patch_embed.seq.0.c.weight") != NULL;
}

km_status km_tinyvit_config_infer(const km_tdict *sd, const char *file, km_tinyvit_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    km_status s;
    if ((s = infer_widths(sd, file, cfg))) return s;
    cfg->img_size = cfg->patch_k == 1 ? 256 : 1024;
    int res[4];
    if ((s = infer_grids(file, cfg, res))) return s;
    return infer_blocks(sd, file, cfg);
}

/* ------------------------------------------------------------------ load -- */

/* Two passes over the same list: the first (arena NULL) checks shapes and
 * counts floats, the second fills the arena and sets the pointers. */
typedef struct {
    const km_tdict *sd;
    const char *file;
    float *arena;
    size_t used;
} loader;

static float *reserve(loader *L, size_t n) {
    float *p = L->arena ? L->arena + L->used : NULL;
    L->used += (n + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
    return p;
}

static km_status take(loader *L, const float **dst, const char *name, int ndim, int64_t d0,
                      int64_t d1) {
    int64_t shape[2] = {d0, d1};
    const float *src;
    km_status s = km_tdict_get_f32(L->sd, L->file, name, ndim, shape, &src);
    if (s) return s;
    size_t n = (size_t)km_numel(ndim, shape);
    float *p = reserve(L, n);
    if (p) {
        memcpy(p, src, n * sizeof(float));
        *dst = p;
    }
    return KM_OK;
}

typedef enum { CONV_1X1, CONV_DW, CONV_FULL } conv_kind;

/* Reorders conv weights [O, I, k, k] (scaled per output channel by a[o]) into
 * the layout of `kind` (see `conv`). */
static void fold_weights(float *w, const float *src, const double *a, int O, int I, int k,
                         conv_kind kind) {
    const int kk = k * k;
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++)
            for (int t = 0; t < kk; t++) {
                float v = (float)(src[((size_t)o * I + i) * kk + t] * a[o]);
                if (kind == CONV_DW) w[(size_t)t * O + o] = v;
                else w[((size_t)o * kk + t) * I + i] = v; /* 1x1: t = 0 -> [O, I] */
            }
}

/* Conv2d_BN `prefix` (.c.weight [O, I or 1, k, k] + .bn.*), folded:
 * a = bn.weight / sqrt(running_var + eps), b = bn.bias - running_mean * a
 * (in double, rounded once). num_batches_tracked is not read. */
static km_status take_cbn(loader *L, conv *cv, const char *prefix, int O, int I, int k,
                          conv_kind kind) {
    static const char *bn[4] = {"weight", "bias", "running_mean", "running_var"};
    char n[200];
    const float *w, *p[4];
    km_status s;
    int64_t ws[4] = {O, kind == CONV_DW ? 1 : I, k, k}, bs[1] = {O};
    snprintf(n, sizeof n, "%s.c.weight", prefix);
    if ((s = km_tdict_get_f32(L->sd, L->file, n, 4, ws, &w))) return s;
    for (int j = 0; j < 4; j++) {
        snprintf(n, sizeof n, "%s.bn.%s", prefix, bn[j]);
        if ((s = km_tdict_get_f32(L->sd, L->file, n, 1, bs, &p[j]))) return s;
    }
    float *dw = reserve(L, (size_t)km_numel(4, ws)), *db = reserve(L, (size_t)O);
    if (!dw) return KM_OK;
    double *a = km_malloc(sizeof(double) * (size_t)O);
    for (int o = 0; o < O; o++) {
        a[o] = (double)p[0][o] / sqrt((double)p[3][o] + BN_EPS);
        db[o] = (float)((double)p[1][o] - (double)p[2][o] * a[o]);
    }
    fold_weights(dw, w, a, O, kind == CONV_DW ? 1 : I, k, kind);
    km_free(a);
    cv->w = dw;
    cv->b = db;
    return KM_OK;
}

/* attention_biases [nH, ws*ws] gathered to [nH, N, N] with
 * idx[(y1,x1),(y2,x2)] = |y1-y2| * ws + |x1-x2| (spec 1.6). */
static km_status take_ab(loader *L, const float **dst, const char *name, int nH, int ws) {
    const int N = ws * ws;
    const float *src;
    int64_t shape[2] = {nH, N};
    km_status s = km_tdict_get_f32(L->sd, L->file, name, 2, shape, &src);
    if (s) return s;
    float *p = reserve(L, (size_t)nH * N * N);
    if (!p) return KM_OK;
    for (int h = 0; h < nH; h++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                int dy = abs(i / ws - j / ws), dx = abs(i % ws - j % ws);
                p[((size_t)h * N + i) * N + j] = src[(size_t)h * N + dy * ws + dx];
            }
    *dst = p;
    return KM_OK;
}

static km_status take_vit_block(loader *L, vit_block *bk, int i, int j, int D, int nH, int ws,
                                int M, int lk) {
    char n[200];
    km_status s;
#define BT(dst, field, nd, a, b_)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, PFX "layers.%d.blocks.%d.%s", i, j, field);                         \
        if ((s = take(L, &(dst), n, nd, a, b_))) return s;                                         \
    } while (0)
    snprintf(n, sizeof n, PFX "layers.%d.blocks.%d.attn.attention_biases", i, j);
    if ((s = take_ab(L, &bk->ab, n, nH, ws))) return s;
    BT(bk->an_w, "attn.norm.weight", 1, D, 0);
    BT(bk->an_b, "attn.norm.bias", 1, D, 0);
    BT(bk->qkv_w, "attn.qkv.weight", 2, 3 * D, D);
    BT(bk->qkv_b, "attn.qkv.bias", 1, 3 * D, 0);
    BT(bk->proj_w, "attn.proj.weight", 2, D, D);
    BT(bk->proj_b, "attn.proj.bias", 1, D, 0);
    BT(bk->mn_w, "mlp.norm.weight", 1, D, 0);
    BT(bk->mn_b, "mlp.norm.bias", 1, D, 0);
    BT(bk->fc1_w, "mlp.fc1.weight", 2, M, D);
    BT(bk->fc1_b, "mlp.fc1.bias", 1, M, 0);
    BT(bk->fc2_w, "mlp.fc2.weight", 2, D, M);
    BT(bk->fc2_b, "mlp.fc2.bias", 1, D, 0);
#undef BT
    snprintf(n, sizeof n, PFX "layers.%d.blocks.%d.local_conv", i, j);
    return take_cbn(L, &bk->lc, n, D, D, lk, CONV_DW);
}

static km_status take_stages(loader *L, km_tinyvit *e) {
    const km_tinyvit_config *c = &e->cfg;
    const int *E = c->embed_dims;
    char n[200];
    km_status s;
    for (int j = 0; j < c->depths[0]; j++) {
        const int C = E[0], Hd = C * c->mbconv_expand;
        snprintf(n, sizeof n, PFX "layers.0.blocks.%d.conv1", j);
        if ((s = take_cbn(L, &e->mb[j].c1, n, Hd, C, 1, CONV_1X1))) return s;
        snprintf(n, sizeof n, PFX "layers.0.blocks.%d.conv2", j);
        if ((s = take_cbn(L, &e->mb[j].c2, n, Hd, Hd, 3, CONV_DW))) return s;
        snprintf(n, sizeof n, PFX "layers.0.blocks.%d.conv3", j);
        if ((s = take_cbn(L, &e->mb[j].c3, n, C, Hd, 1, CONV_1X1))) return s;
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; i > 0 && j < c->depths[i]; j++)
            if ((s = take_vit_block(L, &e->blk[i][j], i, j, E[i], c->num_heads[i],
                                    c->window_sizes[i], E[i] * c->mlp_ratio, c->local_conv_k)))
                return s;
        if (i == 3) break;
        merge *m = &e->mg[i];
        snprintf(n, sizeof n, PFX "layers.%d.downsample.conv1", i);
        if ((s = take_cbn(L, &m->c1, n, E[i + 1], E[i], 1, CONV_1X1))) return s;
        snprintf(n, sizeof n, PFX "layers.%d.downsample.conv2", i);
        if ((s = take_cbn(L, &m->c2, n, E[i + 1], E[i + 1], 3, CONV_DW))) return s;
        snprintf(n, sizeof n, PFX "layers.%d.downsample.conv3", i);
        if ((s = take_cbn(L, &m->c3, n, E[i + 1], E[i + 1], 1, CONV_1X1))) return s;
    }
    return KM_OK;
}

/* A bias-free conv [O, I, k, k] into the CONV_FULL / CONV_1X1 layout. */
static km_status take_conv_nobias(loader *L, const float **dst, const char *name, int O, int I,
                                  int k) {
    int64_t shape[4] = {O, I, k, k};
    const float *src;
    km_status s = km_tdict_get_f32(L->sd, L->file, name, 4, shape, &src);
    if (s) return s;
    float *p = reserve(L, (size_t)O * I * k * k);
    if (!p) return KM_OK;
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++)
            for (int t = 0; t < k * k; t++)
                p[((size_t)o * k * k + t) * I + i] = src[((size_t)o * I + i) * k * k + t];
    *dst = p;
    return KM_OK;
}

static km_status take_all(loader *L, km_tinyvit *e) {
    const km_tinyvit_config *c = &e->cfg;
    const int k = c->patch_k, E0 = c->embed_dims[0], E3 = c->embed_dims[3], OC = c->out_chans;
    km_status s;
    conv_kind pk = k == 1 ? CONV_1X1 : CONV_FULL;
    if (E0 % 2)
        return km_err(KM_ESHAPE, "%s: patch embedding width %d is odd (expected E0/2 then E0)",
                      L->file, E0);
    if ((s = take_cbn(L, &e->pe0, PFX "patch_embed.seq.0", E0 / 2, 3, k, pk))) return s;
    if ((s = take_cbn(L, &e->pe2, PFX "patch_embed.seq.2", E0, E0 / 2, k, pk))) return s;
    if ((s = take_stages(L, e))) return s;
    if ((s = take_conv_nobias(L, &e->neck0, PFX "neck.0.weight", OC, E3, 1))) return s;
    if ((s = take(L, &e->n1_w, PFX "neck.1.weight", 1, OC, 0))) return s;
    if ((s = take(L, &e->n1_b, PFX "neck.1.bias", 1, OC, 0))) return s;
    if ((s = take_conv_nobias(L, &e->neck2, PFX "neck.2.weight", OC, OC, 3))) return s;
    if ((s = take(L, &e->n3_w, PFX "neck.3.weight", 1, OC, 0))) return s;
    return take(L, &e->n3_b, PFX "neck.3.bias", 1, OC, 0);
}

/* ------------------------------------------------------------- scratch -- */

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the four activation buffers (their use is fixed in the forward:
 * buf[0] the residual stream, buf[1] its partner, buf[2] and buf[3] wide
 * intermediates) and of the per-thread scratch. */
static void scratch_sizes(const km_tinyvit *e, size_t sz[4], size_t *thr) {
    const km_tinyvit_config *c = &e->cfg;
    const int *E = c->embed_dims;
    const size_t S = (size_t)c->img_size, R0 = (size_t)e->res[0];
    const size_t OC = (size_t)c->out_chans, TN = (size_t)NECK_GRID * NECK_GRID;
    size_t pe_mid = c->patch_k == 1 ? S * S : (S / 2) * (S / 2);
    sz[0] = zmax(R0 * R0 * E[0], TN * OC);
    sz[1] = zmax(S * S * 3, R0 * R0 * E[0]);
    sz[2] = pe_mid * E[0] / 2;
    sz[3] = 0;
    *thr = (size_t)COL_ROWS * zmax(9 * OC, (size_t)c->patch_k * c->patch_k * E[0] / 2);
    *thr = zmax(*thr, R0 * E[0] * (4 * (size_t)c->mbconv_expand + 1)); /* mbconv_forward */
    for (int i = 0; i < 4; i++) {
        size_t R = (size_t)e->res[i], T = R * R, D = (size_t)E[i];
        if (i < 3) { /* merge i: conv1 [T, E(i+1)], then the strided grid T2 */
            size_t T2 = (size_t)e->res[i + 1] * e->res[i + 1];
            sz[2] = zmax(sz[2], T * E[i + 1]);
            sz[3] = zmax(sz[3], T2 * E[i + 1]);
            sz[0] = zmax(sz[0], T2 * E[i + 1]);
        }
        if (i == 0) continue;
        size_t ws = (size_t)c->window_sizes[i], nw = (R + ws - 1) / ws, Tp = nw * nw * ws * ws;
        sz[0] = zmax(sz[0], T * D);
        sz[1] = zmax(sz[1], Tp * D);
        sz[2] = zmax(sz[2], zmax(Tp * 3 * D, T * D * c->mlp_ratio));
        sz[3] = zmax(sz[3], Tp * D);
        *thr = zmax(*thr, ws * ws * ws * ws);
    }
    sz[2] = zmax(sz[2], TN * OC);
    sz[0] = sz[1] = zmax(sz[0], sz[1]); /* the two swap roles in vit_block_forward */
}

/* (Re)allocates the per-thread scratch when the thread count grew since load. */
static void ensure_threads(km_tinyvit *e) {
    int nt = km_get_threads();
    if (nt <= e->nthr) return;
    km_free(e->thr);
    e->thr = km_malloc(sizeof(float) * e->thr_floats * (size_t)nt);
    e->nthr = nt;
}

km_status km_tinyvit_load(km_tinyvit **enc, const km_tdict *sd, const char *file) {
    *enc = NULL;
    km_tinyvit *e = km_calloc(sizeof *e);
    km_status s = km_tinyvit_config_infer(sd, file, &e->cfg);
    if (s == KM_OK) s = infer_grids(file, &e->cfg, e->res);
    if (s) {
        km_free(e);
        return s;
    }
    const km_tinyvit_config *c = &e->cfg;
    e->mb = km_calloc(sizeof(mbconv) * (size_t)c->depths[0]);
    for (int i = 1; i < 4; i++) e->blk[i] = km_calloc(sizeof(vit_block) * (size_t)c->depths[i]);
    for (int i = 0; i < 3; i++) e->mg[i].stride = merge_stride(c->embed_dims[i + 1]);
    loader L = {sd, file, NULL, 0};
    if ((s = take_all(&L, e))) {
        km_tinyvit_free(e);
        return s;
    }
    e->params = km_try_malloc(L.used * sizeof(float));
    if (!e->params) {
        km_tinyvit_free(e);
        return km_err(KM_ENOMEM, "%s: cannot allocate %zu MB for the image encoder weights", file,
                      L.used * sizeof(float) >> 20);
    }
    L.arena = e->params;
    L.used = 0;
    if ((s = take_all(&L, e))) {
        km_tinyvit_free(e);
        return s;
    }
    scratch_sizes(e, e->buf_floats, &e->thr_floats);
    for (int i = 0; i < 4; i++) e->buf[i] = km_malloc(sizeof(float) * e->buf_floats[i]);
    ensure_threads(e);
    *enc = e;
    return KM_OK;
}

const km_tinyvit_config *km_tinyvit_config_of(const km_tinyvit *enc) { return &enc->cfg; }

void km_tinyvit_free(km_tinyvit *e) {
    if (!e) return;
    km_free(e->params);
    km_free(e->mb);
    for (int i = 1; i < 4; i++) km_free(e->blk[i]);
    for (int i = 0; i < 4; i++) km_free(e->buf[i]);
    km_free(e->thr);
    km_free(e);
}

/* Threading: as in sam_encoder.c, the BLAS runs single-threaded and every GEMM
 * is split over OpenMP threads by rows (nn/basic.h km_linear_forward_mt). */

/* ---------------------------------------------------------- conv kernels -- */

/* One output row of a depthwise k x k conv, stride s, pad k/2, channels-last:
 * rows[ky] is input row oy*s + ky - k/2 ([W, C]) or NULL where that row is
 * padding; o[OW, C] = b + sum over taps (ky, kx in order) of in * w[tap, C],
 * then GELU if `gelu`. Vectorised over channels. */
static void dw_row(float *o, const float *const *rows, int W, int OW, int C, int k, int s,
                   const conv *cv, int gelu) {
    const int p = k / 2;
    for (int ox = 0; ox < OW; ox++) {
        float *op = o + (size_t)ox * C;
        memcpy(op, cv->b, sizeof(float) * (size_t)C);
        for (int ky = 0; ky < k; ky++) {
            if (!rows[ky]) continue;
            for (int kx = 0; kx < k; kx++) {
                int x = ox * s + kx - p;
                if (x < 0 || x >= W) continue;
                const float *a = rows[ky] + (size_t)x * C, *w = cv->w + (size_t)(ky * k + kx) * C;
#pragma omp simd
                for (int c = 0; c < C; c++) op[c] = op[c] + a[c] * w[c];
            }
        }
        if (gelu) {
#pragma omp simd
            for (int c = 0; c < C; c++) op[c] = km_gelu_fast(op[c]);
        }
    }
}

#define MAX_K 15 /* largest depthwise kernel (local_conv_size) supported */

/* Depthwise conv of a whole [H, W, C] map -> [OH, OW, C], rows in parallel. */
static void dwconv(float *out, const float *in, const conv *cv, int H, int W, int C, int k, int s,
                   int gelu) {
    const int p = k / 2, OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < OH; oy++) {
        const float *rows[MAX_K];
        for (int ky = 0; ky < k; ky++) {
            int y = oy * s + ky - p;
            rows[ky] = y >= 0 && y < H ? in + (size_t)y * W * C : NULL;
        }
        dw_row(out + (size_t)oy * OW * C, rows, W, OW, C, k, s, cv, gelu);
    }
}

/* Full k x k conv, stride s, pad p, channels-last [H, W, I] -> [OH, OW, O],
 * w [O, k, k, I]: im2col of COL_ROWS output pixels at a time into the
 * thread's scratch, then one GEMM per chunk. */
static void conv_full(km_tinyvit *e, float *out, const float *in, const float *w, const float *b,
                      int H, int W, int I, int O, int k, int s, int p) {
    const int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1, K = k * k * I;
    const int npix = OH * OW, nchunk = (npix + COL_ROWS - 1) / COL_ROWS;
    KM_ASSERT((size_t)COL_ROWS * K <= e->thr_floats);
#pragma omp parallel num_threads(e->nt)
    {
        float *col = e->thr + (size_t)omp_get_thread_num() * e->thr_floats;
#pragma omp for schedule(static)
        for (int ch = 0; ch < nchunk; ch++) {
            int q0 = ch * COL_ROWS, nq = npix - q0 < COL_ROWS ? npix - q0 : COL_ROWS;
            for (int q = 0; q < nq; q++) {
                int oy = (q0 + q) / OW, ox = (q0 + q) % OW;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int y = oy * s + ky - p, x = ox * s + kx - p;
                        float *d = col + (size_t)q * K + (size_t)(ky * k + kx) * I;
                        if (y < 0 || y >= H || x < 0 || x >= W) memset(d, 0, sizeof(float) * I);
                        else memcpy(d, in + ((size_t)y * W + x) * I, sizeof(float) * I);
                    }
            }
            km_linear_forward(out + (size_t)q0 * O, col, w, b, nq, K, O);
        }
    }
}

static void gelu_inplace(float *x, size_t n) { km_gelu_forward(x, x, n); }

/* ------------------------------------------------------------ attention -- */

/* Windowed attention of one block on window-partitioned qkv [nwin * N, 3D]
 * (per head: q | k | v, each hd wide) -> out [nwin * N, D] (heads
 * concatenated). One work item = (window, head): S = q k^T (the only N x N
 * map, in the thread's scratch), S * hd^-0.5 + ab[h], softmax, S v. Items are
 * independent, so the result does not depend on the thread count. */
static void window_attention(km_tinyvit *e, float *out, const float *qkv, const float *ab,
                             int nwin, int N, int nH, int hd) {
    const int D = nH * hd;
    const float scale = (float)(1.0 / sqrt((double)hd));
#pragma omp parallel num_threads(e->nt)
    {
        float *S = e->thr + (size_t)omp_get_thread_num() * e->thr_floats;
#pragma omp for schedule(static)
        for (int it = 0; it < nwin * nH; it++) {
            int w = it / nH, h = it % nH;
            const float *q = qkv + (size_t)w * N * 3 * D + (size_t)h * 3 * hd;
            km_sgemm(0, 1, N, N, hd, 1.0f, q, 3 * D, q + hd, 3 * D, 0.0f, S, N);
            for (int i = 0; i < N; i++) {
                float *r = S + (size_t)i * N;
                const float *bias = ab + ((size_t)h * N + i) * N;
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < N; j++) {
                    r[j] = r[j] * scale + bias[j];
                    mx = r[j] > mx ? r[j] : mx;
                }
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j < N; j++) {
                    r[j] = km_expf_fast(r[j] - mx);
                    sum += r[j];
                }
                float inv = 1.0f / sum;
#pragma omp simd
                for (int j = 0; j < N; j++) r[j] = r[j] * inv;
            }
            km_sgemm(0, 0, N, hd, N, 1.0f, S, N, q + 2 * hd, 3 * D, 0.0f,
                     out + (size_t)w * N * D + (size_t)h * hd, D);
        }
    }
}

/* Window partition of the raw tokens [H, W, D] zero-padded to a multiple of
 * ws: [nwin][ws*ws][D], windows and tokens row-major (spec 1.6). */
static void partition(float *out, const float *in, int H, int W, int D, int ws) {
    const int nwy = (H + ws - 1) / ws, nwx = (W + ws - 1) / ws;
#pragma omp parallel for schedule(static)
    for (int wy = 0; wy < nwy; wy++)
        for (int wx = 0; wx < nwx; wx++)
            for (int t = 0; t < ws * ws; t++) {
                int y = wy * ws + t / ws, x = wx * ws + t % ws;
                float *o = out + (((size_t)wy * nwx + wx) * ws * ws + t) * D;
                if (y < H && x < W) memcpy(o, in + ((size_t)y * W + x) * D, sizeof(float) * D);
                else memset(o, 0, sizeof(float) * D);
            }
}

/* Reverse of partition, cropped to [H, W, D]. */
static void unpartition(float *out, const float *in, int H, int W, int D, int ws) {
    const int nwx = (W + ws - 1) / ws;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t wi = (size_t)(y / ws) * nwx + x / ws;
            memcpy(out + ((size_t)y * W + x) * D,
                   in + (wi * ws * ws + (size_t)(y % ws) * ws + x % ws) * D, sizeof(float) * D);
        }
}

static void add_inplace(float *x, const float *a, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = x[i] + a[i];
}

/* ---------------------------------------------------------------- stages -- */

/* One TinyViTBlock on x = buf[0] ([R*R, D]); the local conv's output becomes
 * the new residual stream (the buf[0] / buf[1] pointers swap). */
static void vit_block_forward(km_tinyvit *e, const vit_block *bk, int stage) {
    const km_tinyvit_config *c = &e->cfg;
    const int R = e->res[stage], T = R * R, D = c->embed_dims[stage];
    const int nH = c->num_heads[stage], ws = c->window_sizes[stage], N = ws * ws;
    const int nw = (R + ws - 1) / ws, Tp = nw * nw * N, M = D * c->mlp_ratio;
    float *x = e->buf[0], *t1 = e->buf[1], *wide = e->buf[2], *t3 = e->buf[3];
    /* x = x + crop(proj(attn(norm(pad(x))))) */
    partition(t1, x, R, R, D, ws);
    km_layernorm_forward(t1, t1, bk->an_w, bk->an_b, Tp, D, LN_EPS);
    km_linear_forward_mt(wide, t1, bk->qkv_w, bk->qkv_b, Tp, D, 3 * D);
    window_attention(e, t3, wide, bk->ab, nw * nw, N, nH, D / nH);
    unpartition(t1, t3, R, R, D, ws);
    km_linear_forward_mt(t3, t1, bk->proj_w, bk->proj_b, T, D, D);
    add_inplace(x, t3, (size_t)T * D);
    /* x = local_conv(x) (no residual) */
    dwconv(t1, x, &bk->lc, R, R, D, c->local_conv_k, 1, 0);
    e->buf[0] = t1;
    e->buf[1] = x;
    x = t1;
    /* x = x + fc2(gelu(fc1(norm(x)))) */
    km_layernorm_forward(t3, x, bk->mn_w, bk->mn_b, T, D, LN_EPS);
    km_linear_forward_mt(wide, t3, bk->fc1_w, bk->fc1_b, T, D, M);
    gelu_inplace(wide, (size_t)T * M);
    km_linear_forward_mt(t3, wide, bk->fc2_w, bk->fc2_b, T, M, D);
    add_inplace(x, t3, (size_t)T * D);
}

/* MBConv on x = buf[0] ([R*R, C]) -> buf[0]:
 *   x = GELU(conv3(GELU(dw3x3(GELU(conv1 x)))) + x),
 * streamed by grid rows so that the [R*R, 4C] intermediates never leave the
 * cache: each thread owns a band of output rows and keeps the conv1 output of
 * three consecutive rows in a ring (rows outside the grid are the dw conv's
 * zero padding), computing one new row per output row (the row above its band
 * is recomputed once). Every row runs the same GEMM shapes whatever the band,
 * so the result does not depend on the thread count. The output goes to
 * buf[1] (the neighbours' bands still read x), then the two swap. */
static void mbconv_forward(km_tinyvit *e, const mbconv *m) {
    const km_tinyvit_config *c = &e->cfg;
    const int R = e->res[0], C = c->embed_dims[0], Hd = C * c->mbconv_expand;
    const size_t rowH = (size_t)R * Hd, rowC = (size_t)R * C;
    const float *x = e->buf[0];
    float *xo = e->buf[1];
#pragma omp parallel num_threads(e->nt)
    {
        float *ring = e->thr + (size_t)omp_get_thread_num() * e->thr_floats;
        float *h2 = ring + 3 * rowH, *yr = h2 + rowH;
        int y0, y1;
        km_omp_split_rows(R, &y0, &y1);
        for (int r = y0 - 1; y0 < y1 && r <= y1; r++) { /* conv1 row r -> ring slot (r+3)%3 */
            if (r >= 0 && r < R) {
                float *h = ring + (size_t)((r + 3) % 3) * rowH;
                km_linear_forward(h, x + (size_t)r * rowC, m->c1.w, m->c1.b, R, C, Hd);
#pragma omp simd
                for (size_t i = 0; i < rowH; i++) h[i] = km_gelu_fast(h[i]);
            }
            int y = r - 1; /* output row whose three input rows are now ready */
            if (y < y0 || y >= y1) continue;
            const float *rows[3];
            for (int ky = 0; ky < 3; ky++) {
                int ry = y + ky - 1;
                rows[ky] = ry >= 0 && ry < R ? ring + (size_t)((ry + 3) % 3) * rowH : NULL;
            }
            dw_row(h2, rows, R, R, Hd, 3, 1, &m->c2, 1);
            km_linear_forward(yr, h2, m->c3.w, m->c3.b, R, Hd, C);
            const float *xr = x + (size_t)y * rowC;
            float *o = xo + (size_t)y * rowC;
#pragma omp simd
            for (size_t i = 0; i < rowC; i++) o[i] = km_gelu_fast(yr[i] + xr[i]);
        }
    }
    e->buf[0] = xo;
    e->buf[1] = (float *)x;
}

/* PatchMerging i on x = buf[0] ([R*R, E(i)]) -> buf[0] ([R'*R', E(i+1)]). */
static void merge_forward(km_tinyvit *e, int i) {
    const km_tinyvit_config *c = &e->cfg;
    const merge *m = &e->mg[i];
    const int R = e->res[i], T = R * R, D = c->embed_dims[i], O = c->embed_dims[i + 1];
    const int R2 = e->res[i + 1];
    float *x = e->buf[0], *h1 = e->buf[2], *h2 = e->buf[3];
    km_linear_forward_mt(h1, x, m->c1.w, m->c1.b, T, D, O);
    gelu_inplace(h1, (size_t)T * O);
    dwconv(h2, h1, &m->c2, R, R, O, 3, m->stride, 1);
    km_linear_forward_mt(x, h2, m->c3.w, m->c3.b, R2 * R2, O, O);
}

/* patch_embed: [3, S, S] image -> buf[0] = [R0*R0, E0]. */
static void patch_embed(km_tinyvit *e, const float *img) {
    const km_tinyvit_config *c = &e->cfg;
    const int S = c->img_size, E0 = c->embed_dims[0], k = c->patch_k;
    float *hwc = e->buf[1], *mid = e->buf[2];
    const size_t SS = (size_t)S * S;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < SS; q++)
        for (int ch = 0; ch < 3; ch++) hwc[q * 3 + ch] = img[ch * SS + q];
    if (k == 1) {
        km_linear_forward_mt(mid, hwc, e->pe0.w, e->pe0.b, (int)SS, 3, E0 / 2);
        gelu_inplace(mid, SS * (E0 / 2));
        km_linear_forward_mt(e->buf[0], mid, e->pe2.w, e->pe2.b, (int)SS, E0 / 2, E0);
    } else {
        conv_full(e, mid, hwc, e->pe0.w, e->pe0.b, S, S, 3, E0 / 2, 3, 2, 1);
        gelu_inplace(mid, (size_t)(S / 2) * (S / 2) * (E0 / 2));
        conv_full(e, e->buf[0], mid, e->pe2.w, e->pe2.b, S / 2, S / 2, E0 / 2, E0, 3, 2, 1);
    }
}

/* neck on x = buf[0] ([64*64, E3]) -> embedding [OC, 64, 64] (NCHW). */
static void neck_forward(km_tinyvit *e, float *embedding) {
    const int G = NECK_GRID, T = G * G, E3 = e->cfg.embed_dims[3], OC = e->cfg.out_chans;
    float *a = e->buf[1], *b = e->buf[2];
    km_linear_forward_mt(a, e->buf[0], e->neck0, NULL, T, E3, OC);
    km_layernorm_forward(a, a, e->n1_w, e->n1_b, T, OC, NECK_EPS);
    conv_full(e, b, a, e->neck2, NULL, G, G, OC, OC, 3, 1, 1);
    km_layernorm_forward(b, b, e->n3_w, e->n3_b, T, OC, NECK_EPS);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int t = 0; t < T; t++) embedding[(size_t)o * T + t] = b[(size_t)t * OC + o];
}

km_status km_tinyvit_forward(km_tinyvit *e, const float *img, float *embedding,
                             const km_tinyvit_taps *taps) {
    KM_ASSERT(e && img && embedding);
    const km_tinyvit_config *c = &e->cfg;
    ensure_threads(e);
    e->nt = km_get_threads();
    km_gemm_set_threads(1); /* see "threading"; restored at the end */
    patch_embed(e, img);
    for (int j = 0; j < c->depths[0]; j++) mbconv_forward(e, &e->mb[j]);
    merge_forward(e, 0);
    size_t n1 = (size_t)e->res[1] * e->res[1] * c->embed_dims[1];
    if (taps && taps->layer0_out) memcpy(taps->layer0_out, e->buf[0], n1 * sizeof(float));
    for (int i = 1; i < 4; i++) {
        for (int j = 0; j < c->depths[i]; j++) vit_block_forward(e, &e->blk[i][j], i);
        size_t n = (size_t)e->res[i] * e->res[i] * c->embed_dims[i];
        if (i == 2 && taps && taps->layer2_blocks_out)
            memcpy(taps->layer2_blocks_out, e->buf[0], n * sizeof(float));
        if (i == 3) break;
        merge_forward(e, i);
        size_t n2 = (size_t)e->res[i + 1] * e->res[i + 1] * c->embed_dims[i + 1];
        if (i == 1 && taps && taps->layer1_out)
            memcpy(taps->layer1_out, e->buf[0], n2 * sizeof(float));
    }
    neck_forward(e, embedding);
    km_gemm_set_threads(km_get_threads());
    return KM_OK;
}

/* sam_encoder.c - SAM ImageEncoderViT forward (see sam_encoder.h).
 * Ports segment_anything/modeling/image_encoder.py @dca509f. Activations are
 * channels-last token matrices [tokens, D] (tokens row-major over the grid),
 * which is the reference's BHWC layout with B = 1. */
#include "sam_encoder.h"
#include "../nn/attention.h"
#include "../nn/basic.h"
#include "../nn/gemm.h"

#include <omp.h>
#include <string.h>

#define PFX "image_encoder."
#define ENC_EPS 1e-6f /* nn.LayerNorm(eps=1e-6) in the blocks, LayerNorm2d in the neck */

typedef struct {
    const float *norm1_w, *norm1_b; /* [D] */
    const float *rel_h, *rel_w;     /* [2s-1, hd], s = window or grid */
    const float *qkv_w, *qkv_b;     /* [3D, D], [3D] */
    const float *proj_w, *proj_b;   /* [D, D], [D] */
    const float *norm2_w, *norm2_b; /* [D] */
    const float *lin1_w, *lin1_b;   /* [M, D], [M] */
    const float *lin2_w, *lin2_b;   /* [D, M], [D] */
    int global;                     /* 1: attends over the whole grid */
} enc_block;

struct km_sam_encoder {
    km_sam_encoder_config cfg;
    float *params; /* every weight, one allocation, checkpoint order */
    const float *pos_embed;       /* [G, G, D] */
    const float *pe_w, *pe_b;     /* [D, 3*p*p] (conv weight flattened), [D] */
    const float *neck0;           /* [OC, D] 1x1 conv, no bias */
    const float *neck1_w, *neck1_b;
    const float *neck2;           /* [OC, OC*9] 3x3 conv, no bias */
    const float *neck3_w, *neck3_b;
    enc_block *blocks;
    /* Scratch, allocated at load (T = G*G tokens, Tp = padded window tokens). */
    int Tp;
    float *x;    /* [T, D] residual stream */
    float *xn;   /* [T, D] normed / cropped attention output */
    float *qkv;  /* [Tp, 3D] (window-partitioned for windowed blocks) */
    float *att;  /* [Tp, D] attention output (heads concatenated) */
    float *prj;  /* [T, D] proj / lin2 output */
    float *big;  /* max([T, M] MLP hidden, [T, 3D] qkv, [T, 3p^2] and [9*OC, T] im2col) */
    float *nk;   /* [OC, T] neck intermediate */
    float *attn_scratch;
    size_t attn_floats;
};

/* ---------------------------------------------------------------- config -- */

static const km_tensor *find_tensor(const km_tdict *sd, const char *name) {
    return km_tdict_find(sd, name);
}

static km_status need(const km_tdict *sd, const char *file, const char *name, int ndim,
                      const km_tensor **t) {
    *t = find_tensor(sd, name);
    if (!*t)
        return km_err(KM_EMISSING,
                      "%s: missing tensor '%s' (not a SAM checkpoint, or not its image encoder?)",
                      file, name);
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

km_status km_sam_encoder_config_infer(const km_tdict *sd, const char *file,
                                      km_sam_encoder_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const km_tensor *t;
    char name[160], b[96];
    km_status s;
    if ((s = need(sd, file, PFX "patch_embed.proj.weight", 4, &t))) return s;
    if (t->shape[1] != 3 || t->shape[2] != t->shape[3] || t->shape[2] < 1)
        return km_err(KM_ESHAPE, "%s: tensor '" PFX "patch_embed.proj.weight' has shape %s, "
                      "expected [D, 3, p, p]", file, km_shape_str(b, sizeof b, t->ndim, t->shape));
    cfg->embed_dim = (int)t->shape[0];
    cfg->patch = (int)t->shape[2];
    if ((s = need(sd, file, PFX "pos_embed", 4, &t))) return s;
    if (t->shape[0] != 1 || t->shape[1] != t->shape[2] || t->shape[3] != cfg->embed_dim ||
        t->shape[1] < 1)
        return km_err(KM_ESHAPE, "%s: tensor '" PFX "pos_embed' has shape %s, expected [1, G, G, %d]",
                      file, km_shape_str(b, sizeof b, t->ndim, t->shape), cfg->embed_dim);
    cfg->grid = (int)t->shape[1];
    cfg->img_size = cfg->grid * cfg->patch;

    for (cfg->depth = 0;; cfg->depth++) {
        snprintf(name, sizeof name, PFX "blocks.%d.norm1.weight", cfg->depth);
        if (!find_tensor(sd, name)) break;
    }
    if (cfg->depth == 0)
        return km_err(KM_EMISSING, "%s: missing tensor '" PFX "blocks.0.norm1.weight' (no "
                      "transformer blocks found)", file);
    if (cfg->depth > KM_SAM_MAX_DEPTH)
        return km_err(KM_EFORMAT, "%s: %d image-encoder blocks, at most %d supported", file,
                      cfg->depth, KM_SAM_MAX_DEPTH);

    if ((s = need(sd, file, PFX "blocks.0.attn.rel_pos_h", 2, &t))) return s;
    cfg->head_dim = (int)t->shape[1];
    if (cfg->head_dim < 1 || cfg->embed_dim % cfg->head_dim)
        return km_err(KM_ESHAPE, "%s: tensor '" PFX "blocks.0.attn.rel_pos_h' has shape %s: its "
                      "width (head_dim) must divide embed_dim %d", file,
                      km_shape_str(b, sizeof b, t->ndim, t->shape), cfg->embed_dim);
    cfg->num_heads = cfg->embed_dim / cfg->head_dim;

    const int Lg = 2 * cfg->grid - 1;
    for (int i = 0; i < cfg->depth; i++) {
        snprintf(name, sizeof name, PFX "blocks.%d.attn.rel_pos_h", i);
        if ((s = need(sd, file, name, 2, &t))) return s;
        int L = (int)t->shape[0];
        if (L == Lg) {
            cfg->global_idx[cfg->n_global++] = i;
            continue;
        }
        if (L % 2 == 0 || L < 1 || L > Lg)
            return km_err(KM_ESHAPE, "%s: tensor '%s' has %d rows, expected %d (global block) or "
                          "2 * window - 1 (an odd number below %d)", file, name, L, Lg, Lg);
        int ws = (L + 1) / 2;
        if (cfg->window_size && ws != cfg->window_size)
            return km_err(KM_ESHAPE, "%s: tensor '%s' has %d rows (window %d) but earlier "
                          "windowed blocks use window %d", file, name, L, ws, cfg->window_size);
        cfg->window_size = ws;
    }
    if ((s = need(sd, file, PFX "blocks.0.mlp.lin1.weight", 2, &t))) return s;
    cfg->mlp_dim = (int)t->shape[0];
    if ((s = need(sd, file, PFX "neck.0.weight", 4, &t))) return s;
    cfg->out_chans = (int)t->shape[0];
    if (cfg->mlp_dim < 1 || cfg->out_chans < 1)
        return km_err(KM_ESHAPE, "%s: empty mlp or neck tensors", file);
    return KM_OK;
}

/* ------------------------------------------------------------- threading -- */

/* Threading model: the forward runs the BLAS single-threaded and splits every
 * GEMM over OpenMP threads itself (rows of the activations). With two thread
 * pools (OpenMP for the norms/attention, OpenBLAS's pthreads for the GEMMs)
 * each pool's idle threads spin while the other works, which on a 2-core
 * machine cost ~25% of the tiny encoder's time. The GEMMs are split into
 * blocks that depend on their size only (nn/basic.h km_gemm_blocks), so the
 * embedding is bit-identical at every thread count. */

/* C[M, N] = A[M, K] @ op(B) with op(B) = B[N, K]^T (tb) or B[K, N], split over
 * the N columns (the token axis of the neck's NCHW outputs); ldb, ldc given. */
static void gemm_cols_mt(int tb, int M, int N, int K, const float *A, const float *B, int ldb,
                         float *C, int ldc) {
    int bs, nb = km_gemm_blocks(N, &bs);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nb; k++) {
        int n0 = k * bs, n = N - n0 < bs ? N - n0 : bs;
        km_sgemm(0, tb, M, n, K, 1.0f, A, K, tb ? B + (size_t)n0 * ldb : B + n0, ldb, 0.0f, C + n0, ldc);
    }
}

/* ------------------------------------------------------------------ load -- */

/* Two passes over the same list: the first (arena NULL) checks shapes and
 * counts floats, the second copies into the arena and sets the pointers. */
typedef struct {
    const km_tdict *sd;
    const char *file;
    float *arena;
    size_t used;
} loader;

static km_status take(loader *L, const float **dst, const char *name, int ndim, int64_t d0,
                      int64_t d1, int64_t d2, int64_t d3) {
    int64_t shape[4] = {d0, d1, d2, d3};
    const float *src;
    km_status s = km_tdict_get_f32(L->sd, L->file, name, ndim, shape, &src);
    if (s) return s;
    size_t n = (size_t)km_numel(ndim, shape);
    if (L->arena) {
        memcpy(L->arena + L->used, src, n * sizeof(float));
        *dst = L->arena + L->used;
    }
    L->used += (n + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
    return KM_OK;
}

static km_status take_all(loader *L, km_sam_encoder *e) {
    const km_sam_encoder_config *c = &e->cfg;
    const int D = c->embed_dim, p = c->patch, G = c->grid, M = c->mlp_dim, OC = c->out_chans;
    const int hd = c->head_dim;
    char n[160];
    km_status s;
#define TAKE(dst, nd, a, b_, c_, d_)                                                               \
    do {                                                                                           \
        if ((s = take(L, &(dst), n, nd, a, b_, c_, d_))) return s;                                 \
    } while (0)
    snprintf(n, sizeof n, PFX "pos_embed");
    TAKE(e->pos_embed, 4, 1, G, G, D);
    snprintf(n, sizeof n, PFX "patch_embed.proj.weight");
    TAKE(e->pe_w, 4, D, 3, p, p);
    snprintf(n, sizeof n, PFX "patch_embed.proj.bias");
    TAKE(e->pe_b, 1, D, 0, 0, 0);
    for (int i = 0; i < c->depth; i++) {
        enc_block *bk = &e->blocks[i];
        int Lr = bk->global ? 2 * G - 1 : 2 * c->window_size - 1;
#define BT(dst, field, nd, a, b_)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, PFX "blocks.%d.%s", i, field);                                      \
        TAKE(dst, nd, a, b_, 0, 0);                                                                \
    } while (0)
        BT(bk->norm1_w, "norm1.weight", 1, D, 0);
        BT(bk->norm1_b, "norm1.bias", 1, D, 0);
        BT(bk->rel_h, "attn.rel_pos_h", 2, Lr, hd);
        BT(bk->rel_w, "attn.rel_pos_w", 2, Lr, hd);
        BT(bk->qkv_w, "attn.qkv.weight", 2, 3 * D, D);
        BT(bk->qkv_b, "attn.qkv.bias", 1, 3 * D, 0);
        BT(bk->proj_w, "attn.proj.weight", 2, D, D);
        BT(bk->proj_b, "attn.proj.bias", 1, D, 0);
        BT(bk->norm2_w, "norm2.weight", 1, D, 0);
        BT(bk->norm2_b, "norm2.bias", 1, D, 0);
        BT(bk->lin1_w, "mlp.lin1.weight", 2, M, D);
        BT(bk->lin1_b, "mlp.lin1.bias", 1, M, 0);
        BT(bk->lin2_w, "mlp.lin2.weight", 2, D, M);
        BT(bk->lin2_b, "mlp.lin2.bias", 1, D, 0);
#undef BT
    }
    snprintf(n, sizeof n, PFX "neck.0.weight");
    TAKE(e->neck0, 4, OC, D, 1, 1);
    snprintf(n, sizeof n, PFX "neck.1.weight");
    TAKE(e->neck1_w, 1, OC, 0, 0, 0);
    snprintf(n, sizeof n, PFX "neck.1.bias");
    TAKE(e->neck1_b, 1, OC, 0, 0, 0);
    snprintf(n, sizeof n, PFX "neck.2.weight");
    TAKE(e->neck2, 4, OC, OC, 3, 3);
    snprintf(n, sizeof n, PFX "neck.3.weight");
    TAKE(e->neck3_w, 1, OC, 0, 0, 0);
    snprintf(n, sizeof n, PFX "neck.3.bias");
    TAKE(e->neck3_b, 1, OC, 0, 0, 0);
#undef TAKE
    return KM_OK;
}

km_status km_sam_encoder_load(km_sam_encoder **enc, const km_tdict *sd, const char *file) {
    *enc = NULL;
    km_sam_encoder *e = km_calloc(sizeof *e);
    km_status s = km_sam_encoder_config_infer(sd, file, &e->cfg);
    if (s) {
        km_free(e);
        return s;
    }
    const km_sam_encoder_config *c = &e->cfg;
    e->blocks = km_calloc(sizeof(enc_block) * (size_t)c->depth);
    for (int k = 0; k < c->n_global; k++) e->blocks[c->global_idx[k]].global = 1;

    loader L = {sd, file, NULL, 0};
    if ((s = take_all(&L, e))) {
        km_sam_encoder_free(e);
        return s;
    }
    e->params = km_try_malloc(L.used * sizeof(float));
    if (!e->params) {
        km_sam_encoder_free(e);
        return km_err(KM_ENOMEM, "%s: cannot allocate %zu MB for the image encoder weights", file,
                      L.used * sizeof(float) >> 20);
    }
    L.arena = e->params;
    L.used = 0;
    if ((s = take_all(&L, e))) {
        km_sam_encoder_free(e);
        return s;
    }

    const size_t D = (size_t)c->embed_dim, G = (size_t)c->grid, T = G * G;
    const size_t M = (size_t)c->mlp_dim, OC = (size_t)c->out_chans, pp = (size_t)c->patch * c->patch;
    size_t Tp = T;
    if (c->window_size) {
        size_t nw = (G + c->window_size - 1) / c->window_size;
        Tp = nw * nw * c->window_size * c->window_size;
    }
    e->Tp = (int)Tp;
    size_t big = T * M;
    if (T * 3 * D > big) big = T * 3 * D;
    if (T * 3 * pp > big) big = T * 3 * pp;
    if (9 * OC * T > big) big = 9 * OC * T;
    int nt = km_get_threads();
    size_t a_glob = km_relattn_scratch_floats(c->grid, c->grid, nt);
    size_t a_win = c->window_size ? km_relattn_scratch_floats(c->window_size, c->window_size, nt) : 0;
    e->attn_floats = a_glob > a_win ? a_glob : a_win;
    e->x = km_malloc(sizeof(float) * T * D);
    e->xn = km_malloc(sizeof(float) * T * D);
    e->qkv = km_malloc(sizeof(float) * Tp * 3 * D);
    e->att = km_malloc(sizeof(float) * Tp * D);
    e->prj = km_malloc(sizeof(float) * T * D);
    e->big = km_malloc(sizeof(float) * big);
    e->nk = km_malloc(sizeof(float) * OC * T);
    e->attn_scratch = km_malloc(sizeof(float) * e->attn_floats);
    *enc = e;
    return KM_OK;
}

const km_sam_encoder_config *km_sam_encoder_config_of(const km_sam_encoder *enc) {
    return &enc->cfg;
}

void km_sam_encoder_free(km_sam_encoder *e) {
    if (!e) return;
    km_free(e->params);
    km_free(e->blocks);
    km_free(e->x);
    km_free(e->xn);
    km_free(e->qkv);
    km_free(e->att);
    km_free(e->prj);
    km_free(e->big);
    km_free(e->nk);
    km_free(e->attn_scratch);
    km_free(e);
}

/* --------------------------------------------------------------- forward -- */

/* Conv2d(3, D, p, stride p) as im2col + GEMM: col[token, c*p*p + ky*p + kx]
 * (the flattening order of the [D, 3, p, p] weight). */
static void patch_embed(km_sam_encoder *e, const float *img) {
    const km_sam_encoder_config *c = &e->cfg;
    const int G = c->grid, p = c->patch, S = c->img_size, K = 3 * p * p;
    float *col = e->big;
#pragma omp parallel for schedule(static)
    for (int gy = 0; gy < G; gy++)
        for (int gx = 0; gx < G; gx++) {
            float *r = col + ((size_t)gy * G + gx) * K;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < p; ky++)
                    memcpy(r + (ch * p + ky) * p,
                           img + ((size_t)ch * S + (size_t)gy * p + ky) * S + (size_t)gx * p,
                           sizeof(float) * p);
        }
    km_linear_forward_mt(e->x, col, e->pe_w, e->pe_b, G * G, K, c->embed_dim);
    size_t n = (size_t)G * G * c->embed_dim;
    for (size_t i = 0; i < n; i++) e->x[i] += e->pos_embed[i];
}

/* window_partition: [G, G, F] -> [nw*nw windows][ws*ws][F], windows and
 * tokens row-major. The reference pads the normed tokens with zeros before
 * the qkv Linear, so a padded token's qkv is exactly the bias (0 * W sums to
 * 0); we run the Linear on the G*G real tokens only and fill padded rows with
 * `pad` (= qkv bias). Padded tokens are not masked in the attention. */
static void window_partition(float *out, const float *in, const float *pad, int G, int ws, int F) {
    const int nw = (G + ws - 1) / ws;
#pragma omp parallel for schedule(static)
    for (int wy = 0; wy < nw; wy++)
        for (int wx = 0; wx < nw; wx++)
            for (int ty = 0; ty < ws; ty++)
                for (int tx = 0; tx < ws; tx++) {
                    int y = wy * ws + ty, x = wx * ws + tx;
                    float *o = out + ((((size_t)wy * nw + wx) * ws + ty) * ws + tx) * F;
                    memcpy(o, (y < G && x < G) ? in + ((size_t)y * G + x) * F : pad,
                           sizeof(float) * F);
                }
}

/* window_unpartition + crop: [nw*nw][ws*ws][F] -> [G, G, F]. The proj Linear
 * is row-wise, so applying it after the crop (to real tokens only) gives the
 * same rows as the reference's proj-then-crop. */
static void window_unpartition(float *out, const float *in, int G, int ws, int F) {
    const int nw = (G + ws - 1) / ws;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < G; y++)
        for (int x = 0; x < G; x++) {
            int wy = y / ws, ty = y % ws, wx = x / ws, tx = x % ws;
            memcpy(out + ((size_t)y * G + x) * F,
                   in + ((((size_t)wy * nw + wx) * ws + ty) * ws + tx) * F, sizeof(float) * F);
        }
}

/* x = x + a (the residual adds: shortcut + branch). */
static void add_inplace(float *x, const float *a, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = x[i] + a[i];
}

static void block_forward(km_sam_encoder *e, const enc_block *bk) {
    const km_sam_encoder_config *c = &e->cfg;
    const int G = c->grid, T = G * G, D = c->embed_dim, ws = c->window_size;
    /* x = x + proj(attn(norm1(x))) */
    km_layernorm_forward(e->xn, e->x, bk->norm1_w, bk->norm1_b, T, D, ENC_EPS);
    if (bk->global) {
        km_linear_forward_mt(e->qkv, e->xn, bk->qkv_w, bk->qkv_b, T, D, 3 * D);
        km_relattn_forward(e->att, e->qkv, bk->rel_h, bk->rel_w, 1, G, G, c->num_heads,
                           c->head_dim, e->attn_scratch, e->attn_floats);
        km_gemm_set_threads(1); /* km_relattn_forward restores the BLAS threads */
        km_linear_forward_mt(e->prj, e->att, bk->proj_w, bk->proj_b, T, D, D);
    } else {
        /* qkv of the real tokens into `big` (free until the MLP), then windows. */
        km_linear_forward_mt(e->big, e->xn, bk->qkv_w, bk->qkv_b, T, D, 3 * D);
        window_partition(e->qkv, e->big, bk->qkv_b, G, ws, 3 * D);
        km_relattn_forward(e->att, e->qkv, bk->rel_h, bk->rel_w, e->Tp / (ws * ws), ws, ws,
                           c->num_heads, c->head_dim, e->attn_scratch, e->attn_floats);
        km_gemm_set_threads(1);
        window_unpartition(e->xn, e->att, G, ws, D);
        km_linear_forward_mt(e->prj, e->xn, bk->proj_w, bk->proj_b, T, D, D);
    }
    add_inplace(e->x, e->prj, (size_t)T * D);
    /* x = x + lin2(gelu(lin1(norm2(x)))) */
    km_layernorm_forward(e->xn, e->x, bk->norm2_w, bk->norm2_b, T, D, ENC_EPS);
    km_linear_forward_mt(e->big, e->xn, bk->lin1_w, bk->lin1_b, T, D, c->mlp_dim);
    km_gelu_forward(e->big, e->big, (size_t)T * c->mlp_dim);
    km_linear_forward_mt(e->prj, e->big, bk->lin2_w, bk->lin2_b, T, c->mlp_dim, D);
    add_inplace(e->x, e->prj, (size_t)T * D);
}

/* im2col for a 3x3, pad 1, stride 1 conv on [C, G, G]: col[c*9 + ky*3 + kx][pixel]. */
static void im2col3x3(float *col, const float *in, int C, int G) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < C * 9; r++) {
        int ch = r / 9, ky = r % 9 / 3 - 1, kx = r % 3 - 1;
        const float *src = in + (size_t)ch * G * G;
        float *dst = col + (size_t)r * G * G;
        for (int y = 0; y < G; y++) {
            int sy = y + ky;
            for (int x = 0; x < G; x++) {
                int sx = x + kx;
                dst[(size_t)y * G + x] =
                    (sy >= 0 && sy < G && sx >= 0 && sx < G) ? src[(size_t)sy * G + sx] : 0.0f;
            }
        }
    }
}

km_status km_sam_encoder_forward(km_sam_encoder *e, const float *img, float *embedding,
                                 const km_sam_encoder_taps *taps) {
    KM_ASSERT(e && img && embedding);
    const km_sam_encoder_config *c = &e->cfg;
    const int G = c->grid, T = G * G, D = c->embed_dim, OC = c->out_chans;
    const size_t td = (size_t)T * D * sizeof(float);
    km_gemm_set_threads(1); /* see "threading" above; restored at the end */
    patch_embed(e, img);
    if (taps && taps->after_patch_embed_pos) memcpy(taps->after_patch_embed_pos, e->x, td);
    for (int i = 0; i < c->depth; i++) {
        block_forward(e, &e->blocks[i]);
        if (i == 0 && taps && taps->after_block0) memcpy(taps->after_block0, e->x, td);
    }
    if (taps && taps->after_last_block) memcpy(taps->after_last_block, e->x, td);
    /* Neck, NCHW out: 1x1 conv nk[OC, T] = W0[OC, D] x^T, LayerNorm2d,
     * 3x3 conv as W2[OC, OC*9] @ im2col[OC*9, T], LayerNorm2d. */
    gemm_cols_mt(1, OC, T, D, e->neck0, e->x, D, e->nk, T);
    km_layernorm2d_forward(e->nk, e->nk, e->neck1_w, e->neck1_b, 1, OC, T, ENC_EPS);
    im2col3x3(e->big, e->nk, OC, G);
    gemm_cols_mt(0, OC, T, OC * 9, e->neck2, e->big, T, embedding, T);
    km_layernorm2d_forward(embedding, embedding, e->neck3_w, e->neck3_b, 1, OC, T, ENC_EPS);
    km_gemm_set_threads(km_get_threads());
    return KM_OK;
}

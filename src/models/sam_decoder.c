/* sam_decoder.c - SAM MaskDecoder + TwoWayTransformer, ported from
 * segment_anything/modeling/mask_decoder.py (MaskDecoder.predict_masks, MLP)
 * and modeling/transformer.py (TwoWayTransformer, TwoWayAttentionBlock,
 * Attention). See sam_decoder.h for layouts. */
#include "sam_decoder.h"
#include "sam_prompt.h"
#include "../nn/basic.h"
#include "../nn/fastmath.h"
#include "../nn/gemm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define P_TOK (KM_SAM_EMB_HW * KM_SAM_EMB_HW) /* 4096 image tokens */
#define UP1_HW (2 * KM_SAM_EMB_HW)            /* 128 */
#define UP2_HW (4 * KM_SAM_EMB_HW)            /* 256 */

/* ---- loading ---- */

typedef struct {
    const km_tdict *w;
    const char *file, *prefix;
} binder;

static km_status bind(const binder *b, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3, const float **out) {
    char key[256];
    int64_t shape[4] = {d0, d1, d2, d3};
    snprintf(key, sizeof key, "%s%s", b->prefix, name);
    return km_tdict_get_f32(b->w, b->file, key, ndim, shape, out);
}

/* Finds a tensor only to read its dims; ndim must match. */
static km_status shape_of(const binder *b, const char *name, int ndim, const char *expect,
                          const km_tensor **t) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", b->prefix, name);
    *t = km_tdict_find(b->w, key);
    if (!*t)
        return km_err(KM_EMISSING, "%s: missing tensor '%s' (expected shape %s)", b->file, key, expect);
    if ((*t)->ndim != ndim) {
        char a[128];
        return km_err(KM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", b->file, key,
                      km_shape_str(a, sizeof a, (*t)->ndim, (*t)->shape), expect);
    }
    return KM_OK;
}

static km_status load_attn(const binder *b, const char *base, int D, km_sam_attn *a) {
    char n[256];
    const km_tensor *t;
    km_status s;
    snprintf(n, sizeof n, "%s.q_proj.weight", base);
    if ((s = shape_of(b, n, 2, "[d, D]", &t))) return s;
    int d = (int)t->shape[0];
    if (d <= 0 || d % KM_SAM_DEC_HEADS)
        return km_err(KM_ESHAPE, "%s: tensor '%s%s' has %d rows, expected a multiple of %d heads",
                      b->file, b->prefix, n, d, KM_SAM_DEC_HEADS);
    a->d = d;
    struct {
        const char *suffix;
        int ndim;
        int64_t d0, d1;
        const float **p;
    } tab[] = {{"q_proj.weight", 2, d, D, &a->qw},   {"q_proj.bias", 1, d, 0, &a->qb},
               {"k_proj.weight", 2, d, D, &a->kw},   {"k_proj.bias", 1, d, 0, &a->kb},
               {"v_proj.weight", 2, d, D, &a->vw},   {"v_proj.bias", 1, d, 0, &a->vb},
               {"out_proj.weight", 2, D, d, &a->ow}, {"out_proj.bias", 1, D, 0, &a->ob}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        snprintf(n, sizeof n, "%s.%s", base, tab[i].suffix);
        if ((s = bind(b, n, tab[i].ndim, tab[i].d0, tab[i].d1, 0, 0, tab[i].p))) return s;
    }
    return KM_OK;
}

static km_status load_norm(const binder *b, const char *base, int D, km_sam_norm *nm) {
    char n[256];
    km_status s;
    snprintf(n, sizeof n, "%s.weight", base);
    if ((s = bind(b, n, 1, D, 0, 0, 0, &nm->w))) return s;
    snprintf(n, sizeof n, "%s.bias", base);
    return bind(b, n, 1, D, 0, 0, 0, &nm->b);
}

static km_status load_mlp3(const binder *b, const char *base, int D, int out, km_sam_mlp3 *m) {
    char n[256];
    km_status s;
    int dims[3][2] = {{D, D}, {D, D}, {out, D}};
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "%s.layers.%d.weight", base, i);
        if ((s = bind(b, n, 2, dims[i][0], dims[i][1], 0, 0, &m->w[i]))) return s;
        snprintf(n, sizeof n, "%s.layers.%d.bias", base, i);
        if ((s = bind(b, n, 1, dims[i][0], 0, 0, 0, &m->b[i]))) return s;
    }
    m->out = out;
    return KM_OK;
}

km_status km_sam_decoder_load(km_sam_decoder *dec, const km_tdict *w, const char *file,
                              const char *prefix) {
    memset(dec, 0, sizeof *dec);
    binder b = {w, file, prefix};
    const km_tensor *t;
    km_status s;
    if ((s = shape_of(&b, "iou_token.weight", 2, "[1, 256]", &t))) return s;
    int D = (int)t->shape[1];
    if (t->shape[0] != 1 || D <= 0 || D % 8)
        return km_err(KM_ESHAPE, "%s: tensor '%siou_token.weight' has shape [%lld, %lld], expected "
                      "[1, D] with D a multiple of 8", file, prefix, (long long)t->shape[0],
                      (long long)t->shape[1]);
    dec->D = D;
    if ((s = shape_of(&b, "mask_tokens.weight", 2, "[4, 256]", &t))) return s;
    int M = (int)t->shape[0];
    if (M < 1 || M > 8)
        return km_err(KM_ESHAPE, "%s: tensor '%smask_tokens.weight' has %d rows, expected 1..8",
                      file, prefix, M);
    dec->n_mask_tokens = M;
    if ((s = bind(&b, "iou_token.weight", 2, 1, D, 0, 0, &dec->iou_token)) ||
        (s = bind(&b, "mask_tokens.weight", 2, M, D, 0, 0, &dec->mask_tokens)))
        return s;
    if ((s = shape_of(&b, "transformer.layers.0.mlp.lin1.weight", 2, "[2048, 256]", &t))) return s;
    dec->mlp_dim = (int)t->shape[0];

    char key[256];
    int depth = 0;
    for (;;) {
        snprintf(key, sizeof key, "%stransformer.layers.%d.norm1.weight", prefix, depth);
        if (!km_tdict_find(w, key)) break;
        if (++depth > KM_SAM_DEC_MAX_DEPTH)
            return km_err(KM_EFORMAT, "%s: more than %d two-way transformer layers under '%s'", file,
                          KM_SAM_DEC_MAX_DEPTH, prefix);
    }
    dec->depth = depth;
    for (int l = 0; l < depth; l++) {
        km_sam_block *L = &dec->layers[l];
        char base[128], n[192];
        snprintf(base, sizeof base, "transformer.layers.%d", l);
#define SUB(x) (snprintf(n, sizeof n, "%s.%s", base, x), n)
        if ((s = load_attn(&b, SUB("self_attn"), D, &L->self_attn)) ||
            (s = load_norm(&b, SUB("norm1"), D, &L->norm1)) ||
            (s = load_attn(&b, SUB("cross_attn_token_to_image"), D, &L->t2i)) ||
            (s = load_norm(&b, SUB("norm2"), D, &L->norm2)) ||
            (s = bind(&b, SUB("mlp.lin1.weight"), 2, dec->mlp_dim, D, 0, 0, &L->lin1_w)) ||
            (s = bind(&b, SUB("mlp.lin1.bias"), 1, dec->mlp_dim, 0, 0, 0, &L->lin1_b)) ||
            (s = bind(&b, SUB("mlp.lin2.weight"), 2, D, dec->mlp_dim, 0, 0, &L->lin2_w)) ||
            (s = bind(&b, SUB("mlp.lin2.bias"), 1, D, 0, 0, 0, &L->lin2_b)) ||
            (s = load_norm(&b, SUB("norm3"), D, &L->norm3)) ||
            (s = load_norm(&b, SUB("norm4"), D, &L->norm4)) ||
            (s = load_attn(&b, SUB("cross_attn_image_to_token"), D, &L->i2t)))
            return s;
#undef SUB
    }
    if ((s = load_attn(&b, "transformer.final_attn_token_to_image", D, &dec->final_attn)) ||
        (s = load_norm(&b, "transformer.norm_final_attn", D, &dec->norm_final)))
        return s;

    int up1 = D / 4, up2 = D / 8;
    dec->up1 = up1;
    dec->up2 = up2;
    if ((s = bind(&b, "output_upscaling.0.weight", 4, D, up1, 2, 2, &dec->up0_w)) ||
        (s = bind(&b, "output_upscaling.0.bias", 1, up1, 0, 0, 0, &dec->up0_b)) ||
        (s = bind(&b, "output_upscaling.1.weight", 1, up1, 0, 0, 0, &dec->up1_w)) ||
        (s = bind(&b, "output_upscaling.1.bias", 1, up1, 0, 0, 0, &dec->up1_b)) ||
        (s = bind(&b, "output_upscaling.3.weight", 4, up1, up2, 2, 2, &dec->up3_w)) ||
        (s = bind(&b, "output_upscaling.3.bias", 1, up2, 0, 0, 0, &dec->up3_b)))
        return s;
    for (int m = 0; m < M; m++) {
        snprintf(key, sizeof key, "output_hypernetworks_mlps.%d", m);
        if ((s = load_mlp3(&b, key, D, up2, &dec->hyper[m]))) return s;
    }
    return load_mlp3(&b, "iou_prediction_head", D, M, &dec->iou_head);
}

/* ---- workspace ---- */

typedef struct {
    float *tok0, *queries, *qq, *src, *kk, *aout, *hid; /* transformer */
    float *Q, *K, *Kt, *V, *L, *O, *fa, *fb;            /* attention scratch */
    float *w1, *g1, *w2, *g2, *mflat, *hyper, *mlp_a, *mlp_b; /* heads */
    size_t total;
} dec_work;

static int max_attn_d(const km_sam_decoder *dec) {
    int d = dec->final_attn.d;
    for (int l = 0; l < dec->depth; l++) {
        const km_sam_block *L = &dec->layers[l];
        if (L->self_attn.d > d) d = L->self_attn.d;
        if (L->t2i.d > d) d = L->t2i.d;
        if (L->i2t.d > d) d = L->i2t.d;
    }
    return d;
}

/* Only token-side tensors ([T, d]) are projected: the cross attentions never
 * form the [4096, d] projections of the image tokens (see attn_t2i/attn_i2t). */
static dec_work carve(const km_sam_decoder *dec, int n_sparse, float *base) {
    int D = dec->D, T = 1 + dec->n_mask_tokens + n_sparse, dm = max_attn_d(dec);
    int HT = KM_SAM_DEC_HEADS * T;
    size_t off = 0;
    dec_work w;
#define TAKE(field, n) (w.field = base ? base + off : NULL, off += ((size_t)(n) + 15) & ~(size_t)15)
    TAKE(tok0, (size_t)T * D);
    TAKE(queries, (size_t)T * D);
    TAKE(qq, (size_t)T * D);
    TAKE(src, (size_t)P_TOK * D);
    TAKE(kk, (size_t)P_TOK * D);
    TAKE(aout, (size_t)P_TOK * D);
    TAKE(hid, (size_t)T * dec->mlp_dim);
    TAKE(Q, (size_t)T * dm);
    TAKE(K, (size_t)T * dm);
    TAKE(Kt, (size_t)T * dm);
    TAKE(V, (size_t)T * dm);
    TAKE(L, (size_t)HT * (P_TOK > T ? P_TOK : T));
    TAKE(O, (size_t)T * dm);
    TAKE(fa, (size_t)HT * D);
    TAKE(fb, (size_t)HT * D);
    TAKE(w1, (size_t)D * dec->up1 * 4);
    TAKE(g1, (size_t)P_TOK * dec->up1 * 4);
    TAKE(w2, (size_t)dec->up1 * dec->up2 * 4);
    TAKE(g2, (size_t)UP1_HW * UP1_HW * dec->up2 * 4);
    TAKE(mflat, (size_t)dec->n_mask_tokens * UP2_HW * UP2_HW);
    TAKE(hyper, (size_t)dec->n_mask_tokens * dec->up2);
    TAKE(mlp_a, D);
    TAKE(mlp_b, D);
#undef TAKE
    w.total = off;
    return w;
}

size_t km_sam_decoder_work_floats(const km_sam_decoder *dec, int n_sparse) {
    return carve(dec, n_sparse, NULL).total;
}

/* ---- kernels ---- */

static void add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* transformer.py Attention: out [Mq, D] = out_proj(softmax(q k^T / sqrt(hd)) v)
 * per head, with q [Mq, D] and k, v [Mk, D] before their projections. Used for
 * the tokens' self-attention (Mq = Mk = T ~ 10); the cross attentions with the
 * 4096 image tokens have their own factorised forms below. The projections are
 * GEMMs; the per-head core is a direct loop. Each (head, query) row is
 * independent: logits = q.k / sqrt(hd) (division by the float32 of the double
 * root, as `attn / math.sqrt(c_per_head)`), softmax as exp(x - max) * (1 / sum)
 * (the order of PyTorch's vectorised last-dim softmax; sum kept in double),
 * then the weighted sum of v in key order. */
static void attention(const km_sam_attn *a, int D, float *out, const float *q, int Mq,
                      const float *k, const float *v, int Mk, const dec_work *w) {
    const int d = a->d, H = KM_SAM_DEC_HEADS, hd = d / H;
    km_linear_forward(w->Q, q, a->qw, a->qb, Mq, D, d);
    km_linear_forward(w->K, k, a->kw, a->kb, Mk, D, d);
    km_linear_forward(w->V, v, a->vw, a->vb, Mk, D, d);
    const float scale = (float)sqrt((double)hd);
    const float *Q = w->Q, *V = w->V;
    float *L = w->L, *O = w->O, *Kt = w->Kt;
    /* Kt [H][hd][Mk]: keys transposed per head, so the logits of one query
     * accumulate over channels c in order while vectorising over keys j */
#pragma omp parallel for schedule(static) if ((size_t)Mk * d > 65536)
    for (int f = 0; f < d; f++)
        for (int j = 0; j < Mk; j++) Kt[(size_t)f * Mk + j] = w->K[(size_t)j * d + f];
#pragma omp parallel for schedule(static) if ((size_t)Mq * Mk * d > 32768)
    for (int job = 0; job < H * Mq; job++) {
        int h = job % H, i = job / H;
        const float *qi = Q + (size_t)i * d + h * hd, *kt = Kt + (size_t)h * hd * Mk;
        float *l = L + (size_t)job * Mk, mx = -INFINITY;
        for (int j = 0; j < Mk; j++) l[j] = 0.0f;
        for (int c = 0; c < hd; c++) {
            const float qc = qi[c], *kc = kt + (size_t)c * Mk;
            for (int j = 0; j < Mk; j++) l[j] += qc * kc[j];
        }
        for (int j = 0; j < Mk; j++) {
            l[j] /= scale;
            mx = l[j] > mx ? l[j] : mx;
        }
        double sum = 0;
        for (int j = 0; j < Mk; j++) {
            l[j] = expf(l[j] - mx);
            sum += l[j];
        }
        float inv = (float)(1.0 / sum);
        float *oi = O + (size_t)i * d + h * hd;
        for (int c = 0; c < hd; c++) oi[c] = 0.0f;
        for (int j = 0; j < Mk; j++) {
            float p = l[j] * inv;
            const float *vj = V + (size_t)j * d + h * hd;
            for (int c = 0; c < hd; c++) oi[c] += p * vj[c];
        }
    }
    km_linear_forward(out, w->O, a->ow, a->ob, Mq, d, D);
}

/* Both cross attentions use the per-head factorisation of the projections
 * (with Wq_h, Wk_h, Wv_h the hd rows of head h and Wo_h its hd columns):
 *   (x Wq_h^T + bq_h) . (y Wk_h^T + bk_h) = x . (Wq_h^T k_h) + bq_h . k_h
 *   sum_j p_j (y_j Wv_h^T + bv_h) = (sum_j p_j y_j) Wv_h^T + bv_h   (sum p = 1)
 * so the side with 4096 image tokens is never projected: every product with
 * it is one GEMM with H*T = 8 x T rows (T = 7 for a box prompt) instead of a
 * projection to or from d = 128 channels (SAM's downsampled cross attention),
 * T/16 of the work, and no per-head loops over 4096 queries. The results
 * equal the reference's up to float32 rounding of a different summation
 * order (low-res logits within 6.5e-6 of the sam_tiny fixture, tolerance
 * 1e-4; within 2.1e-5 of PyTorch on logits up to 21 with the real LiteMedSAM
 * decoder, bench/run_decode.sh). Softmax rows are exp(x - max) * (1 / sum)
 * with km_expf_fast (~1 ulp) and float sums in a fixed order; every loop's
 * arithmetic is independent of the thread that runs it. */

/* Z[(h, t), :] = (sum_c X[t, h hd + c] W[h hd + c, :]) / s: the head-h part of
 * token t (X [T, d]) times the head-h rows of a projection weight W [d, D];
 * Z [H*T, D], row h*T + t. */
static void head_rows_times_weight(float *Z, const float *X, const float *W, int T, int d, int D,
                                   float s) {
    const int H = KM_SAM_DEC_HEADS, hd = d / H;
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            float *z = Z + ((size_t)h * T + t) * D;
            for (int k = 0; k < D; k++) z[k] = 0.0f;
            for (int c = 0; c < hd; c++) {
                const float x = X[(size_t)t * d + h * hd + c], *wr = W + (size_t)(h * hd + c) * D;
#pragma omp simd
                for (int k = 0; k < D; k++) z[k] += x * wr[k];
            }
            for (int k = 0; k < D; k++) z[k] /= s;
        }
}

/* Row softmax in place over n contiguous logits. */
static void softmax_row(float *l, int n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = l[j] > mx ? l[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        float e = km_expf_fast(l[j] - mx);
        l[j] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) l[j] *= inv;
}

/* Tokens attend to the image: q [T, D] tokens, k / v [D, 4096] image tokens
 * channel-major (keys + PE / keys); out [T, D]. Logits (h, t) =
 * (q_t^h Wk_h / sqrt(hd)) . k_p (the bias term q_t^h . bk_h is the same for
 * every key p and cancels in the softmax); the values are mixed before their
 * projection. */
static void attn_t2i(const km_sam_attn *a, int D, float *out, const float *q, int T,
                     const float *k, const float *v, const dec_work *w) {
    const int d = a->d, H = KM_SAM_DEC_HEADS, hd = d / H, HT = H * T;
    km_linear_forward(w->Q, q, a->qw, a->qb, T, D, d);
    head_rows_times_weight(w->fa, w->Q, a->kw, T, d, D, (float)sqrt((double)hd));
    km_sgemm(0, 0, HT, P_TOK, D, 1.0f, w->fa, D, k, P_TOK, 0.0f, w->L, P_TOK);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < HT; r++) softmax_row(w->L + (size_t)r * P_TOK, P_TOK);
    km_sgemm(0, 1, HT, D, P_TOK, 1.0f, w->L, P_TOK, v, P_TOK, 0.0f, w->fb, D);
    /* O[t, h hd + c] = (mixed values of (h, t)) . Wv[h hd + c] + bv */
    for (int t = 0; t < T; t++)
        for (int f = 0; f < d; f++) {
            const float *m = w->fb + ((size_t)(f / hd) * T + t) * D, *wr = a->vw + (size_t)f * D;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int c = 0; c < D; c++) acc += m[c] * wr[c];
            w->O[(size_t)t * d + f] = acc + a->vb[f];
        }
    km_linear_forward(out, w->O, a->ow, a->ob, T, d, D);
}

/* Softmax over the T keys of every (query i, head h), logits stored as
 * L[(h, j), i] [H*T, 4096]: vectorised over queries, keys in order. */
static void softmax_columns(float *L, int T) {
    enum { B = 256 };
    const int nb = P_TOK / B;
#pragma omp parallel for schedule(static)
    for (int job = 0; job < KM_SAM_DEC_HEADS * nb; job++) {
        float *l = L + (size_t)(job / nb) * T * P_TOK + (size_t)(job % nb) * B;
        float mx[B], sum[B];
#pragma omp simd
        for (int i = 0; i < B; i++) mx[i] = l[i], sum[i] = 0.0f;
        for (int j = 1; j < T; j++) {
            const float *r = l + (size_t)j * P_TOK;
#pragma omp simd
            for (int i = 0; i < B; i++) mx[i] = r[i] > mx[i] ? r[i] : mx[i];
        }
        for (int j = 0; j < T; j++) {
            float *r = l + (size_t)j * P_TOK;
#pragma omp simd
            for (int i = 0; i < B; i++) {
                float e = km_expf_fast(r[i] - mx[i]);
                r[i] = e;
                sum[i] += e;
            }
        }
#pragma omp simd
        for (int i = 0; i < B; i++) sum[i] = 1.0f / sum[i];
        for (int j = 0; j < T; j++) {
            float *r = l + (size_t)j * P_TOK;
#pragma omp simd
            for (int i = 0; i < B; i++) r[i] *= sum[i];
        }
    }
}

/* The image attends to the tokens: q [D, 4096] image tokens channel-major
 * (keys + PE), k / v [T, D] tokens (+ PE / plain); the result is added to x
 * [D, 4096] (the keys): x += attention + out_proj bias. Logits L[(h, j), i] =
 * q_i . (Wq_h^T k_j^h) / sqrt(hd) + bq_h . k_j^h / sqrt(hd); the attention is
 * the per-head values already through out_proj, (v_j^h Wo_h^T) [H*T, D],
 * times the probabilities [H*T, 4096]. */
static void attn_i2t(const km_sam_attn *a, int D, float *x, const float *q, const float *k,
                     const float *v, int T, const dec_work *w) {
    const int d = a->d, H = KM_SAM_DEC_HEADS, hd = d / H, HT = H * T;
    const float scale = (float)sqrt((double)hd);
    km_linear_forward(w->K, k, a->kw, a->kb, T, D, d);
    km_linear_forward(w->V, v, a->vw, a->vb, T, D, d);
    head_rows_times_weight(w->fa, w->K, a->qw, T, d, D, scale);
    for (int h = 0; h < H; h++)
        for (int j = 0; j < T; j++) {
            float c = 0.0f;
            for (int e = 0; e < hd; e++) c += a->qb[h * hd + e] * w->K[(size_t)j * d + h * hd + e];
            c /= scale;
            float *l = w->L + ((size_t)h * T + j) * P_TOK;
#pragma omp simd
            for (int i = 0; i < P_TOK; i++) l[i] = c;
        }
    km_sgemm(0, 0, HT, P_TOK, D, 1.0f, w->fa, D, q, P_TOK, 1.0f, w->L, P_TOK);
    softmax_columns(w->L, T);
    /* VW[(h, j), n] = v_j^h . Wo[n, h hd .. h hd + hd) */
    for (int h = 0; h < H; h++)
        for (int j = 0; j < T; j++) {
            const float *vj = w->V + (size_t)j * d + h * hd;
            float *z = w->fb + ((size_t)h * T + j) * D;
            for (int n = 0; n < D; n++) {
                const float *wo = a->ow + (size_t)n * d + h * hd;
                float acc = 0.0f;
                for (int e = 0; e < hd; e++) acc += vj[e] * wo[e];
                z[n] = acc;
            }
        }
    km_sgemm(1, 0, D, P_TOK, HT, 1.0f, w->fb, D, w->L, P_TOK, 0.0f, w->aout, P_TOK);
    /* x + (attention + bias), PyTorch's order: queries + attn_out */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < D; c++) {
        const float b = a->ob[c], *o = w->aout + (size_t)c * P_TOK;
        float *xr = x + (size_t)c * P_TOK;
#pragma omp simd
        for (int i = 0; i < P_TOK; i++) xr[i] = xr[i] + (o[i] + b);
    }
}

/* MaskDecoder MLP: ReLU after every layer but the last. in/out [D] / [m->out]. */
static void mlp3(const km_sam_mlp3 *m, int D, float *out, const float *in, const dec_work *w) {
    km_linear_forward(w->mlp_a, in, m->w[0], m->b[0], 1, D, D);
    for (int i = 0; i < D; i++) w->mlp_a[i] = w->mlp_a[i] > 0 ? w->mlp_a[i] : 0.0f;
    km_linear_forward(w->mlp_b, w->mlp_a, m->w[1], m->b[1], 1, D, D);
    for (int i = 0; i < D; i++) w->mlp_b[i] = w->mlp_b[i] > 0 ? w->mlp_b[i] : 0.0f;
    km_linear_forward(out, w->mlp_b, m->w[2], m->b[2], 1, D, m->out);
}

/* ConvTranspose2d(k 2, s 2) weights [I, K, 2, 2] regrouped by tap:
 * out [I, 4 * K] with out[i, t K + o] = w[i, o, t], t = dy * 2 + dx. A GEMM of
 * input pixels [P, I] with it gives, for input pixel p, the K channels of its
 * output pixel (2y + dy, 2x + dx) contiguously at row p, columns t K ..; read
 * as [4P, K], row 4p + t is that output pixel ("tap order"). */
static void taps_by_position(float *out, const float *w, int I, int K) {
    for (int i = 0; i < I; i++)
        for (int o = 0; o < K; o++)
            for (int t = 0; t < 4; t++)
                out[(size_t)i * 4 * K + t * K + o] = w[((size_t)i * K + o) * 4 + t];
}

/* First upscaling stage in place on g [R, K] (R output pixels in tap order):
 * x = g + bias (PyTorch adds the ConvTranspose2d bias after the col2im sum),
 * LayerNorm2d over the K channels of each pixel with km_layernorm2d_forward's
 * arithmetic (mean and variance in double, channels in order; (x - mean) *
 * rstd * w + b in float), then km_gelu_fast. Eight pixels at a time (eight
 * independent accumulator chains). */
static void bias_ln_gelu(float *g, const float *bias, const float *lw, const float *lb, int R,
                         int K, float eps) {
    enum { NR = 8 };
    KM_ASSERT(K <= 256 && R % NR == 0);
    for (int r0 = 0; r0 < R; r0 += NR) {
        float *x = g + (size_t)r0 * K, yv[256];
        double mean[NR], var[NR];
        for (int k = 0; k < NR; k++) {
            mean[k] = var[k] = 0;
#pragma omp simd
            for (int o = 0; o < K; o++) x[k * K + o] = x[k * K + o] + bias[o];
        }
        for (int o = 0; o < K; o++)
            for (int k = 0; k < NR; k++) mean[k] += x[k * K + o];
        for (int k = 0; k < NR; k++) mean[k] /= K;
        for (int o = 0; o < K; o++)
            for (int k = 0; k < NR; k++) {
                double d = x[k * K + o] - mean[k];
                var[k] += d * d;
            }
        for (int k = 0; k < NR; k++) {
            const float rstd = (float)(1.0 / sqrt(var[k] / K + (double)eps)), fm = (float)mean[k];
            float *xk = x + k * K;
#pragma omp simd
            for (int o = 0; o < K; o++) yv[o] = (xk[o] - fm) * rstd * lw[o] + lb[o];
#pragma omp simd
            for (int o = 0; o < K; o++) xk[o] = km_gelu_fast(yv[o]);
        }
    }
}

/* Second stage in place on g [R, K]: km_gelu_fast(g + bias). */
static void bias_gelu(float *g, const float *bias, size_t R, int K) {
    KM_ASSERT(K <= 256);
    float tmp[256];
    for (size_t r = 0; r < R; r++) {
        float *x = g + r * K;
#pragma omp simd
        for (int o = 0; o < K; o++) tmp[o] = x[o] + bias[o];
#pragma omp simd
        for (int o = 0; o < K; o++) x[o] = km_gelu_fast(tmp[o]);
    }
}

/* output_upscaling and the mask product, by blocks of UPB input pixels whose
 * whole pipeline stays in cache: ConvT 1 (one GEMM with the tap-ordered
 * weights w1) -> bias, LayerNorm2d, GELU -> ConvT 2 (GEMM with w2) -> bias,
 * GELU -> mflat[:, pixels of the block] = hyper [M, up2] x (its rows)^T.
 * Block b uses its own slices of g1 and g2, and its GEMMs are single-threaded
 * calls of fixed shape (km_sgemm inside a parallel loop), so the result does
 * not depend on the number of threads. */
#define UPB 128
static void upscale_masks(const km_sam_decoder *dec, const float *src, const dec_work *w) {
    const int D = dec->D, K1 = dec->up1, K2 = dec->up2, M = dec->n_mask_tokens;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < P_TOK / UPB; b++) {
        float *g1 = w->g1 + (size_t)b * UPB * 4 * K1, *g2 = w->g2 + (size_t)b * UPB * 16 * K2;
        km_sgemm(1, 0, UPB, 4 * K1, D, 1.0f, src + (size_t)b * UPB, P_TOK, w->w1, 4 * K1, 0.0f,
                 g1, 4 * K1);
        bias_ln_gelu(g1, dec->up0_b, dec->up1_w, dec->up1_b, 4 * UPB, K1, 1e-6f);
        km_sgemm(0, 0, 4 * UPB, 4 * K2, K1, 1.0f, g1, K1, w->w2, 4 * K2, 0.0f, g2, 4 * K2);
        bias_gelu(g2, dec->up3_b, (size_t)16 * UPB, K2);
        km_sgemm(0, 1, M, 16 * UPB, K2, 1.0f, w->hyper, K2, g2, K2, 0.0f,
                 w->mflat + (size_t)b * UPB * 16, 16 * P_TOK);
    }
}

/* masks [M, 256, 256] from mflat [M, 64*64*16] in the two stages' tap order:
 * index ((y 64 + x) 4 + t1) 4 + t2 holds output pixel (4y + 2 dy1 + dy2,
 * 4x + 2 dx1 + dx2) with t = dy * 2 + dx. */
static void untap_masks(float *masks, const float *mflat, int M) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < M * UP2_HW; row++) {
        const int m = row / UP2_HW, Y = row % UP2_HW;
        const int y = Y / 4, dy1 = Y % 4 / 2, dy2 = Y % 2;
        const float *s = mflat + (size_t)m * UP2_HW * UP2_HW +
                         (size_t)y * KM_SAM_EMB_HW * 16 + dy1 * 8 + dy2 * 2;
        float *o = masks + (size_t)row * UP2_HW;
        for (int X = 0; X < UP2_HW; X++) o[X] = s[(X / 4) * 16 + (X % 4 / 2) * 4 + X % 2];
    }
}

void km_sam_decoder_forward(const km_sam_decoder *dec, float *masks, float *iou, const float *image,
                            const float *image_pe, const float *sparse, int n_sparse,
                            const float *dense, float *work) {
    const int D = dec->D, M = dec->n_mask_tokens, T = 1 + M + n_sparse;
    const size_t DP = (size_t)D * P_TOK;
    const float eps = 1e-5f; /* nn.LayerNorm default in the TwoWayTransformer */
    dec_work w = carve(dec, n_sparse, work);

    /* tokens = [iou_token, mask_tokens, sparse]; they are also the query PE */
    memcpy(w.tok0, dec->iou_token, sizeof(float) * D);
    memcpy(w.tok0 + D, dec->mask_tokens, sizeof(float) * M * D);
    if (n_sparse) memcpy(w.tok0 + (size_t)(1 + M) * D, sparse, sizeof(float) * n_sparse * D);
    memcpy(w.queries, w.tok0, sizeof(float) * T * D);
    /* the image tokens stay channel-major [D, 4096] throughout: src = image +
     * dense (the keys), kk = keys + image_pe */
    add(w.src, image, dense, DP);
    add(w.kk, w.src, image_pe, DP);

    for (int l = 0; l < dec->depth; l++) {
        const km_sam_block *L = &dec->layers[l];
        /* (a) self-attention; layer 0 (skip_first_layer_pe) replaces the queries */
        if (l == 0) {
            attention(&L->self_attn, D, w.aout, w.queries, T, w.queries, w.queries, T, &w);
            memcpy(w.queries, w.aout, sizeof(float) * T * D);
        } else {
            add(w.qq, w.queries, w.tok0, (size_t)T * D);
            attention(&L->self_attn, D, w.aout, w.qq, T, w.qq, w.queries, T, &w);
            add(w.queries, w.queries, w.aout, (size_t)T * D);
        }
        km_layernorm_forward(w.queries, w.queries, L->norm1.w, L->norm1.b, T, D, eps);
        /* (b) tokens attend to the image; kk = keys + key_pe is reused by (d)
         * since the keys do not change in between */
        add(w.qq, w.queries, w.tok0, (size_t)T * D);
        attn_t2i(&L->t2i, D, w.aout, w.qq, T, w.kk, w.src, &w);
        add(w.queries, w.queries, w.aout, (size_t)T * D);
        km_layernorm_forward(w.queries, w.queries, L->norm2.w, L->norm2.b, T, D, eps);
        /* (c) MLP with ReLU */
        km_linear_forward(w.hid, w.queries, L->lin1_w, L->lin1_b, T, D, dec->mlp_dim);
        for (size_t i = 0; i < (size_t)T * dec->mlp_dim; i++) w.hid[i] = w.hid[i] > 0 ? w.hid[i] : 0.0f;
        km_linear_forward(w.aout, w.hid, L->lin2_w, L->lin2_b, T, dec->mlp_dim, D);
        add(w.queries, w.queries, w.aout, (size_t)T * D);
        km_layernorm_forward(w.queries, w.queries, L->norm3.w, L->norm3.b, T, D, eps);
        /* (d) the image attends to the tokens: keys += attn, keys = norm4(keys)
         * (LayerNorm over each token's channels = LayerNorm2d's arithmetic) */
        add(w.qq, w.queries, w.tok0, (size_t)T * D);
        attn_i2t(&L->i2t, D, w.src, w.kk, w.qq, w.queries, T, &w);
        km_layernorm2d_forward(w.src, w.src, L->norm4.w, L->norm4.b, 1, D, P_TOK, eps);
        add(w.kk, w.src, image_pe, DP);
    }
    /* final token-to-image attention: only the IoU and mask tokens (rows
     * 0..M) are read afterwards, and each query row is independent */
    const int TO = 1 + M;
    add(w.qq, w.queries, w.tok0, (size_t)TO * D);
    attn_t2i(&dec->final_attn, D, w.aout, w.qq, TO, w.kk, w.src, &w);
    add(w.queries, w.queries, w.aout, (size_t)TO * D);
    km_layernorm_forward(w.queries, w.queries, dec->norm_final.w, dec->norm_final.b, TO, D, eps);

    /* output_upscaling: ConvT(D->up1) LN2d GELU ConvT(up1->up2) GELU, each
     * ConvT one GEMM with its weights in tap order, so that every output
     * pixel's channels are a contiguous row; pixels stay in tap order until
     * the mask product, whose M x 65536 values are put in place at the end. */
    taps_by_position(w.w1, dec->up0_w, D, dec->up1);
    taps_by_position(w.w2, dec->up3_w, dec->up1, dec->up2);
    /* hypernetworks on the mask tokens, then masks = hyper_in @ upscaled */
    for (int m = 0; m < M; m++)
        mlp3(&dec->hyper[m], D, w.hyper + (size_t)m * dec->up2, w.queries + (size_t)(1 + m) * D,
             &w);
    upscale_masks(dec, w.src, &w);
    untap_masks(masks, w.mflat, M);
    mlp3(&dec->iou_head, D, iou, w.queries, &w);
}

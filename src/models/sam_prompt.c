/* sam_prompt.c - SAM PromptEncoder, ported from segment_anything/modeling/
 * prompt_encoder.py (PromptEncoder, PositionEmbeddingRandom). See sam_prompt.h. */
#include "sam_prompt.h"
#include "../nn/basic.h"
#include "../nn/gemm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static km_status bind(const km_tdict *w, const char *file, const char *prefix, const char *name,
                      int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const float **out) {
    char key[256];
    int64_t shape[4] = {d0, d1, d2, d3};
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return km_tdict_get_f32(w, file, key, ndim, shape, out);
}

/* The shape of a tensor we only use to learn a dimension; a missing key is
 * reported with the shape we would have expected. */
static km_status dims_of(const km_tdict *w, const char *file, const char *prefix, const char *name,
                         int ndim, const char *expect, const km_tensor **t) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    *t = km_tdict_find(w, key);
    if (!*t) return km_err(KM_EMISSING, "%s: missing tensor '%s' (expected shape %s)", file, key, expect);
    if ((*t)->ndim != ndim || (*t)->dtype != KM_F32) {
        char a[128];
        return km_err(KM_ESHAPE, "%s: tensor '%s' has shape %s (%s), expected %s float32", file, key,
                      km_shape_str(a, sizeof a, (*t)->ndim, (*t)->shape),
                      km_dtype_name((*t)->dtype), expect);
    }
    return KM_OK;
}

km_status km_sam_prompt_load(km_sam_prompt *pe, const km_tdict *w, const char *file,
                             const char *prefix) {
    memset(pe, 0, sizeof *pe);
    const km_tensor *t;
    km_status s;
    if ((s = dims_of(w, file, prefix, "pe_layer.positional_encoding_gaussian_matrix", 2, "[2, 128]",
                     &t)))
        return s;
    int D = (int)t->shape[1] * 2;
    if (t->shape[0] != 2 || D < 2)
        return km_err(KM_ESHAPE, "%s: tensor '%spe_layer.positional_encoding_gaussian_matrix' has "
                      "shape [%lld, %lld], expected [2, F]", file, prefix,
                      (long long)t->shape[0], (long long)t->shape[1]);
    pe->D = D;
    pe->input_size = KM_SAM_INPUT;
    pe->gauss = t->data;
    if ((s = dims_of(w, file, prefix, "mask_downscaling.3.weight", 4, "[16, 4, 2, 2]", &t))) return s;
    int mc = (int)t->shape[0], c4 = (int)t->shape[1];
    pe->mask_chans = mc;
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "point_embeddings.%d.weight", i);
        if ((s = bind(w, file, prefix, name, 2, 1, D, 0, 0, &pe->point_emb[i]))) return s;
    }
    if ((s = bind(w, file, prefix, "not_a_point_embed.weight", 2, 1, D, 0, 0, &pe->not_a_point)) ||
        (s = bind(w, file, prefix, "no_mask_embed.weight", 2, 1, D, 0, 0, &pe->no_mask)) ||
        (s = bind(w, file, prefix, "mask_downscaling.0.weight", 4, c4, 1, 2, 2, &pe->md0_w)) ||
        (s = bind(w, file, prefix, "mask_downscaling.0.bias", 1, c4, 0, 0, 0, &pe->md0_b)) ||
        (s = bind(w, file, prefix, "mask_downscaling.1.weight", 1, c4, 0, 0, 0, &pe->md1_w)) ||
        (s = bind(w, file, prefix, "mask_downscaling.1.bias", 1, c4, 0, 0, 0, &pe->md1_b)) ||
        (s = bind(w, file, prefix, "mask_downscaling.3.weight", 4, mc, c4, 2, 2, &pe->md3_w)) ||
        (s = bind(w, file, prefix, "mask_downscaling.3.bias", 1, mc, 0, 0, 0, &pe->md3_b)) ||
        (s = bind(w, file, prefix, "mask_downscaling.4.weight", 1, mc, 0, 0, 0, &pe->md4_w)) ||
        (s = bind(w, file, prefix, "mask_downscaling.4.bias", 1, mc, 0, 0, 0, &pe->md4_b)) ||
        (s = bind(w, file, prefix, "mask_downscaling.6.weight", 4, D, mc, 1, 1, &pe->md6_w)) ||
        (s = bind(w, file, prefix, "mask_downscaling.6.bias", 1, D, 0, 0, 0, &pe->md6_b)))
        return s;
    return KM_OK;
}

int km_sam_prompt_num_sparse(int n_points, int has_box) {
    return n_points + (n_points > 0 && !has_box ? 1 : 0) + (has_box ? 2 : 0);
}

/* PositionEmbeddingRandom._pe_encoding for one point (cx, cy) already divided
 * by the canvas size, in PyTorch's float32 order: 2c - 1, matmul with G [2, F]
 * (x row first), times (float)(2 pi), then [sin, cos]. */
static void pe_point(const km_sam_prompt *pe, float *out, float cx, float cy) {
    int F = pe->D / 2;
    float vx = 2.0f * cx - 1.0f, vy = 2.0f * cy - 1.0f;
    const float two_pi = (float)(2.0 * M_PI);
    for (int k = 0; k < F; k++) {
        float z = vx * pe->gauss[k] + vy * pe->gauss[F + k];
        z = two_pi * z;
        out[k] = sinf(z);
        out[F + k] = cosf(z);
    }
}

void km_sam_prompt_sparse(const km_sam_prompt *pe, float *sparse, const float *points,
                          const int *labels, int n, const float *box) {
    int D = pe->D;
    KM_ASSERT(pe->input_size > 0);
    const float canvas = (float)pe->input_size;
    for (int i = 0; i < n; i++) {
        float *o = sparse + (size_t)i * D;
        int l = labels[i];
        KM_ASSERT(l >= -1 && l <= 1);
        if (l == -1) {
            /* point_embedding[labels == -1] = 0.0, then += not_a_point_embed */
            memcpy(o, pe->not_a_point, sizeof(float) * D);
            continue;
        }
        pe_point(pe, o, (points[2 * i] + 0.5f) / canvas, (points[2 * i + 1] + 0.5f) / canvas);
        const float *e = pe->point_emb[l];
        for (int c = 0; c < D; c++) o[c] += e[c];
    }
    int t = n;
    if (n > 0 && !box) {
        /* The padding point (0, 0) with label -1: its PE is zeroed. */
        memcpy(sparse + (size_t)t * D, pe->not_a_point, sizeof(float) * D);
        t++;
    }
    if (box) {
        for (int k = 0; k < 2; k++) {
            float *o = sparse + (size_t)(t + k) * D;
            pe_point(pe, o, (box[2 * k] + 0.5f) / canvas, (box[2 * k + 1] + 0.5f) / canvas);
            const float *e = pe->point_emb[2 + k];
            for (int c = 0; c < D; c++) o[c] += e[c];
        }
    }
}

void km_sam_prompt_dense_pe(const km_sam_prompt *pe, float *out) {
    const int G = KM_SAM_EMB_HW, HW = G * G, D = pe->D;
    float tmp[1024];
    KM_ASSERT(D <= 1024);
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            /* grid.cumsum - 0.5, divided by 64: exact in float32 */
            pe_point(pe, tmp, ((float)j + 0.5f) / (float)G, ((float)i + 0.5f) / (float)G);
            for (int c = 0; c < D; c++) out[(size_t)c * HW + i * G + j] = tmp[c];
        }
}

size_t km_sam_prompt_work_floats(const km_sam_prompt *pe) {
    int c4 = pe->mask_chans / 4;
    int h1 = KM_SAM_MASK_HW / 2, h2 = KM_SAM_MASK_HW / 4;
    return (size_t)c4 * h1 * h1 + (size_t)pe->mask_chans * h2 * h2;
}

/* Conv2d with kernel 2, stride 2, no padding (non-overlapping 2x2 patches):
 * in [C, H, W] -> out [K, H/2, W/2]; w [K, C, 2, 2]. Summation order follows
 * the weight layout (c, dy, dx), bias first. */
static void conv2x2s2(float *out, const float *in, const float *w, const float *b, int C, int H,
                      int W, int K) {
    int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < K; k++)
        for (int y = 0; y < OH; y++)
            for (int x = 0; x < OW; x++) {
                float acc = b[k];
                for (int c = 0; c < C; c++) {
                    const float *p = in + ((size_t)c * H + 2 * y) * W + 2 * x;
                    const float *wk = w + ((size_t)k * C + c) * 4;
                    acc += wk[0] * p[0] + wk[1] * p[1] + wk[2] * p[W] + wk[3] * p[W + 1];
                }
                out[((size_t)k * OH + y) * OW + x] = acc;
            }
}

void km_sam_prompt_dense(const km_sam_prompt *pe, float *out, const float *mask, float *work) {
    const int HW = KM_SAM_EMB_HW * KM_SAM_EMB_HW, D = pe->D;
    if (!mask) {
#pragma omp parallel for schedule(static)
        for (int c = 0; c < D; c++) {
            const float v = pe->no_mask[c];
            float *o = out + (size_t)c * HW;
#pragma omp simd
            for (int p = 0; p < HW; p++) o[p] = v;
        }
        return;
    }
    int mc = pe->mask_chans, c4 = mc / 4;
    int h0 = KM_SAM_MASK_HW, h1 = h0 / 2, h2 = h0 / 4;
    float *a = work, *b = work + (size_t)c4 * h1 * h1;
    /* mask_downscaling: conv(1->c4) LN2d GELU conv(c4->mc) LN2d GELU conv1x1(mc->D) */
    conv2x2s2(a, mask, pe->md0_w, pe->md0_b, 1, h0, h0, c4);
    km_layernorm2d_forward(a, a, pe->md1_w, pe->md1_b, 1, c4, h1 * h1, 1e-6f);
    km_gelu_forward(a, a, (size_t)c4 * h1 * h1);
    conv2x2s2(b, a, pe->md3_w, pe->md3_b, c4, h1, h1, mc);
    km_layernorm2d_forward(b, b, pe->md4_w, pe->md4_b, 1, mc, h2 * h2, 1e-6f);
    km_gelu_forward(b, b, (size_t)mc * h2 * h2);
    for (int c = 0; c < D; c++)
        for (int p = 0; p < HW; p++) out[(size_t)c * HW + p] = pe->md6_b[c];
    km_sgemm(0, 0, D, HW, mc, 1.0f, pe->md6_w, mc, b, HW, 1.0f, out, HW);
}

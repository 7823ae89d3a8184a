/* tinyvit.h - TinyViT image encoder of LiteMedSAM and MobileSAM (forward only).
 *
 * Ports tiny_vit_sam.py (MedSAM branch LiteMedSAM @b0fab47, MobileSAM
 * @34bbbfd); spec: docs/teacher-tinyvit.md section 1. The architecture is
 * inferred from the checkpoint's shapes (section 2.3 of the spec): stage
 * widths, depths, heads (from attention_biases), windows (from the bias
 * table length), MLP ratio, MBConv expansion, local conv kernel, and the
 * patch-embedding kernel, which fixes the variant:
 *   k = 1 -> LiteMedSAM (1x1 stride 1, input 256x256)
 *   k = 3 -> MobileSAM  (3x3 stride 2 twice, input 1024x1024)
 * PatchMerging strides follow the code's rule (stride 1 when the merge's
 * out_dim is 320, 448 or 576, else 2); a last width outside that set is
 * rejected. Keys are read with the prefix "image_encoder."; MobileSAM's
 * unused classifier (image_encoder.norm_head.*, image_encoder.head.*) is
 * ignored.
 *
 * Usage:
 *   km_tinyvit *enc;
 *   km_status s = km_tinyvit_load(&enc, &sd, "lite_medsam.pth");  // copies weights
 *   float *emb = km_malloc(sizeof(float) * 256 * 64 * 64);
 *   km_tinyvit_forward(enc, img, emb, NULL);   // img [3, S, S], S = img_size
 *   km_tinyvit_free(enc);
 * The forward uses km_get_threads() OpenMP threads (the BLAS runs
 * single-threaded inside them) and is bit-identical for a fixed thread count.
 * Not reentrant: one forward at a time per encoder.
 * Memory, all allocated at load: the weights with BatchNorm folded into the
 * convolutions and the attention biases gathered to [heads, N, N] tables
 * (~28 MB for TinyViT-5M), and scratch (~80 MB for both released models at
 * 2 threads: four token buffers plus, per thread, one window's N x N scores,
 * an im2col chunk or three grid rows of the streamed stage-0 MBConv). The one
 * allocation a forward may make: the per-thread scratch grows when
 * km_get_threads() is larger than at load. */
#ifndef KM_TINYVIT_H
#define KM_TINYVIT_H

#include "../io/tensor.h"

typedef struct {
    int img_size;      /* 256 (LiteMedSAM) or 1024 (MobileSAM) */
    int patch_k;       /* patch-embedding kernel: 1 or 3 */
    int embed_dims[4]; /* [64, 128, 160, 320] for TinyViT-5M */
    int depths[4];     /* [2, 2, 6, 2] */
    int num_heads[4];  /* stage 0 has none (0) */
    int window_sizes[4]; /* stage 0: 0 */
    int mlp_ratio;     /* 4 */
    int mbconv_expand; /* 4 */
    int local_conv_k;  /* 3 */
    int out_chans;     /* neck: 256 */
} km_tinyvit_config;

typedef struct km_tinyvit km_tinyvit;

/* 1 when sd holds a TinyViT image encoder (image_encoder.patch_embed.seq.0.c.weight). */
int km_tinyvit_detect(const km_tdict *sd);

/* Infers the config from `sd` (keys "image_encoder.*"); errors (KM_EMISSING /
 * KM_ESHAPE) name `file`, the tensor, expected and found. */
km_status km_tinyvit_config_infer(const km_tdict *sd, const char *file, km_tinyvit_config *cfg);

/* Infers the config, checks every tensor's shape and copies the weights; `sd`
 * may be freed afterwards. */
km_status km_tinyvit_load(km_tinyvit **enc, const km_tdict *sd, const char *file);

const km_tinyvit_config *km_tinyvit_config_of(const km_tinyvit *enc);

/* Optional intermediate outputs for parity tests (any may be NULL), named as
 * the fixtures name them:
 *   layer0_out        tokens after layers.0 (incl. its PatchMerging), [L1, E1]
 *   layer1_out        tokens after layers.1, [L2, E2]
 *   layer2_blocks_out tokens after layers.2's blocks (before its merge), [L2, E2]
 * (row-major token order, channels last). */
typedef struct {
    float *layer0_out;
    float *layer1_out;
    float *layer2_blocks_out;
} km_tinyvit_taps;

/* img: [3, img_size, img_size] (the profile's preprocessed input);
 * embedding: [out_chans, 64, 64]. */
km_status km_tinyvit_forward(km_tinyvit *enc, const float *img, float *embedding,
                             const km_tinyvit_taps *taps);

void km_tinyvit_free(km_tinyvit *enc);

#endif

/* sam_encoder.h - Segment Anything's ImageEncoderViT (forward only).
 *
 * Ports segment_anything/modeling/image_encoder.py @dca509f (ImageEncoderViT,
 * Block, Attention, window_partition/unpartition, get_rel_pos,
 * add_decomposed_rel_pos) and common.py (LayerNorm2d, MLPBlock); see
 * docs/reference-arch.md 1.2.
 *
 * The architecture is inferred from the checkpoint's tensor shapes, so SAM
 * ViT-B/L/H, MedSAM and the test fixture's tiny encoder all load with no flags:
 *   embed_dim   = patch_embed.proj.weight.shape[0]; patch = its kernel size
 *   grid        = pos_embed.shape[1] (64 -> input img_size = grid * patch = 1024)
 *   depth       = number of consecutive blocks.N present
 *   head_dim    = blocks.0.attn.rel_pos_h.shape[1]; num_heads = embed_dim / head_dim
 *   global block: rel_pos table length == 2 * grid - 1 (127)
 *   window_size : (L + 1) / 2 for the other blocks (L = 27 -> 14), all equal
 *   out_chans   = neck.0.weight.shape[0] (256)
 * Keys are read with the prefix "image_encoder." (a full SAM state dict).
 *
 * Usage:
 *   km_sam_encoder *enc;
 *   km_status s = km_sam_encoder_load(&enc, &sd, "sam_vit_b.pth");  // copies weights
 *   km_tdict_free(&sd);                                              // allowed
 *   float *emb = km_malloc(sizeof(float) * 256 * 64 * 64);
 *   km_sam_encoder_forward(enc, img, emb, NULL);
 *   km_sam_encoder_free(enc);
 * The image is the SamPredictor input (sam_preprocess.h): float [3, 1024, 1024],
 * normalised and padded. The forward allocates nothing: weights (359 MB for
 * ViT-B) and scratch (~160 MB for ViT-B at 2 threads: the [4096, 3072] MLP
 * hidden, padded-window qkv, a few [4096, D] activations, per-thread 4 MB
 * attention score blocks) are allocated at load; the 4096 x 4096 attention
 * map is never materialised. It uses km_get_threads() OpenMP threads (the
 * BLAS runs single-threaded inside them during the call); the result is
 * bit-identical for a fixed thread count.
 * A km_sam_encoder is not reentrant: one forward at a time per encoder. */
#ifndef KM_SAM_ENCODER_H
#define KM_SAM_ENCODER_H

#include "../io/tensor.h"

#define KM_SAM_MAX_DEPTH 64

typedef struct {
    int img_size;    /* 1024 */
    int patch;       /* 16 */
    int grid;        /* img_size / patch = 64 */
    int embed_dim;   /* D: 768 / 1024 / 1280 (ViT-B/L/H), 64 for sam_tiny */
    int depth;       /* number of blocks */
    int num_heads;   /* D / head_dim */
    int head_dim;    /* 64 (B, L), 80 (H) */
    int mlp_dim;     /* lin1 out features, 4 D */
    int window_size; /* 14; 0 if every block is global */
    int out_chans;   /* neck channels, 256 */
    int n_global;
    int global_idx[KM_SAM_MAX_DEPTH]; /* ascending block indices with global attention */
} km_sam_encoder_config;

typedef struct km_sam_encoder km_sam_encoder;

/* Infers the config from `sd` (keys "image_encoder.*") without loading. Errors
 * (KM_EMISSING / KM_ESHAPE) name `file`, the tensor, expected and found. */
km_status km_sam_encoder_config_infer(const km_tdict *sd, const char *file,
                                      km_sam_encoder_config *cfg);

/* Infers the config, checks every tensor's shape and copies the weights; `sd`
 * may be freed afterwards. `file` is only used in error messages. */
km_status km_sam_encoder_load(km_sam_encoder **enc, const km_tdict *sd, const char *file);

const km_sam_encoder_config *km_sam_encoder_config_of(const km_sam_encoder *enc);

/* Optional intermediate outputs (for parity tests); each pointer may be NULL.
 * All are channels-last [grid, grid, D] = the reference's [1, 64, 64, D]. */
typedef struct {
    float *after_patch_embed_pos; /* patch_embed(x) + pos_embed */
    float *after_block0;          /* output of blocks.0 */
    float *after_last_block;      /* output of blocks.{depth-1} (input of the neck) */
} km_sam_encoder_taps;

/* img: [3, img_size, img_size]; embedding: [out_chans, grid, grid] (NCHW with
 * N = 1, i.e. the reference's [1, 256, 64, 64]). Returns KM_OK. */
km_status km_sam_encoder_forward(km_sam_encoder *enc, const float *img, float *embedding,
                                 const km_sam_encoder_taps *taps);

void km_sam_encoder_free(km_sam_encoder *enc);

#endif

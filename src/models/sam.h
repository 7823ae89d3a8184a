/* sam.h - the whole Segment Anything model from one checkpoint, and a
 * predictor with SamPredictor semantics (segment_anything/predictor.py;
 * reference-arch.md 1.5) plus the MedSAM inference profile (1.5.3).
 *
 *   km_sam m;        km_sam_load(&m, "sam_vit_b_01ec64.pth", 1);
 *   km_sam_predictor p;  km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_SAM);
 *   km_sam_set_image(&p, rgb, w, h, 3);            // preprocessing + encoder
 *   km_sam_prompts pr = {.points = xy, .labels = lab, .n_points = 1, .multimask = 1};
 *   km_sam_result r;  km_sam_predict(&p, &pr, &r); // r.masks [K, h, w], r.iou [K]
 *   km_sam_result_free(&r); km_sam_predictor_free(&p); km_sam_free(&m);
 *
 * Checkpoint: a SAM / MedSAM state dict (.pth or safetensors) with keys
 * image_encoder.*, prompt_encoder.*, mask_decoder.*; pixel_mean/std are not in
 * it (they are constants, see sam_preprocess.h). Variant dims come from the
 * tensor shapes. Prompts are given in ORIGINAL image pixels, (x, y), boxes
 * (x0, y0, x1, y1); the predictor rescales them into the 1024 frame:
 *   SAM:    (float)(x * (new_w / w)), (float)(y * (new_h / h)) in double
 *           (ResizeLongestSide.apply_coords);
 *   MedSAM: (float)(x / W * 1024), (float)(y / H * 1024) (MedSAM_Inference.py).
 * Outputs for K selected masks (multimask: tokens 1..3, else token 0):
 *   SAM:    scores = upsampled logits at (h, w); masks = scores > 0;
 *   MedSAM: box only, single mask; scores = bilinear(sigmoid(low-res logits))
 *           at (H, W); masks = scores > 0.5. */
#ifndef KM_SAM_H
#define KM_SAM_H

#include "../io/tensor.h"
#include "sam_decoder.h"
#include "sam_encoder.h"
#include "sam_prompt.h"

typedef struct {
    char *file;
    km_tdict weights;        /* prompt_encoder.* and mask_decoder.* (borrowed by pe / dec) */
    km_sam_encoder *encoder; /* NULL when loaded without the image encoder */
    km_sam_prompt pe;
    km_sam_decoder dec;
} km_sam;

/* with_encoder = 0 skips the image encoder (prompting from cached embeddings
 * only); its tensors are then not even checked. */
km_status km_sam_load(km_sam *m, const char *path, int with_encoder);
/* Same from a state dict, which is consumed (emptied) either way. */
km_status km_sam_from_tdict(km_sam *m, km_tdict *sd, const char *file, int with_encoder);
void km_sam_free(km_sam *m);

typedef enum { KM_SAM_PROFILE_SAM = 0, KM_SAM_PROFILE_MEDSAM = 1 } km_sam_profile;

typedef struct {
    const km_sam *model;
    km_sam_profile profile;
    int has_image;
    int orig_h, orig_w;   /* original image size */
    int input_h, input_w; /* resized size inside the 1024 canvas */
    float *embedding;     /* [256, 64*64] */
    float *dense_pe;      /* [256, 64*64], computed once */
    float *dense;         /* [256, 64*64] */
    float *masks_all;     /* [M, 256*256] every mask token's low-res logits */
    float *work;
    size_t work_n;
} km_sam_predictor;

km_status km_sam_predictor_init(km_sam_predictor *p, const km_sam *m, km_sam_profile profile);
void km_sam_predictor_free(km_sam_predictor *p);

/* SAM profile: rgb h x w x c (c = 3 RGB, or 1 grey replicated), runs
 * ResizeLongestSide + normalisation + padding and the image encoder. */
km_status km_sam_set_image(km_sam_predictor *p, const uint8_t *rgb, int w, int h, int c);
/* MedSAM profile: rgb is the caller's 1024 x 1024 resize of the original
 * (skimage bicubic in MedSAM_Inference.py); orig_w x orig_h is the size the
 * masks are returned at. Min-max normalisation, no padding. */
km_status km_medsam_set_image(km_sam_predictor *p, const uint8_t *rgb1024, int c, int orig_w,
                              int orig_h);
/* Use a cached embedding [256, 64, 64] of an orig_w x orig_h image. */
km_status km_sam_set_embedding(km_sam_predictor *p, const float *embedding, int orig_w, int orig_h);

typedef struct {
    const float *points; /* [n_points, 2] (x, y) original pixels, or NULL */
    const int *labels;   /* [n_points]: 1 foreground, 0 background, -1 ignored */
    int n_points;
    const float *box;        /* [4] (x0, y0, x1, y1) original pixels, or NULL */
    const float *mask_input; /* [mask_h, mask_w] low-res logits (must be 256 x 256), or NULL */
    int mask_h, mask_w;
    int multimask; /* 1: the three multimask outputs; 0: the single-mask output */
} km_sam_prompts;

typedef struct {
    int K, h, w;    /* K masks at the original size h x w */
    int n_sparse;   /* prompt tokens */
    float *scores;  /* [K, h, w] logits (SAM) / probabilities (MedSAM) */
    uint8_t *masks; /* [K, h, w] 0/1 */
    float iou[8];   /* [K] predicted IoU (no sigmoid) */
    float *low_res; /* [K, 256, 256] logits, usable as a later mask_input */
    float *sparse;  /* [n_sparse, 256] sparse prompt embeddings */
} km_sam_result;

/* Validates the prompts (points and boxes inside the image, x0 <= x1, y0 <= y1,
 * labels in {-1, 0, 1}, mask 256 x 256, at least one prompt) with KM_EARG
 * errors naming the offending value, then runs prompt encoder, mask decoder
 * and post-processing. */
km_status km_sam_predict(km_sam_predictor *p, const km_sam_prompts *pr, km_sam_result *out);
/* The same validation alone, for an orig_w x orig_h image (lets callers fail
 * before running the image encoder). */
km_status km_sam_validate_prompts(const km_sam_prompts *pr, km_sam_profile profile, int orig_w,
                                  int orig_h);
void km_sam_result_free(km_sam_result *r);

#endif

/* sam.h - a SAM-family teacher from one checkpoint, and a predictor with
 * SamPredictor semantics driven by the teacher profiles of teacher.h (SAM,
 * MedSAM, LiteMedSAM, MobileSAM; reference-arch.md 1.5, teacher-tinyvit.md).
 *
 *   km_sam m;        km_sam_load(&m, "lite_medsam.pth", 1);
 *   km_sam_predictor p;  km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_LITEMEDSAM);
 *   km_sam_set_image(&p, rgb, w, h, 3);            // profile pre-processing + encoder
 *   km_sam_prompts pr = {.box = box};
 *   km_sam_result r;  km_sam_predict(&p, &pr, &r); // r.masks [K, h, w], r.iou [K]
 *   km_sam_result_free(&r); km_sam_predictor_free(&p); km_sam_free(&m);
 *
 * Checkpoint: a state dict (.pth or safetensors) with keys image_encoder.*,
 * prompt_encoder.*, mask_decoder.*. The image encoder is a ViT (SAM, MedSAM)
 * or a TinyViT (LiteMedSAM, MobileSAM), told apart by its keys; every
 * dimension comes from the tensor shapes. pixel_mean/std are not in it (they
 * are constants, see sam_preprocess.h). Prompts are given in ORIGINAL image
 * pixels, (x, y), boxes (x0, y0, x1, y1); the profile's `coord` maps them
 * into the prompt encoder's frame (1024, or 256 for LiteMedSAM).
 * Outputs for K selected masks (multimask: tokens 1..3, else token 0):
 * scores at the original size (logits, or probabilities for MedSAM: the
 * profile's scores_are_probs) and masks = the profile's is_fg(score). */
#ifndef KM_SAM_H
#define KM_SAM_H

#include "../io/tensor.h"
#include "sam_decoder.h"
#include "sam_encoder.h"
#include "sam_prompt.h"
#include "teacher.h"
#include "tinyvit.h"

typedef struct {
    char *file;
    km_tdict weights;        /* prompt_encoder.* and mask_decoder.* (borrowed by pe / dec) */
    km_sam_encoder *encoder; /* ViT image encoder, or NULL */
    km_tinyvit *tinyvit;     /* TinyViT image encoder, or NULL (loaded without the encoder) */
    km_teacher_encoder kind; /* which one the checkpoint holds (known even without loading it) */
    int input;               /* the encoder's input square (1024, 256 for LiteMedSAM) */
    km_sam_prompt pe;
    km_sam_decoder dec;
} km_sam;

/* with_encoder = 0 skips the image encoder (prompting from cached embeddings
 * only); its tensors are then not even checked. */
km_status km_sam_load(km_sam *m, const char *path, int with_encoder);
/* Same from a state dict, which is consumed (emptied) either way. */
km_status km_sam_from_tdict(km_sam *m, km_tdict *sd, const char *file, int with_encoder);
void km_sam_free(km_sam *m);

/* The profile a checkpoint implies (teacher.h KM_SAM_PROFILE_AUTO). */
km_sam_profile km_sam_auto_profile(const km_sam *m);
/* The same from a file, loading it without its image encoder. */
km_status km_sam_probe_profile(const char *path, km_sam_profile *profile);
/* KM_EARG when the checkpoint cannot run under the profile (a ViT under a
 * TinyViT profile or the reverse, LiteMedSAM's 256 input under MobileSAM's
 * 1024 or the reverse), naming the file and what it holds. */
km_status km_sam_check_profile(const km_sam *m, km_sam_profile profile);

/* The profile's pre-processing and the image encoder on an original image
 * rgb h x w x c (c = 3, or 1 grey): emb [D, 64, 64]. Allocates a temporary
 * encoder input. KM_EARG when the model was loaded without its encoder. */
km_status km_sam_encode(const km_sam *m, km_sam_profile profile, const uint8_t *rgb, int w, int h,
                        int c, float *emb);

typedef struct {
    const km_sam *model;
    km_sam_profile profile;
    const km_teacher_profile *tp;
    km_sam_prompt pe;     /* the model's prompt encoder in the profile's prompt frame */
    int has_image;
    int orig_h, orig_w;   /* original image size */
    int input_h, input_w; /* resized size inside the encoder's input square */
    float *embedding;     /* [256, 64*64] */
    float *dense_pe;      /* [256, 64*64], computed once */
    float *dense;         /* [256, 64*64] */
    float *masks_all;     /* [M, 256*256] every mask token's low-res logits */
    float *work;
    size_t work_n;
} km_sam_predictor;

/* KM_EARG (km_sam_check_profile) when the profile does not fit the model. */
km_status km_sam_predictor_init(km_sam_predictor *p, const km_sam *m, km_sam_profile profile);
void km_sam_predictor_free(km_sam_predictor *p);

/* Any profile: rgb h x w x c (c = 3 RGB, or 1 grey replicated), the profile's
 * pre-processing and the image encoder (km_sam_encode). */
km_status km_sam_set_image(km_sam_predictor *p, const uint8_t *rgb, int w, int h, int c);
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
    float *scores;  /* [K, h, w] logits, or probabilities when tp->scores_are_probs (MedSAM) */
    uint8_t *masks; /* [K, h, w] 0/1 */
    float iou[8];   /* [K] predicted IoU (no sigmoid) */
    float *low_res; /* [K, 256, 256] logits, usable as a later mask_input */
    float *sparse;  /* [n_sparse, 256] sparse prompt embeddings */
} km_sam_result;

/* Validates the prompts (points and boxes inside the image, x0 <= x1, y0 <= y1,
 * labels in {-1, 0, 1}, mask 256 x 256, at least one prompt, MedSAM: one box
 * only, multimask only where the profile allows it) with KM_EARG
 * errors naming the offending value, then runs prompt encoder, mask decoder
 * and post-processing. */
km_status km_sam_predict(km_sam_predictor *p, const km_sam_prompts *pr, km_sam_result *out);
/* The same validation alone, for an orig_w x orig_h image (lets callers fail
 * before running the image encoder). */
km_status km_sam_validate_prompts(const km_sam_prompts *pr, km_sam_profile profile, int orig_w,
                                  int orig_h);
void km_sam_result_free(km_sam_result *r);

#endif

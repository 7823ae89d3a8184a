/* teacher.h - the teacher profiles: one table row per SAM-family teacher,
 * which every command (sam, mine, eval/predict --refine, experiments,
 * teacher-quality) uses instead of branching on the profile itself.
 *
 *   profile     encoder  input  prompt frame  prompts           mask rule
 *   sam         ViT      1024   1024          points/box/mask   logit > 0   (SamPredictor)
 *   medsam      ViT      1024   1024          one box           p > 0.5     (MedSAM_Inference.py)
 *   litemedsam  TinyViT   256    256          box (+points)     p > 0.5     (CVPR24_LiteMedSAM_infer.py)
 *   mobilesam   TinyViT  1024   1024          points/box/mask   logit > 0   (SamPredictor)
 *
 * A row says how an original image becomes the encoder's input, how a prompt
 * in original pixels becomes a prompt in the prompt encoder's frame, how the
 * low-res logits come back to the original size and which score is
 * foreground. The predictor (sam.h) is the only code that reads the
 * function pointers; others read the names, flags and defaults.
 *
 * The default teacher is LiteMedSAM (method.md 6), installed by
 * tools/install-teacher.sh to km_teacher_default_path(). */
#ifndef KM_TEACHER_H
#define KM_TEACHER_H

#include "../core/km.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    KM_SAM_PROFILE_SAM = 0,
    KM_SAM_PROFILE_MEDSAM = 1,
    KM_SAM_PROFILE_LITEMEDSAM = 2,
    KM_SAM_PROFILE_MOBILESAM = 3,
} km_sam_profile;
#define KM_SAM_N_PROFILES 4

typedef enum { KM_TEACHER_VIT = 0, KM_TEACHER_TINYVIT = 1 } km_teacher_encoder;

typedef struct {
    km_sam_profile id;
    const char *name;      /* "sam", "medsam", "litemedsam", "mobilesam" */
    const char *summary;   /* one line for --help */
    km_teacher_encoder encoder;
    int input;             /* encoder input square: 1024 or 256 */
    int stretch;           /* resized straight to the square (MedSAM), else longest side + pad */
    int box_only;          /* exactly one box, no points, no mask input (MedSAM) */
    int multimask;         /* multimask output allowed */
    int default_box;       /* default prompt mode is box (trained with boxes), else points+box */
    int scores_are_probs;  /* postprocess returns probabilities (fg: > 0.5), else logits */
    /* original rgb h x w x c (c = 1 or 3) -> out [3, input, input]; the size
     * of the image inside the input square -> *new_h, *new_w */
    void (*preprocess)(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *new_h,
                       int *new_w);
    /* one coordinate in original pixels -> the prompt encoder's frame;
     * is_box: a box corner (LiteMedSAM truncates those) */
    float (*coord)(float v, int is_x, int is_box, int orig_w, int orig_h, int new_w, int new_h);
    /* low-res logits [C, 256, 256] -> scores [C, H, W] (logits or probabilities) */
    void (*postprocess)(float *out, const float *lowres, int C, int new_h, int new_w, int H, int W,
                        float *work);
    size_t (*post_work)(int new_h, int new_w); /* floats of `work` */
    int (*is_fg)(float score);                 /* the profile's mask rule */
} km_teacher_profile;

const km_teacher_profile *km_teacher_profile_of(km_sam_profile p);
const char *km_sam_profile_name(km_sam_profile p);
/* "sam" | "medsam" | "litemedsam" | "mobilesam"; KM_EARG lists them. */
km_status km_sam_profile_parse(const char *name, km_sam_profile *p);
/* "sam, medsam, litemedsam or mobilesam" for help texts and errors. */
const char *km_sam_profile_choices(void);

/* The size of an h x w image inside the input square. */
void km_teacher_input_shape(const km_teacher_profile *tp, int h, int w, int *new_h, int *new_w);

/* The profile's foreground probability of a score (logits: float32 sigmoid). */
float km_teacher_score_prob(const km_teacher_profile *tp, float score);

/* The default teacher checkpoint: $KMSEG_TEACHER if set, else
 * ${KMSEG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kmseg}/teachers/lite_medsam.pth.
 * Writes into buf; returns buf, or NULL when no location can be formed. */
const char *km_teacher_default_path(char *buf, size_t n);
#define KM_TEACHER_DEFAULT_PROFILE KM_SAM_PROFILE_LITEMEDSAM

/* Resolves the teacher of a command: `given` if set (a --teacher flag), else
 * the default path (*path points into buf), which must exist; otherwise
 * KM_EIO saying how to install it (bash tools/install-teacher.sh). */
km_status km_teacher_resolve(const char *given, char *buf, size_t n, const char **path);

/* Profile "auto" (the default of every --teacher-profile flag): the profile
 * follows from the checkpoint (sam.h km_sam_auto_profile): a ViT -> sam, a
 * TinyViT with the 1x1 patch embedding -> litemedsam, with the 3x3 one ->
 * mobilesam. MedSAM has SAM's architecture and must be named. */
#define KM_SAM_PROFILE_AUTO ((km_sam_profile) - 1)
/* Like km_sam_profile_parse, also accepting "auto". */
km_status km_sam_profile_parse_auto(const char *name, km_sam_profile *p);

#endif

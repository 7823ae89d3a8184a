/* prompts.h - teacher prompts from a student prediction (method.md 4, paper
 * 2.3), and the glue that lets continuous mining decode on the cached
 * un-augmented embedding (method.md 5, cost rule).
 *
 *   km_prompts pr;
 *   km_prompts_from_logits(&pr, z, S, S, KM_PROMPT_POINTS_BOX, 1, &rng);
 *   km_prompts_set_box_rule(&pr, z, S, S, KM_BOX_PER_COMPONENT);   // boxes to decode
 *   if (pr.outcome == KM_PROMPTS_NO_BOX) { ...count: no pseudo label this round... }
 *   for (int k = 0; k < km_prompts_n_decodes(&pr); k++) {
 *       km_sam_prompts sp;  km_prompts_to_sam(&pr, k, &geom, NULL, &sp); // -> original frame
 *       km_sam_predict(&predictor, &sp, &res);     // unite the decodes (refine.h)
 *   }
 * (refine.h's km_refine_prompts / km_refine_teacher_conf do exactly this.)
 *
 * Continuous mode (the student saw augmentation `code` of the S x S crop,
 * the teacher decodes on the cached embedding of the original image):
 *   km_prompts_from_logits(&pr, z_aug, S, S, mode, x, &rng);   // augmented frame
 *   km_prompts_set_box_rule(&pr, z_aug, S, S, rule);           // same components in any frame
 *   km_prompts_unaugment(&pr, code, S);                        // -> un-augmented crop frame
 *   if (mask mode) km_prompts_unaugment_map(code, S, z_aug, z_orig);
 *   ... the teacher on the original image through the geometry (refine.h) ...
 *   km_aug_apply_u8(code, S, 1, label, label_aug);             // augment.h: label in the student's frame
 *
 * Definitions and choices:
 *  - p = sigmoid(z) computed exactly as the student computes it, 1 / (1 +
 *    expf(-z)) in float32 (km_sigmoid_forward, nn/elementwise.c). Ranking is
 *    done on THESE float32 values, not on the logits: pixels whose float32 p
 *    is equal are tied even when their logits differ. That is the paper's
 *    "pixels of highest probability" taken literally, and it is what makes the
 *    saturated plateau (p == 1.0f for every z above ~16.6) a tie to be broken
 *    at random. Ranking on logits would instead always pick the single
 *    largest logit and never draw.
 *  - Guiding points: the x pixels of largest p, label 1. Let t be the x-th
 *    largest p (with multiplicity). Every pixel with p > t is taken; the
 *    remaining k slots go to k of the n_tie pixels with p == t, drawn
 *    uniformly without replacement with the caller's RNG (Floyd's algorithm,
 *    exactly k km_rng_below draws, and no draw at all when n_tie == k). For
 *    x = 1 this is method.md's "ties at the maximum broken at random". Points
 *    are ordered by decreasing p, ties in row-major scan order.
 *  - Points do NOT require p > 0.5 [choice]: method.md 4 lets only a mode that
 *    needs a box skip an empty prediction, so in points-only mode an empty
 *    prediction still prompts the teacher at its x most likely pixels.
 *  - Coordinates are integer pixel indices (x = column, y = row) of the
 *    student's frame. km_prompts_to_sam passes them to the predictor either
 *    as they are (g NULL: the teacher sees that same frame), with no +0.5:
 *    SamPredictor scales them by input/orig and SAM's prompt encoder adds 0.5
 *    in the 1024 frame (reference-arch.md 1.3, 1.5.2), which is what a
 *    PyTorch pipeline calling predictor.predict(point_coords=[[col, row]]) on
 *    an argmax gets; or (g = the student's geometry) mapped to the original
 *    image's pixel indices on pixel centres, as floats (km_geom_to_orig,
 *    dataset.h), which the predictor then scales the same way.
 *  - Foreground is the student's predicted mask, z > 0, kmseg's one
 *    prediction rule (eval/metrics.h); it equals float32 p > 0.5 except for
 *    0 < z < ~3e-8, where p rounds to exactly 0.5.
 *  - Box (km_prompts_from_logits): `box` is the tight inclusive box (x0, y0,
 *    x1, y1) of ALL foreground pixels, no margin, and is boxes[0] (rule
 *    `all`); km_prompts_set_box_rule replaces boxes[] by the largest
 *    component's box or one box per sizeable component (km_box_rule below;
 *    default per-component, method.md 4 revised) and says which box each
 *    point goes with. `box` itself always stays the all-foreground box.
 *  - Empty prediction (no z > 0): has_box = 0; a mode that needs a box gives
 *    outcome KM_PROMPTS_NO_BOX: that image gets no pseudo label this round
 *    (the caller counts and logs it). Points are still computed (and the RNG
 *    advanced) whenever the mode uses points, so the RNG stream does not
 *    depend on whether the box was empty, nor on the box rule
 *    (km_prompts_set_box_rule draws nothing); the box mode consumes no RNG.
 *  - Mask prompt (ablation): km_prompts_mask_input, see below.
 *  - NaN logits (a diverged student) are an error (KM_EARG naming the pixel),
 *    not silently ranked. */
#ifndef KM_PROMPTS_H
#define KM_PROMPTS_H

#include "../core/km.h"
#include "../core/rng.h"
#include "../models/sam.h"
#include "../train/dataset.h"

#define KM_PROMPTS_MAX_POINTS 64
#define KM_PROMPTS_MAX_BOXES 16

/* Ablation modes (paper table 3); points+box is the default. */
typedef enum {
    KM_PROMPT_AUTO = 0,            /* the teacher profile's default (km_prompt_mode_for) */
    KM_PROMPT_POINTS = 1,
    KM_PROMPT_BOX = 2,
    KM_PROMPT_POINTS_BOX = 3,      /* default */
    KM_PROMPT_POINTS_BOX_MASK = 7, /* mask bit = 4 */
} km_prompt_mode;
enum { KM_PROMPT_USE_POINTS = 1, KM_PROMPT_USE_BOX = 2, KM_PROMPT_USE_MASK = 4 };

/* "points", "box", "points+box", "points+box+mask" <-> mode; parse returns
 * KM_EARG naming the accepted values. */
const char *km_prompt_mode_name(km_prompt_mode m);
km_status km_prompt_mode_parse(const char *s, km_prompt_mode *m);
/* "auto" (or NULL) -> KM_PROMPT_AUTO, else as km_prompt_mode_parse. */
km_status km_prompt_mode_parse_auto(const char *s, km_prompt_mode *m);
/* m itself, or for KM_PROMPT_AUTO the profile's default: box for teachers
 * trained with boxes (MedSAM, LiteMedSAM; method.md 6), else points+box. */
km_prompt_mode km_prompt_mode_for(km_prompt_mode m, km_sam_profile profile);

/* Box rule (method.md 4, revised): which boxes the foreground gives.
 *   all            one box around every foreground pixel (turn 1's rule; what
 *                  a mine_config.json without "box_rule" ran with);
 *   largest        the box of the largest connected component;
 *   per-component  (default) one box per sizeable component, each decoded on
 *                  its own, the teacher's masks united.
 * Components: 8-connected sets of pixels with z > 0; "sizeable" = at least
 * 10 % of the largest one's area (10 * area >= largest area). At most
 * KM_PROMPTS_MAX_BOXES boxes: beyond that the largest are kept (a student
 * with hundreds of equal specks would otherwise cost hundreds of decodes).
 * Boxes are ordered by decreasing area, ties in scan order of the
 * components' first pixel (the order does not change the union). */
typedef enum { KM_BOX_ALL = 0, KM_BOX_LARGEST = 1, KM_BOX_PER_COMPONENT = 2 } km_box_rule;
/* "all", "largest", "per-component" <-> rule; parse: KM_EARG naming the
 * accepted values. */
const char *km_box_rule_name(km_box_rule r);
km_status km_box_rule_parse(const char *s, km_box_rule *r);

typedef enum {
    KM_PROMPTS_READY = 0,  /* prompts usable */
    KM_PROMPTS_NO_BOX = 1, /* empty prediction and the mode needs a box: no pseudo label */
} km_prompts_outcome;

typedef struct {
    km_prompt_mode mode;
    km_prompts_outcome outcome;
    int w, h;     /* frame the coordinates refer to */
    int n_points; /* min(x, w*h) when the mode uses points, else 0 */
    int xy[KM_PROMPTS_MAX_POINTS][2]; /* (column, row) pixel indices */
    float p[KM_PROMPTS_MAX_POINTS];   /* their float32 probabilities */
    int has_box;                      /* any pixel with z > 0 */
    int box[4];                       /* inclusive (x0, y0, x1, y1) when has_box */
    long n_fg;                        /* pixels with z > 0 */
    long n_tie;                       /* pixels sharing the cut-off probability t */
    int n_drawn;                      /* points chosen at random among them (0: no draw) */
    /* Boxes to decode (km_prompts_set_box_rule; km_prompts_from_logits sets
     * the `all` rule: boxes[0] = box when has_box): */
    km_box_rule box_rule;
    int n_components;                 /* 8-connected components (0 unless computed) */
    int n_boxes;                      /* boxes to decode, 0 when !has_box */
    int boxes[KM_PROMPTS_MAX_BOXES][4]; /* inclusive (x0, y0, x1, y1) */
    long box_area[KM_PROMPTS_MAX_BOXES]; /* pixels of the box's component (all: n_fg) */
    int point_box[KM_PROMPTS_MAX_POINTS]; /* the box each point goes with */
    /* Filled by km_prompts_to_sam (the predictor reads these): */
    float sam_points[2 * KM_PROMPTS_MAX_POINTS];
    int sam_labels[KM_PROMPTS_MAX_POINTS];
    float sam_box[4];
} km_prompts;

/* Prompts from student logits z [H, W] (row-major). x = number of guiding
 * points, 1..KM_PROMPTS_MAX_POINTS (ignored by the box mode). rng may be NULL
 * only for the box mode. KM_EARG on a bad x / mode or a NaN logit; otherwise
 * KM_OK, with out->outcome telling whether the prompts are usable. Does not
 * allocate; three passes over the map. */
km_status km_prompts_from_logits(km_prompts *out, const float *z, int H, int W, km_prompt_mode mode,
                                 int x, km_rng *rng);

/* Applies a box rule to prompts made by km_prompts_from_logits from the same
 * z [H, W]: labels the 8-connected components of z > 0 and fills n_boxes /
 * boxes / box_area and point_box (header comment of km_box_rule). Consumes no
 * RNG: the points are the same whatever the rule. Points go with the box of
 * the component that holds them; a point in no kept component (a speck below
 * 10 %, or p <= 0.5) goes with the box nearest to it (Euclidean distance from
 * the point to the box, 0 inside; ties: the earlier box, i.e. the larger
 * component) [choice: nearest, so a point is never sent with a box on the
 * other side of the image when one next to it exists]. `all` and `largest`
 * have one box, which every point goes with. Allocates the H x W label map
 * and a stack for rules other than `all`; KM_ENOMEM if that fails. */
km_status km_prompts_set_box_rule(km_prompts *pr, const float *z, int H, int W, km_box_rule rule);

/* Decodes the prompts ask for: n_boxes when the mode uses a box (0 only for
 * NO_BOX), else 1 (points only, every point). */
int km_prompts_n_decodes(const km_prompts *pr);

/* Points and boxes of `pr`, found in the frame of augmentation `code` of an
 * S x S image, mapped back to the un-augmented frame (augment.h,
 * km_aug_map_point / km_aug_map_box with inverse = 1). Pixel indices map
 * exactly, so this commutes with taking the prompts of the un-augmented map
 * (up to which tied pixels a draw picks, and the order of equal-area boxes). */
void km_prompts_unaugment(km_prompts *pr, uint8_t code, int S);

/* The inverse of km_aug_apply_f32: orig [S, S] such that
 * km_aug_apply_f32(code, S, orig) == aug. orig and aug must not overlap.
 * (The forward transform of the teacher's mask is km_aug_apply_u8 with C = 1,
 * augment.h.) */
void km_prompts_unaugment_map(uint8_t code, int S, const float *aug, float *orig);

/* Mask prompt (ablation): the student's logits z [H, W] (the teacher's
 * original frame) as SAM's mask_input out [256, 256]. That input lives in the
 * padded 1024 canvas scaled by 1/4 (reference-arch.md 1.3): the image
 * occupies its top-left mh x mw with mh = round(input_h / 4), mw =
 * round(input_w / 4), where input_h x input_w is the predictor's resized size
 * (km_sam_predictor.input_h/w after set_image / set_embedding; 1024 x 1024
 * for a square image, so then the whole 256 x 256 is the image). z is resized
 * to mh x mw with F.interpolate(mode="bilinear", align_corners=False,
 * antialias=False) semantics (km_bilinear_resize); the padding (non-square
 * images only) is filled with the smallest resized logit, i.e. "background,
 * as sure as the student ever is". Downscaling (H or W above mh / mw) is not
 * antialiased, as F.interpolate's default. refine.c calls this with the
 * student's logits mapped to the original frame (the teacher's), so e.g. a
 * 622 x 529 Kvasir image is downscaled to 256 x 218 here. */
void km_prompts_mask_input(float *out, const float *z, int H, int W, int input_h, int input_w);

/* Fills a km_sam_prompts for decode k (0 <= k < km_prompts_n_decodes): the
 * points that go with box k (all points when the mode has no box) with label
 * 1, box k, the mask input (mask256, required iff the mode has the mask bit,
 * else NULL), and multimask = 0 (method.md 4). g: the student's geometry
 * (dataset.h) to map the coordinates to the original frame the teacher sees
 * (km_geom_to_orig: pixel centres, a scale and an offset, clamped), or NULL
 * to pass them as they are. Coordinates are converted to float in pr's own
 * arrays, which `sp` then points to: keep pr alive while sp is used (and
 * until the next call). Must not be called when pr->outcome !=
 * KM_PROMPTS_READY. */
void km_prompts_to_sam(km_prompts *pr, int k, const km_geom *g, const float *mask256, km_sam_prompts *sp);

#endif

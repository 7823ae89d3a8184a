/* overlay.h - masks drawn on images, one colour scheme for every kmseg
 * picture: the report's gallery, `kmseg predict --overlay` and `kmseg sam
 * --overlay` (the prediction's blue fill, km_overlay_prediction).
 *
 * Scheme (Okabe & Ito colours, never red against green, and each meaning
 * also carried by a shape or pattern so it reads without colour):
 *   prediction      translucent blue fill (#0072B2, 50 %): blue stands out
 *                   on the red/orange tissue of endoscopy images
 *   reference mask  1-pixel yellow contour (#F0E442) just inside the mask
 *                   edge, with a 1-pixel black ring just outside it, so the
 *                   outline keeps its contrast on dark and on light tissue
 *   error map       on a dimmed grey copy of the image: true positive solid
 *                   blue (#0072B2), false positive orange (#E69F00) with
 *                   black diagonal stripes, false negative reddish purple
 *                   (#CC79A7) with a black square grid; true negatives keep
 *                   the grey image
 *   prompts (sam)   foreground point a green disc (0, 200, 0), background
 *                   point a red disc (230, 0, 0), both ringed in white; box
 *                   a green frame (0, 255, 0): the segment-anything
 *                   notebooks' colours, which SAM users read at a glance
 *                   (the two kinds of point also differ in the prompt file)
 * All buffers are 8-bit interleaved RGB [h, w, 3]; masks [h, w], nonzero =
 * foreground. Pure functions of their inputs (integer arithmetic), so the
 * same inputs give the same pixels. */
#ifndef KM_REPORT_OVERLAY_H
#define KM_REPORT_OVERLAY_H

#include "../core/km.h"

typedef struct {
    uint8_t r, g, b;
} km_rgb;

extern const km_rgb KM_OVERLAY_FILL;    /* blue #0072B2 */
extern const km_rgb KM_OVERLAY_OUTLINE; /* yellow #F0E442 */
extern const km_rgb KM_OVERLAY_TP;      /* blue #0072B2 */
extern const km_rgb KM_OVERLAY_FP;      /* orange #E69F00 */
extern const km_rgb KM_OVERLAY_FN;      /* reddish purple #CC79A7 */

/* Blends colour c over rgb where mask is set: out = (1-a)*rgb + a*c,
 * a = alpha_pct / 100, rounded. */
void km_overlay_fill(uint8_t *rgb, int w, int h, const uint8_t *mask, km_rgb c, int alpha_pct);
/* Draws mask's contour: c on mask pixels with a 4-neighbour outside the mask,
 * black on non-mask pixels with a 4-neighbour inside it (the image border
 * counts as outside). */
void km_overlay_outline(uint8_t *rgb, int w, int h, const uint8_t *mask, km_rgb c);
/* The standard overlay, in place: pred filled, then ref outlined (either may
 * be NULL). */
void km_overlay_mask(uint8_t *rgb, int w, int h, const uint8_t *pred, const uint8_t *ref);
/* Replaces rgb by the error map of pred against ref (scheme above). */
void km_overlay_errors(uint8_t *rgb, int w, int h, const uint8_t *pred, const uint8_t *ref);

extern const km_rgb KM_OVERLAY_POINT_FG; /* green (0, 200, 0) */
extern const km_rgb KM_OVERLAY_POINT_BG; /* red (230, 0, 0) */
extern const km_rgb KM_OVERLAY_BOX;      /* green (0, 255, 0) */

/* rgb [h, w, 3] = img [h, w, c] (c = 3, or 1: grey replicated) with pred
 * filled blue at 50 % (km_overlay_mask without a reference). */
void km_overlay_prediction(uint8_t *rgb, const uint8_t *img, int w, int h, int c, const uint8_t *pred);
/* A disc of radius r (pixels with dx^2 + dy^2 <= r^2 around (floor(cx),
 * floor(cy))) in colour c, ringed in white out to radius r + 1; clipped to
 * the image. */
void km_overlay_disc(uint8_t *rgb, int w, int h, float cx, float cy, int r, km_rgb c);
/* A frame of `thick` pixels inside the box x0, y0, x1, y1 (inclusive, each
 * rounded to the nearest pixel), clipped to the image. */
void km_overlay_frame(uint8_t *rgb, int w, int h, const float box[4], int thick, km_rgb c);
/* kmseg sam's prompts on top: the box (NULL: none) as a KM_OVERLAY_BOX
 * frame, then each point (xy [n, 2], label 1 foreground / 0 background) as a
 * disc; disc radius r = max(2, min(w, h) / 80), frame thickness max(1, r / 2). */
void km_overlay_prompts(uint8_t *rgb, int w, int h, const float *xy, const int *label, int n, const float *box);

/* Resamples src [sh, sw, c] to dst [dh, dw, c]: nearest = 1 takes the pixel
 * under each destination pixel's centre (masks); nearest = 0 averages the
 * source pixels each destination pixel covers (box filter, rounded; the
 * nearest pixel when enlarging). */
void km_overlay_resample(const uint8_t *src, int sw, int sh, int c, uint8_t *dst, int dw, int dh, int nearest);

#endif

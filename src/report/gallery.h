/* gallery.h - the run page's qualitative pictures (internal to src/report):
 * the student (and optionally the teacher-refined) predictions on the test
 * split, and a mining run's pseudo labels, rendered as PNG thumbnails. */
#ifndef KM_REPORT_GALLERY_H
#define KM_REPORT_GALLERY_H

#include "html.h"
#include "report.h"

/* Test-split predictions of a run's best.safetensors at crop size S. */
typedef struct {
    int n, S;
    char **ids;
    uint8_t *img;          /* [n, S, S, 3] the crops the student saw */
    uint8_t *gt, *pred;    /* [n, S, S] {0,1} */
    uint8_t *teach;        /* [n, S, S] teacher-refined masks, NULL without a teacher */
    double *dice, *tdice;  /* [n] per-image Dice (student, refined) */
} km_gallery;

/* Runs the student of `weights` on the test split listed in split_dir of
 * dataset `data` at crop size `size` (eval mode, logit > 0), and the refiner
 * when o->teacher is set. */
km_status km_gallery_compute(const char *weights, const char *data, const char *split_dir, int size,
                             const km_report_opts *o, km_gallery *g);
void km_gallery_free(km_gallery *g);

/* The gallery section: rows best / median / worst / o->gallery_random seeded
 * random picks by student Dice. */
km_status km_gallery_html(km_html *h, const km_gallery *g, const km_report_opts *o);

/* The pseudo-label section of a mining run: up to o->pseudo_rows PNGs of
 * pseudo_dir (sorted by name) against the ground truth of those images in
 * `data` at crop size `size`. Writes a note instead when there are none. */
km_status km_gallery_pseudo_html(km_html *h, const char *pseudo_dir, const char *data, int size,
                                 const km_report_opts *o);

/* One thumbnail (112 px on its longer side, PNG data: URI) of an S x S crop
 * with the given overlay: kind 0 image, 1 reference outline, 2 prediction fill
 * + reference outline, 3 error map. */
km_status km_gallery_thumb(km_html *h, const uint8_t *img, int S, const uint8_t *pred, const uint8_t *ref, int kind,
                           const char *alt);

#endif

/* teacher_quality.h - how good is the teacher on a dataset, given prompts
 * (issue 10 point 6; `kmseg teacher-quality`).
 *
 * Per image of the chosen split (or the first N of the whole dataset, in id
 * order = sorted file names), the teacher sees the ORIGINAL image with its
 * own profile (refine.h km_refine_teacher_mask_orig) and its mask at the
 * original size is scored against the ground truth there (mask grey > 127,
 * dataset.h; Dice / IoU as metrics.h, both empty = 1). The prompts come from
 *   gt-box         the ground truth taken as a saturated prediction, box
 *                  prompt(s) by the box rule (`all` = the tight box of every
 *                  foreground pixel, the rule of the litemedsam_real
 *                  manifest's teacher_quality numbers);
 *   gt-box+points  the same plus the top-x guiding points, which for a
 *                  saturated map are drawn at random among the foreground
 *                  pixels (seeded per image, refine.h KM_REFINE_SEED);
 *   student        a student checkpoint's eval-mode prediction on the image's
 *                  S x S crop (prompts mapped to the original frame,
 *                  refine.h). Then also scored in the student's frame: the
 *                  student's own Dice and the teacher's mask brought to the
 *                  crop, so "teacher gain" = teacher - student on the same
 *                  pixels.
 * Images whose prompts give no box (empty ground truth or an empty student
 * prediction) keep an all-background teacher mask and are counted.
 * Outputs: OUT/per_image.csv and OUT/summary.json (written atomically). */
#ifndef KM_TEACHER_QUALITY_H
#define KM_TEACHER_QUALITY_H

#include "../mine/refine.h"

typedef enum { KM_TQ_GT_BOX = 0, KM_TQ_GT_BOX_POINTS = 1, KM_TQ_STUDENT = 2 } km_tq_prompts;

typedef struct {
    const char *data, *out;
    const char *split_dir; /* RUN/splits, or NULL: every image */
    int split;             /* 0 train, 1 val, 2 test, 3 all */
    int first;             /* only the first N images of the split (0: all) */
    km_tq_prompts prompts;
    const char *weights;   /* student checkpoint (prompts = student) */
    int size;              /* student crop size (0: the checkpoint's) */
    km_refine_config teacher; /* teacher, profile, box rule, points, cache */
} km_tq_config;

typedef struct {
    int n, no_box, empty_teacher;
    double mean_dice, std_dice, mean_iou, std_iou, global_dice;
    double student_dice, teacher_dice_crop; /* student mode: both in the student's frame */
    double seconds;
    int size; /* the student's crop size (student prompts) */
} km_tq_result;

/* "gt-box", "gt-box+points", "student" */
km_status km_tq_prompts_parse(const char *s, km_tq_prompts *p);
const char *km_tq_prompts_name(km_tq_prompts p);

km_status km_teacher_quality_run(const km_tq_config *c, FILE *log, km_tq_result *res);

#endif

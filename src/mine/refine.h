/* refine.h - refined inference (issue 5.4, paper 2.3): the student's
 * prediction prompts the teacher and the teacher's mask is the prediction.
 * Shared by `kmseg eval --teacher` and `kmseg predict --teacher`; the
 * mining run (mine.h) uses its teacher step, km_refine_teacher_mask.
 *
 *   km_refine_config rc;  km_refine_config_default(&rc);  rc.teacher = "sam.pth";
 *   km_refiner r;  km_refiner_open(&r, &rc);
 *   km_refine_outcome o;
 *   km_refine_logits(&r, rgb, S, z, &o);   // z [S, S] overwritten with +-1 logits
 *   km_refiner_close(&r);
 *
 * Per image (the S x S crop the student saw, z its eval-mode logits):
 *   1. prompts = km_prompts_from_logits(z, mode, points) (prompts.h), the
 *      RNG re-seeded with KM_REFINE_SEED for every image, so an image's
 *      prompts do not depend on which other images are processed or in what
 *      order (eval and predict give the same prompts for the same crop);
 *   2. the teacher sees the same S x S crop, exactly as in mining (mine.h):
 *      SAM (or MedSAM, box mode only) pre-processing, image embedding from the
 *      embedding cache (embcache.h; the encoder runs once per crop per
 *      cache), single-mask decoding, mask = SAM logit > 0 after
 *      post-processing to S x S (MedSAM: p > 0.5);
 *   3. that mask is the prediction, written back into z as logits +1
 *      (foreground) / -1 (background), so a caller's existing rule "logit > 0"
 *      (metrics.h) and any bilinear resize of logits followed by that
 *      threshold work unchanged (a pixel resampled exactly half-way between
 *      +1 and -1 gets 0: background);
 *   4. fallback [choice]: when the prompts give NO_BOX (empty student
 *      prediction in a mode that needs a box) the teacher is not called, and
 *      when the teacher returns an all-background mask although it was
 *      called, its mask is not used; in both cases z is left as the student's
 *      own logits (the student's mask stays the prediction). The outcome says
 *      which case happened so callers can count and report it. */
#ifndef KM_REFINE_H
#define KM_REFINE_H

#include "embcache.h"
#include "prompts.h"

#define KM_REFINE_SEED 0x726566696e650000ULL /* "refine" */

typedef struct {
    const char *teacher;    /* teacher checkpoint (required; commands resolve the default, teacher.h) */
    km_sam_profile profile; /* default auto: the checkpoint's own (resolved by km_refiner_open) */
    km_prompt_mode mode;    /* default auto: the profile's (box for MedSAM / LiteMedSAM) */
    int points;             /* guiding points, default 1 */
    const char *cache_dir;  /* embedding cache folder, NULL: memory only */
    int cache_mem;          /* embeddings kept in memory, default 16 */
} km_refine_config;

void km_refine_config_default(km_refine_config *c);
/* Fills c from the --teacher/--teacher-profile/--prompt-mode/--points/
 * --cache-dir/--no-cache flags shared by eval and predict (dbuf holds the
 * default cache folder name). KM_EARG names the bad flag. */
km_status km_refine_config_from_flags(km_refine_config *c, const char *teacher, const char *profile,
                                      const char *prompt_mode, int points, const char *cache_dir,
                                      int no_cache, char *dbuf, size_t ndbuf);

/* KM_EARG naming the flag (--teacher, --points, --prompt-mode for MedSAM);
 * KM_EIO "--teacher X: no such checkpoint file". */
km_status km_refine_config_check(const km_refine_config *c);

typedef enum {
    KM_REFINE_TEACHER = 0,       /* the teacher's mask is the prediction */
    KM_REFINE_FALLBACK_NO_BOX = 1, /* prompts NO_BOX: student's mask kept, teacher not called */
    KM_REFINE_FALLBACK_EMPTY = 2,  /* teacher mask empty: student's mask kept */
} km_refine_outcome;

/* "teacher", "student_no_box", "student_empty_teacher" (CSV values) */
const char *km_refine_outcome_name(km_refine_outcome o);

typedef struct {
    km_refine_config cfg;
    km_sam sam;
    int loaded, predictor_on, cache_on;
    km_sam_predictor p;
    km_embcache cache;
    uint64_t fp;
    float *emb, *m256;
    uint8_t *mask; /* [cap] teacher mask of the current crop */
    size_t cap;
    /* counters since open */
    long images, teacher_calls, encoder_runs, fallback_no_box, fallback_empty;
    double encoder_seconds, decoder_seconds; /* image encoder; prompt encoder + decoder + post-processing */
} km_refiner;

/* Checks the config (KM_EARG naming the flag; KM_EIO "--teacher X: no such
 * checkpoint file"), loads the teacher and opens the cache. On error
 * everything opened so far is released (km_refiner_close is still safe). */
km_status km_refiner_open(km_refiner *r, const km_refine_config *c);
void km_refiner_close(km_refiner *r);
/* What eval and predict open: the student from `weights` (*size, when 0,
 * becomes the crop size it was trained at, else 224) and, when `teacher` is
 * set, the refiner from the teacher flags (km_refine_config_from_flags).
 * *ref is zeroed first (km_refiner_close is safe on it); on failure nothing
 * stays open. */
struct km_unetpp;
km_status km_refine_open_student(const char *weights, const char *teacher, const char *profile,
                                 const char *prompt_mode, int points, const char *cache_dir,
                                 int no_cache, km_refiner *ref, struct km_unetpp **m, int *size);

/* rgb [S, S, 3] the crop the student saw, z [S, S] its logits, replaced by
 * +-1 logits of the teacher's mask unless a fallback happens (header). */
km_status km_refine_logits(km_refiner *r, const uint8_t *rgb, int S, float *z, km_refine_outcome *outcome);

/* Step 2 alone, for callers with their own prompts (the mining run, mine.h):
 * the teacher's mask [S, S] {0,1} of crop rgb [S, S, 3] for prompts pr in that
 * crop's frame; z [S, S] is the mask prompt's logits in the same frame (read
 * only in a mode with KM_PROMPT_USE_MASK, else may be NULL). The image
 * embedding comes from the cache or one encoder run; counts a teacher call. */
km_status km_refine_teacher_mask(km_refiner *r, const uint8_t *rgb, int S, km_prompts *pr, const float *z,
                                 uint8_t *mask);

/* Cache hits since open (memory + disk). */
long km_refiner_cache_hits(const km_refiner *r);

#endif

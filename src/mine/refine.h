/* refine.h - the teacher step (method.md 4, paper 2.3) shared by the mining
 * run (mine.h) and refined inference (`kmseg eval/predict --teacher`, issue
 * 5.4): the student's prediction prompts the teacher, which sees the ORIGINAL
 * image, and the teacher's answer is brought back to the student's frame.
 *
 *   km_refine_config rc;  km_refine_config_default(&rc);  rc.teacher = "sam.pth";
 *   km_refiner r;  km_refiner_open(&r, &rc);
 *   km_refine_image im;  km_refine_image_rgb(&im, rgb, w, h);  // the original image
 *   km_refine_outcome o;
 *   km_refine_logits(&r, &im, S, z, &o);   // z [S, S] overwritten with +-1 logits
 *   km_refiner_close(&r);
 *
 * Frames. The student sees the S x S crop of the image's geometry g
 * (km_geom, dataset.h: shortest side -> S with Pillow bilinear, centre
 * crop). Prompts are made in that frame (integer pixel indices, boxes
 * inclusive) and mapped to the original frame by the inverse geometry, on
 * pixel centres: xo = (x + left + 0.5) * w / rw - 0.5, likewise y, clamped
 * to the image (km_geom_to_orig; in float, as the predictor takes them); the
 * teacher's predictor then scales them its own way (sam.h). The teacher
 * sees the original w x h pixels with its own pre-processing, and its
 * embedding is cached per ORIGINAL image (embcache.h key: hash of the
 * original RGB pixels, checkpoint content, profile, original w x h), so
 * continuous mining still only decodes.
 *
 * The teacher's answer, one common quantity for every profile [choice]: the
 * confidence c = 2p - 1 in [-1, 1] at the original size, p the teacher's
 * foreground probability; foreground <=> c > 0.
 *   profiles whose scores are logits z (teacher.h scores_are_probs = 0:
 *       SAM, MobileSAM, LiteMedSAM): c = tanh(z / 2) in double, rounded to
 *       float (= 2 sigmoid(z) - 1); c > 0 <=> z > 0, SAM's own rule, for
 *       every float logit but the smallest denormal 2^-149 (LiteMedSAM's own
 *       rule, float sigmoid > 0.5, also drops 0 < z <= 8.94e-8: those
 *       boundary pixels are foreground here). Chosen over p itself because
 *       float p = sigmoid(z) rounds to exactly 0.5 for 0 < z < ~6e-8, where
 *       c keeps the sign.
 *   profiles whose scores are probabilities p (MedSAM): c = 2p - 1 in
 *       float, exact for p >= 0.25 and sign-correct for all p: c > 0 <=>
 *       p > 0.5, MedSAM's rule.
 * Several boxes (box rule per-component, prompts.h): one decode per box, the
 * union is the pixel-wise MAXIMUM of the decodes' c at the original size
 * (so union of the thresholded masks there), taken before any resampling.
 * Back to the student's frame: c is resampled with the images' geometry
 * (km_geom_resize_crop_f32: Pillow's float bilinear, antialiased, to
 * rw x rh, centre crop) and thresholded there, mask = c > 0.
 *
 * Per image in km_refine_logits (z the student's eval-mode logits):
 *   1. prompts = km_refine_prompts(z): km_prompts_from_logits with the mode
 *      and points, the RNG re-seeded with KM_REFINE_SEED for every image (an
 *      image's prompts do not depend on which other images are processed or
 *      in what order: eval and predict give the same prompts), then the box
 *      rule (km_prompts_set_box_rule, no RNG);
 *   2. the teacher (km_refine_teacher_conf), mask = c > 0 in the S frame;
 *   3. that mask is the prediction, written back into z as logits +1
 *      (foreground) / -1 (background), so a caller's rule "logit > 0"
 *      (metrics.h) works unchanged;
 *   4. fallback [choice]: when the prompts give NO_BOX (empty student
 *      prediction in a mode that needs a box) the teacher is not called, and
 *      when the teacher's mask in the S frame is empty although it was
 *      called, it is not used; in both cases z is left as the student's own
 *      logits. The outcome says which case happened. */
#ifndef KM_REFINE_H
#define KM_REFINE_H

#include "embcache.h"
#include "prompts.h"
#include "../io/settings.h"

#define KM_REFINE_SEED 0x726566696e650000ULL /* "refine" */

typedef struct {
    const char *teacher;    /* teacher checkpoint (required; commands resolve the default, teacher.h) */
    km_sam_profile profile; /* default auto: the checkpoint's own (resolved by km_refiner_open) */
    km_prompt_mode mode;    /* default auto: the profile's (box for MedSAM / LiteMedSAM) */
    km_box_rule box_rule;   /* default per-component */
    int points;             /* guiding points, default 1 */
    const char *cache_dir;  /* embedding cache folder, NULL: memory only */
    int cache_mem;          /* embeddings kept in memory, default 16 */
} km_refine_config;

void km_refine_config_default(km_refine_config *c);
/* Fills c from the --teacher/--teacher-profile/--prompt-mode/--box-rule/
 * --points/--cache-dir/--no-cache flags shared by eval and predict (dbuf
 * holds the default cache folder name). KM_EARG names the bad flag. */
km_status km_refine_config_from_flags(km_refine_config *c, const char *teacher, const char *profile,
                                      const char *prompt_mode, const char *box_rule, int points,
                                      const char *cache_dir, int no_cache, char *dbuf, size_t ndbuf);

/* ---- the refined-mode flags of `kmseg eval` and `kmseg predict` ----
 * One settings table (settings.h), km_refine_settings, gives both commands
 * the same flags, defaults and --help text:
 *   --teacher CKPT          refined mode with this teacher (default: none)
 *   --refine                refined mode with the default teacher
 *                           (km_teacher_resolve: the installed LiteMedSAM)
 *   --teacher-profile P     auto, sam, medsam, litemedsam, mobilesam (auto)
 *   --prompt-mode M         auto, points, box, points+box, points+box+mask (auto)
 *   --box-rule R            all, largest, per-component (per-component)
 *   --points N              guiding points per image (1)
 *   --cache-dir DIR         embedding cache (NULL: the default folder)
 *   --no-cache              embeddings in memory only
 * The values stay as given (names as strings) until km_refine_open_student
 * parses and checks them (km_refine_config_from_flags, then
 * km_refine_config_check: KM_EARG naming the flag). The rows have no
 * config.json keys: eval and predict save no configuration. `kmseg
 * experiments` passes --teacher-profile, --box-rule, --points, --cache-dir
 * and --no-cache through (KM_SET_PASS; the last two KM_SET_NEUTRAL). Usage:
 *   km_refine_flags rf;  km_refine_flags_default(&rf);
 *   km_cli_add_settings(&cli, &km_refine_settings, &rf, NULL);
 *   ... km_cli_parse, km_cli_apply ...
 *   km_refine_flags_teacher(&rf, tbuf, sizeof tbuf);   // --refine -> the default teacher
 *   km_refine_open_student(weights, &rf, &ref, &m, &size); */
typedef struct km_refine_flags {
    char *teacher;     /* NULL: student only */
    int refine;
    char *profile, *prompt_mode, *box_rule; /* names as given */
    int points;
    char *cache_dir;   /* NULL: the default folder (embcache.h) */
    int no_cache;
} km_refine_flags;
extern const km_settings km_refine_settings;
/* The table's defaults, then the names' defaults (a string row's default is
 * NULL in a settings table): profile and prompt mode "auto", box rule
 * "per-component". */
void km_refine_flags_default(km_refine_flags *f);
/* --refine without --teacher: f->teacher becomes the default teacher (its
 * path in buf; KM_EIO saying how to install it when there is none). */
km_status km_refine_flags_teacher(km_refine_flags *f, char *buf, size_t n);

/* KM_EARG naming the flag (--teacher, --points, --prompt-mode for MedSAM,
 * --box-rule); KM_EIO "--teacher X: no such checkpoint file". */
km_status km_refine_config_check(const km_refine_config *c);

typedef enum {
    KM_REFINE_TEACHER = 0,       /* the teacher's mask is the prediction */
    KM_REFINE_FALLBACK_NO_BOX = 1, /* prompts NO_BOX: student's mask kept, teacher not called */
    KM_REFINE_FALLBACK_EMPTY = 2,  /* teacher mask empty: student's mask kept */
} km_refine_outcome;

/* "teacher", "student_no_box", "student_empty_teacher" (CSV values) */
const char *km_refine_outcome_name(km_refine_outcome o);

/* The original image the teacher sees. Its pixels are needed only when its
 * embedding is not cached: callers that keep only crops (mining, eval) give
 * the file and the hash recorded when the crop was made (km_dataset's
 * orig_hash), and the file is decoded again on a cache miss [choice: Kvasir
 * originals are ~0.9 MB each, so keeping them would cost ~1 GB per 1000
 * images for pixels that are read once per image per cache; a reloaded file
 * whose size or hash differs is an error, it changed on disk]. */
typedef struct {
    const uint8_t *rgb; /* [h, w, 3] the original pixels, or NULL: read `path` on a cache miss */
    const char *path;   /* the image file (used when rgb is NULL) */
    int w, h;
    uint64_t hash;      /* km_hash_image(rgb, w, h, 3) */
} km_refine_image;
/* From pixels in memory (hashes them). */
void km_refine_image_rgb(km_refine_image *im, const uint8_t *rgb, int w, int h);
/* From a file decoded as RGB (km_image_load want_c = 3) of size w x h whose
 * pixels hash to `hash`. */
void km_refine_image_file(km_refine_image *im, const char *path, int w, int h, uint64_t hash);

typedef struct km_refiner {
    km_refine_config cfg;
    km_sam sam;
    int loaded, predictor_on, cache_on;
    km_sam_predictor p;
    km_embcache cache;
    uint64_t fp;
    float *emb, *m256;
    uint8_t *mask; /* [cap] teacher mask of the current S x S crop */
    float *cS;     /* [cap] its confidence in the S frame */
    size_t cap;
    float *conf, *zo; /* [ocap] confidence / mask-prompt logits at the original size */
    size_t ocap;
    /* counters since open */
    long images, teacher_calls, decodes, encoder_runs, fallback_no_box, fallback_empty;
    double encoder_seconds, decoder_seconds; /* image encoder; prompt encoder + decoder + post-processing */
} km_refiner;

/* Checks the config (KM_EARG naming the flag; KM_EIO "--teacher X: no such
 * checkpoint file"), loads the teacher and opens the cache. On error
 * everything opened so far is released (km_refiner_close is still safe). */
km_status km_refiner_open(km_refiner *r, const km_refine_config *c);
void km_refiner_close(km_refiner *r);
/* What eval and predict open: the student from `weights` (*size, when 0,
 * becomes the crop size it was trained at, else 224) and, when f->teacher is
 * set, the refiner from the refined-mode flags (km_refine_config_from_flags).
 * *ref is zeroed first (km_refiner_close is safe on it); on failure nothing
 * stays open. */
struct km_unetpp;
km_status km_refine_open_student(const char *weights, const km_refine_flags *f, km_refiner *ref,
                                 struct km_unetpp **m, int *size);

/* Step 1: prompts from logits z [H, W] with the refiner's mode, points and
 * box rule (km_prompts_from_logits, then km_prompts_set_box_rule). */
km_status km_refine_prompts(km_refiner *r, const float *z, int H, int W, km_rng *rng, km_prompts *pr);

/* THE teacher call (mining and refined inference both come here): the
 * teacher's confidence conf [h, w] (header: c = 2p - 1, the union of one
 * decode per box by maximum) on the original image im, for prompts pr (READY)
 * in the frame of geometry g (its S x S crop, un-augmented), or, g NULL, in
 * the original frame itself. zmask: the mask prompt's logits in pr's frame
 * (read only in a mode with KM_PROMPT_USE_MASK, else may be NULL); with g it
 * is mapped to the original frame (half-pixel bilinear inside the crop's
 * extent, the smallest logit outside) before km_prompts_mask_input. The
 * embedding comes from the cache or one encoder run; counts one teacher call
 * and km_prompts_n_decodes(pr) decodes. */
km_status km_refine_teacher_conf(km_refiner *r, const km_refine_image *im, km_prompts *pr, const km_geom *g,
                                 const float *zmask, float *conf);

/* The teacher's mask [S, S] {0,1} in the student's frame for prompts pr made
 * in that (un-augmented) frame: km_refine_teacher_conf, then the images'
 * geometry (km_geom_resize_crop_f32) and c > 0. The mining run's labeller. */
km_status km_refine_teacher_mask(km_refiner *r, const km_refine_image *im, int S, km_prompts *pr, const float *zmask,
                                 uint8_t *mask);

/* Refined inference in the student's frame: z [S, S] the logits of the crop
 * of im, replaced by +-1 logits of the teacher's mask unless a fallback
 * happens (header). */
km_status km_refine_logits(km_refiner *r, const km_refine_image *im, int S, float *z, km_refine_outcome *outcome);

/* The teacher's answer at the ORIGINAL size, for `kmseg predict` and the
 * teacher-quality measurement: prompts from z, which is either the student's
 * logits of the S x S crop of geometry g (g->w, g->h must be im's size), or,
 * g NULL, a map over the original frame [h, w] (a ground-truth mask as +1 / -1
 * logits: its points are then drawn at random among its pixels, all tied);
 * RNG re-seeded with KM_REFINE_SEED, box rule of the config. Writes mask
 * [h, w] {0,1} (c > 0) and, if conf is not NULL, conf [h, w]. Outcome
 * KM_REFINE_FALLBACK_NO_BOX: the teacher was not called, mask all 0 and conf
 * all -1; KM_REFINE_FALLBACK_EMPTY: it was called and its mask is empty. */
km_status km_refine_teacher_mask_orig(km_refiner *r, const km_refine_image *im, const float *z, const km_geom *g,
                                      uint8_t *mask, float *conf, km_refine_outcome *outcome);

/* The embedding of im into the disk cache unless a file for its key is
 * there already (not read: a damaged one is replaced when it is used).
 * *encoded = 1 when the encoder ran (counted in encoder_runs). The mining
 * run's precompute across ranks (mine_dist.h); KM_EARG without a cache
 * folder. */
km_status km_refine_precompute(km_refiner *r, const km_refine_image *im, int *encoded);

/* Cache hits since open (memory + disk). */
long km_refiner_cache_hits(const km_refiner *r);
/* One line to f: "refined by TEACHER (box rule R): N teacher call(s), N
 * decode(s) (N encoder run(s), N cached), N fallback(s) to the student (N
 * NO_BOX, N empty teacher mask)" (what eval and predict print). */
void km_refiner_print(const km_refiner *r, FILE *f);

#endif

/* mine.h - the knowledge-mining run (method.md 4, 5; paper 2.3-2.5): a
 * supervised phase (km_train_run, or a given student checkpoint), then the
 * mining phase, fine-tuning the best supervised student on labelled +
 * teacher-labelled images.
 *
 * Run folder <out> (its mechanics: runfolder.h):
 *   mine_config.json     every resolved setting of the mining run (the train
 *                        and mine settings tables; box_rule missing in older
 *                        files = `all`, micro_batch missing = 0)
 *   splits/              train/val/test/labelled/unlabelled .txt (as train.h)
 *   supervised/          the supervised phase's own run folder (train.h),
 *                        absent when init is given
 *   pseudo/<id>.png      one-time: every unlabelled image's frozen pseudo label
 *   pseudo/epoch_NNN/    continuous: the first `sample_pngs` pseudo labels of
 *                        each epoch, named <id>.png, in the un-augmented frame
 *   metrics.csv/.jsonl   one row per mining epoch: losses (total, labelled part,
 *                        pseudo part), val (and with eval_test, test) loss /
 *                        Dice / IoU, lr, seconds, unlabelled visits, teacher
 *                        calls, NO_BOX, cache hits / misses, encoder runs,
 *                        encoder / decoder seconds, pseudo labels' mean Dice
 *   best.safetensors     weights of the best val-loss mining epoch
 *   last.safetensors     the resumable checkpoint (train.h's
 *                        km_train_checkpoint_save, prefix "mine"): weights,
 *                        Adam moments and step, RNG, plateau and early-stop
 *                        state, epoch, plus metadata "mine.*": done, the
 *                        supervised epochs, the schedule, the totals so far
 *                        of teacher calls and NO_BOX and, one-time, which
 *                        unlabelled images have a frozen label (their
 *                        pseudo/<id>.png, read back on resume) and those
 *                        labels' mean Dice. Written after the one-time
 *                        labelling (epoch 0) and after every epoch, in the
 *                        order best -> log rows -> last, atomically; and
 *                        by a stop request in mid-epoch (below): then
 *                        "mine.epoch" counts the completed epochs, "mine.rng"
 *                        is the run RNG as the epoch began (its order and
 *                        augmentation codes are drawn again from it), and
 *                        "mine.partial.*" hold the steps done, the RNG after
 *                        them and the epoch's sums so far (losses and image
 *                        counts, visits, NO_BOX, Dice sums, sample PNGs,
 *                        teacher calls, cache counts, seconds)
 *   resumes.csv          each resume of the mining phase from last.safetensors
 *                        (its epoch, UTC time; runfolder.h); a resume of the
 *                        supervised phase is in supervised/resumes.csv
 *
 * km_mine_run in phases (mine.c): miner_open (settings, folder, config) ->
 * mine_supervised (supervised phase or --init) -> miner_state (data, RNG,
 * student fresh or resumed, teacher, metric files) -> label_onetime (one-time
 * schedule, once) -> mine_epoch per epoch (mine_steps: mine_step per batch,
 * label_visit per continuous visit; validation; epoch_end: log row and
 * checkpoint) -> miner_close (the one cleanup, every path).
 *
 * Resume (km_mine_run with resume = 1, `kmseg mine --resume RUN`): a run
 * killed anywhere continues from what it has on disk: without
 * last.safetensors, the supervised phase resumes from supervised/ (train.h)
 * and the mining phase starts from scratch (one-time labels are made again);
 * with it, log rows beyond its epoch are dropped and the mining phase goes on
 * from that state. Same seed and thread count -> the same bytes of best /
 * last.safetensors and the same log rows as an uninterrupted run, except the
 * time columns (seconds, encoder/decoder seconds) and the cache columns
 * (cache hits / misses, encoder runs), which count what the process found in
 * the embedding cache.
 *
 * Mining phase:
 *   - student = best supervised checkpoint (or init), fresh Adam state, the
 *     supervised optimisation settings, the same plateau / early-stop rules on
 *     the labelled validation set (sched.h), mine_epochs epochs at most;
 *   - splits recomputed exactly as km_train_run makes them (same seed,
 *     fractions or split_dir), so labelled / unlabelled / val agree with the
 *     supervised phase;
 *   - each epoch: one shuffled order over labelled + unlabelled images and one
 *     augmentation code per visit (run RNG, seeded seed ^ "mining"), batches
 *     of `batch`, a trailing single-image batch dropped (as train.c);
 *   - per batch: one train-mode forward over the whole batch (BatchNorm sees
 *     all its images), then L = L_sup(labelled part vs masks) + lambda *
 *     L_sup(unlabelled part vs pseudo labels), each part's km_seg_loss being
 *     the mean over its own elements, a part's term 0 when the part is empty.
 *     Images without a pseudo label (NO_BOX) get zero gradient.
 *   - one-time: before the first mining epoch, every unlabelled image is
 *     predicted once in eval mode (un-augmented), prompted, labelled by the
 *     teacher and frozen; images whose prompts gave NO_BOX are left out of the
 *     mining set for the whole phase (their "round" is the whole phase);
 *     the frozen label is augmented with each visit's code (km_aug_apply_u8).
 *   - continuous: per unlabelled visit, prompts from the visit's train-mode
 *     logits (augmented frame; box rule applied there, components are the
 *     same sets in every frame) are mapped back (km_prompts_unaugment), the
 *     teacher decodes on the cached embedding of the ORIGINAL image, and the
 *     S x S mask is augmented with the same code to be the target of that
 *     same forward output. NO_BOX visits are counted and get no target.
 *   - teacher (refine.h, km_refine_teacher_mask, the one teacher step of
 *     mining and refined inference): prompts made in the student's S frame
 *     are mapped to the original image through the inverse geometry, the
 *     teacher sees the original image (file re-read only on an embedding-
 *     cache miss; the crop's load recorded its hash), one decode per box
 *     (box_rule, default per-component), the union of the decodes'
 *     confidences (c = 2p - 1, maximum) brought to the S frame with the
 *     images' geometry (Pillow float bilinear, centre crop), pseudo label =
 *     c > 0 there (the profile's own rule: logit > 0, or p > 0.5; refine.h).
 *     Embeddings come from the embedding cache (embcache.h), keyed by the
 *     original image, checkpoint content and profile: the encoder runs once
 *     per image per cache.
 *   - reporting only: the Dice of every produced pseudo label against the
 *     unlabelled image's ground-truth mask (km_dataset_scan indexes pairs
 *     only, so it always exists), per-image mean over the epoch.
 *
 * Micro-batches (train.micro_batch M > 0; microbatch.h) and mpirun
 * (mine_dist.h): the supervised phase is km_train_run with the same M; a
 * mining step is B/M micro-batches, each its own train-mode forward
 * (BatchNorm statistics of the micro-batch), its own targets and loss
 * L_j = L_sup(labelled part) + lambda * L_sup(pseudo part) over its images,
 * scaled by its share n_j / n of the batch's images; gradients are summed in
 * the fixed tree order and the BatchNorm updates applied in micro-batch
 * order. A continuous visit's prompts then come from a stream of its own
 * (run seed, epoch, position in the epoch's order) instead of the run RNG,
 * so that they do not depend on who computes them. Under `mpirun -np N`
 * (N dividing B/M) rank r computes micro-batches [r K/N, (r+1) K/N) with
 * their teacher calls; the loss parts, visits, NO_BOX, Dice sums and sample
 * labels are gathered and counted in micro-batch order, the teacher's
 * counters summed over ranks; every rank steps Adam alike and rank 0 alone
 * writes. Result: every file of the run folder is that of one process with
 * the same M, byte for byte, but mine_config.json's cache_dir and the time
 * columns (seconds, encoder/decoder seconds: wall and CPU time, summed over
 * ranks for the teacher); the cache columns are sums over ranks of what
 * each found in the cache (equal to one process's when every rank sees the
 * same cache folder). Before the first continuous epoch of a process with
 * micro-batches or N > 1 and a disk cache, the unlabelled images' embeddings
 * are encoded, rank r taking u = r mod N (km_mine_precompute); the one-time
 * labelling pass labels (and so encodes) image u on rank u mod N. Without
 * micro-batches N > 1 ranks are allowed for a one-time run from --init only
 * (its labelling pass shared, its steps run whole on every rank); checkpoints
 * hold nothing that depends on N, so --resume works with any valid N.
 * SIGTERM / SIGUSR1 (dist.h) stop the supervised phase as train does and the
 * mining phase after the current step (every rank after the same one: the
 * request is reduced across ranks after each step): rank 0 writes
 * last.safetensors with the partial epoch, no log row, and a log line says
 * how to continue; --resume (any valid N) redraws the epoch's order, restores
 * the RNG and sums and runs the remaining steps, so that the run folder ends
 * as an uninterrupted run's (checkpoints, pseudo/, log rows but the time and
 * cache columns: those of a resumed epoch add both processes'). A request
 * during the epoch's last step or its validation stops after the epoch's
 * checkpoint. */
#ifndef KM_MINE_H
#define KM_MINE_H

#include "../train/train.h"
#include "prompts.h"

typedef enum { KM_MINE_ONETIME = 0, KM_MINE_CONTINUOUS = 1 } km_mine_schedule;

typedef struct {
    km_train_config train; /* data, splits, model, optimisation; train.out is set by km_mine_run */
    char *out;             /* run folder */
    char *teacher;         /* teacher checkpoint (commands default it: teacher.h) */
    km_sam_profile profile;
    km_mine_schedule schedule;
    char *init;            /* student checkpoint: skip the supervised phase (NULL: run it) */
    km_prompt_mode prompt_mode;
    km_box_rule box_rule;  /* boxes from the student's mask (prompts.h) */
    int points;            /* guiding points x */
    double pseudo_weight;  /* lambda */
    int mine_epochs;       /* maximum mining epochs */
    char *cache_dir;       /* embedding cache folder (NULL: memory only) */
    int cache_mem;         /* embeddings kept in memory */
    int sample_pngs;       /* continuous: pseudo labels written per epoch */
    int no_cache;          /* --no-cache: read by the command only (it leaves cache_dir NULL
                              instead of the default folder); not saved */
} km_mine_config;

/* The table of the mining settings above (settings.h): defaults, flags and
 * --help text, range checks, mine_config.json keys, experiments
 * pass-through. The data / model / optimisation settings are
 * km_train_settings' rows over c->train; `kmseg mine` offers those flags
 * except --out and --init (its own), --max-steps and --eval-init
 * (km_mine_train_skip). --micro-batch M is the train row: both phases step
 * in micro-batches (below); mine_config.json has "micro_batch" only when it
 * is not 0, so files of earlier versions are written again byte for byte. */
extern const km_settings km_mine_settings;
/* The train-table flags `kmseg mine` does not offer (NULL-terminated). */
extern const char *const km_mine_train_skip[];

/* method.md defaults: km_train_config_default with labelled fraction 0.5,
 * then the table's: profile and prompt mode "auto" (from the checkpoint),
 * continuous, box rule per-component, 1 point, lambda 0.5, 100 epochs,
 * 8 sample PNGs, 256 embeddings in memory. */
void km_mine_config_default(km_mine_config *c);
/* Writes mine_config.json: kmseg_version, every train setting but "out" (the
 * supervised phase writes its own supervised/config.json), then every
 * mining setting, in table order. */
km_status km_mine_config_save(const km_mine_config *c, const char *path);
/* Reads <dir>/mine_config.json (written by a run) into c, strings owned,
 * c->out = dir; errors name the file. Keys older files lack keep their
 * defaults (out, encoder_weights, init_weights, max_steps, eval_init, label,
 * fold); a file without "box_rule" (written before the rule existed) means
 * `all`, the rule that run used. */
km_status km_mine_config_load(const char *dir, km_mine_config *c);
/* Frees the strings of a config read by km_mine_config_load. */
void km_mine_config_free(km_mine_config *c);
/* KM_EARG naming the flag for a bad setting; KM_EIO for a missing teacher. */
km_status km_mine_config_check(const km_mine_config *c);

typedef struct {
    int epochs_done, best_epoch, stopped_early;
    double best_val_loss, last_val_dice;
    int n_labelled, n_unlabelled;
    /* totals over the mining phase (one-time labelling included); after a
     * resume, cache hits / misses, encoder runs and seconds count this
     * process only; under mpirun, sums over the ranks */
    long teacher_calls, no_box, cache_hits, cache_misses, encoder_runs;
    long decodes; /* this process (all ranks): teacher decodes (one per box, box_rule) */
    double encoder_seconds, decoder_seconds;
    /* last epoch */
    double last_sup_loss, last_pseudo_loss, last_pseudo_dice;
    double last_student_unl_dice; /* the student's own Dice on the images that got pseudo labels */
    long last_teacher_calls, last_no_box, last_unl_visits, last_cache_hits, last_cache_misses;
    double last_epoch_seconds;
    int finished; /* 0: stopped by hooks->stop_after (resumable) */
} km_mine_result;

/* Resolves "auto" settings: the profile from the checkpoint (sam.h
 * km_sam_probe_profile), then the prompt mode from the profile. km_mine_run
 * does this itself; what it writes to mine_config.json is resolved. */
km_status km_mine_resolve_teacher(km_mine_config *c);

/* resume = 1 continues the run in c->out (c must be the run's own config, see
 * km_mine_config_load). hooks: log / progress as for km_train_run; on_step is
 * passed to the supervised phase; stop_after = N returns after N epochs in
 * total, supervised epochs first, then mining epochs, as if killed (the run
 * folder is resumable; res->finished = 0). */
km_status km_mine_run(const km_mine_config *c, int resume, const km_train_hooks *hooks, km_mine_result *res);

#endif

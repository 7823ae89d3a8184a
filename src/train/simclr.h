/* simclr.h - SimCLR self-supervised pretraining of the student's ResNet
 * encoder (issue 6, method.md section 6): two augmented views per image, the
 * encoder, a projection head and the NT-Xent loss (nn/simclr_ops.h).
 *
 * ---- Augmentation (one view) ----
 * The source is a cached S x S RGB crop (dataset.h: shortest side -> S, centre
 * crop); the view has the same size S. Steps, in the order of the SimCLR
 * torchvision pipeline (Chen et al. 2020, appendix A):
 *   1. RandomResizedCrop(S, scale (scale_min, 1.0), ratio (3/4, 4/3)):
 *      torchvision's get_params: up to 10 tries of area = S*S * U(scale),
 *      log-ratio ~ U(log 3/4, log 4/3), w = round(sqrt(area*ratio)),
 *      h = round(sqrt(area/ratio)); accepted if both fit, then top/left uniform
 *      integers; else the whole image (the fallback of a square source).
 *      Resampled to S x S with bilinear interpolation, half-pixel centres
 *      (align_corners False), no antialiasing, in float.
 *      Default scale_min 0.2 (not torchvision's 0.08): a polyp can occupy a
 *      small part of the frame, and an 8 % crop of a 224 cache is 63 pixels
 *      wide, mostly blur once upsampled.
 *   2. Horizontal flip, p 0.5.
 *   3. Colour jitter with p 0.8 (torchvision ColorJitter(0.4, 0.4, 0.4, 0.1)
 *      on float [0,1] images): factors b, c, s ~ U(0.6, 1.4), hue shift
 *      h ~ U(-0.1, 0.1), applied in a random order (a uniform permutation):
 *        brightness  x = clamp(b * x)
 *        contrast    x = clamp(c * x + (1 - c) * mean(grey(x)))   (image mean)
 *        saturation  x = clamp(s * x + (1 - s) * grey(x))          (per pixel)
 *        hue         RGB -> HSV, H = (H + h) mod 1, HSV -> RGB
 *      grey(x) = 0.299 R + 0.587 G + 0.114 B, clamp to [0, 1].
 *   4. Greyscale with p 0.2: R = G = B = grey(x).
 *   5. Gaussian blur with p 0.5 (SimCLR's ImageNet setting): kernel size
 *      k = floor(0.1 S) rounded up to odd (23 at 224, 3 at 32), sigma ~
 *      U(0.1, 2.0), separable, reflect padding (torchvision GaussianBlur).
 *   6. Normalisation as the supervised pipeline (ImageNet mean/std), CHW.
 * Vertical flips and rotations are left out: the supervised stage adds them
 * (augment.h) and SimCLR's recipe has none.
 *
 * Randomness: km_simclr_draw draws every parameter of one view from the
 * caller's km_rng on the caller's thread; km_simclr_apply is a pure function
 * of the source and the parameters (so views are built in parallel and the
 * result is bit-identical for a fixed seed and thread count).
 *
 * ---- Training (km_simclr_run) ----
 * With micro_batch M (microbatch.h) each step is N/M micro-batches of M
 * images (2M views, NT-Xent and BatchNorm within the micro-batch, each loss
 * scaled by M/N), gradients of encoder and head summed in a fixed tree
 * order; `mpirun -np K` shares them with the same result for every K (rank 0
 * writes the files, every rank reads on --resume). With sync_bn the
 * encoder's BatchNorm uses the statistics of all 2N views of the step
 * (NT-Xent stays per micro-batch).
 * Images: the train split of the seeded random split (km_split_random over
 * the km_dataset_scan index, val/test fractions 0.1, optionally over the first
 * max_images ids), i.e. the labelled and unlabelled training images of
 * `kmseg train` run with the same --seed/--max-images: its val/test images are
 * never seen. Per step, N images (shuffled each epoch, last partial batch
 * dropped) give B = 2N views, rows 0..N-1 view 1 and N..2N-1 view 2 (the
 * ordering of km_ntxent_forward). Network: encoder (train-mode BatchNorm) ->
 * global average pooling -> Linear(C,C) -> ReLU -> Linear(C,128), C = the
 * last encoder stage's channels (512; 256 / 128 with --encoder-depth 4 / 3);
 * the head is initialised as nn.Linear (U(-1/sqrt(in), 1/sqrt(in)) for weight
 * and bias). Adam (torch semantics) on encoder and head, constant lr.
 *
 * Run folder (every file written atomically):
 *   encoder.safetensors        the encoder, keys 'encoder.*' (smp names,
 *                              including BatchNorm buffers), what
 *                              km_unetpp_load_encoder and `kmseg train
 *                              --encoder-weights` read
 *   projection_head.safetensors  projection_head.{0,2}.{weight,bias}
 *                              (nn.Sequential(Linear, ReLU, Linear) names)
 *   last.safetensors           the resumable checkpoint: the student's state
 *                              dict (encoder trained, decoder as seeded; with
 *                              BatchNorm buffers and counters), the head,
 *                              Adam moments "adam.{encoder,head}.exp_avg[_sq]",
 *                              "pretrain.order" (int32, the shuffled image
 *                              order, which each epoch permutes further) and
 *                              metadata "pretrain.{epoch,steps,done,n_train,
 *                              rng_shuffle,rng_aug}" (steps is Adam's step
 *                              counter; the lr is constant, so there is no
 *                              schedule state); after a stop request
 *                              (SIGTERM/SIGUSR1) in mid-epoch: the order and
 *                              RNGs as the epoch began, plus
 *                              "pretrain.partial_steps" and
 *                              "pretrain.partial_loss_sum" (epoch may be 0)
 *   metrics.csv                epoch, steps, images, loss, lr, seconds, img_per_s
 *   config.json                the settings (read back by --resume)
 * Per epoch: log row -> encoder -> head -> last.safetensors, so a run killed
 * anywhere resumes from last.safetensors after dropping log rows beyond its
 * epoch, and recomputes the rest exactly: the resumed run's files are
 * byte-identical to an uninterrupted run's (metrics.csv but for the seconds
 * and img_per_s columns) for the same thread count. */
#ifndef KM_SIMCLR_H
#define KM_SIMCLR_H

#include "../core/km.h"
#include "../core/rng.h"
#include "../io/settings.h"

/* ---- augmentation ---- */
typedef struct {
    int x0, y0, w, h; /* crop box in the source */
    int flip;         /* horizontal flip */
    int jitter;       /* colour jitter applied */
    float bright, contrast, sat, hue;
    int order[4];  /* jitter op order: 0 brightness, 1 contrast, 2 saturation, 3 hue */
    int grey;
    float sigma; /* blur sigma, 0 = no blur */
} km_simclr_view;

typedef struct {
    float scale_min, scale_max; /* crop area fraction (0.2, 1.0) */
    float p_jitter, jitter_bcs, jitter_hue; /* 0.8, 0.4, 0.1 */
    float p_grey;                           /* 0.2 */
    float p_blur, sigma_min, sigma_max;     /* 0.5, 0.1, 2.0 */
} km_simclr_aug_cfg;

/* The augmentation defaults (rows of km_simclr_settings). */
void km_simclr_aug_default(km_simclr_aug_cfg *a);
void km_simclr_draw(km_rng *r, int S, const km_simclr_aug_cfg *a, km_simclr_view *v);
/* Floats of scratch km_simclr_apply and km_simclr_apply_rgb need for size S. */
size_t km_simclr_apply_work_floats(int S);
/* src: [S,S,3] uint8 RGB (HWC); x: [3,S,S] normalised float (CHW). */
void km_simclr_apply(const uint8_t *src, int S, const km_simclr_view *v, float *work, float *x);
/* The same up to (not including) normalisation: rgb [S,S,3] float in [0,1]
 * (tests and previews). */
void km_simclr_apply_rgb(const uint8_t *src, int S, const km_simclr_view *v, float *work, float *rgb);

/* ---- training ---- */
typedef struct {
    const char *data, *out;
    int epochs, batch, size, resnet, threads, max_images, max_steps;
    const char *decoder_channels; /* smp decoder_channels "a,b,c,d,e" (NULL: the default; written
                                     only when given) */
    int encoder_depth;            /* smp encoder_depth 3..5 (5: the default; written only when not 5) */
    double lr, temperature, weight_decay;
    uint64_t seed;
    int fixed_batch; /* tests: the first step's views are reused by every step (not resumable) */
    int micro_batch;   /* M images (2M views): NT-Xent per micro-batch, gradients summed in a fixed
                          order and shared by mpirun's ranks (microbatch.h; 0: off) */
    int sync_bn;       /* with micro_batch: BatchNorm statistics of all micro-batches (--sync-bn) */
    double step_timeout; /* watchdog on one step, seconds (0: off; not saved) */
    km_simclr_aug_cfg aug;
    /* how this process runs (not part of config.json) */
    int resume;     /* continue the run in `out` from last.safetensors (c: its
                       config, km_simclr_config_load); without one (killed in
                       epoch 1) the run starts over */
    int stop_after; /* return after this many epochs in total, as if killed (0: off) */
} km_simclr_config;

/* The table of the settings above (settings.h): defaults (the augmentation's
 * too), flags and --help text, range checks, config.json keys. */
extern const km_settings km_simclr_settings;

void km_simclr_config_default(km_simclr_config *c);
/* Reads <dir>/config.json (written by a pretraining run) into c (defaults
 * first; c->data and c->decoder_channels are allocated: km_simclr_config_free;
 * c->out is left NULL). Errors name the file and the setting. */
km_status km_simclr_config_load(const char *dir, km_simclr_config *c);
/* Writes config.json: "command": "pretrain", data, n_train_images, the other
 * settings in table order (threads < 1: the process's count; micro_batch
 * and sync_bn only when not 0, decoder_channels only when given, encoder_depth only when not 5),
 * kmseg_version (the format every run since the first has written). */
km_status km_simclr_config_save(const km_simclr_config *c, const char *path, int n_train);
void km_simclr_config_free(km_simclr_config *c);

typedef struct {
    int epochs_done, steps;           /* in total (a resumed run counts the epochs before) */
    int resumed_epoch;                /* epoch the run resumed after (0: a fresh start) */
    int finished;                     /* 0: stopped by stop_after */
    int images;                       /* the rest: this process only */
    double first_loss, last_loss;     /* first and last step (NaN: none) */
    double first_epoch_loss, last_epoch_loss;
    double seconds;                   /* training steps only */
} km_simclr_result;

/* Trains and writes the run folder (created if needed); c->resume continues
 * it. log (may be NULL): progress lines and a summary per epoch. */
km_status km_simclr_run(const km_simclr_config *c, FILE *log, km_simclr_result *res);

#endif

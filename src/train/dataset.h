/* dataset.h - dataset folders, validation, preprocessing and the in-memory
 * training cache (method.md section 2).
 *
 * Two layouts, told apart by <root>/dataset.json:
 *
 * images/masks: <root>/images/<id>.<ext> and <root>/masks/<id>.<ext>, ext
 * one of .jpg .jpeg .png in any letter case (the two extensions of a pair may
 * differ). Ids are the file names without the extension and may contain
 * spaces, parentheses and dots ("Non_COVID (28)").
 *
 * nnU-Net raw (2D, PNG): <root>/dataset.json, <root>/imagesTr/<case>_XXXX.png,
 * <root>/labelsTr/<case>.png (integer label maps), optional imagesTs/ (for
 * predict). dataset.json must give channel_names (1 or 3 entries), labels
 * (name -> integer value, "background": 0; region-based lists are refused),
 * numTraining (= the number of cases found) and file_ending (".png"). One
 * channel: <case>_0000.png, grey or RGB. Three channels: either three grey
 * files _0000 _0001 _0002 (R, G, B) or nnU-Net's natural-image convention of
 * one RGB _0000 file; one convention for the whole dataset. The ids are the
 * case names. A v1-style "training" list ([{"image": "./imagesTr/c.png",
 * "label": "./labelsTr/c.png"}]), when present, must name existing cases and
 * label files.
 *
 * In both, hidden files (".*") are skipped; anything else that is not a
 * supported image is reported; a root holding both layouts is an error.
 *
 * Foreground (the binarisation rule, per dataset):
 *   label given (--label VALUE, or NAME from dataset.json, or nnU-Net's only
 *   foreground label by default): foreground = mask value == label, on the
 *   values as stored (palette PNG: the index, never the colour; 16-bit PNG:
 *   all 16 bits; see km_mask_load). With an nnU-Net labels list, a value not
 *   in the list is an error. JPEG masks cannot hold labels (lossy): error.
 *   no label (images/masks layout, default), per mask:
 *     values only 0 and 1 (some 1): a 0/1 mask, foreground = 1;
 *     else (16-bit masks with values above 255 by their high byte) the grey
 *     rule: foreground = value > 127, and
 *       error   non-binary mask: more than 1 % of its pixels have a value in
 *               21..234, i.e. strictly inside (20, 235). JPEG-compressed
 *               binary masks stay within [0, 20] u [235, 255] (Kvasir-SEG:
 *               [0, ~8] u [~247, 255]); a few in-between pixels (<= 1 %,
 *               anti-aliased edges) are a warning;
 *       error   a label map: a PNG whose values are all <= 20, some above 1
 *               (0/1/2 ...): choose the foreground with --label VALUE.
 * The mask kind (0/255, 0/1, label map; grey/palette/16-bit/RGB/JPEG file)
 * is counted by km_dataset_verify and printed by check-data.
 *
 * Problems are never fatal one by one: scanning, verifying and loading add
 * every problem they find to a km_issues list (error or warning, with the
 * file relative to the root), so `kmseg check-data` can list all of them.
 * km_issues_status() turns a list with errors into one KM_EFORMAT status.
 *
 * What is checked (per pair; the same rules when training loads the data):
 *   error   image or mask unreadable / corrupt / truncated (decoder message)
 *   error   image without mask, mask without image, two files for one id
 *   error   unsupported extension in images/ or masks/
 *   error   image and mask sizes differ; nnU-Net channel files of one case
 *           differ in size, or one of them is not grey
 *   error   the mask rules above
 *   warning empty mask (no foreground): kept, it is a valid "no foreground"
 *           sample (Dice/IoU of an empty prediction = 1)
 *   warning foreground present but none left inside the centre crop
 * and per dataset (verify): error when a chosen label is in no mask.
 *
 * Preprocessing (torchvision Resize(S) + CenterCrop(S) on PIL images, the
 * classic pipeline for "shortest side 224, centre crop"):
 *   size: short side -> S, long side -> int(S * long / short) (truncation,
 *         as torchvision's _compute_resized_output_size).
 *   image: PIL's bilinear resample (Pillow Resample.c): a triangle filter
 *         whose support is widened by the downscale factor (antialiasing),
 *         weights quantised to 22-bit fixed point, horizontal pass first
 *         with the intermediate rounded to uint8, then the vertical pass.
 *         Reproduced bit for bit (tests compare with Pillow 9.4 output).
 *         Chosen over plain half-pixel bilinear because Kvasir images are
 *         downscaled 1.5-8x and un-antialiased bilinear aliases badly there.
 *         The filter works per channel, so three nnU-Net channel files give
 *         the same crop as the one RGB image they were split from.
 *   mask:  the foreground {0,1} at full size (rule above), then PIL nearest
 *         (ImagingScaleAffine): src = floor(x0 + (dst + 0.5) * in/out) with
 *         the position accumulated in double as Pillow does (the same crop
 *         as resizing the grey mask first and thresholding after).
 *   crop:  top = round_half_even((rh - S) / 2), left likewise (Python round).
 *   Grey images are replicated to RGB, alpha is dropped (km_image_load
 *   want_c = 3).
 *   normalisation (torchvision ToTensor + Normalize, float32):
 *         x = ((float)v / 255 - mean[c]) / std[c], mean (0.485, 0.456, 0.406),
 *         std (0.229, 0.224, 0.225).
 * The cache keeps the preprocessed crops as uint8 (S*S*3 RGB HWC image, S*S
 * {0,1} mask per sample: 1000 images at 224 = 200 MB), so epochs never decode. */
#ifndef KM_DATASET_H
#define KM_DATASET_H

#include "../core/km.h"
#include "../io/image.h"
#include "../io/tensor.h"

/* ---- problem lists ---- */
typedef struct {
    int is_error; /* 1 = error, 0 = warning */
    char *path;   /* relative to the dataset root, e.g. "masks/a.jpg" */
    char *msg;
} km_issue;

typedef struct {
    km_issue *items;
    int n, cap;
    int n_err, n_warn;
} km_issues;

void km_issues_init(km_issues *l);
void km_issues_free(km_issues *l);
void km_issues_add(km_issues *l, int is_error, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Moves all items of src to the end of dst (src is left empty). */
void km_issues_move(km_issues *dst, km_issues *src);
/* "error: masks/a.jpg: ..." lines, one per issue (max <= 0: all). */
void km_issues_print(const km_issues *l, FILE *f, int max);
/* KM_OK when the list has no error, else KM_EFORMAT with a message naming
 * `what`, the error count and the first error. */
km_status km_issues_status(const km_issues *l, const char *what);

/* ---- folder index ---- */
typedef struct {
    char *id;      /* file name without extension (nnU-Net: the case name) */
    char *image;   /* file name in images_dir (nnU-Net: the case's _0000 file) */
    char *chan[2]; /* nnU-Net three-file cases: the _0001 and _0002 files, else NULL */
    char *mask;    /* file name in masks_dir, NULL if none */
} km_sample_entry;

typedef struct {
    char *name;
    int value;
} km_label;

typedef struct {
    char *root, *images_dir, *masks_dir; /* masks_dir NULL: images only */
    char *images_rel, *masks_rel; /* their names in issue paths ("images", "labelsTr");
                                     images_rel NULL: a bare folder of images */
    km_sample_entry *items;       /* sorted by id (byte order) */
    int n;
    int n_hidden;                 /* skipped dot-files */
    int nnunet;                   /* 1: nnU-Net raw layout */
    int n_chan_files;             /* nnU-Net: image files per case, 1 or 3 */
    int label;     /* foreground value of the masks; KM_LABEL_BINARY: the no-label rules;
                      KM_LABEL_UNRESOLVED: a bad --label (an error is listed) */
    char *label_name;             /* the label's dataset.json name (NULL: none) */
    char *label_err, *label_err_path; /* KM_LABEL_UNRESOLVED: why, and the file ("" or
                                         "dataset.json"); km_dataset_verify lists it, a load
                                         with masks fails with it, loads without masks
                                         (pretraining, prediction) are unaffected */
    km_label *labels;             /* nnU-Net: dataset.json's labels */
    int n_labels;
} km_dataset_index;

#define KM_LABEL_BINARY (-1)
#define KM_LABEL_UNRESOLVED (-2)

int km_is_image_name(const char *name); /* supported extension? */
/* Index of a dataset folder in either layout. `label` (NULL: the default) is
 * --label: a value, or a label name of an nnU-Net dataset.json; a bad or
 * missing choice is recorded in label_err. Only complete pairs are indexed;
 * everything else, dataset.json's problems included, is an issue. Fails
 * (status) only when the root or a folder is missing or unreadable. */
km_status km_dataset_scan(const char *root, const char *label, km_dataset_index *idx, km_issues *issues);
/* Index of one folder of images (no masks), e.g. for prediction. A folder
 * named images* whose parent holds a dataset.json (DATASET/imagesTs) is read
 * as nnU-Net images: <case>_XXXX files grouped per case, id = the case. */
km_status km_dataset_scan_images(const char *dir, km_dataset_index *idx, km_issues *issues);
/* "label 'polyp' (value 1)", "label value 2" or "binary masks" (static
 * buffer, for messages). */
const char *km_dataset_label_desc(const km_dataset_index *idx);
/* Checkpoint metadata of the trained label, when one was chosen (a label
 * rule): "data.label_value" (the mask value) and "data.label" (its
 * dataset.json name, if any); nothing for binary masks or a NULL idx. */
void km_dataset_label_meta(const km_dataset_index *idx, km_tdict *meta);
/* The foreground value predictions for the images of idx are written with
 * (*value): the checkpoint's data.label_value (a .safetensors written by
 * train or mine on a label), else for nnU-Net images the dataset.json's only
 * foreground label (several: KM_EMISSING), else 255 (0/255 masks). */
km_status km_dataset_predict_label(const km_dataset_index *idx, const char *weights, int *value);
void km_dataset_index_free(km_dataset_index *idx);
/* Position of an id (exact, else with a supported extension stripped); -1. */
int km_dataset_find(const km_dataset_index *idx, const char *id);
/* Full paths (malloc'ed with km_malloc). */
char *km_dataset_image_path(const km_dataset_index *idx, int i);
char *km_dataset_mask_path(const km_dataset_index *idx, int i);

/* ---- geometry ---- */
typedef struct {
    int w, h;   /* original */
    int rw, rh; /* after "shortest side -> size" */
    int left, top; /* crop origin in the resized frame */
    int size;
} km_geom;
void km_geom_compute(int w, int h, int size, km_geom *g);
/* The inverse geometry, for prompts (method.md 4): crop pixel (x, y) of the
 * size x size frame (pixel indices; non-integers allowed) -> the original
 * frame, on pixel centres:
 *   xo = (x + left + 0.5) * w / rw - 0.5,  yo = (y + top + 0.5) * h / rh - 0.5
 * (double), clamped to [0, w - 1] x [0, h - 1]. The clamp bites only when the
 * image was upscaled (w < rw or h < rh) and then only near the image edge. */
void km_geom_to_orig(const km_geom *g, double x, double y, double *xo, double *yo);
/* Original-frame position -> the nearest crop pixel: x = floor((xo + 0.5) *
 * rw / w - 0.5 - left + 0.5), likewise y (may lie outside [0, size)).
 * Round trip: km_geom_from_orig(km_geom_to_orig(p)) == p for every crop
 * pixel p whose mapping was not clamped, also through float storage of the
 * original coordinates (an error of < 0.5 crop pixels: float's 2^-24
 * relative error times w stays far below that for any image under 2^20
 * pixels a side). */
void km_geom_from_orig(const km_geom *g, double xo, double yo, int *x, int *y);
/* A float map at the original size (in [h, w]) to the size x size frame with
 * the images' geometry: Pillow bilinear (km_resize_pil_bilinear_f32, i.e.
 * antialiased when downscaling) to rw x rh, then the centre crop. Allocates
 * its rw x rh temporary. */
void km_geom_resize_crop_f32(const km_geom *g, const float *in, float *out);
/* Resize + centre crop of an 8-bit interleaved image (C channels) into dst
 * [size, size, C]: PIL bilinear (image) / PIL nearest (mask), see above.
 * Allocates its temporary buffer (not a kernel: called at load time). */
void km_resize_crop_bilinear_u8(const uint8_t *src, int w, int h, int C, int size, uint8_t *dst);
void km_resize_crop_nearest_u8(const uint8_t *src, int w, int h, int C, int size, uint8_t *dst);
/* Image (any channel count, see image.h) -> RGB crop [size, size, 3]. */
km_status km_preprocess_image(const km_image *img, int size, uint8_t *rgb);
/* Grey mask -> {0,1} crop [size, size] (grey > 127). */
void km_preprocess_mask(const km_image *grey, int size, uint8_t *mask01);
/* Image i of idx as RGB (want_c 3) or as stored (0): one file, or an nnU-Net
 * case's three grey channel files merged (which must have one size). */
km_status km_dataset_image_load(const km_dataset_index *idx, int i, km_image *img, int want_c);
/* RGB uint8 HWC [S,S,3] -> normalised float CHW [3,S,S]. */
void km_normalize_rgb(const uint8_t *rgb, int S, float *x);

/* ---- whole-folder verification (check-data) ---- */
typedef struct {
    int n_pairs, n_grey, n_rgb, n_empty;
    int min_w, min_h, max_w, max_h;
    double mean_fg; /* mean foreground fraction of the masks at full size */
    /* valid masks by rule: 0/255 (grey > 127), 0/1, label map (value == label) */
    int n_bin255, n_bin01, n_labelmap;
    /* and by file: grey PNG (8 bits or fewer), 16-bit PNG, palette PNG, RGB PNG, JPEG */
    int n_png_grey, n_png16, n_palette, n_png_rgb, n_jpeg;
    int n_with_label; /* masks holding the chosen label (label-map rule) */
} km_data_stats;
/* Decodes every pair of idx (OpenMP, km_get_threads() threads) and checks it
 * with the rules above (crop rule at `size`). Issues are added in index order
 * whatever the thread timing; then the per-dataset check (a chosen label in
 * no mask: error on the masks folder). */
void km_dataset_verify(const km_dataset_index *idx, int size, km_issues *issues,
                       km_data_stats *stats);

/* ---- in-memory cache ---- */
typedef struct {
    int n, size;
    int *src;            /* [n] index into the km_dataset_index */
    char **ids;          /* [n] copies of the ids */
    int *orig_w, *orig_h;
    uint64_t *orig_hash; /* [n] km_hash_image of the original as RGB (w, h, 3):
                          * the teacher's embedding-cache key (embcache.h) */
    uint8_t *images;     /* [n, S, S, 3] RGB */
    uint8_t *masks;      /* [n, S, S] {0,1}; NULL when loaded without masks */
    int n_with_label;    /* label rule: masks holding the label at full size */
} km_dataset;

/* Decodes and preprocesses samples which[0..n) of idx in parallel into the
 * cache. with_masks requires idx->masks_dir and a resolved label (else the
 * label_err message, KM_EARG). All problems of the selected
 * samples go to `issues` (may be NULL); any error fails the load with
 * KM_EFORMAT (message: count + first problem + "run kmseg check-data"). */
km_status km_dataset_load(const km_dataset_index *idx, const int *which, int n, int size,
                          int with_masks, km_dataset *ds, km_issues *issues);
void km_dataset_free(km_dataset *ds);

/* Assembles a batch from the cache: x [B,3,S,S] normalised, y [B,1,S,S]
 * {0,1} (NULL to skip), for samples which[0..B) (positions in ds), each
 * augmented with aug[b] (NULL = no augmentation). Pure function of its
 * inputs, never allocates: the training loop may run it for batch k+1 on
 * another thread while batch k computes. */
void km_batch_fill(const km_dataset *ds, const int *which, const uint8_t *aug, int B, float *x,
                   float *y);

#endif

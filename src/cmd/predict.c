/* predict.c - `kmseg predict`: student masks for a folder of images, written
 * as PNG at each image's original resolution.
 *
 *   kmseg predict --weights W --images DIR --out DIR [--prob] [--overlay]
 *                 [--outside tile|background]
 *
 * The student sees what it saw in training: the image resized so its
 * shortest side is `size` (Pillow bilinear, dataset.h) and a centre size x
 * size crop. Mapping back to the original frame:
 *   1. a logit map over the whole resized frame (rw x rh) is assembled:
 *      inside the centre crop it is the centre window's output (identical to
 *      what `kmseg eval` scores); outside it depends on --outside:
 *        tile (default): the long axis is also covered by k = ceil(L / size)
 *          windows at evenly spaced offsets round(i * (L - size) / (k - 1)),
 *          each run alone in eval mode; a pixel outside the centre crop
 *          takes the logit of the window whose centre is nearest to it
 *          (ties: the lower offset). No averaging, so the centre crop is
 *          never altered: it is bit-identical to --outside background.
 *        background: pixels outside the centre crop are background
 *          (logit -1e4, probability 0).
 *   2. that map is resized to the original w x h with half-pixel bilinear
 *      interpolation on the logits (km_resize_bilinear_f32: torch
 *      F.interpolate, align_corners = False, edge-clamped); mask = logit > 0
 *      (p > 0.5, as eval).
 * Outputs, named <id>.png after the image's id: <out>/masks/ (0/255 grey; a
 * label map with the trained label's value for a checkpoint trained on a
 * label (its data.label_value metadata) or for nnU-Net images: DATASET/imagesTs
 * cases give <case>.png, the nnU-Net prediction layout, see dataset.h),
 * with --prob <out>/prob/ (round(255 * sigmoid(logit)) grey), with
 * --overlay <out>/overlay/ (RGB: the image with the mask filled blue at 50 %,
 * the scheme of every kmseg picture, report/overlay.h).
 *
 * Refined mode (--teacher CKPT, issue 5.4): the centre window's logits prompt
 * the teacher (src/mine/refine.h: prompts made in the S x S frame, --box-rule,
 * mapped to the original frame), which sees the whole ORIGINAL image; its
 * mask at the original size (confidence c > 0, i.e. p > 0.5) is the output
 * as it is, with no resampling, over the whole image: the teacher has seen
 * all of it, so --outside does not apply; --prob writes the teacher's
 * probability round(255 * p). Images whose prompts give NO_BOX, or whose
 * teacher mask is empty, get the student's output (steps 1-2 above); the
 * count is printed. */
#include "cmd.h"

#include "../core/args.h"
#include "../io/image.h"
#include "../io/resize.h"
#include "../io/settings.h"
#include "../mine/embcache.h"
#include "../mine/refine.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/train.h"
#include "../report/overlay.h"

#include <math.h>
#include <string.h>

/* Logits over the resized frame [rh, rw] for one image (see header); the
 * centre window's own logits stay in (*lg)[0 .. S*S). */
static km_status predict_frame(km_unetpp *m, const km_image *img, int S, int tile, const km_geom *g, float *frame,
                               float **x, float **lg, int *cap) {
    uint8_t *rs = km_malloc((size_t)g->rw * g->rh * 3);
    km_resize_pil_bilinear(rs, g->rw, g->rh, img->data, img->w, img->h, 3);
    int horiz = g->rw > g->rh; /* long axis along x */
    int L = horiz ? g->rw : g->rh, c0 = horiz ? g->left : g->top;
    int k = tile ? (L + S - 1) / S : 0;
    if (k == 1) k = 0; /* L == S: the centre window covers everything */
    int nw = 1 + k;
    int *off = km_malloc(sizeof(int) * (size_t)nw);
    off[0] = c0;
    for (int i = 0; i < k; i++) off[1 + i] = (int)floor((double)i * (L - S) / (k - 1) + 0.5);
    size_t P = (size_t)S * S;
    if (nw > *cap) {
        km_free(*x);
        km_free(*lg);
        *x = km_malloc(sizeof(float) * 3 * P * nw);
        *lg = km_malloc(sizeof(float) * P * nw);
        *cap = nw;
    }
    uint8_t *crop = km_malloc(P * 3);
    for (int w = 0; w < nw; w++) {
        int ox = horiz ? off[w] : 0, oy = horiz ? 0 : off[w];
        for (int yy = 0; yy < S; yy++) memcpy(crop + (size_t)yy * S * 3, rs + ((size_t)(yy + oy) * g->rw + ox) * 3, (size_t)S * 3);
        km_normalize_rgb(crop, S, *x + 3 * P * w);
    }
    km_free(crop);
    km_free(rs);
    /* one forward per window: the GEMM blocking depends on the batch size, so
     * batching them would move the centre crop's logits by ~1e-6 and make
     * it depend on the image's aspect ratio */
    km_status s = KM_OK;
    for (int w = 0; w < nw && !s; w++) s = km_unetpp_forward(m, *x + 3 * P * w, 1, S, S, 0, *lg + P * w);
    if (!s)
        for (int yy = 0; yy < g->rh; yy++)
            for (int xx = 0; xx < g->rw; xx++) {
                int u = horiz ? xx : yy; /* position along the long axis */
                int w = 0;
                if (u < c0 || u >= c0 + S) {
                    if (!k) {
                        frame[(size_t)yy * g->rw + xx] = -1e4f;
                        continue;
                    }
                    double best = INFINITY;
                    for (int i = 1; i < nw; i++) {
                        double d = fabs(u + 0.5 - (off[i] + S / 2.0));
                        if (u >= off[i] && u < off[i] + S && d < best) {
                            best = d;
                            w = i;
                        }
                    }
                    KM_ASSERT(w > 0);
                }
                int lx = horiz ? xx - off[w] : xx, ly = horiz ? yy : yy - off[w];
                frame[(size_t)yy * g->rw + xx] = (*lg)[P * w + (size_t)ly * S + lx];
            }
    km_free(off);
    return s;
}

typedef struct {
    const char *weights, *images, *out, *outside;
    int size, threads, prob, overlay, tile;
    km_refine_flags rf;
    int fgval;                   /* a mask's foreground value */
    char dm[4096], dp[4096], dov[4096]; /* masks/, prob/, overlay/ */
} predict_args;

/* Step 1: the flags, checked. */
static km_status predict_flags(int argc, char **argv, predict_args *a, int *help) {
    *a = (predict_args){.outside = "tile", .threads = 2, .fgval = 255};
    const km_flag own[] = {
        {"--weights", KM_FLAG_STR, &a->weights, "student checkpoint (.safetensors from kmseg train, or smp .pth)", 1, 0},
        {"--images", KM_FLAG_STR, &a->images, "folder of images (JPEG/PNG)", 1, 0},
        {"--out", KM_FLAG_STR, &a->out, "output folder (masks/, prob/, overlay/)", 1, 0},
        KM_CMD_THREADS_FLAG(&a->threads),
        {"--size", KM_FLAG_INT, &a->size, "student input size (0: the checkpoint's training size, else 224)", 0, 0},
        {"--outside", KM_FLAG_STR, &a->outside,
         "outside the centre crop: 'tile' (extra windows along the long side) or 'background'", 0, 0},
        {"--prob", KM_FLAG_BOOL, &a->prob, "also write probability maps (0..255) to prob/", 0, 0},
        {"--overlay", KM_FLAG_BOOL, &a->overlay, "also write overlays of the mask on the image to overlay/", 0, 0},
        {0}};
    static const char usage[] = "--weights W --images DIR --out DIR [--prob] [--overlay]";
    km_refine_flags_default(&a->rf);
    km_status s = km_cmd_parse_with("predict", usage, own, &km_refine_settings, &a->rf, argc, argv, help);
    if (s || *help) return s;
    if (!strcmp(a->outside, "tile")) a->tile = 1;
    else if (!strcmp(a->outside, "background")) a->tile = 0;
    else return km_err(KM_EARG, "--outside '%s': expected tile or background", a->outside);
    if ((s = km_cmd_check_size(a->size))) return s;
    return km_cmd_set_threads(a->threads);
}

/* The output folders. */
static km_status predict_folders(predict_args *a) {
    snprintf(a->dm, sizeof a->dm, "%s/masks", a->out);
    snprintf(a->dp, sizeof a->dp, "%s/prob", a->out);
    snprintf(a->dov, sizeof a->dov, "%s/overlay", a->out);
    km_status s = km_mkdir_p(a->dm);
    if (!s && a->prob) s = km_mkdir_p(a->dp);
    if (!s && a->overlay) s = km_mkdir_p(a->dov);
    return s;
}

/* The files of one image: m8 its mask, full its logits (student) or
 * confidence (teacher, ro == KM_REFINE_TEACHER) at the original size. */
static km_status predict_write(const predict_args *a, const char *id, const km_image *img, const uint8_t *m8,
                               const float *full, km_refine_outcome ro) {
    size_t np = (size_t)img->w * img->h;
    char path[4200];
    km_mask mk = {img->w, img->h, km_malloc(sizeof(uint16_t) * np), 16, KM_MASK_GREY};
    for (size_t p = 0; p < np; p++) mk.data[p] = m8[p] ? (uint16_t)a->fgval : 0;
    snprintf(path, sizeof path, "%s/%s.png", a->dm, id);
    km_status s = km_mask_save_png(path, &mk);
    km_mask_free(&mk);
    if (!s && a->prob) {
        km_image pr = {img->w, img->h, 1, km_malloc(np)};
        for (size_t p = 0; p < np; p++) /* the teacher's p = (c + 1) / 2, else the student's sigmoid */
            pr.data[p] = (uint8_t)floor(255.0 * (ro == KM_REFINE_TEACHER ? (full[p] + 1.0) / 2.0
                                                                          : 1.0 / (1.0 + exp(-(double)full[p]))) + 0.5);
        snprintf(path, sizeof path, "%s/%s.png", a->dp, id);
        s = km_image_save_png(path, &pr);
        km_image_free(&pr);
    }
    if (!s && a->overlay) {
        km_image ov = {img->w, img->h, 3, km_malloc(np * 3)};
        km_overlay_prediction(ov.data, img->data, img->w, img->h, 3, m8);
        snprintf(path, sizeof path, "%s/%s.png", a->dov, id);
        s = km_image_save_png(path, &ov);
        km_image_free(&ov);
    }
    return s;
}

/* Step 2: one image: the student's frame, the teacher's answer in refined
 * mode, the mask at the original size, its files. x, lg, cap: predict_frame's
 * buffers. */
static km_status predict_one(const predict_args *a, km_unetpp *m, km_refiner *ref, const km_dataset_index *idx, int i,
                             float **x, float **lg, int *cap) {
    km_image img = {0};
    km_status s = km_dataset_image_load(idx, i, &img, 3);
    if (s) return s;
    km_geom g;
    km_geom_compute(img.w, img.h, a->size, &g);
    size_t np = (size_t)img.w * img.h;
    float *frame = km_malloc(sizeof(float) * (size_t)g.rw * g.rh), *full = km_malloc(sizeof(float) * np);
    uint8_t *m8 = km_malloc(np);
    s = predict_frame(m, &img, a->size, a->tile, &g, frame, x, lg, cap);
    km_refine_outcome ro = KM_REFINE_FALLBACK_NO_BOX;
    if (!s && a->rf.teacher) {
        /* the teacher's answer on the whole original image, prompted by the centre window */
        km_refine_image ti;
        km_refine_image_rgb(&ti, img.data, img.w, img.h);
        s = km_refine_teacher_mask_orig(ref, &ti, *lg, &g, m8, full, &ro);
    }
    if (!s && ro != KM_REFINE_TEACHER) {
        km_resize_bilinear_f32(full, img.w, img.h, frame, g.rw, g.rh);
        for (size_t p = 0; p < np; p++) m8[p] = full[p] > 0;
    }
    if (!s) s = predict_write(a, idx->items[i].id, &img, m8, full, ro);
    km_free(m8);
    km_free(frame);
    km_free(full);
    km_image_free(&img);
    return s;
}

km_status km_cmd_predict(int argc, char **argv) {
    predict_args a;
    int help = 0;
    km_status s = predict_flags(argc, argv, &a, &help);
    if (s || help) return s;
    km_unetpp *m;
    km_refiner ref;
    char tbuf[4096];
    if ((s = km_cmd_open_student(a.weights, &a.rf, tbuf, sizeof tbuf, &ref, &m, &a.size))) return s;
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    s = km_dataset_scan_images(a.images, &idx, &iss);
    if (!s) s = km_issues_status(&iss, a.images);
    if (!s && idx.n == 0) s = km_err(KM_EMISSING, "%s: no .jpg/.jpeg/.png images found", a.images);
    if (!s) s = km_dataset_predict_label(&idx, a.weights, &a.fgval);
    if (!s) s = predict_folders(&a);
    float *x = NULL, *lg = NULL;
    int cap = 0;
    double t0 = km_now();
    for (int i = 0; i < idx.n && !s; i++) s = predict_one(&a, m, &ref, &idx, i, &x, &lg, &cap);
    if (!s) printf("%d masks written to %s (%.1f s)\n", idx.n, a.dm, km_now() - t0);
    if (!s && a.rf.teacher) km_refiner_print(&ref, stdout);
    km_free(x);
    km_free(lg);
    if (idx.items || idx.root) km_dataset_index_free(&idx);
    km_issues_free(&iss);
    km_unetpp_free(m);
    km_refiner_close(&ref);
    return s;
}

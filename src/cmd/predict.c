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
 *      interpolation on the logits (torch F.interpolate, align_corners =
 *      False, edge-clamped); mask = logit > 0 (p > 0.5, as eval).
 * Outputs, named <id>.png after the image's id: <out>/masks/ (0/255 grey; a
 * label map with the trained label's value for a checkpoint trained on a
 * label (its data.label_value metadata) or for nnU-Net images: DATASET/imagesTs
 * cases give <case>.png, the nnU-Net prediction layout, see dataset.h),
 * with --prob <out>/prob/ (round(255 * sigmoid(logit)) grey), with
 * --overlay <out>/overlay/ (RGB: the image with the mask tinted red at 50 %
 * and its boundary pure red).
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
#include "../mine/embcache.h"
#include "../mine/refine.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/train.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static km_status mkdir1(const char *dir) {
    if (mkdir(dir, 0777) && errno != EEXIST) return km_err(KM_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    return KM_OK;
}

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

/* Half-pixel bilinear [ih, iw] -> [oh, ow] (align_corners = False). */
static void bilinear_f32(const float *in, int iw, int ih, float *out, int ow, int oh) {
    double sx = (double)iw / ow, sy = (double)ih / oh;
    for (int y = 0; y < oh; y++) {
        double fy = (y + 0.5) * sy - 0.5;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < ih ? y0 + 1 : ih - 1;
        double wy = fy - y0;
        for (int x = 0; x < ow; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < iw ? x0 + 1 : iw - 1;
            double wx = fx - x0;
            double a = in[(size_t)y0 * iw + x0] * (1 - wx) + in[(size_t)y0 * iw + x1] * wx;
            double b = in[(size_t)y1 * iw + x0] * (1 - wx) + in[(size_t)y1 * iw + x1] * wx;
            out[(size_t)y * ow + x] = (float)(a * (1 - wy) + b * wy);
        }
    }
}

km_status km_cmd_predict(int argc, char **argv) {
    const char *weights = NULL, *images = NULL, *out = NULL, *outside = "tile";
    int size = 0, threads = 2, prob = 0, overlay = 0;
    const char *teacher = NULL, *profile = "auto", *pmode = "auto", *box_rule = "per-component", *cache_dir = NULL;
    int points = 1, no_cache = 0, refine = 0;
    char tbuf[4096];
    km_flag flags[] = {
        {"--weights", KM_FLAG_STR, &weights, "student checkpoint (.safetensors from kmseg train, or smp .pth)", 1, 0},
        {"--images", KM_FLAG_STR, &images, "folder of images (JPEG/PNG)", 1, 0},
        {"--out", KM_FLAG_STR, &out, "output folder (masks/, prob/, overlay/)", 1, 0},
        {"--size", KM_FLAG_INT, &size, "student input size (0: the checkpoint's training size, else 224)", 0, 0},
        {"--outside", KM_FLAG_STR, &outside,
         "outside the centre crop: 'tile' (extra windows along the long side) or 'background'", 0, 0},
        {"--prob", KM_FLAG_BOOL, &prob, "also write probability maps (0..255) to prob/", 0, 0},
        {"--overlay", KM_FLAG_BOOL, &overlay, "also write overlays of the mask on the image to overlay/", 0, 0},
        {"--threads", KM_FLAG_INT, &threads, "compute threads", 0, 0},
        {"--teacher", KM_FLAG_STR, &teacher, "refined mode with this teacher checkpoint (implies --refine)", 0, 0},
        {"--refine", KM_FLAG_BOOL, &refine, "refined mode: the student's prediction prompts the teacher (default teacher: the installed LiteMedSAM, $KMSEG_TEACHER)", 0, 0},
        {"--teacher-profile", KM_FLAG_STR, &profile, "refined mode: auto (from the checkpoint), sam, medsam, litemedsam or mobilesam", 0, 0},
        {"--prompt-mode", KM_FLAG_STR, &pmode, "refined mode: auto (the teacher's: box for MedSAM / LiteMedSAM, else points+box), points, box, points+box or points+box+mask", 0, 0},
        {"--box-rule", KM_FLAG_STR, &box_rule, "refined mode: boxes from the student's mask: all, largest or per-component (one decode per component of >= 10 % of the largest)", 0, 0},
        {"--points", KM_FLAG_INT, &points, "refined mode: guiding points per image", 0, 0},
        {"--cache-dir", KM_FLAG_STR, &cache_dir, "refined mode: teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", 0, 0},
        {"--no-cache", KM_FLAG_BOOL, &no_cache, "refined mode: keep teacher embeddings in memory only", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("predict", "--weights W --images DIR --out DIR [--prob] [--overlay]", flags, argc,
                                 argv, &help);
    if (s || help) return s;
    int tile;
    if (!strcmp(outside, "tile")) tile = 1;
    else if (!strcmp(outside, "background")) tile = 0;
    else return km_err(KM_EARG, "--outside '%s': expected tile or background", outside);
    if (size && (size < 32 || size % 32)) return km_err(KM_EARG, "--size %d: expected a positive multiple of 32", size);
    if (threads < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", threads);
    km_set_threads(threads);
    km_unetpp *m = NULL;
    km_refiner ref;
    if (refine && !teacher && (s = km_teacher_resolve(NULL, tbuf, sizeof tbuf, &teacher))) return s;
    s = km_refine_open_student(weights, teacher, profile, pmode, box_rule, points, cache_dir, no_cache, &ref, &m,
                               &size);
    if (s) return s;
    km_issues iss;
    km_issues_init(&iss);
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    s = km_dataset_scan_images(images, &idx, &iss);
    if (!s) s = km_issues_status(&iss, images);
    if (!s && idx.n == 0) s = km_err(KM_EMISSING, "%s: no .jpg/.jpeg/.png images found", images);
    int fgval = 255;
    if (!s) s = km_dataset_predict_label(&idx, weights, &fgval);
    char dm[4096], dp[4096], dov[4096];
    snprintf(dm, sizeof dm, "%s/masks", out);
    snprintf(dp, sizeof dp, "%s/prob", out);
    snprintf(dov, sizeof dov, "%s/overlay", out);
    if (!s) s = mkdir1(out);
    if (!s) s = mkdir1(dm);
    if (!s && prob) s = mkdir1(dp);
    if (!s && overlay) s = mkdir1(dov);
    float *x = NULL, *lg = NULL;
    int cap = 0;
    double t0 = km_now();
    for (int i = 0; i < idx.n && !s; i++) {
        km_image img = {0};
        s = km_dataset_image_load(&idx, i, &img, 3);
        if (s) break;
        km_geom g;
        km_geom_compute(img.w, img.h, size, &g);
        float *frame = km_malloc(sizeof(float) * (size_t)g.rw * g.rh);
        float *full = km_malloc(sizeof(float) * (size_t)img.w * img.h);
        s = predict_frame(m, &img, size, tile, &g, frame, &x, &lg, &cap);
        size_t np = (size_t)img.w * img.h;
        uint8_t *m8 = km_malloc(np);
        km_refine_outcome ro = KM_REFINE_FALLBACK_NO_BOX;
        if (!s && teacher) {
            /* the teacher's answer on the whole original image, prompted by the centre window */
            km_refine_image ti;
            km_refine_image_rgb(&ti, img.data, img.w, img.h);
            s = km_refine_teacher_mask_orig(&ref, &ti, lg, &g, m8, full, &ro);
        }
        if (!s && ro != KM_REFINE_TEACHER) {
            bilinear_f32(frame, g.rw, g.rh, full, img.w, img.h);
            for (size_t p = 0; p < np; p++) m8[p] = full[p] > 0;
        }
        km_mask mk = {img.w, img.h, km_malloc(sizeof(uint16_t) * np), 16, KM_MASK_GREY};
        for (size_t p = 0; p < np; p++) mk.data[p] = m8[p] ? (uint16_t)fgval : 0;
        km_free(m8);
        char path[4200];
        if (!s) {
            snprintf(path, sizeof path, "%s/%s.png", dm, idx.items[i].id);
            s = km_mask_save_png(path, &mk);
        }
        if (!s && prob) {
            km_image pr = {img.w, img.h, 1, km_malloc(np)};
            for (size_t p = 0; p < np; p++) /* the teacher's p = (c + 1) / 2, else the student's sigmoid */
                pr.data[p] = (uint8_t)floor(255.0 * (ro == KM_REFINE_TEACHER ? (full[p] + 1.0) / 2.0
                                                                              : 1.0 / (1.0 + exp(-(double)full[p]))) + 0.5);
            snprintf(path, sizeof path, "%s/%s.png", dp, idx.items[i].id);
            s = km_image_save_png(path, &pr);
            km_image_free(&pr);
        }
        if (!s && overlay) {
            km_image ov = {img.w, img.h, 3, km_malloc(np * 3)};
            for (int yy = 0; yy < img.h; yy++)
                for (int xx = 0; xx < img.w; xx++) {
                    size_t p = (size_t)yy * img.w + xx;
                    const uint8_t *src = img.data + 3 * p;
                    uint8_t *d = ov.data + 3 * p;
                    int on = mk.data[p] != 0;
                    int edge = on && ((xx > 0 && !mk.data[p - 1]) || (xx + 1 < img.w && !mk.data[p + 1]) ||
                                      (yy > 0 && !mk.data[p - img.w]) || (yy + 1 < img.h && !mk.data[p + img.w]));
                    if (edge) {
                        d[0] = 255;
                        d[1] = d[2] = 0;
                    } else if (on) {
                        d[0] = (uint8_t)((src[0] + 255 + 1) / 2);
                        d[1] = (uint8_t)(src[1] / 2);
                        d[2] = (uint8_t)(src[2] / 2);
                    } else {
                        memcpy(d, src, 3);
                    }
                }
            snprintf(path, sizeof path, "%s/%s.png", dov, idx.items[i].id);
            s = km_image_save_png(path, &ov);
            km_image_free(&ov);
        }
        km_mask_free(&mk);
        km_free(frame);
        km_free(full);
        km_image_free(&img);
    }
    if (!s) printf("%d masks written to %s (%.1f s)\n", idx.n, dm, km_now() - t0);
    if (!s && teacher)
        printf("refined by %s (box rule %s): %ld teacher call(s), %ld decode(s) (%ld encoder run(s), %ld cached), %ld fallback(s) to the student (%ld NO_BOX, %ld empty teacher "
               "mask)\n",
               teacher, km_box_rule_name(ref.cfg.box_rule), ref.teacher_calls, ref.decodes, ref.encoder_runs,
                   km_refiner_cache_hits(&ref),
                   ref.fallback_no_box + ref.fallback_empty, ref.fallback_no_box,
               ref.fallback_empty);
    km_free(x);
    km_free(lg);
    if (idx.items || idx.root) km_dataset_index_free(&idx);
    km_issues_free(&iss);
    km_unetpp_free(m);
    km_refiner_close(&ref);
    return s;
}

/* sam.c - `kmseg sam`: prompt Segment Anything on one image (SamPredictor).
 *
 *   kmseg sam --checkpoint FILE --image IMG [--point x,y[,label]]... [--box x0,y0,x1,y1]
 *             [--mask-input L.npy] [--multimask] --out MASK.png
 *             [--embedding-out E.npy] [--lowres-out L.npy] [--iou-out I.npy]
 *
 * IMG is a PNG/JPEG, or an .npy uint8 (H,W,3) / (H,W). Prompts are in image
 * pixels; a point's label defaults to 1 (foreground), 0 is background. The
 * mask input is a previous --lowres-out (one 256x256 plane: shapes (256,256),
 * (1,256,256) or (1,1,256,256)). MASK.png is the mask with the highest
 * predicted IoU (0/255); the npy outputs hold every returned mask:
 * embedding (1,256,64,64), low-res logits (1,K,256,256), IoU (1,K), with K = 3
 * under --multimask, else 1. */
#include "cmd.h"
#include "../core/args.h"
#include "../io/image.h"
#include "../io/npy.h"
#include "../models/sam.h"

#include <math.h>
#include <string.h>

/* Parses exactly n (or n_alt, when n_alt > 0) comma-separated numbers. */
static km_status parse_numbers(const char *flag, const char *s, double *v, int n, int n_alt,
                               int *got) {
    int k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        if (k == (n > n_alt ? n : n_alt)) break;
        double x = strtod(p, &end);
        if (end == p || !isfinite(x)) break;
        v[k++] = x;
        p = end;
        if (*p == ',') p++;
        else if (*p) break;
    }
    if (*p || !(k == n || (n_alt > 0 && k == n_alt)))
        return km_err(KM_EARG, "%s '%s': expected %d%s comma-separated numbers", flag, s, n,
                      n_alt > 0 ? (n_alt == 3 ? " or 3" : " or more") : "");
    *got = k;
    return KM_OK;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static km_status load_image(const char *path, km_image *img) {
    memset(img, 0, sizeof *img);
    if (!ends_with(path, ".npy")) return km_image_load(path, img, 3);
    km_tensor t;
    km_status s = km_npy_load(path, &t);
    if (s) return s;
    int ok = t.dtype == KM_U8 && (t.ndim == 2 || (t.ndim == 3 && (t.shape[2] == 3 || t.shape[2] == 1)));
    if (!ok) {
        char b[128];
        s = km_err(KM_ESHAPE, "%s: image array is %s %s, expected uint8 (H,W,3) or (H,W)", path,
                   km_dtype_name(t.dtype), km_shape_str(b, sizeof b, t.ndim, t.shape));
        km_tensor_free(&t);
        return s;
    }
    img->h = (int)t.shape[0];
    img->w = (int)t.shape[1];
    img->c = t.ndim == 3 ? (int)t.shape[2] : 1;
    img->data = t.data;
    t.data = NULL;
    km_tensor_free(&t);
    return KM_OK;
}

km_status km_cmd_sam(int argc, char **argv) {
    const char *ckpt = NULL, *image = NULL, *box_s = NULL, *mask_in = NULL, *out = NULL;
    const char *emb_out = NULL, *low_out = NULL, *iou_out = NULL;
    km_strlist points = {0};
    int multimask = 0, threads = 2;
    km_flag flags[] = {
        {"--checkpoint", KM_FLAG_STR, &ckpt, "SAM / MedSAM checkpoint (.pth or .safetensors)", 1, 0},
        {"--image", KM_FLAG_STR, &image, "image: PNG, JPEG, or .npy uint8 (H,W,3)", 1, 0},
        {"--point", KM_FLAG_MULTI, &points, "x,y[,label] in image pixels (label 1 fg, 0 bg); repeatable", 0, 0},
        {"--box", KM_FLAG_STR, &box_s, "x0,y0,x1,y1 in image pixels", 0, 0},
        {"--mask-input", KM_FLAG_STR, &mask_in, "previous low-res logits .npy (256x256)", 0, 0},
        {"--multimask", KM_FLAG_BOOL, &multimask, "return the 3 multimask outputs", 0, 0},
        {"--out", KM_FLAG_STR, &out, "output mask PNG (the mask with the highest IoU)", 1, 0},
        {"--embedding-out", KM_FLAG_STR, &emb_out, "write the image embedding .npy (1,256,64,64)", 0, 0},
        {"--lowres-out", KM_FLAG_STR, &low_out, "write the low-res logits .npy (1,K,256,256)", 0, 0},
        {"--iou-out", KM_FLAG_STR, &iou_out, "write the IoU predictions .npy (1,K)", 0, 0},
        {"--threads", KM_FLAG_INT, &threads, "worker threads", 0, 0},
        {0}};
    int help;
    km_status s = km_parse_flags("sam",
                                 "--checkpoint FILE --image IMG [--point x,y[,label]]... "
                                 "[--box x0,y0,x1,y1] [--mask-input L.npy] [--multimask] --out MASK.png",
                                 flags, argc, argv, &help);
    if (s || help) {
        km_strlist_free(&points);
        return s;
    }
    if (threads < 1) {
        km_strlist_free(&points);
        return km_err(KM_EARG, "--threads must be >= 1, got %d", threads);
    }
    km_set_threads(threads);

    int np = points.n;
    float *xy = km_malloc(sizeof(float) * 2 * (np + 1)), box[4], *mask = NULL;
    int *lab = km_malloc(sizeof(int) * (np + 1));
    km_sam m;
    km_sam_predictor p;
    km_image img = {0};
    km_sam_result r = {0};
    int have_model = 0, have_pred = 0;
    for (int i = 0; !s && i < np; i++) {
        double v[3];
        int got;
        s = parse_numbers("--point", points.items[i], v, 2, 3, &got);
        if (s) break;
        xy[2 * i] = (float)v[0];
        xy[2 * i + 1] = (float)v[1];
        lab[i] = got == 3 ? (int)v[2] : 1;
        if (got == 3 && v[2] != 0 && v[2] != 1)
            s = km_err(KM_EARG, "--point '%s': label must be 1 (foreground) or 0 (background)",
                       points.items[i]);
    }
    if (!s && box_s) {
        double v[4];
        int got;
        s = parse_numbers("--box", box_s, v, 4, 0, &got);
        for (int k = 0; !s && k < 4; k++) box[k] = (float)v[k];
    }
    if (!s && mask_in) {
        km_tensor t;
        s = km_npy_load_f32(mask_in, -1, NULL, &t);
        if (!s) {
            int ok = t.ndim >= 2 && t.shape[t.ndim - 1] == 256 && t.shape[t.ndim - 2] == 256 &&
                     km_numel(t.ndim, t.shape) == 256 * 256;
            char b[128];
            if (!ok)
                s = km_err(KM_ESHAPE, "%s: mask input has shape %s, expected (256,256), "
                           "(1,256,256) or (1,1,256,256)", mask_in,
                           km_shape_str(b, sizeof b, t.ndim, t.shape));
            else {
                mask = t.data;
                t.data = NULL;
            }
            km_tensor_free(&t);
        }
    }
    if (!s) s = load_image(image, &img);
    km_sam_prompts pr = {np ? xy : NULL, np ? lab : NULL, np, box_s ? box : NULL, mask, 256, 256,
                         multimask};
    /* reject bad prompts before the (slow) model load and image encoder */
    if (!s) s = km_sam_validate_prompts(&pr, KM_SAM_PROFILE_SAM, img.w, img.h);
    if (!s && (s = km_sam_load(&m, ckpt, 1)) == KM_OK) have_model = 1;
    if (!s) {
        km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_SAM);
        have_pred = 1;
        s = km_sam_set_image(&p, img.data, img.w, img.h, img.c);
    }
    if (!s) s = km_sam_predict(&p, &pr, &r);
    if (!s && emb_out) {
        int64_t sh[4] = {1, m.dec.D, 64, 64};
        s = km_npy_save(emb_out, KM_F32, 4, sh, p.embedding);
    }
    if (!s && low_out) {
        int64_t sh[4] = {1, r.K, 256, 256};
        s = km_npy_save(low_out, KM_F32, 4, sh, r.low_res);
    }
    if (!s && iou_out) {
        int64_t sh[2] = {1, r.K};
        s = km_npy_save(iou_out, KM_F32, 2, sh, r.iou);
    }
    if (!s) {
        int best = 0;
        for (int k = 1; k < r.K; k++)
            if (r.iou[k] > r.iou[best]) best = k;
        km_image mi = {r.w, r.h, 1, km_malloc((size_t)r.w * r.h)};
        const uint8_t *src = r.masks + (size_t)best * r.w * r.h;
        for (size_t i = 0; i < (size_t)r.w * r.h; i++) mi.data[i] = src[i] ? 255 : 0;
        s = km_image_save_png(out, &mi);
        km_free(mi.data);
    }
    km_sam_result_free(&r);
    if (have_pred) km_sam_predictor_free(&p);
    if (have_model) km_sam_free(&m);
    km_image_free(&img);
    km_free(mask);
    km_free(xy);
    km_free(lab);
    km_strlist_free(&points);
    return s;
}

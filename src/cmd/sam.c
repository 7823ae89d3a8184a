/* sam.c - `kmseg sam`: prompt a SAM-family teacher (SAM, MedSAM, LiteMedSAM,
 * MobileSAM; the profiles of models/teacher.h).
 *
 * One image (this form is fixed; scripts rely on it):
 *   kmseg sam [--checkpoint FILE] --image IMG [--point x,y[,label]]... [--box x0,y0,x1,y1]
 *             [--mask-input L.npy] [--multimask] --out MASK.png
 *             [--embedding-out E.npy] [--lowres-out L.npy] [--iou-out I.npy]
 *             [--overlay OUT.png] [--profile auto|sam|medsam|litemedsam|mobilesam]
 *             [--cache-dir DIR | --no-cache] [--threads N]
 * A folder of images with a prompts file:
 *   kmseg sam --checkpoint FILE --images DIR --prompts prompts.csv|prompts.json --out-dir DIR
 *             [--multimask] [--overlay DIR] [--profile ...] [--cache-dir DIR | --no-cache]
 *
 * IMG is a PNG/JPEG, or an .npy uint8 (H,W,3) / (H,W). Prompts are in image
 * pixels; a point's label defaults to 1 (foreground), 0 is background. The
 * mask input is a previous --lowres-out (one 256x256 plane: shapes (256,256),
 * (1,256,256) or (1,1,256,256)). MASK.png is the mask with the highest
 * predicted IoU (0/255); the npy outputs hold every returned mask:
 * embedding (1,256,64,64), low-res logits (1,K,256,256), IoU (1,K), with K = 3
 * under --multimask, else 1. --overlay writes the image with that mask filled
 * blue and the prompts drawn (foreground points green, background red, box
 * green; report/overlay.h, the scheme of every kmseg picture).
 *
 * Without --checkpoint the default teacher (LiteMedSAM, installed by
 * tools/install-teacher.sh; $KMSEG_TEACHER overrides) is used. --profile
 * auto (default) takes the checkpoint's own profile (ViT -> sam, TinyViT ->
 * litemedsam or mobilesam); medsam must be named (box only, single mask, its
 * own pre-processing, probability > 0.5); see models/teacher.h.
 *
 * Embedding cache (mine/embcache.h): on by default in --cache-dir, else
 * $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg; --no-cache turns it
 * off. A hit skips loading the image encoder and running it. The last line on
 * stderr reports the counters ("embedding cache: H hit(s), M miss(es), ...").
 *
 * Prompts file, keyed by the image's file name inside --images (format and
 * errors: models/prompt_file.h):
 *   CSV:  img1.png,point,120,95[,label]  /  img1.png,box,10,20,200,160
 *   JSON: {"img1.png": {"points": [[120,95,1],[40,150,0]], "box": [10,20,200,160]}}
 * Every image in the folder (.png .jpg .jpeg .npy) needs an entry and every
 * entry an image: both are checked, with every prompt, before any model work.
 * Outputs: <out-dir>/<stem>.png (the best mask) and <out-dir>/results.csv
 * (image, mask file, K, best mask index, its IoU, cache hit or miss). */
#include "cmd.h"
#include "../core/args.h"
#include "../io/image.h"
#include "../io/json.h"
#include "../io/npy.h"
#include "../mine/embcache.h"
#include "../models/sam.h"
#include "../models/sam_encoder.h"
#include "../models/sam_preprocess.h"
#include "../models/prompt_file.h"
#include "../report/overlay.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ---- images ------------------------------------------------------------- */

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

static int is_image_name(const char *n) {
    return n[0] != '.' && (ends_with(n, ".png") || ends_with(n, ".jpg") || ends_with(n, ".jpeg") ||
                           ends_with(n, ".PNG") || ends_with(n, ".JPG") || ends_with(n, ".JPEG") ||
                           ends_with(n, ".npy"));
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted image file names in dir. */
static km_status list_images(const char *dir, char ***names, int *n) {
    DIR *d = opendir(dir);
    if (!d) return km_err(KM_EIO, "--images %s: cannot open folder: %s", dir, strerror(errno));
    int cap = 16;
    *n = 0;
    *names = km_malloc(sizeof(char *) * cap);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_image_name(e->d_name)) continue;
        if (*n == cap) {
            char **nn = km_malloc(sizeof(char *) * cap * 2);
            memcpy(nn, *names, sizeof(char *) * cap);
            km_free(*names);
            *names = nn;
            cap *= 2;
        }
        (*names)[(*n)++] = km_strdup(e->d_name);
    }
    closedir(d);
    qsort(*names, *n, sizeof(char *), cmp_str);
    return KM_OK;
}

/* ---- overlay ------------------------------------------------------------ */

/* RGB copy of img with the mask filled and the prompts drawn on top
 * (report/overlay.h's scheme). */
static km_status write_overlay(const char *path, const km_image *img, const uint8_t *mask,
                               const km_prompt_set *ps) {
    km_image o = {img->w, img->h, 3, km_malloc((size_t)img->w * img->h * 3)};
    km_overlay_prediction(o.data, img->data, img->w, img->h, img->c, mask);
    km_overlay_prompts(o.data, o.w, o.h, ps->xy, ps->label, ps->n, ps->has_box ? ps->box : NULL);
    km_status s = km_image_save_png(path, &o);
    km_free(o.data);
    return s;
}

/* ---- the model, the cache and one image --------------------------------- */

typedef struct {
    const char *ckpt;
    km_sam_profile profile;
    const char *profile_name;
    int multimask;
    km_sam m;
    int have_model, model_has_encoder;
    km_sam_predictor p;
    int have_pred;
    km_embcache cache;
    int use_cache;
    uint64_t ckpt_fp;
    float *emb;     /* [D, 64, 64] */
    double t_encode; /* seconds spent in pre-processing + encoder */
    int n_encoded;
} sam_ctx;

static void ctx_free(sam_ctx *c) {
    if (c->have_pred) km_sam_predictor_free(&c->p);
    if (c->have_model) km_sam_free(&c->m);
    if (c->use_cache) km_embcache_free(&c->cache);
    km_free(c->emb);
}

/* Loads (or reloads with its image encoder) the model. */
static km_status ctx_model(sam_ctx *c, int need_encoder) {
    if (c->have_model && (c->model_has_encoder || !need_encoder)) return KM_OK;
    if (c->have_pred) km_sam_predictor_free(&c->p);
    if (c->have_model) km_sam_free(&c->m);
    c->have_pred = c->have_model = 0;
    km_status s = km_sam_load(&c->m, c->ckpt, need_encoder);
    if (s) return s;
    c->have_model = 1;
    c->model_has_encoder = need_encoder;
    if (c->profile == KM_SAM_PROFILE_AUTO) {
        c->profile = km_sam_auto_profile(&c->m);
        c->profile_name = km_sam_profile_name(c->profile);
    }
    if ((s = km_sam_predictor_init(&c->p, &c->m, c->profile))) return s;
    c->have_pred = 1;
    int D = c->m.dec.D;
    if (c->use_cache && c->cache.D != D) {
        char *dir = c->cache.dir ? km_strdup(c->cache.dir) : NULL;
        km_embcache_free(&c->cache);
        s = km_embcache_init(&c->cache, dir, D, 4);
        km_free(dir);
        if (s) c->use_cache = 0;
    }
    km_free(c->emb);
    c->emb = km_malloc(sizeof(float) * D * KM_EMB_HW * KM_EMB_HW);
    return s;
}

/* Whether key k is likely a hit (memory or file present); a corrupt file is
 * discovered on lookup, which then reloads the model with its encoder. */
static int cache_has(sam_ctx *c, const km_embkey *k) {
    if (!c->use_cache) return 0;
    for (int i = 0; i < c->cache.capacity; i++)
        if (c->cache.slots[i].stamp && c->cache.slots[i].key == k->key) return 1;
    char path[4096];
    return c->cache.dir && access(km_embcache_path(&c->cache, k, path, sizeof path), F_OK) == 0;
}

/* Embedding of img into the predictor, from the cache or the encoder.
 * *hit = 1 on a cache hit. */
static km_status ctx_set_image(sam_ctx *c, const km_image *img, const km_embkey *k, int *hit) {
    km_status s = ctx_model(c, !cache_has(c, k));
    if (s) return s;
    *hit = c->use_cache && km_embcache_lookup(&c->cache, k, c->emb);
    if (!*hit) {
        if ((s = ctx_model(c, 1))) return s;
        double t0 = km_now();
        s = km_sam_encode(&c->m, c->profile, img->data, img->w, img->h, img->c, c->emb);
        c->t_encode += km_now() - t0;
        c->n_encoded++;
        if (s) return s;
        if (c->use_cache && km_embcache_insert(&c->cache, k, c->emb))
            fprintf(stderr, "kmseg sam: warning: embedding not cached: %s\n", km_errmsg());
    }
    return km_sam_set_embedding(&c->p, c->emb, img->w, img->h);
}

static void make_key(sam_ctx *c, const km_image *img, km_embkey *k) {
    km_embkey_make(k, km_hash_image(img->data, img->w, img->h, img->c), c->ckpt_fp,
                   c->profile_name, img->w, img->h);
}

static int best_mask(const km_sam_result *r) {
    int best = 0;
    for (int k = 1; k < r->K; k++)
        if (r->iou[k] > r->iou[best]) best = k;
    return best;
}

static km_status write_mask(const char *path, const km_sam_result *r, int best) {
    km_image mi = {r->w, r->h, 1, km_malloc((size_t)r->w * r->h)};
    const uint8_t *src = r->masks + (size_t)best * r->w * r->h;
    for (size_t i = 0; i < (size_t)r->w * r->h; i++) mi.data[i] = src[i] ? 255 : 0;
    km_status s = km_image_save_png(path, &mi);
    km_free(mi.data);
    return s;
}

static void report_cache(const sam_ctx *c) {
    if (!c->use_cache) {
        fprintf(stderr, "embedding cache: off; %d image(s) encoded in %.2f s\n", c->n_encoded,
                c->t_encode);
        return;
    }
    const km_embcache *e = &c->cache;
    fprintf(stderr, "embedding cache: %ld hit(s) (%ld memory, %ld disk), %ld miss(es), %ld "
            "corrupt, %ld written, in %s; %d image(s) encoded in %.2f s\n",
            e->hits_mem + e->hits_disk, e->hits_mem, e->hits_disk, e->misses, e->corrupt,
            e->writes, e->dir, c->n_encoded, c->t_encode);
    if (e->corrupt)
        fprintf(stderr, "embedding cache: rejected a corrupt entry (recomputed): %s\n",
                e->last_problem);
}

/* ---- batch -------------------------------------------------------------- */

static km_status run_batch(sam_ctx *c, const char *dir, const char *prompts, const char *out_dir,
                           const char *overlay_dir) {
    km_prompt_list pl;
    char **names = NULL;
    int n = 0;
    km_status s = km_prompt_file_load(prompts, &pl);
    if (s) return s;
    s = list_images(dir, &names, &n);
    /* every entry names an image, every image has an entry */
    for (int i = 0; !s && i < pl.n; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = !strcmp(names[j], pl.items[i].name);
        if (!found)
            s = km_err(KM_EMISSING, "%s: entry '%s' names no image in %s", prompts,
                       pl.items[i].name, dir);
    }
    for (int j = 0; !s && j < n; j++)
        if (!km_prompt_list_find(&pl, names[j]))
            s = km_err(KM_EMISSING, "%s: no entry for image '%s' (in %s); every image needs prompts",
                       prompts, names[j], dir);
    if (!s && n == 0) s = km_err(KM_EMISSING, "--images %s: no .png/.jpg/.jpeg/.npy images", dir);

    /* Validate every image's prompts before loading the model; keep the keys. */
    km_embkey *keys = km_calloc(sizeof(km_embkey) * (n + 1));
    char path[4096];
    for (int j = 0; !s && j < n; j++) {
        km_image img;
        snprintf(path, sizeof path, "%s/%s", dir, names[j]);
        if ((s = load_image(path, &img))) break;
        km_sam_prompts pr = km_prompt_set_sam(km_prompt_list_find(&pl, names[j]), NULL, c->multimask);
        s = km_sam_validate_prompts(&pr, c->profile, img.w, img.h);
        if (s) km_err_prefix(s, "%s: ", names[j]);
        else make_key(c, &img, &keys[j]);
        km_image_free(&img);
    }
    if (!s) s = km_mkdir_p(out_dir);
    if (!s && overlay_dir) s = km_mkdir_p(overlay_dir);
    FILE *csv = NULL;
    if (!s) {
        snprintf(path, sizeof path, "%s/results.csv", out_dir);
        if (!(csv = fopen(path, "w"))) s = km_err(KM_EIO, "%s: cannot write: %s", path, strerror(errno));
        else fprintf(csv, "image,mask,K,best,iou,cache\n");
    }
    double t0 = km_now();
    for (int j = 0; !s && j < n; j++) {
        km_image img;
        km_sam_result r = {0};
        int hit = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[j]);
        if ((s = load_image(path, &img))) break;
        const km_prompt_set *ps = km_prompt_list_find(&pl, names[j]);
        km_sam_prompts pr = km_prompt_set_sam(ps, NULL, c->multimask);
        s = ctx_set_image(c, &img, &keys[j], &hit);
        if (!s) s = km_sam_predict(&c->p, &pr, &r);
        char stem[1024];
        snprintf(stem, sizeof stem, "%s", names[j]);
        char *dot = strrchr(stem, '.');
        if (dot) *dot = 0;
        int best = s ? 0 : best_mask(&r);
        if (!s) {
            snprintf(path, sizeof path, "%s/%s.png", out_dir, stem);
            s = write_mask(path, &r, best);
        }
        if (!s && overlay_dir) {
            snprintf(path, sizeof path, "%s/%s.png", overlay_dir, stem);
            s = write_overlay(path, &img, r.masks + (size_t)best * r.w * r.h, ps);
        }
        if (!s) {
            fprintf(csv, "%s,%s.png,%d,%d,%.9g,%s\n", names[j], stem, r.K, best, r.iou[best],
                    hit ? "hit" : "miss");
            fprintf(stderr, "[%d/%d] %s: K=%d best=%d iou=%.4f (%s)\n", j + 1, n, names[j], r.K,
                    best, r.iou[best], hit ? "cached embedding" : "encoded");
        }
        if (s) km_err_prefix(s, "%s: ", names[j]);
        km_sam_result_free(&r);
        km_image_free(&img);
    }
    if (csv && fclose(csv) && !s) s = km_err(KM_EIO, "%s/results.csv: write failed", out_dir);
    if (!s) {
        printf("%d mask(s) written to %s (%.1f s)\n", n, out_dir, km_now() - t0);
        report_cache(c);
    }
    km_free(keys);
    for (int j = 0; j < n; j++) km_free(names[j]);
    km_free(names);
    km_prompt_list_free(&pl);
    return s;
}

/* ---- the command -------------------------------------------------------- */

typedef struct {
    const char *ckpt, *image, *box_s, *mask_in, *out, *emb_out, *low_out, *iou_out, *overlay;
    const char *profile, *cache_dir, *images, *prompts, *out_dir;
    km_strlist points;
    int multimask, threads, no_cache, batch;
    km_sam_profile prof;
    char tbuf[4096]; /* the default teacher's path */
} sam_args;

/* The flags and how they go together (one image or a folder); a->points
 * must be freed (km_strlist_free) whatever happens. */
static km_status sam_flags(int argc, char **argv, sam_args *a, int *help) {
    memset(a, 0, sizeof *a);
    a->profile = "auto";
    a->threads = 2;
    km_flag flags[] = {
        KM_CMD_TEACHER_FLAG("--checkpoint", &a->ckpt),
        KM_CMD_PROFILE_FLAG("--profile", &a->profile),
        KM_CMD_CACHE_FLAGS(&a->cache_dir, &a->no_cache),
        {"--image", KM_FLAG_STR, &a->image, "image: PNG, JPEG, or .npy uint8 (H,W,3)", 0, 0},
        {"--point", KM_FLAG_MULTI, &a->points, "x,y[,label] in image pixels (label 1 fg, 0 bg)", 0, 0},
        {"--box", KM_FLAG_STR, &a->box_s, "x0,y0,x1,y1 in image pixels", 0, 0},
        {"--mask-input", KM_FLAG_STR, &a->mask_in, "previous low-res logits .npy (256x256)", 0, 0},
        {"--multimask", KM_FLAG_BOOL, &a->multimask, "return the 3 multimask outputs", 0, 0},
        {"--out", KM_FLAG_STR, &a->out, "output mask PNG, the mask with the highest IoU (required with --image)", 0, 0},
        {"--embedding-out", KM_FLAG_STR, &a->emb_out, "write the image embedding .npy (1,256,64,64)", 0, 0},
        {"--lowres-out", KM_FLAG_STR, &a->low_out, "write the low-res logits .npy (1,K,256,256)", 0, 0},
        {"--iou-out", KM_FLAG_STR, &a->iou_out, "write the IoU predictions .npy (1,K)", 0, 0},
        {"--overlay", KM_FLAG_STR, &a->overlay, "overlay PNG of mask and prompts (batch: a folder)", 0, 0},
        KM_CMD_THREADS_FLAG(&a->threads),
        {"--images", KM_FLAG_STR, &a->images, "batch: folder of images", 0, 0},
        {"--prompts", KM_FLAG_STR, &a->prompts, "batch: prompts .csv or .json keyed by file name", 0, 0},
        {"--out-dir", KM_FLAG_STR, &a->out_dir, "batch: output folder (masks, results.csv)", 0, 0},
        {0}};
    km_status s = km_parse_flags("sam",
                                 "[--checkpoint FILE] --image IMG [--point x,y[,label]]... "
                                 "[--box x0,y0,x1,y1] [--mask-input L.npy] [--multimask] --out MASK.png\n"
                                 "       kmseg sam [--checkpoint FILE] --images DIR --prompts FILE "
                                 "--out-dir DIR",
                                 flags, argc, argv, help);
    if (s || *help) return s;
    int batch = a->batch = a->images != NULL;
    a->prof = KM_SAM_PROFILE_AUTO;
    if (a->threads < 1) return km_err(KM_EARG, "--threads must be >= 1, got %d", a->threads);
    if ((s = km_sam_profile_parse_auto(a->profile, &a->prof))) return km_err_prefix(s, "--profile: ");
    if ((s = km_teacher_resolve(a->ckpt, a->tbuf, sizeof a->tbuf, &a->ckpt))) return s;
    if (a->no_cache && a->cache_dir) return km_err(KM_EARG, "--no-cache and --cache-dir contradict each other");
    if (batch && a->image) return km_err(KM_EARG, "--image and --images: give one image or one folder, not both");
    if (!batch && !a->image)
        return km_err(KM_EARG, "missing --image IMG (or --images DIR --prompts FILE --out-dir DIR)");
    if (batch && (!a->prompts || !a->out_dir))
        return km_err(KM_EARG, "--images needs %s", !a->prompts ? "--prompts FILE" : "--out-dir DIR");
    if (batch && (a->points.n || a->box_s || a->mask_in || a->out || a->emb_out || a->low_out || a->iou_out))
        return km_err(KM_EARG, "--images: prompts come from --prompts and masks go to --out-dir; "
                      "--point/--box/--mask-input/--out/--embedding-out/--lowres-out/--iou-out are "
                      "for one --image");
    if (!batch && (a->prompts || a->out_dir))
        return km_err(KM_EARG, "%s is for batch mode (--images DIR)", a->prompts ? "--prompts" : "--out-dir");
    if (!batch && !a->out) return km_err(KM_EARG, "missing required flag --out");
    km_set_threads(a->threads);
    return KM_OK;
}

/* The model's context: checkpoint, profile, the embedding cache (a cache
 * that cannot be opened is a warning: off). */
static void sam_open(const sam_args *a, sam_ctx *c) {
    memset(c, 0, sizeof *c);
    c->ckpt = a->ckpt;
    c->profile = a->prof;
    c->profile_name = km_sam_profile_name(a->prof);
    c->multimask = a->multimask;
    char dbuf[4096];
    const char *cache_dir = a->cache_dir;
    if (!a->no_cache && !cache_dir) cache_dir = km_embcache_default_dir(dbuf, sizeof dbuf);
    c->use_cache = !a->no_cache && cache_dir;
    if (c->use_cache && km_embcache_init(&c->cache, cache_dir, 256, 4)) {
        fprintf(stderr, "kmseg sam: warning: embedding cache off: %s\n", km_errmsg());
        c->use_cache = 0;
    }
}

/* One image's inputs, all checked before the (slow) model: the prompts, the
 * mask input (*mask, or NULL) and the image. */
static km_status one_inputs(const sam_args *a, km_prompt_set *ps, float **mask, km_image *img) {
    km_status s = KM_OK;
    for (int i = 0; !s && i < a->points.n; i++) s = km_prompt_parse_point("--point", a->points.items[i], ps);
    if (!s && a->box_s) s = km_prompt_parse_box("--box", a->box_s, ps);
    if (!s && a->mask_in) {
        km_tensor t;
        s = km_npy_load_f32(a->mask_in, -1, NULL, &t);
        if (s) return s;
        int ok = t.ndim >= 2 && t.shape[t.ndim - 1] == 256 && t.shape[t.ndim - 2] == 256 &&
                 km_numel(t.ndim, t.shape) == 256 * 256;
        char b[128];
        if (!ok)
            s = km_err(KM_ESHAPE, "%s: mask input has shape %s, expected (256,256), (1,256,256) or (1,1,256,256)",
                       a->mask_in, km_shape_str(b, sizeof b, t.ndim, t.shape));
        else {
            *mask = t.data;
            t.data = NULL;
        }
        km_tensor_free(&t);
    }
    return s ? s : load_image(a->image, img);
}

/* One image: the teacher's masks, then every output asked for. */
static km_status one_run(sam_ctx *c, const sam_args *a, const km_image *img, const km_prompt_set *ps,
                         const km_sam_prompts *pr) {
    km_sam_result r = {0};
    km_embkey k;
    int hit = 0;
    make_key(c, img, &k);
    km_status s = ctx_set_image(c, img, &k, &hit);
    if (!s) s = km_sam_predict(&c->p, pr, &r);
    if (!s && a->emb_out) {
        int64_t sh[4] = {1, c->m.dec.D, 64, 64};
        s = km_npy_save(a->emb_out, KM_F32, 4, sh, c->emb);
    }
    if (!s && a->low_out) {
        int64_t sh[4] = {1, r.K, 256, 256};
        s = km_npy_save(a->low_out, KM_F32, 4, sh, r.low_res);
    }
    if (!s && a->iou_out) {
        int64_t sh[2] = {1, r.K};
        s = km_npy_save(a->iou_out, KM_F32, 2, sh, r.iou);
    }
    int best = s ? 0 : best_mask(&r);
    if (!s) s = write_mask(a->out, &r, best);
    if (!s && a->overlay) s = write_overlay(a->overlay, img, r.masks + (size_t)best * r.w * r.h, ps);
    if (!s) report_cache(c);
    km_sam_result_free(&r);
    return s;
}

km_status km_cmd_sam(int argc, char **argv) {
    sam_args a;
    int help = 0;
    km_status s = sam_flags(argc, argv, &a, &help);
    if (s || help) {
        km_strlist_free(&a.points);
        return s;
    }
    sam_ctx c;
    sam_open(&a, &c);
    km_image img = {0};
    km_prompt_set ps = {0};
    float *mask = NULL;
    if (!a.batch) s = one_inputs(&a, &ps, &mask, &img);
    km_sam_prompts pr = km_prompt_set_sam(&ps, mask, a.multimask);
    if (!s && c.profile == KM_SAM_PROFILE_AUTO) s = ctx_model(&c, 0); /* resolves the profile */
    if (!s && !a.batch) s = km_sam_validate_prompts(&pr, c.profile, img.w, img.h);
    if (!s && c.use_cache) s = km_checkpoint_fingerprint(a.ckpt, &c.ckpt_fp);
    if (!s && a.batch) s = run_batch(&c, a.images, a.prompts, a.out_dir, a.overlay);
    if (!s && !a.batch) s = one_run(&c, &a, &img, &ps, &pr);
    ctx_free(&c);
    km_image_free(&img);
    km_prompt_set_free(&ps);
    km_free(mask);
    km_strlist_free(&a.points);
    return s;
}

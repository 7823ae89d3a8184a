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
 * under --multimask, else 1. --overlay writes the image with that mask tinted
 * blue and the prompts drawn (foreground points green, background red, box
 * green), as the segment-anything notebooks show them.
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
 * Prompts file, keyed by the image's file name inside --images:
 *   CSV:  a header "image,kind,..." then one row per prompt:
 *           img1.png,point,120,95        (label 1)
 *           img1.png,point,40,150,0      (background)
 *           img1.png,box,10,20,200,160   (x0,y0,x1,y1; at most one per image)
 *         no quoting (file names with commas are not supported); '#' lines and
 *         blank lines are skipped.
 *   JSON: {"img1.png": {"points": [[120,95,1],[40,150,0]], "box": [10,20,200,160]}}
 *         (points' labels optional, default 1; no other keys).
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

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- prompts ------------------------------------------------------------ */

typedef struct {
    char *name; /* image file name (batch) */
    float *xy;  /* [np, 2] */
    int *lab;   /* [np] */
    int np, cap;
    float box[4];
    int has_box;
} prompt_set;

static void ps_add_point(prompt_set *p, float x, float y, int label) {
    if (p->np == p->cap) {
        int cap = p->cap ? 2 * p->cap : 4;
        float *xy = km_malloc(sizeof(float) * 2 * cap);
        int *lab = km_malloc(sizeof(int) * cap);
        if (p->np) {
            memcpy(xy, p->xy, sizeof(float) * 2 * p->np);
            memcpy(lab, p->lab, sizeof(int) * p->np);
        }
        km_free(p->xy);
        km_free(p->lab);
        p->xy = xy;
        p->lab = lab;
        p->cap = cap;
    }
    p->xy[2 * p->np] = x;
    p->xy[2 * p->np + 1] = y;
    p->lab[p->np++] = label;
}

static void ps_free(prompt_set *p) {
    km_free(p->name);
    km_free(p->xy);
    km_free(p->lab);
    memset(p, 0, sizeof *p);
}

/* Parses exactly n (or n_alt, when n_alt > 0) comma-separated numbers.
 * `what` names the source in messages (a flag, or file:line). */
static km_status parse_numbers(const char *what, const char *s, double *v, int n, int n_alt,
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
        return km_err(KM_EARG, "%s '%s': expected %d%s comma-separated numbers", what, s, n,
                      n_alt > 0 ? " or 3" : "");
    *got = k;
    return KM_OK;
}

static km_status check_label(const char *what, const char *s, double label) {
    if (label != 0 && label != 1)
        return km_err(KM_EARG, "%s '%s': label must be 1 (foreground) or 0 (background)", what, s);
    return KM_OK;
}

/* "x,y[,label]" into p */
static km_status parse_point(const char *what, const char *s, prompt_set *p) {
    double v[3];
    int got;
    km_status st = parse_numbers(what, s, v, 2, 3, &got);
    if (!st && got == 3) st = check_label(what, s, v[2]);
    if (!st) ps_add_point(p, (float)v[0], (float)v[1], got == 3 ? (int)v[2] : 1);
    return st;
}

static km_status parse_box(const char *what, const char *s, prompt_set *p) {
    double v[4];
    int got;
    if (p->has_box) return km_err(KM_EARG, "%s: a second box for the same image (one allowed)", what);
    km_status st = parse_numbers(what, s, v, 4, 0, &got);
    for (int k = 0; !st && k < 4; k++) p->box[k] = (float)v[k];
    if (!st) p->has_box = 1;
    return st;
}

typedef struct {
    prompt_set *items;
    int n, cap;
} prompt_list;

static prompt_set *pl_get(prompt_list *l, const char *name, int create) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name)) return &l->items[i];
    if (!create) return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        prompt_set *it = km_calloc(sizeof(prompt_set) * cap);
        if (l->n) memcpy(it, l->items, sizeof(prompt_set) * l->n);
        km_free(l->items);
        l->items = it;
        l->cap = cap;
    }
    prompt_set *p = &l->items[l->n++];
    memset(p, 0, sizeof *p);
    p->name = km_strdup(name);
    return p;
}

static void pl_free(prompt_list *l) {
    for (int i = 0; i < l->n; i++) ps_free(&l->items[i]);
    km_free(l->items);
    memset(l, 0, sizeof *l);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static km_status parse_csv(const char *path, char *text, prompt_list *out) {
    int line = 0;
    km_status s = KM_OK;
    for (char *p = text; !s && p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        size_t len = strlen(p);
        if (len && p[len - 1] == '\r') p[--len] = 0;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", path, line);
        if (!len || p[0] == '#' || (line == 1 && !strncmp(p, "image,", 6))) {
            p = nl ? nl + 1 : NULL;
            continue;
        }
        char *c1 = strchr(p, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
        if (strchr(p, '"'))
            s = km_err(KM_EFORMAT, "%s: quoted CSV fields are not supported", where);
        else if (!c2 || c1 == p)
            s = km_err(KM_EFORMAT, "%s: '%s': expected image,point,x,y[,label] or "
                       "image,box,x0,y0,x1,y1", where, p);
        if (!s) {
            *c1 = *c2 = 0;
            prompt_set *ps = pl_get(out, p, 1);
            if (!strcmp(c1 + 1, "point")) s = parse_point(where, c2 + 1, ps);
            else if (!strcmp(c1 + 1, "box")) s = parse_box(where, c2 + 1, ps);
            else s = km_err(KM_EFORMAT, "%s: prompt kind '%s', expected 'point' or 'box'", where, c1 + 1);
        }
        p = nl ? nl + 1 : NULL;
    }
    return s;
}

/* A JSON array of numbers of length n (or n_alt) into v. */
static km_status json_numbers(const char *where, const km_json *a, double *v, int n, int n_alt) {
    if (a->type != KM_JSON_ARR || !(a->n == n || (n_alt && a->n == n_alt)))
        return km_err(KM_EFORMAT, "%s: expected an array of %d%s numbers, found a %s%s", where, n,
                      n_alt ? " or 3" : "", km_json_type_name(a->type),
                      a->type == KM_JSON_ARR ? " of another length" : "");
    for (int i = 0; i < a->n; i++) {
        if (a->items[i].type != KM_JSON_NUM)
            return km_err(KM_EFORMAT, "%s: element %d is a %s, expected a number", where, i,
                          km_json_type_name(a->items[i].type));
        v[i] = a->items[i].num;
    }
    return KM_OK;
}

static km_status parse_json(const char *path, const char *text, size_t n, prompt_list *out) {
    km_json root;
    km_status s = km_json_parse(path, text, n, &root);
    if (s) return s;
    if (root.type != KM_JSON_OBJ)
        s = km_err(KM_EFORMAT, "%s: expected an object {\"image.png\": {\"points\": ..., \"box\": "
                   "...}}, found a %s", path, km_json_type_name(root.type));
    for (int i = 0; !s && i < root.n; i++) {
        const char *name = root.keys[i].str;
        const km_json *e = &root.items[i];
        char where[700];
        snprintf(where, sizeof where, "%s: \"%s\"", path, name);
        if (pl_get(out, name, 0)) {
            s = km_err(KM_EFORMAT, "%s appears twice", where);
            break;
        }
        if (e->type != KM_JSON_OBJ) {
            s = km_err(KM_EFORMAT, "%s: expected an object with \"points\" and/or \"box\", found "
                       "a %s", where, km_json_type_name(e->type));
            break;
        }
        prompt_set *ps = pl_get(out, name, 1);
        for (int k = 0; !s && k < e->n; k++) {
            const char *key = e->keys[k].str;
            const km_json *v = &e->items[k];
            char w2[800];
            snprintf(w2, sizeof w2, "%s.%s", where, key);
            if (!strcmp(key, "box")) {
                double b[4];
                s = json_numbers(w2, v, b, 4, 0);
                for (int j = 0; !s && j < 4; j++) ps->box[j] = (float)b[j];
                ps->has_box = !s;
            } else if (!strcmp(key, "points")) {
                if (v->type != KM_JSON_ARR) {
                    s = km_err(KM_EFORMAT, "%s: expected an array of [x, y, label] points, found a "
                               "%s", w2, km_json_type_name(v->type));
                    break;
                }
                for (int j = 0; !s && j < v->n; j++) {
                    double pt[3];
                    char w3[850];
                    snprintf(w3, sizeof w3, "%s[%d]", w2, j);
                    s = json_numbers(w3, &v->items[j], pt, 2, 3);
                    if (!s && v->items[j].n == 3 && pt[2] != 0 && pt[2] != 1)
                        s = km_err(KM_EARG, "%s: label %g, expected 1 (foreground) or 0 "
                                   "(background)", w3, pt[2]);
                    if (!s)
                        ps_add_point(ps, (float)pt[0], (float)pt[1],
                                     v->items[j].n == 3 ? (int)pt[2] : 1);
                }
            } else {
                s = km_err(KM_EFORMAT, "%s: unknown key \"%s\", expected \"points\" or \"box\"",
                           where, key);
            }
        }
    }
    km_json_free(&root);
    return s;
}

static km_status load_prompts_file(const char *path, prompt_list *out) {
    memset(out, 0, sizeof *out);
    int json = ends_with(path, ".json"), csv = ends_with(path, ".csv");
    if (!json && !csv)
        return km_err(KM_EARG, "--prompts %s: expected a .csv or .json file", path);
    uint8_t *buf;
    size_t n;
    km_status s = km_read_file(path, (size_t)1 << 28, &buf, &n);
    if (s) return s;
    if (json) {
        s = parse_json(path, (const char *)buf, n, out);
    } else {
        char *text = km_malloc(n + 1);
        memcpy(text, buf, n);
        text[n] = 0;
        if (strlen(text) != n) s = km_err(KM_EFORMAT, "%s: NUL byte in a CSV file", path);
        else s = parse_csv(path, text, out);
        km_free(text);
    }
    km_free(buf);
    if (s) pl_free(out);
    return s;
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

static void put_px(km_image *im, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    memcpy(im->data + ((size_t)y * im->w + x) * 3, col, 3);
}

static void disc(km_image *im, float cx, float cy, int r, const uint8_t col[3]) {
    static const uint8_t white[3] = {255, 255, 255};
    int x0 = (int)floorf(cx), y0 = (int)floorf(cy);
    for (int dy = -r - 1; dy <= r + 1; dy++)
        for (int dx = -r - 1; dx <= r + 1; dx++) {
            int d2 = dx * dx + dy * dy;
            if (d2 <= r * r) put_px(im, x0 + dx, y0 + dy, col);
            else if (d2 <= (r + 1) * (r + 1)) put_px(im, x0 + dx, y0 + dy, white);
        }
}

/* RGB copy of img with the mask tinted (50 % towards (30, 144, 255), the
 * segment-anything notebooks' colour) and the prompts drawn on top. */
static km_status write_overlay(const char *path, const km_image *img, const uint8_t *mask,
                               const prompt_set *ps) {
    km_image o = {img->w, img->h, 3, km_malloc((size_t)img->w * img->h * 3)};
    static const uint8_t tint[3] = {30, 144, 255}, fg[3] = {0, 200, 0}, bg[3] = {230, 0, 0},
                         boxc[3] = {0, 255, 0};
    for (size_t i = 0; i < (size_t)img->w * img->h; i++)
        for (int k = 0; k < 3; k++) {
            uint8_t v = img->data[i * img->c + (img->c == 3 ? k : 0)];
            o.data[i * 3 + k] = mask[i] ? (uint8_t)((v + tint[k] + 1) / 2) : v;
        }
    int r = (img->w < img->h ? img->w : img->h) / 80;
    if (r < 2) r = 2;
    if (ps->has_box) {
        int x0 = (int)lroundf(ps->box[0]), y0 = (int)lroundf(ps->box[1]);
        int x1 = (int)lroundf(ps->box[2]), y1 = (int)lroundf(ps->box[3]);
        int t = r / 2 > 1 ? r / 2 : 1;
        for (int k = 0; k < t; k++) {
            for (int x = x0; x <= x1; x++) {
                put_px(&o, x, y0 + k, boxc);
                put_px(&o, x, y1 - k, boxc);
            }
            for (int y = y0; y <= y1; y++) {
                put_px(&o, x0 + k, y, boxc);
                put_px(&o, x1 - k, y, boxc);
            }
        }
    }
    for (int i = 0; i < ps->np; i++)
        disc(&o, ps->xy[2 * i], ps->xy[2 * i + 1], r, ps->lab[i] ? fg : bg);
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

static km_sam_prompts to_prompts(const prompt_set *ps, const float *mask, int multimask) {
    km_sam_prompts pr = {ps->np ? ps->xy : NULL, ps->np ? ps->lab : NULL, ps->np,
                         ps->has_box ? ps->box : NULL, mask, 256, 256, multimask};
    return pr;
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

static km_status mkdir1(const char *dir) {
    if (mkdir(dir, 0777) && errno != EEXIST)
        return km_err(KM_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    return KM_OK;
}

/* ---- batch -------------------------------------------------------------- */

static km_status run_batch(sam_ctx *c, const char *dir, const char *prompts, const char *out_dir,
                           const char *overlay_dir) {
    prompt_list pl;
    char **names = NULL;
    int n = 0;
    km_status s = load_prompts_file(prompts, &pl);
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
        if (!pl_get(&pl, names[j], 0))
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
        km_sam_prompts pr = to_prompts(pl_get(&pl, names[j], 0), NULL, c->multimask);
        s = km_sam_validate_prompts(&pr, c->profile, img.w, img.h);
        if (s) km_err_prefix(s, "%s: ", names[j]);
        else make_key(c, &img, &keys[j]);
        km_image_free(&img);
    }
    if (!s) s = mkdir1(out_dir);
    if (!s && overlay_dir) s = mkdir1(overlay_dir);
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
        const prompt_set *ps = pl_get(&pl, names[j], 0);
        km_sam_prompts pr = to_prompts(ps, NULL, c->multimask);
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
    pl_free(&pl);
    return s;
}

/* ---- the command -------------------------------------------------------- */

km_status km_cmd_sam(int argc, char **argv) {
    const char *ckpt = NULL, *image = NULL, *box_s = NULL, *mask_in = NULL, *out = NULL;
    const char *emb_out = NULL, *low_out = NULL, *iou_out = NULL, *overlay = NULL;
    const char *profile = "auto", *cache_dir = NULL, *images = NULL, *prompts = NULL, *out_dir = NULL;
    km_strlist points = {0};
    int multimask = 0, threads = 2, no_cache = 0;
    km_flag flags[] = {
        {"--checkpoint", KM_FLAG_STR, &ckpt, "teacher checkpoint (.pth or .safetensors; default: the installed LiteMedSAM, $KMSEG_TEACHER)", 0, 0},
        {"--image", KM_FLAG_STR, &image, "image: PNG, JPEG, or .npy uint8 (H,W,3)", 0, 0},
        {"--point", KM_FLAG_MULTI, &points, "x,y[,label] in image pixels (label 1 fg, 0 bg)", 0, 0},
        {"--box", KM_FLAG_STR, &box_s, "x0,y0,x1,y1 in image pixels", 0, 0},
        {"--mask-input", KM_FLAG_STR, &mask_in, "previous low-res logits .npy (256x256)", 0, 0},
        {"--multimask", KM_FLAG_BOOL, &multimask, "return the 3 multimask outputs", 0, 0},
        {"--out", KM_FLAG_STR, &out, "output mask PNG, the mask with the highest IoU (required with --image)", 0, 0},
        {"--embedding-out", KM_FLAG_STR, &emb_out, "write the image embedding .npy (1,256,64,64)", 0, 0},
        {"--lowres-out", KM_FLAG_STR, &low_out, "write the low-res logits .npy (1,K,256,256)", 0, 0},
        {"--iou-out", KM_FLAG_STR, &iou_out, "write the IoU predictions .npy (1,K)", 0, 0},
        {"--overlay", KM_FLAG_STR, &overlay, "overlay PNG of mask and prompts (batch: a folder)", 0, 0},
        {"--profile", KM_FLAG_STR, &profile, "auto (from the checkpoint), sam, medsam (box only), litemedsam or mobilesam", 0, 0},
        {"--cache-dir", KM_FLAG_STR, &cache_dir, "embedding cache folder (default $KMSEG_CACHE or ~/.cache/kmseg)", 0, 0},
        {"--no-cache", KM_FLAG_BOOL, &no_cache, "do not read or write the embedding cache", 0, 0},
        {"--images", KM_FLAG_STR, &images, "batch: folder of images", 0, 0},
        {"--prompts", KM_FLAG_STR, &prompts, "batch: prompts .csv or .json keyed by file name", 0, 0},
        {"--out-dir", KM_FLAG_STR, &out_dir, "batch: output folder (masks, results.csv)", 0, 0},
        {"--threads", KM_FLAG_INT, &threads, "worker threads", 0, 0},
        {0}};
    int help;
    km_status s = km_parse_flags("sam",
                                 "[--checkpoint FILE] --image IMG [--point x,y[,label]]... "
                                 "[--box x0,y0,x1,y1] [--mask-input L.npy] [--multimask] --out MASK.png\n"
                                 "       kmseg sam [--checkpoint FILE] --images DIR --prompts FILE "
                                 "--out-dir DIR",
                                 flags, argc, argv, &help);
    if (s || help) {
        km_strlist_free(&points);
        return s;
    }
    int batch = images != NULL;
    km_sam_profile prof = KM_SAM_PROFILE_AUTO;
    char tbuf[4096];
    if (threads < 1) s = km_err(KM_EARG, "--threads must be >= 1, got %d", threads);
    else if ((s = km_sam_profile_parse_auto(profile, &prof))) s = km_err_prefix(s, "--profile: ");
    else if ((s = km_teacher_resolve(ckpt, tbuf, sizeof tbuf, &ckpt))) ;
    else if (no_cache && cache_dir)
        s = km_err(KM_EARG, "--no-cache and --cache-dir contradict each other");
    else if (batch && image)
        s = km_err(KM_EARG, "--image and --images: give one image or one folder, not both");
    else if (!batch && !image)
        s = km_err(KM_EARG, "missing --image IMG (or --images DIR --prompts FILE --out-dir DIR)");
    else if (batch && (!prompts || !out_dir))
        s = km_err(KM_EARG, "--images needs %s", !prompts ? "--prompts FILE" : "--out-dir DIR");
    else if (batch && (points.n || box_s || mask_in || out || emb_out || low_out || iou_out))
        s = km_err(KM_EARG, "--images: prompts come from --prompts and masks go to --out-dir; "
                   "--point/--box/--mask-input/--out/--embedding-out/--lowres-out/--iou-out are "
                   "for one --image");
    else if (!batch && (prompts || out_dir))
        s = km_err(KM_EARG, "%s is for batch mode (--images DIR)", prompts ? "--prompts" : "--out-dir");
    else if (!batch && !out)
        s = km_err(KM_EARG, "missing required flag --out");
    if (s) {
        km_strlist_free(&points);
        return s;
    }
    km_set_threads(threads);

    sam_ctx c;
    memset(&c, 0, sizeof c);
    c.ckpt = ckpt;
    c.profile = prof;
    c.profile_name = km_sam_profile_name(prof);
    c.multimask = multimask;
    char dbuf[4096];
    if (!no_cache && !cache_dir) cache_dir = km_embcache_default_dir(dbuf, sizeof dbuf);
    c.use_cache = !no_cache && cache_dir;
    if (c.use_cache && km_embcache_init(&c.cache, cache_dir, 256, 4)) {
        fprintf(stderr, "kmseg sam: warning: embedding cache off: %s\n", km_errmsg());
        c.use_cache = 0;
    }
    km_image img = {0};
    prompt_set ps = {0};
    float *mask = NULL;
    km_sam_result r = {0};

    if (!batch) {
        /* everything about the input is checked before the (slow) model */
        for (int i = 0; !s && i < points.n; i++) s = parse_point("--point", points.items[i], &ps);
        if (!s && box_s) s = parse_box("--box", box_s, &ps);
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
    }
    km_sam_prompts pr = to_prompts(&ps, mask, multimask);
    if (!s && c.profile == KM_SAM_PROFILE_AUTO) s = ctx_model(&c, 0); /* resolves the profile */
    if (!s && !batch) s = km_sam_validate_prompts(&pr, c.profile, img.w, img.h);
    if (!s && c.use_cache) s = km_checkpoint_fingerprint(ckpt, &c.ckpt_fp);
    if (!s && batch) s = run_batch(&c, images, prompts, out_dir, overlay);
    if (!s && !batch) {
        km_embkey k;
        int hit = 0;
        make_key(&c, &img, &k);
        s = ctx_set_image(&c, &img, &k, &hit);
        if (!s) s = km_sam_predict(&c.p, &pr, &r);
        if (!s && emb_out) {
            int64_t sh[4] = {1, c.m.dec.D, 64, 64};
            s = km_npy_save(emb_out, KM_F32, 4, sh, c.emb);
        }
        if (!s && low_out) {
            int64_t sh[4] = {1, r.K, 256, 256};
            s = km_npy_save(low_out, KM_F32, 4, sh, r.low_res);
        }
        if (!s && iou_out) {
            int64_t sh[2] = {1, r.K};
            s = km_npy_save(iou_out, KM_F32, 2, sh, r.iou);
        }
        int best = s ? 0 : best_mask(&r);
        if (!s) s = write_mask(out, &r, best);
        if (!s && overlay) s = write_overlay(overlay, &img, r.masks + (size_t)best * r.w * r.h, &ps);
        if (!s) report_cache(&c);
    }
    km_sam_result_free(&r);
    ctx_free(&c);
    km_image_free(&img);
    ps_free(&ps);
    km_free(mask);
    km_strlist_free(&points);
    return s;
}

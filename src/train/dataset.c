/* dataset.c - folder scanning, checks, preprocessing, cache, batches; see
 * dataset.h for the rules. */
#include "dataset.h"

#include "augment.h"
#include "../io/resize.h"
#include "../mine/embcache.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ issues */

void km_issues_init(km_issues *l) { memset(l, 0, sizeof *l); }

void km_issues_free(km_issues *l) {
    for (int i = 0; i < l->n; i++) {
        km_free(l->items[i].path);
        km_free(l->items[i].msg);
    }
    km_free(l->items);
    memset(l, 0, sizeof *l);
}

static void issues_push(km_issues *l, km_issue it) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        km_issue *ni = km_malloc(sizeof *ni * (size_t)cap);
        if (l->n) memcpy(ni, l->items, sizeof *ni * (size_t)l->n);
        km_free(l->items);
        l->items = ni;
        l->cap = cap;
    }
    l->items[l->n++] = it;
    if (it.is_error)
        l->n_err++;
    else
        l->n_warn++;
}

void km_issues_add(km_issues *l, int is_error, const char *path, const char *fmt, ...) {
    if (!l) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    km_issue it = {is_error, km_strdup(path ? path : ""), km_strdup(buf)};
    issues_push(l, it);
}

void km_issues_move(km_issues *dst, km_issues *src) {
    for (int i = 0; i < src->n; i++) issues_push(dst, src->items[i]);
    km_free(src->items);
    memset(src, 0, sizeof *src);
}

void km_issues_print(const km_issues *l, FILE *f, int max) {
    int shown = 0;
    for (int i = 0; i < l->n && (max <= 0 || shown < max); i++, shown++)
        fprintf(f, "%s: %s%s%s\n", l->items[i].is_error ? "error" : "warning", l->items[i].path,
                l->items[i].path[0] ? ": " : "", l->items[i].msg);
    if (max > 0 && l->n > max) fprintf(f, "... and %d more\n", l->n - max);
}

km_status km_issues_status(const km_issues *l, const char *what) {
    for (int i = 0; i < l->n; i++)
        if (l->items[i].is_error)
            return km_err(KM_EFORMAT, "%s: %d error%s, first: %s%s%s (run 'kmseg check-data' for the full list)",
                          what, l->n_err, l->n_err == 1 ? "" : "s", l->items[i].path,
                          l->items[i].path[0] ? ": " : "", l->items[i].msg);
    return KM_OK;
}

/* ------------------------------------------------------------------- index */

/* Length of the name without a supported extension, or -1 if it has none. */
static int strip_ext(const char *name) {
    static const char *exts[] = {".jpg", ".jpeg", ".png"};
    size_t n = strlen(name);
    for (int i = 0; i < 3; i++) {
        size_t e = strlen(exts[i]);
        if (n > e && !strcasecmp(name + n - e, exts[i])) return (int)(n - e);
    }
    return -1;
}

int km_is_image_name(const char *name) { return strip_ext(name) > 0; }

typedef struct {
    char *id, *name;
} named;

static int cmp_named(const void *a, const void *b) {
    const named *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists the supported images of `dir` (sorted by id, then name). `rel` is the
 * folder name used in issue paths. */
static km_status list_dir(const char *dir, const char *rel, named **out, int *nout, int *n_hidden,
                          km_issues *issues) {
    DIR *d = opendir(dir);
    if (!d) return km_err(KM_EIO, "%s: cannot open folder (expected a folder of images)", dir);
    /* read all names first and sort them: issues come out in a fixed order
     * whatever the file system's listing order */
    char **names = NULL;
    int nn = 0, ncap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (nn == ncap) {
            ncap = ncap ? 2 * ncap : 256;
            char **t = km_malloc(sizeof *t * (size_t)ncap);
            if (nn) memcpy(t, names, sizeof *t * (size_t)nn);
            km_free(names);
            names = t;
        }
        names[nn++] = km_strdup(e->d_name);
    }
    closedir(d);
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    named *v = NULL;
    int n = 0, cap = 0;
    for (int q = 0; q < nn; q++) {
        const char *name = names[q];
        if (name[0] == '.') {
            if (strcmp(name, ".") && strcmp(name, "..")) (*n_hidden)++;
            continue;
        }
        char *full = km_path_join(dir, name), relp[4096];
        snprintf(relp, sizeof relp, "%s/%s", rel, name);
        struct stat st;
        int ok = stat(full, &st) == 0;
        km_free(full);
        if (!ok) {
            km_issues_add(issues, 1, relp, "cannot stat (broken link?)");
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            km_issues_add(issues, 0, relp, "subfolder ignored");
            continue;
        }
        int len = strip_ext(name);
        if (len <= 0) {
            km_issues_add(issues, 1, relp, "unsupported file type (supported: .jpg .jpeg .png)");
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            named *nv = km_malloc(sizeof *nv * (size_t)cap);
            if (n) memcpy(nv, v, sizeof *nv * (size_t)n);
            km_free(v);
            v = nv;
        }
        v[n].name = km_strdup(name);
        v[n].id = km_strdup(name);
        v[n].id[len] = 0;
        n++;
    }
    for (int q = 0; q < nn; q++) km_free(names[q]);
    km_free(names);
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_named);
    /* two files for one id: report and drop all of them */
    int w = 0;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && !strcmp(v[j].id, v[i].id)) j++;
        if (j - i > 1) {
            for (int k = i; k < j; k++) {
                char relp[4096];
                snprintf(relp, sizeof relp, "%s/%s", rel, v[k].name);
                km_issues_add(issues, 1, relp, "%d files share the id '%s' (ambiguous)", j - i, v[i].id);
            }
            for (int k = i; k < j; k++) {
                km_free(v[k].id);
                km_free(v[k].name);
            }
        } else {
            v[w++] = v[i];
        }
        i = j;
    }
    *out = v;
    *nout = w;
    return KM_OK;
}

static void named_free(named *v, int n) {
    for (int i = 0; i < n; i++) {
        km_free(v[i].id);
        km_free(v[i].name);
    }
    km_free(v);
}

static void index_push(km_dataset_index *idx, int *cap, named *img, const char *mask_name) {
    if (idx->n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        km_sample_entry *ni = km_malloc(sizeof *ni * (size_t)*cap);
        if (idx->n) memcpy(ni, idx->items, sizeof *ni * (size_t)idx->n);
        km_free(idx->items);
        idx->items = ni;
    }
    km_sample_entry *s = &idx->items[idx->n++];
    s->id = img->id;
    s->image = img->name;
    s->mask = mask_name ? km_strdup(mask_name) : NULL;
    img->id = img->name = NULL;
}

km_status km_dataset_scan(const char *root, km_dataset_index *idx, km_issues *issues) {
    memset(idx, 0, sizeof *idx);
    struct stat st;
    if (stat(root, &st) || !S_ISDIR(st.st_mode))
        return km_err(KM_EIO, "%s: not a folder (expected a dataset folder with images/ and masks/)", root);
    idx->root = km_strdup(root);
    idx->images_dir = km_path_join(root, "images");
    idx->masks_dir = km_path_join(root, "masks");
    named *im = NULL, *mk = NULL;
    int nim = 0, nmk = 0;
    km_status s = list_dir(idx->images_dir, "images", &im, &nim, &idx->n_hidden, issues);
    if (s) goto fail;
    s = list_dir(idx->masks_dir, "masks", &mk, &nmk, &idx->n_hidden, issues);
    if (s) goto fail;
    /* merge the two sorted lists */
    int cap = 0, i = 0, j = 0;
    while (i < nim || j < nmk) {
        int c = i == nim ? 1 : j == nmk ? -1 : strcmp(im[i].id, mk[j].id);
        char relp[4096];
        if (c == 0) {
            index_push(idx, &cap, &im[i], mk[j].name);
            i++, j++;
        } else if (c < 0) {
            snprintf(relp, sizeof relp, "images/%s", im[i].name);
            km_issues_add(issues, 1, relp, "no mask with the id '%s' in masks/", im[i].id);
            i++;
        } else {
            snprintf(relp, sizeof relp, "masks/%s", mk[j].name);
            km_issues_add(issues, 1, relp, "mask without an image with the id '%s' in images/", mk[j].id);
            j++;
        }
    }
    named_free(im, nim);
    named_free(mk, nmk);
    return KM_OK;
fail:
    named_free(im, nim);
    named_free(mk, nmk);
    km_dataset_index_free(idx);
    return s;
}

km_status km_dataset_scan_images(const char *dir, km_dataset_index *idx, km_issues *issues) {
    memset(idx, 0, sizeof *idx);
    named *im = NULL;
    int nim = 0, cap = 0;
    km_status s = list_dir(dir, ".", &im, &nim, &idx->n_hidden, issues);
    if (s) return s;
    idx->root = km_strdup(dir);
    idx->images_dir = km_strdup(dir);
    for (int i = 0; i < nim; i++) index_push(idx, &cap, &im[i], NULL);
    named_free(im, nim);
    return KM_OK;
}

void km_dataset_index_free(km_dataset_index *idx) {
    for (int i = 0; i < idx->n; i++) {
        km_free(idx->items[i].id);
        km_free(idx->items[i].image);
        km_free(idx->items[i].mask);
    }
    km_free(idx->items);
    km_free(idx->root);
    km_free(idx->images_dir);
    km_free(idx->masks_dir);
    memset(idx, 0, sizeof *idx);
}

static int find_exact(const km_dataset_index *idx, const char *id) {
    int lo = 0, hi = idx->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(idx->items[mid].id, id);
        if (!c) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

int km_dataset_find(const km_dataset_index *idx, const char *id) {
    int i = find_exact(idx, id);
    if (i >= 0) return i;
    int len = strip_ext(id);
    if (len <= 0) return -1;
    char *t = km_strdup(id);
    t[len] = 0;
    i = find_exact(idx, t);
    km_free(t);
    return i;
}

char *km_dataset_image_path(const km_dataset_index *idx, int i) {
    KM_ASSERT(i >= 0 && i < idx->n);
    return km_path_join(idx->images_dir, idx->items[i].image);
}

char *km_dataset_mask_path(const km_dataset_index *idx, int i) {
    KM_ASSERT(i >= 0 && i < idx->n && idx->items[i].mask && idx->masks_dir);
    return km_path_join(idx->masks_dir, idx->items[i].mask);
}

/* ---------------------------------------------------------------- geometry */

/* Python's round() of d / 2 for an integer d >= 0 (round half to even). */
static int half_round_even(int d) {
    int k = d / 2;
    if (d % 2 == 0) return k;
    return (k % 2 == 0) ? k : k + 1;
}

void km_geom_compute(int w, int h, int size, km_geom *g) {
    KM_ASSERT(w > 0 && h > 0 && size > 0);
    g->w = w;
    g->h = h;
    g->size = size;
    int sh = w <= h ? w : h, lg = w <= h ? h : w;
    /* torchvision: int(size * long / short), Python true division in double */
    int nl = (int)((double)((int64_t)size * lg) / (double)sh);
    if (w <= h) {
        g->rw = size;
        g->rh = nl;
    } else {
        g->rw = nl;
        g->rh = size;
    }
    g->top = half_round_even(g->rh - size);
    g->left = half_round_even(g->rw - size);
}

void km_geom_to_orig(const km_geom *g, double x, double y, double *xo, double *yo) {
    double u = (x + g->left + 0.5) * g->w / g->rw - 0.5, v = (y + g->top + 0.5) * g->h / g->rh - 0.5;
    *xo = u < 0 ? 0 : u > g->w - 1 ? g->w - 1 : u;
    *yo = v < 0 ? 0 : v > g->h - 1 ? g->h - 1 : v;
}

void km_geom_from_orig(const km_geom *g, double xo, double yo, int *x, int *y) {
    *x = (int)floor((xo + 0.5) * g->rw / g->w - 0.5 - g->left + 0.5);
    *y = (int)floor((yo + 0.5) * g->rh / g->h - 0.5 - g->top + 0.5);
}

void km_geom_resize_crop_f32(const km_geom *g, const float *in, float *out) {
    float *full = km_malloc(sizeof(float) * (size_t)g->rw * g->rh);
    km_resize_pil_bilinear_f32(full, g->rw, g->rh, in, g->w, g->h);
    for (int y = 0; y < g->size; y++)
        memcpy(out + (size_t)y * g->size, full + (size_t)(y + g->top) * g->rw + g->left, sizeof(float) * g->size);
    km_free(full);
}

void km_resize_crop_bilinear_u8(const uint8_t *src, int w, int h, int C, int size, uint8_t *dst) {
    km_geom g;
    km_geom_compute(w, h, size, &g);
    uint8_t *full = km_malloc((size_t)g.rw * g.rh * C);
    km_resize_pil_bilinear(full, g.rw, g.rh, src, w, h, C);
    for (int y = 0; y < size; y++)
        memcpy(dst + (size_t)y * size * C, full + ((size_t)(y + g.top) * g.rw + g.left) * C,
               (size_t)size * C);
    km_free(full);
}

/* Pillow ImagingScaleAffine positions for one axis: position accumulated in
 * double from a[2] + a[0] * 0.5, COORD() = truncation (negative -> -1). */
static void nearest_table(int in, int out, int *tab) {
    double a0 = (double)in / out, xo = a0 * 0.5;
    for (int x = 0; x < out; x++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        tab[x] = xi >= 0 && xi < in ? xi : -1; /* -1: Pillow leaves 0 there */
        xo += a0;
    }
}

void km_resize_crop_nearest_u8(const uint8_t *src, int w, int h, int C, int size, uint8_t *dst) {
    km_geom g;
    km_geom_compute(w, h, size, &g);
    int *tx = km_malloc(sizeof(int) * (size_t)(g.rw + g.rh)), *ty = tx + g.rw;
    nearest_table(w, g.rw, tx);
    nearest_table(h, g.rh, ty);
    for (int y = 0; y < size; y++) {
        int sy = ty[y + g.top];
        for (int x = 0; x < size; x++) {
            int sx = tx[x + g.left];
            uint8_t *d = dst + ((size_t)y * size + x) * C;
            if (sx < 0 || sy < 0)
                memset(d, 0, (size_t)C);
            else
                memcpy(d, src + ((size_t)sy * w + sx) * C, (size_t)C);
        }
    }
    km_free(tx);
}

km_status km_preprocess_image(const km_image *img, int size, uint8_t *rgb) {
    if (img->c == 3) {
        km_resize_crop_bilinear_u8(img->data, img->w, img->h, 3, size, rgb);
        return KM_OK;
    }
    if (img->c == 1) {
        /* resampling is per channel, so resize the grey plane once and replicate */
        uint8_t *g1 = km_malloc((size_t)size * size);
        km_resize_crop_bilinear_u8(img->data, img->w, img->h, 1, size, g1);
        for (size_t i = 0; i < (size_t)size * size; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g1[i];
        km_free(g1);
        return KM_OK;
    }
    return km_err(KM_EFORMAT, "image has %d channels, expected 1 or 3", img->c);
}

void km_preprocess_mask(const km_image *grey, int size, uint8_t *mask01) {
    KM_ASSERT(grey->c == 1);
    km_resize_crop_nearest_u8(grey->data, grey->w, grey->h, 1, size, mask01);
    for (size_t i = 0; i < (size_t)size * size; i++) mask01[i] = mask01[i] > 127;
}

static const float k_mean[3] = {0.485f, 0.456f, 0.406f};
static const float k_std[3] = {0.229f, 0.224f, 0.225f};

void km_normalize_rgb(const uint8_t *rgb, int S, float *x) {
    size_t P = (size_t)S * S;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < P; i++) x[c * P + i] = ((float)rgb[3 * i + c] / 255.0f - k_mean[c]) / k_std[c];
}

/* ------------------------------------------------------------ pair checks */

typedef struct {
    km_issues iss;
    int ok, w, h, c, empty;
    double fg;
    uint64_t hash; /* km_hash_image of the RGB original (when preprocessed) */
} pair_result;

/* Mask statistics at full resolution (dataset.h rules). */
static void check_mask(const km_image *m, const char *relm, int size, pair_result *r) {
    size_t P = (size_t)m->w * m->h, amb = 0, fg = 0, ones = 0, big = 0;
    for (size_t i = 0; i < P; i++) {
        uint8_t v = m->data[i];
        amb += v > 20 && v < 235;
        fg += v > 127;
        ones += v == 1;
        big += v > 1;
    }
    if (ones && !big) {
        km_issues_add(&r->iss, 1, relm,
                      "mask values are only 0 and 1 (a label map?): expected 0/255, binarising at > 127 would leave it empty");
    } else if (amb) {
        double f = 100.0 * (double)amb / (double)P;
        km_issues_add(&r->iss, f > 1.0, relm,
                      "%s: %zu pixels (%.2f %%) have grey values strictly between 20 and 235 (%s)",
                      f > 1.0 ? "non-binary mask" : "nearly binary mask", amb, f,
                      f > 1.0 ? "more than 1 %; expected ~0 or ~255" : "binarised at > 127");
    }
    r->fg = (double)fg / (double)P;
    if (!fg && !(ones && !big)) {
        r->empty = 1;
        km_issues_add(&r->iss, 0, relm, "empty mask (no pixel > 127): kept as a sample without foreground");
    } else if (fg && size > 0) {
        uint8_t *crop = km_malloc((size_t)size * size);
        km_resize_crop_nearest_u8(m->data, m->w, m->h, 1, size, crop);
        size_t cf = 0;
        for (size_t i = 0; i < (size_t)size * size; i++) cf += crop[i] > 127;
        km_free(crop);
        if (!cf)
            km_issues_add(&r->iss, 0, relm, "all foreground lies outside the %dx%d centre crop", size, size);
    }
}

/* Decodes and checks pair i; with `out_rgb`/`out_mask` also preprocesses. */
static void process_pair(const km_dataset_index *idx, int i, int size, int with_mask,
                         uint8_t *out_rgb, uint8_t *out_mask, pair_result *r) {
    km_issues_init(&r->iss);
    r->ok = 0;
    const km_sample_entry *e = &idx->items[i];
    char reli[4096], relm[4096];
    snprintf(reli, sizeof reli, "images/%s", e->image);
    if (!idx->masks_dir) snprintf(reli, sizeof reli, "%s", e->image);
    km_image im = {0}, mk = {0};
    char *p = km_dataset_image_path(idx, i);
    km_status s = km_image_load(p, &im, out_rgb ? 3 : 0);
    km_free(p);
    if (s) {
        km_issues_add(&r->iss, 1, reli, "unreadable image: %s", km_errmsg());
        return;
    }
    r->w = im.w;
    r->h = im.h;
    r->c = im.c;
    int bad = 0;
    if (with_mask) {
        snprintf(relm, sizeof relm, "masks/%s", e->mask);
        p = km_dataset_mask_path(idx, i);
        s = km_image_load(p, &mk, 1);
        km_free(p);
        if (s) {
            km_issues_add(&r->iss, 1, relm, "unreadable mask: %s", km_errmsg());
            bad = 1;
        } else if (mk.w != im.w || mk.h != im.h) {
            km_issues_add(&r->iss, 1, relm, "mask is %dx%d but its image is %dx%d (w x h)", mk.w, mk.h,
                          im.w, im.h);
            bad = 1;
        } else {
            int before = r->iss.n_err;
            check_mask(&mk, relm, size, r);
            bad = r->iss.n_err > before;
        }
    }
    if (!bad && out_rgb) {
        r->hash = km_hash_image(im.data, im.w, im.h, im.c);
        s = km_preprocess_image(&im, size, out_rgb);
        if (s) {
            km_issues_add(&r->iss, 1, reli, "%s", km_errmsg());
            bad = 1;
        }
    }
    if (!bad && out_mask && with_mask) km_preprocess_mask(&mk, size, out_mask);
    km_image_free(&im);
    km_image_free(&mk);
    r->ok = !bad;
}

void km_dataset_verify(const km_dataset_index *idx, int size, km_issues *issues,
                       km_data_stats *stats) {
    int n = idx->n;
    pair_result *res = km_calloc(sizeof *res * (size_t)(n ? n : 1));
    int with_mask = idx->masks_dir != NULL;
#pragma omp parallel for schedule(dynamic, 1) num_threads(km_get_threads())
    for (int i = 0; i < n; i++) process_pair(idx, i, size, with_mask, NULL, NULL, &res[i]);
    km_data_stats st;
    memset(&st, 0, sizeof st);
    st.min_w = st.min_h = 1 << 30;
    double fg = 0;
    int nfg = 0;
    for (int i = 0; i < n; i++) {
        pair_result *r = &res[i];
        if (r->w > 0) {
            st.n_grey += r->c == 1;
            st.n_rgb += r->c == 3;
            if (r->w < st.min_w) st.min_w = r->w;
            if (r->h < st.min_h) st.min_h = r->h;
            if (r->w > st.max_w) st.max_w = r->w;
            if (r->h > st.max_h) st.max_h = r->h;
        }
        if (r->ok) {
            st.n_pairs++;
            st.n_empty += r->empty;
            fg += r->fg;
            nfg++;
        }
        km_issues_move(issues, &r->iss);
    }
    if (st.min_w == 1 << 30) st.min_w = st.min_h = 0;
    st.mean_fg = nfg ? fg / nfg : 0.0;
    km_free(res);
    if (stats) *stats = st;
}

/* ------------------------------------------------------------------- cache */

km_status km_dataset_load(const km_dataset_index *idx, const int *which, int n, int size,
                          int with_masks, km_dataset *ds, km_issues *issues) {
    memset(ds, 0, sizeof *ds);
    if (size <= 0) return km_err(KM_EARG, "image size %d: expected a positive size", size);
    if (with_masks && !idx->masks_dir)
        return km_err(KM_EARG, "%s: masks requested but the index has no masks folder", idx->root);
    size_t P = (size_t)size * size;
    ds->n = n;
    ds->size = size;
    ds->src = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    ds->ids = km_calloc(sizeof(char *) * (size_t)(n ? n : 1));
    ds->orig_w = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    ds->orig_h = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    ds->orig_hash = km_malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    ds->images = km_try_malloc(P * 3 * (size_t)(n ? n : 1));
    ds->masks = with_masks ? km_try_malloc(P * (size_t)(n ? n : 1)) : NULL;
    if (!ds->images || (with_masks && !ds->masks)) {
        km_dataset_free(ds);
        return km_err(KM_ENOMEM, "%s: cannot allocate the image cache for %d images at %dx%d", idx->root, n,
                      size, size);
    }
    for (int k = 0; k < n; k++) {
        KM_ASSERT(which[k] >= 0 && which[k] < idx->n);
        ds->src[k] = which[k];
        ds->ids[k] = km_strdup(idx->items[which[k]].id);
    }
    pair_result *res = km_calloc(sizeof *res * (size_t)(n ? n : 1));
#pragma omp parallel for schedule(dynamic, 1) num_threads(km_get_threads())
    for (int k = 0; k < n; k++)
        process_pair(idx, which[k], size, with_masks, ds->images + P * 3 * k,
                     with_masks ? ds->masks + P * k : NULL, &res[k]);
    km_issues all;
    km_issues_init(&all);
    for (int k = 0; k < n; k++) {
        ds->orig_w[k] = res[k].w;
        ds->orig_h[k] = res[k].h;
        ds->orig_hash[k] = res[k].hash;
        km_issues_move(&all, &res[k].iss);
    }
    km_free(res);
    km_status s = km_issues_status(&all, idx->root);
    if (issues)
        km_issues_move(issues, &all);
    else
        km_issues_free(&all);
    if (s) km_dataset_free(ds);
    return s;
}

void km_dataset_free(km_dataset *ds) {
    if (ds->ids)
        for (int i = 0; i < ds->n; i++) km_free(ds->ids[i]);
    km_free(ds->ids);
    km_free(ds->src);
    km_free(ds->orig_w);
    km_free(ds->orig_h);
    km_free(ds->orig_hash);
    km_free(ds->images);
    km_free(ds->masks);
    memset(ds, 0, sizeof *ds);
}

/* ------------------------------------------------------------------ batches */

void km_batch_fill(const km_dataset *ds, const int *which, const uint8_t *aug, int B, float *x,
                   float *y) {
    int S = ds->size;
    size_t P = (size_t)S * S;
    for (int b = 0; b < B; b++) {
        int k = which[b];
        KM_ASSERT(k >= 0 && k < ds->n);
        const uint8_t *img = ds->images + P * 3 * k;
        km_aug_affine a = km_aug_inverse_affine(aug ? aug[b] : 0, S);
        float *xb = x + P * 3 * b;
        /* x[c][y][x] = normalise(img[src(y, x)][c]); torchvision's float32
         * ToTensor (v / 255) then Normalize ((t - mean) / std) */
        for (int yy = 0; yy < S; yy++)
            for (int xx = 0; xx < S; xx++) {
                int sx = a.ox + a.axx * xx + a.axy * yy, sy = a.oy + a.ayx * xx + a.ayy * yy;
                const uint8_t *s = img + ((size_t)sy * S + sx) * 3;
                size_t o = (size_t)yy * S + xx;
                for (int c = 0; c < 3; c++) xb[c * P + o] = ((float)s[c] / 255.0f - k_mean[c]) / k_std[c];
            }
        if (y) {
            KM_ASSERT(ds->masks);
            const uint8_t *m = ds->masks + P * k;
            float *yb = y + P * b;
            for (int yy = 0; yy < S; yy++)
                for (int xx = 0; xx < S; xx++) {
                    int sx = a.ox + a.axx * xx + a.axy * yy, sy = a.oy + a.ayx * xx + a.ayy * yy;
                    yb[(size_t)yy * S + xx] = m[(size_t)sy * S + sx] ? 1.0f : 0.0f;
                }
        }
    }
}

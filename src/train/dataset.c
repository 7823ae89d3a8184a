/* dataset.c - folder scanning, checks, preprocessing, cache, batches; see
 * dataset.h for the rules. */
#include "dataset_priv.h"

#include "augment.h"
#include "../io/resize.h"
#include "../io/safetensors.h"
#include "../mine/embcache.h"

#include <ctype.h>
#include <stdlib.h>
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

static int cmp_km_named(const void *a, const void *b) {
    const km_named *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists the supported images of `dir` (sorted by id, then name). `rel` is the
 * folder name used in issue paths. */
km_status km_ds_list_dir(const char *dir, const char *rel, km_named **out, int *nout, int *n_hidden,
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
    km_named *v = NULL;
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
            km_named *nv = km_malloc(sizeof *nv * (size_t)cap);
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
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_km_named);
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

void km_ds_named_free(km_named *v, int n) {
    for (int i = 0; i < n; i++) {
        km_free(v[i].id);
        km_free(v[i].name);
    }
    km_free(v);
}

void km_ds_index_push(km_dataset_index *idx, int *cap, km_named *img, const char *mask_name) {
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
    s->chan[0] = s->chan[1] = NULL;
    img->id = img->name = NULL;
}

/* The images/ + masks/ layout. */
static km_status scan_folders(const char *root, km_dataset_index *idx, km_issues *issues) {
    idx->images_dir = km_path_join(root, "images");
    idx->masks_dir = km_path_join(root, "masks");
    idx->images_rel = km_strdup("images");
    idx->masks_rel = km_strdup("masks");
    km_named *im = NULL, *mk = NULL;
    int nim = 0, nmk = 0;
    km_status s = km_ds_list_dir(idx->images_dir, "images", &im, &nim, &idx->n_hidden, issues);
    if (!s) s = km_ds_list_dir(idx->masks_dir, "masks", &mk, &nmk, &idx->n_hidden, issues);
    /* merge the two sorted lists */
    int cap = 0, i = 0, j = 0;
    while (!s && (i < nim || j < nmk)) {
        int c = i == nim ? 1 : j == nmk ? -1 : strcmp(im[i].id, mk[j].id);
        char relp[4096];
        if (c == 0) {
            km_ds_index_push(idx, &cap, &im[i], mk[j].name);
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
    km_ds_named_free(im, nim);
    km_ds_named_free(mk, nmk);
    return s;
}

/* Records why the label cannot be resolved (see label_err in dataset.h). */
static void label_fail(km_dataset_index *idx, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void label_fail(km_dataset_index *idx, const char *path, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    idx->label = KM_LABEL_UNRESOLVED;
    idx->label_err_path = km_strdup(path);
    idx->label_err = km_strdup(buf);
}

/* --label (NULL: default) -> idx->label / label_name, or label_err. */
static void resolve_label(km_dataset_index *idx, const char *spec) {
    char *end = NULL;
    long v = spec && *spec ? strtol(spec, &end, 10) : -1;
    int is_num = spec && *spec && !*end;
    idx->label = KM_LABEL_UNRESOLVED;
    if (!idx->nnunet) {
        if (!spec) idx->label = KM_LABEL_BINARY;
        else if (!is_num)
            label_fail(idx, "", "--label '%s': label names come from an nnU-Net dataset.json; for images/ "
                                         "and masks/ give the mask value (e.g. --label 1)", spec);
        else if (v < 1 || v > 65535)
            label_fail(idx, "", "--label %s: expected a mask value in 1..65535", spec);
        else
            idx->label = (int)v;
        return;
    }
    if (!idx->labels) {
        label_fail(idx, "dataset.json", "no usable 'labels' to choose the foreground from");
        return;
    }
    char list[1024] = "";
    int nfg = 0, pick = -1;
    for (int i = 0; i < idx->n_labels; i++) {
        const km_label *l = &idx->labels[i];
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s = %d", n ? ", " : "", l->name, l->value);
        if (spec ? !strcmp(spec, l->name) || (is_num && v == l->value) : l->value && strcmp(l->name, "ignore"))
            pick = i, nfg++;
    }
    if (!spec && nfg != 1) {
        label_fail(idx, "dataset.json", "%d foreground labels: choose one with --label NAME|VALUE (labels: %s)",
                      nfg, list);
        return;
    }
    if (pick < 0 || !idx->labels[pick].value) {
        label_fail(idx, "dataset.json", "--label %s: %s (labels: %s)", spec,
                      pick < 0 ? "no such label name or value" : "that is the background", list);
        return;
    }
    idx->label = idx->labels[pick].value;
    idx->label_name = km_strdup(idx->labels[pick].name);
}

km_status km_dataset_scan(const char *root, const char *label, km_dataset_index *idx, km_issues *issues) {
    memset(idx, 0, sizeof *idx);
    if (!km_ds_is_dir(root))
        return km_err(KM_EIO, "%s: not a folder (expected a dataset folder with images/ and masks/, or an nnU-Net "
                              "dataset with dataset.json)", root);
    idx->root = km_strdup(root);
    char *jp = km_path_join(root, "dataset.json"), *ip = km_path_join(root, "images"),
         *tp = km_path_join(root, "imagesTr");
    int nn = km_ds_is_file(jp), folders = km_ds_is_dir(ip), tr = km_ds_is_dir(tp);
    km_free(jp);
    km_free(ip);
    km_free(tp);
    km_status s;
    if (nn && folders)
        km_issues_add(issues, 1, "", "mixed layouts: both dataset.json (nnU-Net) and images/ (images/masks); keep "
                                     "one (nnU-Net's is used)");
    if (!nn && tr && !folders)
        s = km_err(KM_EMISSING, "%s: imagesTr/ but no dataset.json (an nnU-Net dataset needs its dataset.json)", root);
    else
        s = nn ? km_nnunet_scan(root, idx, issues) : scan_folders(root, idx, issues);
    if (s) {
        km_dataset_index_free(idx);
        return s;
    }
    resolve_label(idx, label);
    return KM_OK;
}

km_status km_dataset_scan_images(const char *dir, km_dataset_index *idx, km_issues *issues) {
    memset(idx, 0, sizeof *idx);
    /* DATASET/imagesTs (any images* folder next to a dataset.json): nnU-Net */
    char *tmp = km_strdup(dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    char *slash = strrchr(tmp, '/'), *json = NULL;
    const char *base = slash ? slash + 1 : tmp;
    if (!strncmp(base, "images", 6)) {
        if (slash) *slash = 0;
        json = km_path_join(slash ? (slash == tmp ? "/" : tmp) : ".", "dataset.json");
    }
    km_status s;
    if (json && km_ds_is_file(json)) {
        s = km_nnunet_scan_images(dir, json, idx, issues);
    } else {
        km_named *im = NULL;
        int nim = 0, cap = 0;
        s = km_ds_list_dir(dir, ".", &im, &nim, &idx->n_hidden, issues);
        if (!s) {
            idx->root = km_strdup(dir);
            idx->images_dir = km_strdup(dir);
            for (int i = 0; i < nim; i++) km_ds_index_push(idx, &cap, &im[i], NULL);
        }
        km_ds_named_free(im, nim);
    }
    km_free(json);
    km_free(tmp);
    if (s) km_dataset_index_free(idx);
    idx->label = KM_LABEL_BINARY;
    return s;
}

void km_dataset_index_free(km_dataset_index *idx) {
    for (int i = 0; i < idx->n; i++) {
        km_free(idx->items[i].id);
        km_free(idx->items[i].image);
        km_free(idx->items[i].chan[0]);
        km_free(idx->items[i].chan[1]);
        km_free(idx->items[i].mask);
    }
    for (int i = 0; i < idx->n_labels; i++) km_free(idx->labels[i].name);
    km_free(idx->labels);
    km_free(idx->label_name);
    km_free(idx->label_err);
    km_free(idx->label_err_path);
    km_free(idx->items);
    km_free(idx->root);
    km_free(idx->images_dir);
    km_free(idx->masks_dir);
    km_free(idx->images_rel);
    km_free(idx->masks_rel);
    memset(idx, 0, sizeof *idx);
}

const char *km_dataset_label_desc(const km_dataset_index *idx) {
    static __thread char buf[512];
    if (idx->label >= 0 && idx->label_name)
        snprintf(buf, sizeof buf, "label '%s' (value %d)", idx->label_name, idx->label);
    else if (idx->label >= 0)
        snprintf(buf, sizeof buf, "label value %d", idx->label);
    else if (idx->label == KM_LABEL_UNRESOLVED)
        snprintf(buf, sizeof buf, "no valid label");
    else
        snprintf(buf, sizeof buf, "binary masks (0/255 or 0/1)");
    return buf;
}

void km_dataset_label_meta(const km_dataset_index *idx, km_tdict *meta) {
    if (!idx || idx->label < 0) return;
    char b[32];
    snprintf(b, sizeof b, "%d", idx->label);
    km_tdict_set_meta(meta, "data.label_value", b);
    if (idx->label_name) km_tdict_set_meta(meta, "data.label", idx->label_name);
}

km_status km_dataset_predict_label(const km_dataset_index *idx, const char *weights, int *value) {
    *value = 255;
    km_tdict d;
    size_t n = strlen(weights);
    const char *v = NULL;
    km_status s = KM_OK;
    if (n > 12 && !strcmp(weights + n - 12, ".safetensors")) {
        s = km_safetensors_load(weights, &d);
        if (s) return s;
        v = km_tdict_get_meta(&d, "data.label_value");
        char *end = NULL;
        long x = v ? strtol(v, &end, 10) : 0;
        if (v && (!*v || *end || x < 1 || x > 65535))
            s = km_err(KM_EFORMAT, "%s: metadata data.label_value '%s' is not a value in 1..65535", weights, v);
        else if (v)
            *value = (int)x;
        km_tdict_free(&d);
    }
    if (s || v || !idx->nnunet) return s;
    int nfg = 0;
    for (int i = 0; i < idx->n_labels; i++)
        if (idx->labels[i].value && strcmp(idx->labels[i].name, "ignore")) *value = idx->labels[i].value, nfg++;
    if (nfg != 1)
        return km_err(KM_EMISSING, "%s: no label value to write: the checkpoint records none (data.label_value) and the "
                                   "dataset.json has %d foreground labels", weights, nfg);
    return KM_OK;
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

km_status km_dataset_image_load(const km_dataset_index *idx, int i, km_image *img, int want_c) {
    KM_ASSERT(want_c == 0 || want_c == 3);
    const km_sample_entry *e = &idx->items[i];
    char *p = km_dataset_image_path(idx, i);
    km_status s = km_image_load(p, img, e->chan[0] ? 0 : want_c);
    if (s || !e->chan[0]) {
        km_free(p);
        return s;
    }
    /* an nnU-Net case in three grey files: merge them into RGB */
    km_image ch[3] = {*img};
    memset(img, 0, sizeof *img);
    char *q[3] = {p, km_path_join(idx->images_dir, e->chan[0]), km_path_join(idx->images_dir, e->chan[1])};
    for (int c = 1; c < 3 && !s; c++) s = km_image_load(q[c], &ch[c], 0);
    for (int c = 0; c < 3 && !s; c++) {
        if (ch[c].c != 1)
            s = km_err(KM_EFORMAT, "%s: channel file is RGB, expected one grey channel per file (three channel files "
                                   "per case)", q[c]);
        else if (ch[c].w != ch[0].w || ch[c].h != ch[0].h)
            s = km_err(KM_ESHAPE, "%s: channel file is %dx%d but %s is %dx%d (the channel files of a case must have "
                                  "one size)", q[c], ch[c].w, ch[c].h, e->image, ch[0].w, ch[0].h);
    }
    if (!s) {
        size_t np = (size_t)ch[0].w * ch[0].h;
        *img = (km_image){ch[0].w, ch[0].h, 3, km_malloc(np * 3)};
        for (size_t k = 0; k < np; k++)
            for (int c = 0; c < 3; c++) img->data[3 * k + c] = ch[c].data[k];
    }
    for (int c = 0; c < 3; c++) {
        km_image_free(&ch[c]);
        km_free(q[c]);
    }
    return s;
}

enum { MR_BIN255, MR_BIN01, MR_LABEL };

typedef struct {
    km_issues iss;
    int ok, w, h, c, empty;
    double fg;
    uint64_t hash;           /* km_hash_image of the RGB original (when preprocessed) */
    int rule, mkind, mdepth; /* -1 when the mask was not classified */
    int has_label;           /* label rule: some pixel has the label value */
} pair_result;

/* "0, 1, 2, ..." of the distinct values (up to 8) of m into buf. */
static void value_list(const km_mask *m, char *buf, size_t cap) {
    uint8_t *seen = km_calloc(65536);
    size_t P = (size_t)m->w * m->h, n = 0;
    int shown = 0;
    buf[0] = 0;
    for (size_t i = 0; i < P; i++) seen[m->data[i]] = 1;
    for (int v = 0; v < 65536; v++) {
        if (!seen[v]) continue;
        if (shown++ < 8) n += (size_t)snprintf(buf + n, cap - n, "%s%d", n ? ", " : "", v);
        else if (shown == 9) n += (size_t)snprintf(buf + n, cap - n, ", ...");
        if (n >= cap) break;
    }
    km_free(seen);
}

/* The label rule: fg = value == label; values outside dataset.json's list
 * and JPEG masks are errors. Returns 0 on an error. */
static int rule_label(const km_dataset_index *idx, const km_mask *m, const char *relm, pair_result *r, uint8_t *fg) {
    if (m->kind == KM_MASK_JPEG) {
        km_issues_add(&r->iss, 1, relm, "JPEG mask with a chosen label (%s): label maps must be stored lossless "
                                        "(PNG)", km_dataset_label_desc(idx));
        return 0;
    }
    size_t P = (size_t)m->w * m->h, nfg = 0;
    int bad = -1;
    for (size_t i = 0; i < P; i++) {
        int v = m->data[i];
        fg[i] = v == idx->label;
        nfg += fg[i];
        if (idx->n_labels && bad < 0 && !fg[i] && v) {
            int known = 0;
            for (int k = 0; k < idx->n_labels && !known; k++) known = idx->labels[k].value == v;
            if (!known) bad = v;
        }
    }
    if (bad >= 0) {
        char vals[160];
        value_list(m, vals, sizeof vals);
        km_issues_add(&r->iss, 1, relm, "value %d is not a label of dataset.json (values in this mask: %s)", bad, vals);
        return 0;
    }
    r->has_label = nfg > 0;
    return 1;
}

/* The no-label rules (dataset.h): 0/1 masks, else grey > 127 with the
 * non-binary and label-map checks. Returns the rule, or -1 on an error. */
static int rule_binary(const km_mask *m, const char *relm, pair_result *r, uint8_t *fg) {
    size_t P = (size_t)m->w * m->h, amb = 0, big = 0, small_only = 1;
    int vmax = 0;
    for (size_t i = 0; i < P; i++) vmax = m->data[i] > vmax ? m->data[i] : vmax;
    if (vmax == 1) { /* values 0 and 1 only */
        for (size_t i = 0; i < P; i++) fg[i] = m->data[i] == 1;
        return MR_BIN01;
    }
    int shift = vmax > 255 ? 8 : 0; /* 16-bit values above 255: their high byte */
    for (size_t i = 0; i < P; i++) {
        int g = m->data[i] >> shift;
        amb += g > 20 && g < 235;
        big += g > 1;
        small_only &= g <= 20;
    }
    if (big && small_only && m->kind != KM_MASK_JPEG) {
        char vals[160];
        value_list(m, vals, sizeof vals);
        km_issues_add(&r->iss, 1, relm, "a label map (values %s): choose the foreground value with --label VALUE",
                      vals);
        return -1;
    }
    if (amb) {
        double f = 100.0 * (double)amb / (double)P;
        km_issues_add(&r->iss, f > 1.0, relm,
                      "%s: %zu pixels (%.2f %%) have grey values strictly between 20 and 235 (%s)",
                      f > 1.0 ? "non-binary mask" : "nearly binary mask", amb, f,
                      f > 1.0 ? "more than 1 %; expected ~0 or ~255" : "binarised at > 127");
        if (f > 1.0) return -1;
    }
    for (size_t i = 0; i < P; i++) fg[i] = (m->data[i] >> shift) > 127;
    return MR_BIN255;
}

/* Mask -> {0,1} foreground at full size (fg, w*h) with the dataset's rule,
 * statistics and the empty / outside-the-crop warnings. 0 on an error. */
static int check_mask(const km_dataset_index *idx, const km_mask *m, const char *relm, int size, pair_result *r,
                      uint8_t *fg) {
    r->mkind = m->kind;
    r->mdepth = m->depth;
    if (idx->label == KM_LABEL_UNRESOLVED) return 0; /* the label error is listed once, by verify */
    int rule = idx->label >= 0 ? (rule_label(idx, m, relm, r, fg) ? MR_LABEL : -1) : rule_binary(m, relm, r, fg);
    if (rule < 0) return 0;
    r->rule = rule;
    size_t P = (size_t)m->w * m->h, nfg = 0;
    for (size_t i = 0; i < P; i++) nfg += fg[i];
    r->fg = (double)nfg / (double)P;
    if (!nfg) {
        r->empty = 1;
        km_issues_add(&r->iss, 0, relm, "empty mask (%s): kept as a sample without foreground",
                      rule == MR_BIN255 ? "no pixel > 127" : rule == MR_BIN01 ? "no pixel is 1" : "no pixel has the label value");
    } else if (size > 0) {
        uint8_t *crop = km_malloc((size_t)size * size);
        km_resize_crop_nearest_u8(fg, m->w, m->h, 1, size, crop);
        size_t cf = 0;
        for (size_t i = 0; i < (size_t)size * size; i++) cf += crop[i];
        km_free(crop);
        if (!cf) km_issues_add(&r->iss, 0, relm, "all foreground lies outside the %dx%d centre crop", size, size);
    }
    return 1;
}

/* Decodes and checks pair i; with `out_rgb`/`out_mask` also preprocesses. */
static void process_pair(const km_dataset_index *idx, int i, int size, int with_mask,
                         uint8_t *out_rgb, uint8_t *out_mask, pair_result *r) {
    km_issues_init(&r->iss);
    r->ok = 0;
    r->rule = r->mkind = r->mdepth = -1;
    const km_sample_entry *e = &idx->items[i];
    char reli[4096], relm[4096];
    if (idx->images_rel) snprintf(reli, sizeof reli, "%s/%s", idx->images_rel, e->image);
    else snprintf(reli, sizeof reli, "%s", e->image);
    km_image im = {0};
    km_mask mk = {0};
    km_status s = km_dataset_image_load(idx, i, &im, out_rgb ? 3 : 0);
    if (s) {
        km_issues_add(&r->iss, 1, reli, "unreadable image: %s", km_errmsg());
        return;
    }
    r->w = im.w;
    r->h = im.h;
    r->c = im.c;
    int bad = 0;
    uint8_t *fg = NULL;
    if (with_mask) {
        snprintf(relm, sizeof relm, "%s/%s", idx->masks_rel, e->mask);
        char *p = km_dataset_mask_path(idx, i);
        s = km_mask_load(p, &mk);
        km_free(p);
        if (s) {
            km_issues_add(&r->iss, 1, relm, "unreadable mask: %s", km_errmsg());
            bad = 1;
        } else if (mk.w != im.w || mk.h != im.h) {
            km_issues_add(&r->iss, 1, relm, "mask is %dx%d but its image is %dx%d (w x h)", mk.w, mk.h,
                          im.w, im.h);
            bad = 1;
        } else {
            fg = km_malloc((size_t)mk.w * mk.h);
            bad = !check_mask(idx, &mk, relm, size, r, fg);
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
    if (!bad && out_mask && with_mask) km_resize_crop_nearest_u8(fg, mk.w, mk.h, 1, size, out_mask);
    km_free(fg);
    km_image_free(&im);
    km_mask_free(&mk);
    r->ok = !bad;
}

static void count_mask(const pair_result *r, km_data_stats *st) {
    st->n_bin255 += r->rule == MR_BIN255;
    st->n_bin01 += r->rule == MR_BIN01;
    st->n_labelmap += r->rule == MR_LABEL;
    st->n_with_label += r->has_label;
    if (r->mkind < 0) return;
    st->n_jpeg += r->mkind == KM_MASK_JPEG;
    st->n_palette += r->mkind == KM_MASK_PALETTE;
    st->n_png_rgb += r->mkind == KM_MASK_RGB;
    st->n_png16 += r->mkind == KM_MASK_GREY && r->mdepth == 16;
    st->n_png_grey += r->mkind == KM_MASK_GREY && r->mdepth < 16;
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
        count_mask(r, &st);
        if (r->ok) {
            st.n_pairs++;
            st.n_empty += r->empty;
            fg += r->fg;
            nfg++;
        }
        km_issues_move(issues, &r->iss);
    }
    if (with_mask && idx->label == KM_LABEL_UNRESOLVED)
        km_issues_add(issues, 1, idx->label_err_path, "%s", idx->label_err);
    if (with_mask && idx->label >= 0 && st.n_labelmap && !st.n_with_label)
        km_issues_add(issues, 1, idx->masks_rel, "%s is in none of the %d masks", km_dataset_label_desc(idx),
                      st.n_labelmap);
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
    if (with_masks && idx->label == KM_LABEL_UNRESOLVED)
        return km_err(KM_EARG, "%s%s%s: %s", idx->root, idx->label_err_path[0] ? "/" : "", idx->label_err_path,
                      idx->label_err);
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
        ds->n_with_label += res[k].has_label;
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

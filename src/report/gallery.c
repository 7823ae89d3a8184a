/* gallery.c - see gallery.h. */
#include "gallery.h"

#include "overlay.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/image.h"
#include "../mine/refine.h"
#include "../models/unetpp.h"
#include "../train/dataset.h"
#include "../train/splits.h"

#include <dirent.h>
#include <math.h>
#include <string.h>

enum { THUMB = 112 };

void km_gallery_free(km_gallery *g) {
    for (int i = 0; i < g->n; i++) km_free(g->ids[i]);
    km_free(g->ids);
    km_free(g->img);
    km_free(g->gt);
    km_free(g->pred);
    km_free(g->teach);
    km_free(g->dice);
    km_free(g->tdice);
    memset(g, 0, sizeof *g);
}

/* Student (and refined) masks of every cached crop, batch by batch. */
static km_status predict_all(km_unetpp *m, km_refiner *ref, const km_dataset_index *idx, const km_dataset *ds,
                             km_gallery *g) {
    const int B = 8, S = g->S;
    size_t P = (size_t)S * S;
    float *x = km_malloc(sizeof(float) * 3 * P * B), *lg = km_malloc(sizeof(float) * P * B);
    int pos[8];
    km_status s = KM_OK;
    for (int b0 = 0; b0 < g->n && !s; b0 += B) {
        int bn = g->n - b0 < B ? g->n - b0 : B;
        for (int b = 0; b < bn; b++) pos[b] = b0 + b;
        km_batch_fill(ds, pos, NULL, bn, x, NULL);
        s = km_unetpp_forward(m, x, bn, S, S, 0, lg);
        for (int b = 0; b < bn && !s; b++) {
            int i = b0 + b;
            float *z = lg + P * b;
            for (size_t k = 0; k < P; k++) g->pred[P * i + k] = z[k] > 0;
            g->dice[i] = km_dice_score(km_conf_masks_u8(g->pred + P * i, g->gt + P * i, P));
            if (!g->teach) continue;
            km_refine_outcome ro;
            /* the teacher sees the original file (read on an embedding-cache miss) */
            char *ip = km_dataset_image_path(idx, ds->src[i]);
            km_refine_image im;
            km_refine_image_file(&im, ip, ds->orig_w[i], ds->orig_h[i], ds->orig_hash[i]);
            s = km_refine_logits(ref, &im, S, z, &ro);
            km_free(ip);
            for (size_t k = 0; k < P && !s; k++) g->teach[P * i + k] = z[k] > 0;
            g->tdice[i] = km_dice_score(km_conf_masks_u8(g->teach + P * i, g->gt + P * i, P));
        }
    }
    km_free(x);
    km_free(lg);
    return s;
}

static void take_dataset(km_gallery *g, km_dataset *ds) {
    size_t P = (size_t)g->S * g->S;
    g->n = ds->n;
    g->ids = km_malloc(sizeof(char *) * (size_t)(ds->n + 1));
    for (int i = 0; i < ds->n; i++) g->ids[i] = km_strdup(ds->ids[i]);
    g->img = km_malloc(3 * P * (size_t)ds->n + 1);
    memcpy(g->img, ds->images, 3 * P * (size_t)ds->n);
    g->gt = km_malloc(P * (size_t)ds->n + 1);
    memcpy(g->gt, ds->masks, P * (size_t)ds->n);
    g->pred = km_calloc(P * (size_t)ds->n + 1);
    g->dice = km_malloc(sizeof(double) * (size_t)(ds->n + 1));
}

km_status km_gallery_compute(const char *weights, const char *data, const char *split_dir, int size,
                             const km_report_opts *o, km_gallery *g) {
    memset(g, 0, sizeof *g);
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    km_split sp;
    memset(&sp, 0, sizeof sp);
    km_dataset ds;
    memset(&ds, 0, sizeof ds);
    km_issues iss;
    km_issues_init(&iss);
    km_unetpp *m = NULL;
    km_refiner ref;
    int S = size;
    km_refine_flags rf;
    km_refine_flags_default(&rf);
    rf.teacher = (char *)o->teacher;
    if (o->teacher_profile) rf.profile = (char *)o->teacher_profile;
    rf.cache_dir = (char *)o->cache_dir;
    rf.no_cache = o->no_cache;
    km_status s = km_refine_open_student(weights, &rf, &ref, &m, &S);
    if (!s) s = km_dataset_scan(data, NULL, &idx, &iss);
    if (!s) s = km_issues_status(&iss, data);
    if (!s) s = km_split_from_dir(&idx, split_dir, &sp, NULL);
    if (!s && sp.n_test == 0) s = km_err(KM_EMISSING, "%s: the test split is empty", split_dir);
    if (!s) s = km_dataset_load(&idx, sp.test, sp.n_test, S, 1, &ds, NULL);
    if (!s) {
        g->S = S;
        take_dataset(g, &ds);
        if (o->teacher) {
            g->teach = km_calloc((size_t)S * S * (size_t)g->n + 1);
            g->tdice = km_malloc(sizeof(double) * (size_t)(g->n + 1));
        }
        s = predict_all(m, &ref, &idx, &ds, g);
    }
    km_dataset_free(&ds);
    km_split_free(&sp);
    if (idx.items || idx.root) km_dataset_index_free(&idx);
    km_issues_free(&iss);
    km_unetpp_free(m);
    km_refiner_close(&ref);
    if (s) km_gallery_free(g);
    return s;
}

km_status km_gallery_thumb(km_html *h, const uint8_t *img, int S, const uint8_t *pred, const uint8_t *ref, int kind,
                           const char *alt) {
    uint8_t *rgb = km_malloc(3 * THUMB * THUMB), *mp = km_malloc(THUMB * THUMB), *mr = km_malloc(THUMB * THUMB);
    km_overlay_resample(img, S, S, 3, rgb, THUMB, THUMB, 0);
    if (pred) km_overlay_resample(pred, S, S, 1, mp, THUMB, THUMB, 1);
    if (ref) km_overlay_resample(ref, S, S, 1, mr, THUMB, THUMB, 1);
    if (kind == 1) km_overlay_mask(rgb, THUMB, THUMB, NULL, mr);
    else if (kind == 2) km_overlay_mask(rgb, THUMB, THUMB, mp, mr);
    else if (kind == 3) km_overlay_errors(rgb, THUMB, THUMB, mp, mr);
    km_image im = {THUMB, THUMB, 3, rgb};
    uint8_t *png = NULL;
    size_t n = 0;
    km_status s = km_image_encode_png("report thumbnail", &im, &png, &n);
    if (!s) km_html_img_png(h, png, n, THUMB, THUMB, alt);
    km_free(png);
    km_free(rgb);
    km_free(mp);
    km_free(mr);
    return s;
}

static void fmt_alt(char *b, size_t n, const char *id, const char *what, double dice) {
    if (isfinite(dice)) snprintf(b, n, "case %s: %s, Dice %.3f", id, what, dice);
    else snprintf(b, n, "case %s: %s", id, what);
}

/* One gallery row: image | ground truth | student | pseudo | teacher | errors. */
static km_status row(km_html *h, const km_gallery *g, int i, const char *label) {
    size_t P = (size_t)g->S * g->S;
    char alt[1024];
    const uint8_t *im = g->img + 3 * P * i, *gt = g->gt + P * i, *pr = g->pred + P * i;
    km_html_raw(h, "<tr><th scope=\"row\">");
    km_html_text(h, label);
    km_html_raw(h, "<br>");
    km_html_text(h, g->ids[i]);
    km_html_raw(h, "</th><td>");
    fmt_alt(alt, sizeof alt, g->ids[i], "input image", NAN);
    km_status s = km_gallery_thumb(h, im, g->S, NULL, NULL, 0, alt);
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, g->ids[i], "ground-truth outline (yellow)", NAN);
    if (!s) s = km_gallery_thumb(h, im, g->S, NULL, gt, 1, alt);
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, g->ids[i], "student prediction (blue fill), ground-truth outline (yellow)", g->dice[i]);
    if (!s) s = km_gallery_thumb(h, im, g->S, pr, gt, 2, alt);
    km_html_raw(h, "Dice ");
    km_html_num(h, g->dice[i], 3, "-");
    km_html_raw(h, "</td><td class=\"note\">test image: not pseudo-labelled</td><td>");
    if (g->teach) {
        fmt_alt(alt, sizeof alt, g->ids[i], "teacher-refined mask (blue fill), ground-truth outline (yellow)",
                g->tdice[i]);
        if (!s) s = km_gallery_thumb(h, im, g->S, g->teach + P * i, gt, 2, alt);
        km_html_raw(h, "Dice ");
        km_html_num(h, g->tdice[i], 3, "-");
    } else {
        km_html_raw(h, "<span class=\"note\">not computed (no --teacher)</span>");
    }
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, g->ids[i],
            "student error map: true positives solid blue, false positives orange with stripes, false negatives "
            "purple with grid", g->dice[i]);
    if (!s) s = km_gallery_thumb(h, im, g->S, pr, gt, 3, alt);
    km_html_raw(h, "</td></tr>\n");
    return s;
}

/* Positions sorted by ascending Dice, ties by position (a stable order). */
static int *order_by_dice(const km_gallery *g) {
    int *o = km_malloc(sizeof(int) * (size_t)(g->n + 1));
    for (int i = 0; i < g->n; i++) o[i] = i;
    for (int i = 1; i < g->n; i++) /* insertion sort: n is a test split */
        for (int j = i; j > 0 && g->dice[o[j - 1]] > g->dice[o[j]]; j--) {
            int t = o[j];
            o[j] = o[j - 1];
            o[j - 1] = t;
        }
    return o;
}

static void error_key(km_html *h) {
    km_html_raw(h, "<p class=\"key\">Overlays: ground truth = yellow outline with a black ring; prediction = blue "
                   "fill. Error map: <span style=\"background:#0072B2\"></span>true positive (solid blue) "
                   "<span style=\"background:repeating-linear-gradient(45deg,#000 0 2px,#E69F00 2px 6px)\"></span>"
                   "false positive (orange, diagonal stripes) <span style=\"background:#CC79A7;"
                   "background-image:linear-gradient(#000 1px,transparent 1px),linear-gradient(90deg,#000 1px,"
                   "transparent 1px);background-size:4px 4px\"></span>false negative (purple, grid); grey: true "
                   "negative.</p>\n");
}

km_status km_gallery_html(km_html *h, const km_gallery *g, const km_report_opts *o) {
    int *ord = order_by_dice(g), picks[64], np = 0;
    const char *labels[64];
    picks[np] = ord[g->n - 1], labels[np++] = "best";
    if (g->n > 2) picks[np] = ord[(g->n - 1) / 2], labels[np++] = "median";
    if (g->n > 1) picks[np] = ord[0], labels[np++] = "worst";
    km_rng rng;
    km_rng_seed(&rng, o->seed);
    int want = o->gallery_random < 0 ? 0 : o->gallery_random > 32 ? 32 : o->gallery_random;
    int *cand = km_malloc(sizeof(int) * (size_t)(g->n + 1));
    for (int k = 0; k < want && np < g->n; k++) { /* seeded pick among the images not shown yet */
        int nc = 0;
        for (int i = 0; i < g->n; i++) {
            int used = 0;
            for (int j = 0; j < np; j++) used |= picks[j] == i;
            if (!used) cand[nc++] = i;
        }
        if (!nc) break;
        picks[np] = cand[km_rng_below(&rng, (uint64_t)nc)], labels[np++] = "random";
    }
    km_free(cand);
    km_free(ord);
    km_html_printf(h, "<p>%d test image(s) at %dx%d, predicted by this report with best.safetensors (eval mode, "
                      "logit &gt; 0). Rows: best, median and worst student Dice, then seeded random picks "
                      "(seed %llu).</p>\n",
                   g->n, g->S, g->S, (unsigned long long)o->seed);
    error_key(h);
    km_html_raw(h, "<table class=\"gallery\"><caption>Test images: student and teacher predictions</caption>\n"
                   "<tr><th scope=\"col\">row</th><th scope=\"col\">image</th><th scope=\"col\">ground truth</th>"
                   "<th scope=\"col\">student</th><th scope=\"col\">pseudo label</th>"
                   "<th scope=\"col\">teacher (refined)</th><th scope=\"col\">error map (student)</th></tr>\n");
    km_status s = KM_OK;
    for (int k = 0; k < np && !s; k++) s = row(h, g, picks[k], labels[k]);
    km_html_raw(h, "</table>\n");
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted ids (file names without .png) of the PNGs in dir, at most max. */
static int list_pngs(const char *dir, char ***out, int max) {
    DIR *d = opendir(dir);
    int n = 0, cap = 64;
    char **v = km_malloc(sizeof(char *) * (size_t)cap);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t L = strlen(e->d_name);
        if (L < 5 || e->d_name[0] == '.' || strcmp(e->d_name + L - 4, ".png")) continue;
        if (n == cap) {
            char **w = km_malloc(sizeof(char *) * (size_t)cap * 2);
            memcpy(w, v, sizeof(char *) * (size_t)n);
            km_free(v);
            v = w;
            cap *= 2;
        }
        v[n] = km_strdup(e->d_name);
        v[n++][L - 4] = 0;
    }
    if (d) closedir(d);
    qsort(v, (size_t)n, sizeof(char *), cmp_str);
    for (int i = max; i < n; i++) km_free(v[i]);
    *out = v;
    return n < max ? n : max;
}

/* One pseudo-label row: image | hidden ground truth | pseudo label | errors. */
static km_status pseudo_row(km_html *h, const char *id, const uint8_t *im, const uint8_t *gt, const uint8_t *ps, int S) {
    char alt[1024];
    double d = km_dice_score(km_conf_masks_u8(ps, gt, (size_t)S * S));
    km_html_raw(h, "<tr><th scope=\"row\">");
    km_html_text(h, id);
    km_html_raw(h, "</th><td>");
    fmt_alt(alt, sizeof alt, id, "input image (unlabelled training image)", NAN);
    km_status s = km_gallery_thumb(h, im, S, NULL, NULL, 0, alt);
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, id, "hidden ground-truth outline (yellow)", NAN);
    if (!s) s = km_gallery_thumb(h, im, S, NULL, gt, 1, alt);
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, id, "pseudo label (blue fill), hidden ground-truth outline (yellow)", d);
    if (!s) s = km_gallery_thumb(h, im, S, ps, gt, 2, alt);
    km_html_raw(h, "Dice ");
    km_html_num(h, d, 3, "-");
    km_html_raw(h, "</td><td>");
    fmt_alt(alt, sizeof alt, id, "pseudo-label error map: true positives solid blue, false positives orange with "
                                 "stripes, false negatives purple with grid", d);
    if (!s) s = km_gallery_thumb(h, im, S, ps, gt, 3, alt);
    km_html_raw(h, "</td></tr>\n");
    return s;
}

static km_status pseudo_rows(km_html *h, const char *pseudo_dir, char **ids, int n, const km_dataset_index *idx,
                             int size) {
    km_status s = KM_OK;
    for (int k = 0; k < n && !s; k++) {
        int i = km_dataset_find(idx, ids[k]);
        if (i < 0) {
            km_html_raw(h, "<tr><th scope=\"row\">");
            km_html_text(h, ids[k]);
            km_html_raw(h, "</th><td colspan=\"4\" class=\"note\">not in the dataset folder</td></tr>\n");
            continue;
        }
        km_dataset ds;
        km_image ps = {0};
        char *p = km_malloc(strlen(pseudo_dir) + strlen(ids[k]) + 8);
        sprintf(p, "%s/%s.png", pseudo_dir, ids[k]);
        s = km_dataset_load(idx, &i, 1, size, 1, &ds, NULL);
        if (!s) {
            s = km_image_load(p, &ps, 1);
            if (!s && (ps.w != size || ps.h != size))
                s = km_err(KM_EFORMAT, "%s: pseudo label is %dx%d, expected the run's crop size %dx%d", p, ps.w, ps.h,
                           size, size);
            if (!s) {
                for (size_t q = 0; q < (size_t)size * size; q++) ps.data[q] = ps.data[q] > 127;
                s = pseudo_row(h, ids[k], ds.images, ds.masks, ps.data, size);
            }
            km_dataset_free(&ds);
        }
        km_image_free(&ps);
        km_free(p);
    }
    return s;
}

km_status km_gallery_pseudo_html(km_html *h, const char *pseudo_dir, const char *data, int size,
                                 const km_report_opts *o) {
    char **ids;
    int n = list_pngs(pseudo_dir, &ids, o->pseudo_rows);
    if (!n) {
        km_html_raw(h, "<p class=\"note\">No pseudo-label PNGs in ");
        km_html_text(h, pseudo_dir);
        km_html_raw(h, ".</p>\n");
        km_free(ids);
        return KM_OK;
    }
    km_dataset_index idx;
    memset(&idx, 0, sizeof idx);
    km_issues iss;
    km_issues_init(&iss);
    km_status s = km_dataset_scan(data, NULL, &idx, &iss);
    if (!s) {
        km_html_raw(h, "<p>The first pseudo labels by file name, against the unlabelled images' hidden ground truth "
                       "(which training never saw).</p>\n");
        error_key(h);
        km_html_raw(h, "<table class=\"gallery\"><caption>Pseudo labels of unlabelled training images</caption>\n"
                       "<tr><th scope=\"col\">image id</th><th scope=\"col\">image</th><th scope=\"col\">hidden ground "
                       "truth</th><th scope=\"col\">pseudo label</th><th scope=\"col\">error map</th></tr>\n");
        s = pseudo_rows(h, pseudo_dir, ids, n, &idx, size);
        km_html_raw(h, "</table>\n");
    }
    for (int i = 0; i < n; i++) km_free(ids[i]);
    km_free(ids);
    if (idx.items || idx.root) km_dataset_index_free(&idx);
    km_issues_free(&iss);
    return s;
}

/* nnunet.c - the nnU-Net raw layout (dataset.json, imagesTr/, labelsTr/,
 * imagesTs/) as a km_dataset_index; the rules are in dataset.h. */
#include "dataset_priv.h"

#include "../io/json.h"

#include <ctype.h>
#include <string.h>
#include <sys/stat.h>

int km_ds_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int km_ds_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* What dataset.json says (the parts kmseg uses). */
typedef struct {
    int n_channels;  /* entries of channel_names; 0: missing or unusable */
    int n_training;  /* numTraining; -1: missing */
    int ending_ok;   /* file_ending is ".png" (or missing: ".png" assumed, error listed) */
    km_label *labels;
    int n_labels;
    km_json j;       /* kept for the "training" list */
    int parsed;
} ds_json;

static void ds_json_free(ds_json *d) {
    for (int i = 0; i < d->n_labels; i++) km_free(d->labels[i].name);
    km_free(d->labels);
    if (d->parsed) km_json_free(&d->j);
    memset(d, 0, sizeof *d);
}

static void read_labels(const km_json *lab, ds_json *d, km_issues *iss) {
    if (!lab) {
        km_issues_add(iss, 1, "dataset.json", "missing 'labels' (e.g. {\"background\": 0, \"polyp\": 1})");
        return;
    }
    if (lab->type != KM_JSON_OBJ || lab->n < 2) {
        km_issues_add(iss, 1, "dataset.json", "'labels' must be an object with background and at least one label");
        return;
    }
    d->labels = km_calloc(sizeof(km_label) * (size_t)lab->n);
    int has_bg = 0;
    for (int i = 0; i < lab->n; i++) {
        const km_json *v = &lab->items[i];
        const char *name = lab->keys[i].str;
        if (v->type == KM_JSON_ARR) {
            km_issues_add(iss, 1, "dataset.json", "label '%s' is a region (a list of values): region-based "
                                                   "labels are not supported, give each label one value", name);
            continue;
        }
        if (v->type != KM_JSON_NUM || !v->is_int || v->i < 0 || v->i > 65535) {
            km_issues_add(iss, 1, "dataset.json", "label '%s' must be an integer in 0..65535", name);
            continue;
        }
        for (int k = 0; k < d->n_labels; k++)
            if (d->labels[k].value == (int)v->i)
                km_issues_add(iss, 1, "dataset.json", "labels '%s' and '%s' share the value %d", d->labels[k].name,
                              name, (int)v->i);
        has_bg |= v->i == 0;
        d->labels[d->n_labels].name = km_strdup(name);
        d->labels[d->n_labels++].value = (int)v->i;
    }
    if (!has_bg) km_issues_add(iss, 1, "dataset.json", "'labels' has no background label with the value 0");
}

/* Reads <path>: every problem becomes an issue on "dataset.json". */
static void read_ds_json(const char *path, ds_json *d, km_issues *iss) {
    memset(d, 0, sizeof *d);
    d->n_training = -1;
    d->ending_ok = 1;
    km_status s = km_json_load(path, NULL, NULL, &d->j);
    if (s) {
        km_issues_add(iss, 1, "dataset.json", "%s", km_errmsg());
        return;
    }
    d->parsed = 1;
    const km_json *j = &d->j;
    if (j->type != KM_JSON_OBJ) {
        km_issues_add(iss, 1, "dataset.json", "expected a JSON object");
        return;
    }
    const km_json *ch = km_json_get(j, "channel_names"), *nt = km_json_get(j, "numTraining"),
                  *fe = km_json_get(j, "file_ending");
    if (!ch)
        km_issues_add(iss, 1, "dataset.json", "missing 'channel_names' (e.g. {\"0\": \"R\", \"1\": \"G\", \"2\": \"B\"})");
    else if (ch->type != KM_JSON_OBJ || (ch->n != 1 && ch->n != 3))
        km_issues_add(iss, 1, "dataset.json", "'channel_names' must have 1 (grey or RGB) or 3 (R, G, B) entries, "
                                               "the student takes RGB");
    else
        d->n_channels = ch->n;
    if (!nt)
        km_issues_add(iss, 1, "dataset.json", "missing 'numTraining'");
    else if (nt->type != KM_JSON_NUM || !nt->is_int || nt->i < 0)
        km_issues_add(iss, 1, "dataset.json", "'numTraining' must be a non-negative integer");
    else
        d->n_training = (int)nt->i;
    if (!fe) {
        km_issues_add(iss, 1, "dataset.json", "missing 'file_ending' (\".png\")");
    } else if (fe->type != KM_JSON_STR || strcmp(fe->str, ".png")) {
        km_issues_add(iss, 1, "dataset.json", "file_ending '%s': kmseg reads 2D nnU-Net datasets stored as .png",
                      fe->type == KM_JSON_STR ? fe->str : "(not a string)");
        d->ending_ok = 0;
    }
    read_labels(km_json_get(j, "labels"), d, iss);
}

/* "<case>_XXXX" -> channel XXXX (the case length in *clen), or -1. */
static int channel_of(const char *id, int *clen) {
    size_t n = strlen(id);
    if (n < 6 || id[n - 5] != '_') return -1;
    for (int i = 0; i < 4; i++)
        if (!isdigit((unsigned char)id[n - 4 + i])) return -1;
    *clen = (int)n - 5;
    return atoi(id + n - 4);
}

/* One case's files while grouping: up to 3 channel files. */
typedef struct {
    char *id;
    char *file[3];
    int n_files, bad;
} ds_case;

typedef struct {
    char *cs;         /* case name (owned) */
    int ch;
    const char *name; /* file name (the km_named list's) */
} chan_file;

static int cmp_chan_file(const void *a, const void *b) {
    const chan_file *x = a, *y = b;
    int c = strcmp(x->cs, y->cs);
    return c ? c : x->ch - y->ch;
}

/* Files of an images folder -> cases sorted by case name (byte order, as the
 * index needs). n_chan: dataset.json's channel count (0 unknown: inferred
 * from the files). Problems are issues; bad cases are marked. */
static void group_cases(km_named *f, int n, const char *rel, int n_chan, int ending_ok, ds_case **out, int *nout,
                        int *files_per_case, km_issues *iss) {
    ds_case *c = km_calloc(sizeof(ds_case) * (size_t)(n ? n : 1));
    chan_file *cf = km_calloc(sizeof(chan_file) * (size_t)(n ? n : 1));
    int nc = 0, ncf = 0, three = 0, one = 0;
    char relp[4200];
    for (int i = 0; i < n; i++) {
        snprintf(relp, sizeof relp, "%s/%s", rel, f[i].name);
        int clen, ch = channel_of(f[i].id, &clen);
        size_t nl = strlen(f[i].name);
        if (ending_ok && (nl < 4 || strcmp(f[i].name + nl - 4, ".png"))) {
            km_issues_add(iss, 1, relp, "not a .png file (dataset.json's file_ending is .png)");
            continue;
        }
        if (ch < 0) {
            km_issues_add(iss, 1, relp, "not named CASE_XXXX.png (XXXX: the 4-digit channel number, 0000 first)");
            continue;
        }
        if (ch > 2 || (n_chan && ch >= n_chan)) {
            km_issues_add(iss, 1, relp, "channel %04d, but dataset.json's channel_names has %d entr%s", ch,
                          n_chan ? n_chan : 3, n_chan == 1 ? "y" : "ies");
            continue;
        }
        cf[ncf].cs = km_strdup(f[i].id);
        cf[ncf].cs[clen] = 0;
        cf[ncf].ch = ch;
        cf[ncf++].name = f[i].name;
    }
    if (ncf) qsort(cf, (size_t)ncf, sizeof *cf, cmp_chan_file);
    for (int i = 0; i < ncf; i++) {
        if (!nc || strcmp(c[nc - 1].id, cf[i].cs)) c[nc++].id = km_strdup(cf[i].cs);
        ds_case *k = &c[nc - 1];
        k->file[cf[i].ch] = (char *)cf[i].name;
        k->n_files++;
        km_free(cf[i].cs);
    }
    km_free(cf);
    for (int i = 0; i < nc; i++) {
        ds_case *k = &c[i];
        if (!k->file[0] || (k->n_files > 1 && k->n_files < 3)) {
            snprintf(relp, sizeof relp, "%s/%s_0000.png", rel, k->id);
            km_issues_add(iss, 1, relp, "case '%s' has channel file%s %s%s%s but not all of _0000%s", k->id,
                          k->n_files > 1 ? "s" : "", k->file[0] ? "_0000 " : "", k->file[1] ? "_0001 " : "",
                          k->file[2] ? "_0002" : "", n_chan == 1 ? "" : " (or _0000, _0001, _0002)");
            k->bad = 1;
            continue;
        }
        three += k->n_files == 3;
        one += k->n_files == 1;
    }
    /* one convention per dataset: the majority's (ties: three files) */
    int want = three >= one && three ? 3 : 1;
    for (int i = 0; i < nc; i++) {
        ds_case *k = &c[i];
        if (k->bad || k->n_files == want) continue;
        snprintf(relp, sizeof relp, "%s/%s_0000.png", rel, k->id);
        km_issues_add(iss, 1, relp,
                      "mixed layouts: case '%s' has %s but %d other case%s %s (one convention per dataset)", k->id,
                      k->n_files == 3 ? "three channel files" : "one _0000 file", want == 3 ? three : one,
                      (want == 3 ? three : one) == 1 ? "" : "s",
                      want == 3 ? "three (_0000 _0001 _0002)" : "one RGB or grey _0000 file");
        k->bad = 1;
    }
    *out = c;
    *nout = nc;
    *files_per_case = want;
}

static void cases_free(ds_case *c, int n) {
    for (int i = 0; i < n; i++) km_free(c[i].id);
    km_free(c);
}

/* Moves case k into idx (file names copied) with mask `mask` (may be NULL). */
static void push_case(km_dataset_index *idx, int *cap, ds_case *k, const char *mask) {
    km_named nm = {km_strdup(k->id), km_strdup(k->file[0])};
    km_ds_index_push(idx, cap, &nm, mask);
    km_sample_entry *e = &idx->items[idx->n - 1];
    for (int c = 0; c < 2; c++) e->chan[c] = k->file[c + 1] ? km_strdup(k->file[c + 1]) : NULL;
}

/* A v1-style "training" list must name existing cases and label files. */
static void check_training_list(const km_dataset_index *idx, const km_json *tr, km_issues *iss) {
    if (!tr) return;
    if (tr->type != KM_JSON_ARR) {
        km_issues_add(iss, 1, "dataset.json", "'training' must be a list of {\"image\": ..., \"label\": ...}");
        return;
    }
    for (int i = 0; i < tr->n; i++) {
        const km_json *e = &tr->items[i], *im = km_json_get(e, "image"), *lb = km_json_get(e, "label");
        if (e->type != KM_JSON_OBJ || !im || !lb || im->type != KM_JSON_STR || lb->type != KM_JSON_STR) {
            km_issues_add(iss, 1, "dataset.json", "training[%d]: expected {\"image\": PATH, \"label\": PATH}", i);
            continue;
        }
        char *lp = km_path_join(idx->root, lb->str);
        if (!km_ds_is_file(lp))
            km_issues_add(iss, 1, "dataset.json", "training[%d]: label '%s' does not exist", i, lb->str);
        km_free(lp);
        /* "./imagesTr/case.png" names the case, whose files are case_XXXX.png */
        const char *base = strrchr(im->str, '/');
        char *cs = km_strdup(base ? base + 1 : im->str);
        size_t n = strlen(cs);
        if (n > 4 && !strcmp(cs + n - 4, ".png")) cs[n - 4] = 0;
        if (km_dataset_find(idx, cs) < 0)
            km_issues_add(iss, 1, "dataset.json", "training[%d]: image '%s' names the case '%s', which has no "
                                                   "valid image files and label in imagesTr/ and labelsTr/", i, im->str, cs);
        km_free(cs);
    }
}

static void take_labels(km_dataset_index *idx, ds_json *d) {
    idx->labels = d->labels;
    idx->n_labels = d->n_labels;
    d->labels = NULL;
    d->n_labels = 0;
}

/* Merges cases (sorted) with label files (sorted by id) into idx. */
static void merge_labels(km_dataset_index *idx, ds_case *c, int nc, km_named *lb, int nlb, km_issues *iss) {
    int cap = 0, i = 0, j = 0;
    char relp[4200];
    while (i < nc || j < nlb) {
        int cmp = i == nc ? 1 : j == nlb ? -1 : strcmp(c[i].id, lb[j].id);
        if (cmp == 0) {
            if (!c[i].bad) push_case(idx, &cap, &c[i], lb[j].name);
            i++, j++;
        } else if (cmp < 0) {
            snprintf(relp, sizeof relp, "imagesTr/%s", c[i].file[0] ? c[i].file[0] : c[i].id);
            if (!c[i].bad) km_issues_add(iss, 1, relp, "no label map labelsTr/%s.png for the case '%s'", c[i].id, c[i].id);
            i++;
        } else {
            snprintf(relp, sizeof relp, "labelsTr/%s", lb[j].name);
            km_issues_add(iss, 1, relp, "label map without images: no imagesTr/%s_0000.png", lb[j].id);
            j++;
        }
    }
}

km_status km_nnunet_scan(const char *root, km_dataset_index *idx, km_issues *iss) {
    char *jp = km_path_join(root, "dataset.json");
    ds_json d;
    read_ds_json(jp, &d, iss);
    km_free(jp);
    idx->nnunet = 1;
    idx->images_dir = km_path_join(root, "imagesTr");
    idx->masks_dir = km_path_join(root, "labelsTr");
    idx->images_rel = km_strdup("imagesTr");
    idx->masks_rel = km_strdup("labelsTr");
    km_named *im = NULL, *lb = NULL;
    int nim = 0, nlb = 0, nc = 0;
    ds_case *c = NULL;
    km_status s = km_ds_list_dir(idx->images_dir, "imagesTr", &im, &nim, &idx->n_hidden, iss);
    if (!s) s = km_ds_list_dir(idx->masks_dir, "labelsTr", &lb, &nlb, &idx->n_hidden, iss);
    if (!s) {
        for (int j = 0; j < nlb; j++) {
            size_t n = strlen(lb[j].name);
            if (d.ending_ok && (n < 4 || strcmp(lb[j].name + n - 4, ".png"))) {
                char relp[4200];
                snprintf(relp, sizeof relp, "labelsTr/%s", lb[j].name);
                km_issues_add(iss, 1, relp, "not a .png file (dataset.json's file_ending is .png)");
            }
        }
        group_cases(im, nim, "imagesTr", d.n_channels, d.ending_ok, &c, &nc, &idx->n_chan_files, iss);
        merge_labels(idx, c, nc, lb, nlb, iss);
        if (d.n_training >= 0 && d.n_training != nc)
            km_issues_add(iss, 1, "dataset.json", "numTraining is %d but imagesTr/ holds %d case%s", d.n_training, nc,
                          nc == 1 ? "" : "s");
        if (d.parsed && d.j.type == KM_JSON_OBJ) check_training_list(idx, km_json_get(&d.j, "training"), iss);
        take_labels(idx, &d);
    }
    cases_free(c, nc);
    km_ds_named_free(im, nim);
    km_ds_named_free(lb, nlb);
    ds_json_free(&d);
    return s;
}

km_status km_nnunet_scan_images(const char *dir, const char *json_path, km_dataset_index *idx, km_issues *iss) {
    ds_json d;
    read_ds_json(json_path, &d, iss);
    idx->nnunet = 1;
    idx->root = km_strdup(dir);
    idx->images_dir = km_strdup(dir);
    km_named *im = NULL;
    int nim = 0, nc = 0, cap = 0;
    ds_case *c = NULL;
    km_status s = km_ds_list_dir(dir, ".", &im, &nim, &idx->n_hidden, iss);
    if (!s) {
        group_cases(im, nim, ".", d.n_channels, d.ending_ok, &c, &nc, &idx->n_chan_files, iss);
        for (int i = 0; i < nc; i++)
            if (!c[i].bad) push_case(idx, &cap, &c[i], NULL);
        take_labels(idx, &d);
    }
    cases_free(c, nc);
    km_ds_named_free(im, nim);
    ds_json_free(&d);
    return s;
}

/* splits.c - seeded splits, nested labelled fractions, user lists; see
 * splits.h for the rounding and seeding rules. */
#include "splits.h"

#include "../core/rng.h"
#include "../io/json.h"

#include <ctype.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int *copy_sorted(const int *v, int n) {
    int *o = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (n) memcpy(o, v, sizeof(int) * (size_t)n);
    if (n) qsort(o, (size_t)n, sizeof(int), cmp_int);
    return o;
}

static int round_frac(double f, int n) { return (int)floor(f * n + 0.5); }

void km_split_random(int n, uint64_t seed, double f_val, double f_test, km_split *out) {
    KM_ASSERT(n >= 0 && f_val >= 0 && f_test >= 0 && f_val + f_test <= 1.0);
    int *perm = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) perm[i] = i;
    km_rng r;
    km_rng_seed(&r, seed);
    km_rng_shuffle(&r, perm, n);
    int nv = round_frac(f_val, n), nt = round_frac(f_test, n);
    if (nv + nt > n) nt = n - nv;
    int ntr = n - nv - nt;
    out->n_train = ntr;
    out->n_val = nv;
    out->n_test = nt;
    out->train = copy_sorted(perm, ntr);
    out->val = copy_sorted(perm + ntr, nv);
    out->test = copy_sorted(perm + ntr + nv, nt);
    km_free(perm);
}

void km_split_labelled(const km_split *sp, double frac, uint64_t seed, int **labelled, int *n_lab,
                       int **unlabelled, int *n_unl) {
    KM_ASSERT(frac > 0.0 && frac <= 1.0);
    int n = sp->n_train;
    int *perm = km_malloc(sizeof(int) * (size_t)(n ? n : 1));
    memcpy(perm, sp->train, sizeof(int) * (size_t)n);
    km_rng r;
    km_rng_seed(&r, seed ^ KM_SPLIT_LABEL_SALT);
    km_rng_shuffle(&r, perm, n);
    int nl = round_frac(frac, n);
    *n_lab = nl;
    *n_unl = n - nl;
    *labelled = copy_sorted(perm, nl);
    *unlabelled = copy_sorted(perm + nl, n - nl);
    km_free(perm);
}

void km_split_free(km_split *sp) {
    km_free(sp->train);
    km_free(sp->val);
    km_free(sp->test);
    memset(sp, 0, sizeof *sp);
}

static const char *k_list_names[] = {"", "train", "val", "test"};

/* Appends the index of `id` to v[*n] unless it is unknown, a duplicate or
 * already in another list (owner[i]: the list, 1-based, holding index i);
 * each of those is an issue at `where`. Returns 0 on a problem. */
static int claim_id(const km_dataset_index *idx, const char *id, const char *where, const char *name, int list_no,
                    int *owner, int *v, int *n, km_issues *issues) {
    int k = km_dataset_find(idx, id);
    if (k < 0) {
        km_issues_add(issues, 1, where, "%s list: unknown id '%s' (no image/mask pair with that name)", name, id);
        return 0;
    }
    if (owner[k] == list_no) {
        km_issues_add(issues, 1, where, "%s list: duplicate id '%s'", name, id);
        return 0;
    }
    if (owner[k]) {
        km_issues_add(issues, 1, where, "id '%s' is in both the %s and the %s list", id, k_list_names[owner[k]], name);
        return 0;
    }
    owner[k] = list_no;
    v[(*n)++] = k;
    return 1;
}

/* Reads one list into indices; problems go to issues. owner[i] records which
 * list (1-based) already claimed dataset index i, for the overlap check. */
static km_status read_list(const km_dataset_index *idx, const char *path, const char *name,
                           int list_no, int *owner, int **out, int *nout, km_issues *issues) {
    uint8_t *buf;
    size_t nb;
    km_status s = km_read_file(path, (size_t)1 << 30, &buf, &nb);
    if (s) return s;
    int *v = km_malloc(sizeof(int) * (size_t)(idx->n ? idx->n : 1));
    int n = 0, lineno = 0, bad = 0;
    size_t i = 0;
    while (i < nb) {
        size_t j = i;
        while (j < nb && buf[j] != '\n') j++;
        lineno++;
        size_t a = i, b = j;
        while (a < b && isspace(buf[a])) a++;
        while (b > a && isspace(buf[b - 1])) b--;
        i = j + 1;
        if (a == b || buf[a] == '#') continue;
        char *id = km_malloc(b - a + 1);
        memcpy(id, buf + a, b - a);
        id[b - a] = 0;
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        bad |= !claim_id(idx, id, where, name, list_no, owner, v, &n, issues);
        km_free(id);
    }
    km_free(buf);
    if (!n && !bad) km_issues_add(issues, 1, path, "%s list is empty", name);
    *out = v;
    *nout = n;
    if (n) qsort(v, (size_t)n, sizeof(int), cmp_int);
    return KM_OK;
}

km_status km_split_from_lists(const km_dataset_index *idx, const char *train_path,
                              const char *val_path, const char *test_path, km_split *out,
                              km_issues *issues) {
    memset(out, 0, sizeof *out);
    KM_ASSERT(train_path);
    km_issues local;
    km_issues_init(&local);
    int *owner = km_calloc(sizeof(int) * (size_t)(idx->n ? idx->n : 1));
    const char *paths[3] = {train_path, val_path, test_path};
    const char *names[3] = {"train", "val", "test"};
    int **outs[3] = {&out->train, &out->val, &out->test};
    int *ns[3] = {&out->n_train, &out->n_val, &out->n_test};
    km_status s = KM_OK;
    for (int l = 0; l < 3 && !s; l++) {
        if (!paths[l]) {
            *outs[l] = km_malloc(sizeof(int));
            *ns[l] = 0;
            continue;
        }
        s = read_list(idx, paths[l], names[l], l + 1, owner, outs[l], ns[l], &local);
    }
    km_free(owner);
    if (!s) s = km_issues_status(&local, "split lists");
    if (issues)
        km_issues_move(issues, &local);
    else
        km_issues_free(&local);
    if (s) km_split_free(out);
    return s;
}

km_status km_split_from_dir(const km_dataset_index *idx, const char *dir, km_split *out,
                            km_issues *issues) {
    char p[3][4096];
    const char *f[3] = {"train.txt", "val.txt", "test.txt"};
    const char *use[3];
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s", dir, f[i]);
        FILE *t = fopen(p[i], "rb");
        use[i] = t ? p[i] : NULL;
        if (t) fclose(t);
    }
    if (!use[0]) {
        memset(out, 0, sizeof *out);
        return km_err(KM_EMISSING, "%s: no train.txt in the split folder (expected train.txt, val.txt, test.txt)",
                      dir);
    }
    return km_split_from_lists(idx, use[0], use[1], use[2], out, issues);
}

km_status km_write_id_list(const km_dataset_index *idx, const int *which, int n, const char *path) {
    km_atomic_file af;
    km_status s = km_atomic_open(&af, path);
    if (s) return s;
    for (int i = 0; i < n; i++) {
        KM_ASSERT(which[i] >= 0 && which[i] < idx->n);
        fprintf(af.f, "%s\n", idx->items[which[i]].id);
    }
    return km_atomic_commit(&af);
}

km_status km_split_write(const km_dataset_index *idx, const km_split *sp, const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/train.txt", dir);
    km_status s = km_write_id_list(idx, sp->train, sp->n_train, p);
    if (s) return s;
    snprintf(p, sizeof p, "%s/val.txt", dir);
    s = km_write_id_list(idx, sp->val, sp->n_val, p);
    if (s) return s;
    snprintf(p, sizeof p, "%s/test.txt", dir);
    return km_write_id_list(idx, sp->test, sp->n_test, p);
}

/* nnU-Net's splits_final.json: [{"train": [ids], "val": [ids]}, ...]. */
static km_status split_from_nnunet(const km_dataset_index *idx, const char *path, int fold, km_split *out,
                                   km_issues *issues) {
    memset(out, 0, sizeof *out);
    km_json j;
    km_status s = km_json_load(path, NULL, NULL, &j);
    if (s) return s;
    const km_json *f = j.type == KM_JSON_ARR && fold >= 0 && fold < j.n ? &j.items[fold] : NULL;
    if (j.type != KM_JSON_ARR || !j.n)
        s = km_err(KM_EFORMAT, "%s: expected nnU-Net's splits_final.json, a list of folds [{\"train\": [...], \"val\": "
                               "[...]}, ...]", path);
    else if (!f)
        s = km_err(KM_EARG, "--fold %d: %s has %d fold%s (0..%d)", fold, path, j.n, j.n == 1 ? "" : "s", j.n - 1);
    km_issues local;
    km_issues_init(&local);
    int *owner = km_calloc(sizeof(int) * (size_t)(idx->n ? idx->n : 1));
    const char *keys[2] = {"train", "val"};
    int **outs[2] = {&out->train, &out->val}, *ns[2] = {&out->n_train, &out->n_val};
    for (int l = 0; l < 2 && !s; l++) {
        const km_json *a = f->type == KM_JSON_OBJ ? km_json_get(f, keys[l]) : NULL;
        if (!a || a->type != KM_JSON_ARR) {
            s = km_err(KM_EFORMAT, "%s: fold %d has no '%s' list of case ids", path, fold, keys[l]);
            break;
        }
        *outs[l] = km_malloc(sizeof(int) * (size_t)(idx->n ? idx->n : 1));
        char where[4200];
        snprintf(where, sizeof where, "%s: fold %d %s", path, fold, keys[l]);
        for (int i = 0; i < a->n; i++) {
            if (a->items[i].type != KM_JSON_STR)
                km_issues_add(&local, 1, where, "entry %d is not a string (a case id)", i);
            else
                claim_id(idx, a->items[i].str, where, keys[l], l + 1, owner, *outs[l], ns[l], &local);
        }
        if (!*ns[l]) km_issues_add(&local, 1, where, "%s list is empty", keys[l]);
        if (*ns[l]) qsort(*outs[l], (size_t)*ns[l], sizeof(int), cmp_int);
    }
    if (!out->train) out->train = km_malloc(sizeof(int));
    if (!out->val) out->val = km_malloc(sizeof(int));
    out->test = km_malloc(sizeof(int));
    km_free(owner);
    km_json_free(&j);
    if (!s) s = km_issues_status(&local, "split file");
    if (issues)
        km_issues_move(issues, &local);
    else
        km_issues_free(&local);
    if (s) km_split_free(out);
    return s;
}

km_status km_split_from_path(const km_dataset_index *idx, const char *path, int fold, km_split *out,
                             km_issues *issues) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return split_from_nnunet(idx, path, fold, out, issues);
    if (fold) {
        memset(out, 0, sizeof *out);
        return km_err(KM_EARG, "--fold %d: only an nnU-Net splits_final.json has folds, %s is a folder of lists", fold,
                      path);
    }
    return km_split_from_dir(idx, path, out, issues);
}

km_status km_split_choose(const char **split_dir, const char *split_file, int fold) {
    if (split_file && *split_dir) return km_err(KM_EARG, "--split-dir and --split-file are exclusive");
    if (fold < 0) return km_err(KM_EARG, "--fold %d: expected >= 0", fold);
    if (fold && !split_file) return km_err(KM_EARG, "--fold %d needs --split-file (an nnU-Net splits_final.json)", fold);
    if (split_file) *split_dir = split_file;
    return KM_OK;
}

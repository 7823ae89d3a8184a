/* prompt_file.c - see prompt_file.h. */
#include "prompt_file.h"

#include "../io/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void add_point(km_prompt_set *p, float x, float y, int label) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 4;
        float *xy = km_malloc(sizeof(float) * 2 * cap);
        int *lab = km_malloc(sizeof(int) * cap);
        if (p->n) {
            memcpy(xy, p->xy, sizeof(float) * 2 * p->n);
            memcpy(lab, p->label, sizeof(int) * p->n);
        }
        km_free(p->xy);
        km_free(p->label);
        p->xy = xy;
        p->label = lab;
        p->cap = cap;
    }
    p->xy[2 * p->n] = x;
    p->xy[2 * p->n + 1] = y;
    p->label[p->n++] = label;
}

void km_prompt_set_free(km_prompt_set *p) {
    km_free(p->name);
    km_free(p->xy);
    km_free(p->label);
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
km_status km_prompt_parse_point(const char *what, const char *s, km_prompt_set *p) {
    double v[3];
    int got;
    km_status st = parse_numbers(what, s, v, 2, 3, &got);
    if (!st && got == 3) st = check_label(what, s, v[2]);
    if (!st) add_point(p, (float)v[0], (float)v[1], got == 3 ? (int)v[2] : 1);
    return st;
}

km_status km_prompt_parse_box(const char *what, const char *s, km_prompt_set *p) {
    double v[4];
    int got;
    if (p->has_box) return km_err(KM_EARG, "%s: a second box for the same image (one allowed)", what);
    km_status st = parse_numbers(what, s, v, 4, 0, &got);
    for (int k = 0; !st && k < 4; k++) p->box[k] = (float)v[k];
    if (!st) p->has_box = 1;
    return st;
}

/* The entry for `name`; with create, a new empty one when there is none. */
static km_prompt_set *list_get(km_prompt_list *l, const char *name, int create) {
    km_prompt_set *found = (km_prompt_set *)km_prompt_list_find(l, name);
    if (found || !create) return found;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        km_prompt_set *it = km_calloc(sizeof(km_prompt_set) * cap);
        if (l->n) memcpy(it, l->items, sizeof(km_prompt_set) * l->n);
        km_free(l->items);
        l->items = it;
        l->cap = cap;
    }
    km_prompt_set *p = &l->items[l->n++];
    memset(p, 0, sizeof *p);
    p->name = km_strdup(name);
    return p;
}

void km_prompt_list_free(km_prompt_list *l) {
    for (int i = 0; i < l->n; i++) km_prompt_set_free(&l->items[i]);
    km_free(l->items);
    memset(l, 0, sizeof *l);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static km_status parse_csv(const char *path, char *text, km_prompt_list *out) {
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
            km_prompt_set *ps = list_get(out, p, 1);
            if (!strcmp(c1 + 1, "point")) s = km_prompt_parse_point(where, c2 + 1, ps);
            else if (!strcmp(c1 + 1, "box")) s = km_prompt_parse_box(where, c2 + 1, ps);
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

static km_status parse_json(const char *path, const char *text, size_t n, km_prompt_list *out) {
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
        if (list_get(out, name, 0)) {
            s = km_err(KM_EFORMAT, "%s appears twice", where);
            break;
        }
        if (e->type != KM_JSON_OBJ) {
            s = km_err(KM_EFORMAT, "%s: expected an object with \"points\" and/or \"box\", found "
                       "a %s", where, km_json_type_name(e->type));
            break;
        }
        km_prompt_set *ps = list_get(out, name, 1);
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
                        add_point(ps, (float)pt[0], (float)pt[1],
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

km_status km_prompt_file_load(const char *path, km_prompt_list *out) {
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
    if (s) km_prompt_list_free(out);
    return s;
}

const km_prompt_set *km_prompt_list_find(const km_prompt_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name)) return &l->items[i];
    return NULL;
}

km_sam_prompts km_prompt_set_sam(const km_prompt_set *ps, const float *mask, int multimask) {
    km_sam_prompts pr = {ps->n ? ps->xy : NULL, ps->n ? ps->label : NULL, ps->n,
                         ps->has_box ? ps->box : NULL, mask, 256, 256, multimask};
    return pr;
}

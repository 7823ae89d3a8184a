/* settings.c - see settings.h. */
#include "settings.h"

#include "json.h"
#include "../core/log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define AT(cfg, r, T) ((T *)((char *)(cfg) + (r)->off))
#define CAT(cfg, r, T) ((const T *)((const char *)(cfg) + (r)->off))

static int in_list(const char *const *list, const char *s) {
    for (; list && *list; list++)
        if (!strcmp(*list, s)) return 1;
    return 0;
}

void km_settings_default(const km_settings *t, void *cfg) {
    for (int i = 0; i < t->n; i++) {
        const km_setting *r = &t->rows[i];
        switch (r->type) {
        case KM_SET_STR: *AT(cfg, r, char *) = NULL; break;
        case KM_SET_INT: case KM_SET_BOOL: case KM_SET_ENUM: *AT(cfg, r, int) = (int)r->def; break;
        case KM_SET_DBL: *AT(cfg, r, double) = r->def; break;
        case KM_SET_F32: *AT(cfg, r, float) = (float)r->def; break;
        case KM_SET_U64: *AT(cfg, r, uint64_t) = (uint64_t)r->def; break;
        case KM_SET_F32PAIR:
            AT(cfg, r, float)[0] = (float)r->def;
            AT(cfg, r, float)[1] = (float)r->def2;
            break;
        }
    }
}

/* ------------------------------------------------------------------- check */

static void bound_text(const km_setting *r, char *b, size_t n) {
    int lo = r->range & (KM_SET_GE | KM_SET_GT), hi = r->range & (KM_SET_LE | KM_SET_LT);
    if (lo && hi)
        snprintf(b, n, "in %c%g, %g%c", r->range & KM_SET_GE ? '[' : '(', r->lo, r->hi, r->range & KM_SET_LE ? ']' : ')');
    else if (lo)
        snprintf(b, n, "%s %g", r->range & KM_SET_GE ? ">=" : ">", r->lo);
    else
        snprintf(b, n, "%s %g", r->range & KM_SET_LE ? "<=" : "<", r->hi);
}

static int in_range(const km_setting *r, double v) {
    if ((r->range & KM_SET_GE) && !(v >= r->lo)) return 0;
    if ((r->range & KM_SET_GT) && !(v > r->lo)) return 0;
    if ((r->range & KM_SET_LE) && !(v <= r->hi)) return 0;
    if ((r->range & KM_SET_LT) && !(v < r->hi)) return 0;
    return 1;
}

km_status km_settings_check(const km_settings *t, const void *cfg) {
    for (int i = 0; i < t->n; i++) {
        const km_setting *r = &t->rows[i];
        if (!r->range) continue;
        double v;
        char val[48];
        switch (r->type) {
        case KM_SET_INT: v = *CAT(cfg, r, int); snprintf(val, sizeof val, "%d", *CAT(cfg, r, int)); break;
        case KM_SET_DBL: v = *CAT(cfg, r, double); snprintf(val, sizeof val, "%g", v); break;
        case KM_SET_F32: v = *CAT(cfg, r, float); snprintf(val, sizeof val, "%g", v); break;
        case KM_SET_U64:
            v = (double)*CAT(cfg, r, uint64_t);
            snprintf(val, sizeof val, "%llu", (unsigned long long)*CAT(cfg, r, uint64_t));
            break;
        default: KM_ASSERT(!"range on a row that is not a number"); return KM_EINTERNAL;
        }
        if (in_range(r, v)) continue;
        char bound[64];
        bound_text(r, bound, sizeof bound);
        return km_err(KM_EARG, "%s %s: expected %s%s%s%s", r->flag ? r->flag : r->key, val, bound, r->why ? " (" : "",
                      r->why ? r->why : "", r->why ? ")" : "");
    }
    return KM_OK;
}

/* -------------------------------------------------------------- from JSON */

static km_status read_pair(const km_setting *r, const km_json *v, const char *path, void *cfg) {
    if (v->type != KM_JSON_ARR || v->n != 2 || v->items[0].type != KM_JSON_NUM || v->items[1].type != KM_JSON_NUM)
        return km_err(KM_EFORMAT, "%s: '%s' must be an array of two numbers", path, r->key);
    AT(cfg, r, float)[0] = (float)v->items[0].num;
    AT(cfg, r, float)[1] = (float)v->items[1].num;
    return KM_OK;
}

/* "a, b or c": the names of an ENUM row */
static void name_list(const km_setting *r, char *b, size_t n) {
    size_t len = 0;
    b[0] = 0;
    for (int k = 0; r->names[k] && len < n; k++)
        len += (size_t)snprintf(b + len, n - len, "%s%s", k == 0 ? "" : r->names[k + 1] ? ", " : " or ", r->names[k]);
}

/* The index of `name` among the row's names, -1 if none. */
static int enum_index(const km_setting *r, const char *name) {
    for (int k = 0; r->names[k]; k++)
        if (!strcmp(r->names[k], name)) return k;
    return -1;
}

static int enum_value(const km_setting *r, int k) { return r->values ? r->values[k] : k; }

/* The name of an ENUM row's value (its first name; "?" for none). */
static const char *enum_name(const km_setting *r, int v) {
    for (int k = 0; r->names[k]; k++)
        if (enum_value(r, k) == v) return r->names[k];
    return "?";
}

static km_status read_enum(const km_setting *r, const km_json *v, const char *path, void *cfg) {
    int k = v->type == KM_JSON_STR ? enum_index(r, v->str) : -1;
    if (k >= 0) {
        *AT(cfg, r, int) = enum_value(r, k);
        return KM_OK;
    }
    char names[256];
    name_list(r, names, sizeof names);
    return km_err(KM_EFORMAT, "%s: '%s' must be %s", path, r->key, names);
}

static km_status read_str(const km_setting *r, const km_json *v, const char *path, void *cfg) {
    int nullable = !(r->attr & KM_SET_REQUIRED);
    if (nullable && v->type == KM_JSON_NULL) {
        *AT(cfg, r, char *) = NULL;
        return KM_OK;
    }
    if (v->type != KM_JSON_STR)
        return km_err(KM_EFORMAT, "%s: '%s' must be a string%s", path, r->key, nullable ? " or null" : "");
    *AT(cfg, r, char *) = km_strdup(v->str);
    return KM_OK;
}

static km_status read_row(const km_setting *r, const km_json *v, const char *path, void *cfg) {
    switch (r->type) {
    case KM_SET_STR: return read_str(r, v, path, cfg);
    case KM_SET_F32PAIR: return read_pair(r, v, path, cfg);
    case KM_SET_ENUM: return read_enum(r, v, path, cfg);
    default: break;
    }
    int real = r->type == KM_SET_DBL || r->type == KM_SET_F32;
    if (v->type != KM_JSON_NUM || (!real && !v->is_int))
        return km_err(KM_EFORMAT, "%s: '%s' must be %s", path, r->key, real ? "a number" : "an integer");
    switch (r->type) {
    case KM_SET_DBL: *AT(cfg, r, double) = v->num; break;
    case KM_SET_F32: *AT(cfg, r, float) = (float)v->num; break;
    case KM_SET_U64:
        if (v->i < 0) return km_err(KM_EFORMAT, "%s: '%s' must be >= 0", path, r->key);
        *AT(cfg, r, uint64_t) = (uint64_t)v->i;
        break;
    default:
        if (v->i < INT32_MIN || v->i > INT32_MAX) return km_err(KM_EFORMAT, "%s: '%s' out of range", path, r->key);
        *AT(cfg, r, int) = (int)v->i;
        break;
    }
    return KM_OK;
}

km_status km_settings_from_json(const km_settings *t, const km_json *j, const char *path,
                                const char *const *optional, void *cfg) {
    if (j->type != KM_JSON_OBJ) return km_err(KM_EFORMAT, "%s: expected a JSON object", path);
    for (int i = 0; i < t->n; i++) {
        const km_setting *r = &t->rows[i];
        if (!r->key) continue;
        const km_json *v = km_json_get(j, r->key);
        if (!v) {
            if ((r->attr & KM_SET_OPTIONAL) || in_list(optional, r->key)) continue;
            return km_err(KM_EMISSING, "%s: missing setting '%s'", path, r->key);
        }
        km_status s = read_row(r, v, path, cfg);
        if (s) return s;
    }
    return KM_OK;
}

void km_settings_free_strings(const km_settings *t, void *cfg) {
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].type == KM_SET_STR) {
            km_free(*AT(cfg, &t->rows[i], char *));
            *AT(cfg, &t->rows[i], char *) = NULL;
        }
}

/* ------------------------------------------------------------------ writer */

static void jw_put(km_jw *w, const char *s) {
    size_t n = strlen(s);
    if (w->len + n + 1 > w->cap) {
        size_t nc = (w->cap ? w->cap * 2 : 1024) + n;
        char *nb = km_malloc(nc);
        if (w->b) memcpy(nb, w->b, w->len);
        km_free(w->b);
        w->b = nb;
        w->cap = nc;
    }
    memcpy(w->b + w->len, s, n + 1);
    w->len += n;
}

static void jw_key(km_jw *w, const char *key) {
    jw_put(w, w->n++ ? ",\n  " : "{\n  ");
    km_json_escape(&w->b, &w->len, &w->cap, key);
    jw_put(w, ": ");
}

void km_jw_str(km_jw *w, const char *key, const char *v) {
    jw_key(w, key);
    if (v) km_json_escape(&w->b, &w->len, &w->cap, v);
    else jw_put(w, "null");
}

void km_jw_int(km_jw *w, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    jw_key(w, key);
    jw_put(w, b);
}

void km_jw_num(km_jw *w, const char *key, double v) {
    char b[32];
    if (isfinite(v)) snprintf(b, sizeof b, "%.9g", v);
    else snprintf(b, sizeof b, "null");
    jw_key(w, key);
    jw_put(w, b);
}

static void jw_row(km_jw *w, const km_setting *r, const void *cfg) {
    char b[96];
    switch (r->type) {
    case KM_SET_STR: km_jw_str(w, r->key, *CAT(cfg, r, char *)); return;
    case KM_SET_ENUM: km_jw_str(w, r->key, enum_name(r, *CAT(cfg, r, int))); return;
    case KM_SET_INT: case KM_SET_BOOL: snprintf(b, sizeof b, "%d", *CAT(cfg, r, int)); break;
    case KM_SET_DBL: snprintf(b, sizeof b, "%.17g", *CAT(cfg, r, double)); break;
    case KM_SET_F32: snprintf(b, sizeof b, "%.9g", *CAT(cfg, r, float)); break;
    case KM_SET_U64: snprintf(b, sizeof b, "%llu", (unsigned long long)*CAT(cfg, r, uint64_t)); break;
    case KM_SET_F32PAIR: snprintf(b, sizeof b, "[%.9g, %.9g]", CAT(cfg, r, float)[0], CAT(cfg, r, float)[1]); break;
    }
    jw_key(w, r->key);
    jw_put(w, b);
}

/* A KM_SET_OMIT_DEFAULT row at its default (a STR row: NULL) is not written. */
static int omitted(const km_setting *r, const void *cfg) {
    if (!(r->attr & KM_SET_OMIT_DEFAULT)) return 0;
    if (r->type == KM_SET_STR) return !*(char *const *)((const char *)cfg + r->off);
    KM_ASSERT(r->type == KM_SET_INT || r->type == KM_SET_BOOL || r->type == KM_SET_ENUM);
    return *(const int *)((const char *)cfg + r->off) == (int)r->def;
}

void km_jw_settings(km_jw *w, const km_settings *t, const void *cfg, const char *const *skip) {
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].key && !in_list(skip, t->rows[i].key) && !omitted(&t->rows[i], cfg)) jw_row(w, &t->rows[i], cfg);
}

void km_jw_setting(km_jw *w, const km_settings *t, const void *cfg, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].key && !strcmp(t->rows[i].key, key)) {
            jw_row(w, &t->rows[i], cfg);
            return;
        }
    KM_ASSERT(!"km_jw_setting: no such key");
}

km_status km_jw_write(km_jw *w, const char *path) {
    jw_put(w, w->n ? "\n}\n" : "{\n}\n");
    km_status s = km_write_file_atomic(path, w->b, w->len);
    km_free(w->b);
    memset(w, 0, sizeof *w);
    return s;
}

/* -------------------------------------------------------------------- CLI */

void km_cli_init(km_cli *cli) { memset(cli, 0, sizeof *cli); }

static km_flag *cli_push(km_cli *cli, const km_setting *r, void *cfg) {
    KM_ASSERT(cli->n < KM_CLI_MAX);
    int i = cli->n++;
    cli->row[i] = r;
    cli->cfg[i] = cfg;
    cli->flags[i + 1] = (km_flag){0};
    return &cli->flags[i];
}

void km_cli_add_settings(km_cli *cli, const km_settings *t, void *cfg, const char *const *skip) {
    for (int k = 0; k < t->n; k++) {
        const km_setting *r = &t->rows[k];
        if (!r->flag || in_list(skip, r->flag)) continue;
        km_flag *f = cli_push(cli, r, cfg);
        km_cli_arg *a = &cli->args[cli->n - 1];
        km_flag_type ft = KM_FLAG_INT;
        switch (r->type) {
        case KM_SET_STR: ft = KM_FLAG_STR, a->s = *AT(cfg, r, char *); break;
        case KM_SET_ENUM: ft = KM_FLAG_STR, a->s = enum_name(r, *AT(cfg, r, int)); break;
        case KM_SET_INT: a->i = *AT(cfg, r, int); break;
        case KM_SET_BOOL: ft = KM_FLAG_BOOL, a->i = *AT(cfg, r, int); break;
        case KM_SET_U64: a->i = (int)*AT(cfg, r, uint64_t); break;
        case KM_SET_DBL: ft = KM_FLAG_FLOAT, a->d = *AT(cfg, r, double); break;
        case KM_SET_F32: ft = KM_FLAG_FLOAT, a->d = *AT(cfg, r, float); break;
        case KM_SET_F32PAIR: KM_ASSERT(!"a pair has no flag"); break;
        }
        *f = (km_flag){r->flag, ft, a, r->help, 0, 0};
    }
}

void km_cli_add(km_cli *cli, const char *name, km_flag_type type, void *ptr, const char *help) {
    km_flag *f = cli_push(cli, NULL, NULL);
    *f = (km_flag){name, type, ptr, help, 0, 0};
}

void km_cli_add_flags(km_cli *cli, const km_flag *flags) {
    for (; flags->name; flags++) *cli_push(cli, NULL, NULL) = *flags;
}

km_status km_cli_parse(km_cli *cli, const char *cmd, const char *usage, int argc, char **argv, int *help_shown) {
    return km_parse_flags(cmd, usage, cli->flags, argc, argv, help_shown);
}

static km_status apply_one(const km_setting *r, const km_cli_arg *a, void *cfg) {
    switch (r->type) {
    case KM_SET_STR: *AT(cfg, r, char *) = (char *)a->s; break;
    case KM_SET_INT: case KM_SET_BOOL: *AT(cfg, r, int) = a->i; break;
    case KM_SET_DBL: *AT(cfg, r, double) = a->d; break;
    case KM_SET_F32: *AT(cfg, r, float) = (float)a->d; break;
    case KM_SET_U64:
        if (a->i < 0) return km_err(KM_EARG, "%s %d: expected >= 0", r->flag, a->i);
        *AT(cfg, r, uint64_t) = (uint64_t)a->i;
        break;
    case KM_SET_ENUM: {
        int k = enum_index(r, a->s);
        char names[256];
        if (k >= 0) {
            *AT(cfg, r, int) = enum_value(r, k);
            return KM_OK;
        }
        name_list(r, names, sizeof names);
        return km_err(KM_EARG, "%s '%s': expected %s", r->flag, a->s, names);
    }
    case KM_SET_F32PAIR: break;
    }
    return KM_OK;
}

km_status km_cli_apply(const km_cli *cli) {
    for (int i = 0; i < cli->n; i++) {
        if (!cli->row[i] || !cli->flags[i].seen) continue;
        km_status s = apply_one(cli->row[i], &cli->args[i], cli->cfg[i]);
        if (s) return s;
    }
    return KM_OK;
}

int km_cli_seen(const km_cli *cli, const char *name) {
    for (int i = 0; i < cli->n; i++)
        if (!strcmp(cli->flags[i].name, name)) return cli->flags[i].seen;
    return 0;
}

/* ------------------------------------------------------------ pass-through */

void km_passlist_add(km_passlist *l, const km_settings *t, int to, const char *const *skip) {
    for (int k = 0; k < t->n; k++) {
        const km_setting *r = &t->rows[k];
        if (!r->flag || !(r->attr & KM_SET_PASS) || in_list(skip, r->flag)) continue;
        int i = 0;
        while (i < l->n && strcmp(l->items[i].flag, r->flag)) i++;
        if (i == l->n) {
            KM_ASSERT(l->n < KM_CLI_MAX);
            l->items[l->n++] = (km_passflag){r->flag, r->help, 0, r->type == KM_SET_BOOL, !!(r->attr & KM_SET_NEUTRAL), NULL};
        }
        l->items[i].to |= to;
    }
}

/* json.c - strict recursive-descent JSON parser (see json.h). */
#include "json.h"

#include <math.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    const char *name;
    const unsigned char *p;
    size_t n, pos;
} parser;

static km_status perr(parser *ps, const char *what) {
    return km_err(KM_EFORMAT, "%s: invalid JSON at byte %zu: %s", ps->name, ps->pos, what);
}

static void skip_ws(parser *ps) {
    while (ps->pos < ps->n) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->pos++;
    }
}

void km_json_free(km_json *j) {
    if (j->type == KM_JSON_STR) km_free(j->str);
    if (j->type == KM_JSON_ARR || j->type == KM_JSON_OBJ) {
        for (int i = 0; i < j->n; i++) {
            km_json_free(&j->items[i]);
            if (j->keys) km_json_free(&j->keys[i]);
        }
        km_free(j->items);
        km_free(j->keys);
    }
    memset(j, 0, sizeof *j);
}

const char *km_json_type_name(km_json_type t) {
    static const char *n[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? n[t] : "?";
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static km_status read_hex4(parser *ps, uint32_t *u) {
    if (ps->n - ps->pos < 4) return perr(ps, "truncated \\u escape");
    *u = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[ps->pos + i]);
        if (h < 0) return perr(ps, "bad hex digit in \\u escape");
        *u = *u << 4 | (uint32_t)h;
    }
    ps->pos += 4;
    return KM_OK;
}

static size_t put_utf8(char *o, uint32_t u) {
    if (u < 0x80) { o[0] = (char)u; return 1; }
    if (u < 0x800) { o[0] = (char)(0xc0 | u >> 6); o[1] = (char)(0x80 | (u & 0x3f)); return 2; }
    if (u < 0x10000) {
        o[0] = (char)(0xe0 | u >> 12); o[1] = (char)(0x80 | ((u >> 6) & 0x3f));
        o[2] = (char)(0x80 | (u & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | u >> 18); o[1] = (char)(0x80 | ((u >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((u >> 6) & 0x3f)); o[3] = (char)(0x80 | (u & 0x3f));
    return 4;
}

/* Length of a valid UTF-8 sequence starting at p (at most `left` bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left) {
    unsigned char c = p[0];
    size_t k;
    uint32_t u, min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) { k = 2; u = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { k = 3; u = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { k = 4; u = c & 0x07; min = 0x10000; }
    else return 0;
    if (left < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        u = u << 6 | (p[i] & 0x3f);
    }
    if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) return 0;
    return k;
}

static km_status parse_string(parser *ps, km_json *out) {
    /* Opening quote already checked. Decoded output is never longer than the
     * source, so the source span bounds the buffer. */
    size_t start = ++ps->pos, end = start;
    while (end < ps->n && ps->p[end] != '"') end += ps->p[end] == '\\' ? 2 : 1;
    if (end >= ps->n) return perr(ps, "unterminated string");
    char *o = km_malloc(end - start + 1);
    size_t k = 0;
    while (ps->pos < end) {
        unsigned char c = ps->p[ps->pos];
        if (c < 0x20) {
            km_free(o);
            return perr(ps, "control character in string");
        }
        if (c != '\\') {
            size_t l = utf8_len(ps->p + ps->pos, end - ps->pos);
            if (!l) {
                km_free(o);
                return perr(ps, "invalid UTF-8 in string");
            }
            memcpy(o + k, ps->p + ps->pos, l);
            k += l;
            ps->pos += l;
            continue;
        }
        ps->pos++;
        unsigned char e = ps->p[ps->pos++];
        uint32_t u;
        km_status s;
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u':
            if ((s = read_hex4(ps, &u))) { km_free(o); return s; }
            if (u >= 0xdc00 && u <= 0xdfff) { km_free(o); return perr(ps, "lone low surrogate"); }
            if (u >= 0xd800 && u <= 0xdbff) {
                uint32_t lo;
                if (ps->n - ps->pos < 2 || ps->p[ps->pos] != '\\' || ps->p[ps->pos + 1] != 'u') {
                    km_free(o);
                    return perr(ps, "high surrogate without a low surrogate");
                }
                ps->pos += 2;
                if ((s = read_hex4(ps, &lo))) { km_free(o); return s; }
                if (lo < 0xdc00 || lo > 0xdfff) { km_free(o); return perr(ps, "bad surrogate pair"); }
                u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            }
            /* "\uXXXX" (6 bytes) -> at most 3 bytes; a pair (12) -> 4. */
            k += put_utf8(o + k, u);
            break;
        default:
            km_free(o);
            return perr(ps, "bad escape in string");
        }
        if (ps->pos > end) { km_free(o); return perr(ps, "escape runs past the string"); }
    }
    o[k] = 0;
    ps->pos = end + 1;
    out->type = KM_JSON_STR;
    out->str = o;
    out->len = k;
    return KM_OK;
}

static km_status parse_number(parser *ps, km_json *out) {
    size_t s0 = ps->pos, i = ps->pos;
    const unsigned char *p = ps->p;
    int isint = 1;
    if (i < ps->n && p[i] == '-') i++;
    if (i >= ps->n || !(p[i] >= '0' && p[i] <= '9')) return perr(ps, "bad number");
    if (p[i] == '0') {
        i++;
        if (i < ps->n && p[i] >= '0' && p[i] <= '9') return perr(ps, "leading zero in number");
    } else
        while (i < ps->n && p[i] >= '0' && p[i] <= '9') i++;
    if (i < ps->n && p[i] == '.') {
        isint = 0;
        i++;
        if (i >= ps->n || !(p[i] >= '0' && p[i] <= '9')) return perr(ps, "bad fraction");
        while (i < ps->n && p[i] >= '0' && p[i] <= '9') i++;
    }
    if (i < ps->n && (p[i] == 'e' || p[i] == 'E')) {
        isint = 0;
        i++;
        if (i < ps->n && (p[i] == '+' || p[i] == '-')) i++;
        if (i >= ps->n || !(p[i] >= '0' && p[i] <= '9')) return perr(ps, "bad exponent");
        while (i < ps->n && p[i] >= '0' && p[i] <= '9') i++;
    }
    size_t len = i - s0;
    char small[64], *tmp = len < sizeof small ? small : km_malloc(len + 1);
    memcpy(tmp, p + s0, len);
    tmp[len] = 0;
    out->type = KM_JSON_NUM;
    errno = 0;
    out->num = strtod(tmp, NULL);
    if (isint) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            out->is_int = 1;
            out->i = v;
        }
    }
    if (tmp != small) km_free(tmp);
    ps->pos = i;
    return KM_OK;
}

static km_status parse_value(parser *ps, km_json *out, int depth);

static void append(km_json **arr, int *n, int *cap, const km_json *v) {
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 4;
        km_json *a = km_malloc(sizeof *a * c);
        if (*n) memcpy(a, *arr, sizeof *a * *n);
        km_free(*arr);
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = *v;
}

static km_status parse_container(parser *ps, km_json *out, int depth, int obj) {
    char close = obj ? '}' : ']';
    int cap = 0, kcap = 0, kn = 0;
    out->type = obj ? KM_JSON_OBJ : KM_JSON_ARR;
    ps->pos++;
    skip_ws(ps);
    if (ps->pos < ps->n && ps->p[ps->pos] == close) {
        ps->pos++;
        return KM_OK;
    }
    for (;;) {
        km_json k, v;
        km_status s;
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        skip_ws(ps);
        if (obj) {
            if (ps->pos >= ps->n || ps->p[ps->pos] != '"') {
                s = perr(ps, "expected a string key");
                goto fail;
            }
            k.offset = ps->pos;
            if ((s = parse_string(ps, &k))) goto fail;
            skip_ws(ps);
            if (ps->pos >= ps->n || ps->p[ps->pos] != ':') {
                km_json_free(&k);
                s = perr(ps, "expected ':'");
                goto fail;
            }
            ps->pos++;
        }
        if ((s = parse_value(ps, &v, depth + 1))) {
            km_json_free(&k);
            goto fail;
        }
        if (obj) append(&out->keys, &kn, &kcap, &k);
        append(&out->items, &out->n, &cap, &v);
        skip_ws(ps);
        if (ps->pos < ps->n && ps->p[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        if (ps->pos < ps->n && ps->p[ps->pos] == close) {
            ps->pos++;
            return KM_OK;
        }
        s = perr(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    fail:
        km_json_free(out);
        return s;
    }
}

static km_status parse_value(parser *ps, km_json *out, int depth) {
    memset(out, 0, sizeof *out);
    if (depth > MAX_DEPTH) return perr(ps, "nested more than 64 levels");
    skip_ws(ps);
    if (ps->pos >= ps->n) return perr(ps, "unexpected end of text");
    out->offset = ps->pos;
    const char *lit[] = {"null", "true", "false"};
    unsigned char c = ps->p[ps->pos];
    switch (c) {
    case '{': return parse_container(ps, out, depth, 1);
    case '[': return parse_container(ps, out, depth, 0);
    case '"': return parse_string(ps, out);
    case 'n': case 't': case 'f': {
        int w = c == 'n' ? 0 : c == 't' ? 1 : 2;
        size_t l = strlen(lit[w]);
        if (ps->n - ps->pos < l || memcmp(ps->p + ps->pos, lit[w], l)) return perr(ps, "bad literal");
        ps->pos += l;
        out->type = w == 0 ? KM_JSON_NULL : KM_JSON_BOOL;
        out->b = w == 1;
        return KM_OK;
    }
    default:
        return parse_number(ps, out);
    }
}

km_status km_json_parse(const char *name, const char *text, size_t n, km_json *out) {
    parser ps = {name, (const unsigned char *)text, n, 0};
    km_status s = parse_value(&ps, out, 0);
    if (s) return s;
    skip_ws(&ps);
    if (ps.pos != n) {
        km_json_free(out);
        return perr(&ps, "trailing characters after the value");
    }
    return KM_OK;
}

const km_json *km_json_get(const km_json *obj, const char *key) {
    if (!obj || obj->type != KM_JSON_OBJ) return NULL;
    size_t l = strlen(key);
    for (int i = 0; i < obj->n; i++)
        if (obj->keys[i].len == l && !memcmp(obj->keys[i].str, key, l)) return &obj->items[i];
    return NULL;
}

void km_json_fput_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void km_json_fput_num_member(FILE *f, const char *key, double v, int last) {
    fprintf(f, "  ");
    km_json_fput_str(f, key);
    if (isfinite(v)) fprintf(f, ": %.9g%s\n", v, last ? "" : ",");
    else fprintf(f, ": null%s\n", last ? "" : ",");
}

void km_json_fput_str_member(FILE *f, const char *key, const char *v) {
    fprintf(f, "  ");
    km_json_fput_str(f, key);
    fprintf(f, ": ");
    if (v) km_json_fput_str(f, v);
    else fprintf(f, "null");
    fprintf(f, ",\n");
}

km_status km_json_load(const char *path, const char *read_prefix, const char *arg, km_json *out) {
    uint8_t *txt = NULL;
    size_t n = 0;
    km_status s = km_read_file(path, (size_t)1 << 24, &txt, &n);
    if (s) return read_prefix ? km_err_prefix(s, read_prefix, arg) : s;
    s = km_json_parse(path, (const char *)txt, n, out);
    km_free(txt);
    return s;
}

static km_status setting(const km_json *obj, const char *file, const char *key, const km_json **v) {
    *v = km_json_get(obj, key);
    return *v ? KM_OK : km_err(KM_EMISSING, "%s: missing setting '%s'", file, key);
}

static km_status setting_number(const km_json *obj, const char *file, const char *key, int integer,
                                const km_json **v) {
    km_status s = setting(obj, file, key, v);
    if (s) return s;
    const km_json *x = *v;
    if (x->type != KM_JSON_NUM || (integer && (!x->is_int || x->i < INT32_MIN || x->i > INT32_MAX)))
        return km_err(KM_EFORMAT, "%s: '%s' must be %s", file, key, integer ? "an integer" : "a number");
    return KM_OK;
}

km_status km_json_setting_num(const km_json *obj, const char *file, const char *key, double *out) {
    const km_json *v;
    km_status s = setting_number(obj, file, key, 0, &v);
    if (!s) *out = v->num;
    return s;
}

km_status km_json_setting_int(const km_json *obj, const char *file, const char *key, int *out) {
    const km_json *v;
    km_status s = setting_number(obj, file, key, 1, &v);
    if (!s) *out = (int)v->i;
    return s;
}

km_status km_json_setting_str(const km_json *obj, const char *file, const char *key, int nullable, char **out) {
    const km_json *v;
    km_status s = setting(obj, file, key, &v);
    if (s || (nullable && v->type == KM_JSON_NULL)) return s;
    if (v->type != KM_JSON_STR)
        return km_err(KM_EFORMAT, "%s: '%s' must be a string%s", file, key, nullable ? " or null" : "");
    *out = km_strdup(v->str);
    return KM_OK;
}

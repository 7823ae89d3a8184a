/* log.c - CSV and JSON-lines writers; see log.h. */
#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

static void buf_put(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (*len + n + 1 > nc) nc *= 2;
        char *nb = km_malloc(nc);
        if (*len) memcpy(nb, *buf, *len);
        km_free(*buf);
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    KM_ASSERT(n >= 0 && n < (int)sizeof tmp);
    buf_put(buf, len, cap, tmp, (size_t)n);
}

static km_status open_log(FILE **f, char **path, const char *p, int append, int *was_empty) {
    *f = fopen(p, append ? "ab" : "wb");
    if (!*f) return km_err(KM_EIO, "%s: cannot open for writing", p);
    *path = km_strdup(p);
    if (was_empty) {
        fseek(*f, 0, SEEK_END);
        *was_empty = ftell(*f) == 0;
    }
    return KM_OK;
}

static km_status write_line(FILE *f, const char *path, const char *s, size_t n) {
    if (fwrite(s, 1, n, f) != n || fputc('\n', f) == EOF || fflush(f))
        return km_err(KM_EIO, "%s: write failed (disk full?)", path);
    return KM_OK;
}

/* ---------------------------------------------------------------- CSV */

static void csv_field(km_csv *c, const char *s, int quote_ok) {
    if (c->col++) buf_put(&c->row, &c->len, &c->cap, ",", 1);
    if (quote_ok && strpbrk(s, ",\"\r\n")) {
        buf_put(&c->row, &c->len, &c->cap, "\"", 1);
        for (const char *p = s; *p; p++) {
            if (*p == '"') buf_put(&c->row, &c->len, &c->cap, "\"", 1);
            buf_put(&c->row, &c->len, &c->cap, p, 1);
        }
        buf_put(&c->row, &c->len, &c->cap, "\"", 1);
    } else {
        buf_put(&c->row, &c->len, &c->cap, s, strlen(s));
    }
}

km_status km_csv_open(km_csv *c, const char *path, const char *const *cols, int ncols, int append) {
    memset(c, 0, sizeof *c);
    int empty = 1;
    km_status s = open_log(&c->f, &c->path, path, append, &empty);
    if (s) return s;
    c->ncols = ncols;
    if (empty) {
        for (int i = 0; i < ncols; i++) csv_field(c, cols[i], 1);
        c->col = ncols;
        return km_csv_end_row(c);
    }
    return KM_OK;
}

void km_csv_str(km_csv *c, const char *s) { csv_field(c, s ? s : "", 1); }

void km_csv_num(km_csv *c, double v) {
    char t[64];
    if (isnan(v))
        snprintf(t, sizeof t, "nan");
    else if (isinf(v))
        snprintf(t, sizeof t, v > 0 ? "inf" : "-inf");
    else
        snprintf(t, sizeof t, "%.9g", v);
    csv_field(c, t, 0);
}

void km_csv_int(km_csv *c, int64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)v);
    csv_field(c, t, 0);
}

km_status km_csv_end_row(km_csv *c) {
    KM_ASSERT(c->col == c->ncols);
    km_status s = write_line(c->f, c->path, c->row ? c->row : "", c->len);
    c->len = 0;
    c->col = 0;
    if (c->row) c->row[0] = 0;
    return s;
}

km_status km_csv_close(km_csv *c) {
    km_status s = KM_OK;
    if (c->f && fclose(c->f)) s = km_err(KM_EIO, "%s: close failed", c->path);
    km_free(c->path);
    km_free(c->row);
    memset(c, 0, sizeof *c);
    return s;
}

/* ---------------------------------------------------------------- JSON */

void km_json_escape(char **buf, size_t *len, size_t *cap, const char *s) {
    buf_put(buf, len, cap, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char t[8];
        if (*p == '"' || *p == '\\') {
            t[0] = '\\';
            t[1] = (char)*p;
            buf_put(buf, len, cap, t, 2);
        } else if (*p == '\n') {
            buf_put(buf, len, cap, "\\n", 2);
        } else if (*p == '\t') {
            buf_put(buf, len, cap, "\\t", 2);
        } else if (*p == '\r') {
            buf_put(buf, len, cap, "\\r", 2);
        } else if (*p < 0x20) {
            snprintf(t, sizeof t, "\\u%04x", *p);
            buf_put(buf, len, cap, t, 6);
        } else {
            buf_put(buf, len, cap, (const char *)p, 1);
        }
    }
    buf_put(buf, len, cap, "\"", 1);
}

km_status km_jsonl_open(km_jsonl *j, const char *path, int append) {
    memset(j, 0, sizeof *j);
    return open_log(&j->f, &j->path, path, append, NULL);
}

static void json_key(km_jsonl *j, const char *key) {
    if (j->nfields++)
        buf_put(&j->rec, &j->len, &j->cap, ", ", 2);
    else
        buf_put(&j->rec, &j->len, &j->cap, "{", 1);
    km_json_escape(&j->rec, &j->len, &j->cap, key);
    buf_put(&j->rec, &j->len, &j->cap, ": ", 2);
}

void km_jsonl_str(km_jsonl *j, const char *key, const char *s) {
    json_key(j, key);
    km_json_escape(&j->rec, &j->len, &j->cap, s ? s : "");
}

void km_jsonl_num(km_jsonl *j, const char *key, double v) {
    json_key(j, key);
    if (!isfinite(v))
        buf_put(&j->rec, &j->len, &j->cap, "null", 4);
    else
        buf_printf(&j->rec, &j->len, &j->cap, "%.9g", v);
}

void km_jsonl_int(km_jsonl *j, const char *key, int64_t v) {
    json_key(j, key);
    buf_printf(&j->rec, &j->len, &j->cap, "%lld", (long long)v);
}

void km_jsonl_bool(km_jsonl *j, const char *key, int v) {
    json_key(j, key);
    buf_put(&j->rec, &j->len, &j->cap, v ? "true" : "false", v ? 4 : 5);
}

km_status km_jsonl_end(km_jsonl *j) {
    if (!j->nfields) buf_put(&j->rec, &j->len, &j->cap, "{", 1);
    buf_put(&j->rec, &j->len, &j->cap, "}", 1);
    km_status s = write_line(j->f, j->path, j->rec, j->len);
    j->len = 0;
    j->nfields = 0;
    return s;
}

km_status km_jsonl_close(km_jsonl *j) {
    km_status s = KM_OK;
    if (j->f && fclose(j->f)) s = km_err(KM_EIO, "%s: close failed", j->path);
    km_free(j->path);
    km_free(j->rec);
    memset(j, 0, sizeof *j);
    return s;
}

km_status km_text_keep_lines(const char *path, int nlines) {
    uint8_t *d;
    size_t n;
    km_status s = km_read_file(path, (size_t)1 << 30, &d, &n);
    if (s) return s;
    size_t end = 0;
    int lines = 0;
    while (end < n && lines < nlines) {
        if (d[end] == '\n') lines++;
        end++;
    }
    s = km_write_file_atomic(path, d, end);
    km_free(d);
    return s;
}

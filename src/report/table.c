/* table.c - see table.h. */
#include "table.h"

#include <math.h>
#include <string.h>

typedef struct {
    char **v;
    int n, cap;
} strvec;

static void push(strvec *s, char *x) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **v = km_malloc(sizeof(char *) * (size_t)cap);
        if (s->n) memcpy(v, s->v, sizeof(char *) * (size_t)s->n);
        km_free(s->v);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

/* One field starting at *p (text ends at e); advances past it and its
 * separator; *eol = 1 when the field ended a line. NULL on a bad quote. */
static char *field(const char **p, const char *e, int *eol) {
    const char *q = *p;
    char *out = km_malloc((size_t)(e - q) + 1);
    size_t k = 0;
    if (q < e && *q == '"') {
        q++;
        for (;;) {
            if (q >= e) { km_free(out); return NULL; }
            if (*q == '"') {
                if (q + 1 < e && q[1] == '"') { out[k++] = '"'; q += 2; continue; }
                q++;
                break;
            }
            out[k++] = *q++;
        }
        if (q < e && *q != ',' && *q != '\n' && *q != '\r') { km_free(out); return NULL; }
    } else {
        while (q < e && *q != ',' && *q != '\n' && *q != '\r') out[k++] = *q++;
    }
    out[k] = 0;
    *eol = 1;
    if (q < e && *q == ',') { *eol = 0; q++; }
    else {
        if (q < e && *q == '\r') q++;
        if (q < e && *q == '\n') q++;
    }
    *p = q;
    return out;
}

static km_status parse(km_table *t, const char *txt, size_t n) {
    const char *p = txt, *e = txt + n;
    strvec head = {0}, cells = {0};
    int line = 1, col = 0;
    km_status s = KM_OK;
    while (p < e && !s) {
        int eol;
        char *f = field(&p, e, &eol);
        if (!f) { s = km_err(KM_EFORMAT, "%s: line %d: unterminated or misplaced quote", t->path, line); break; }
        push(line == 1 ? &head : &cells, f);
        col++;
        if (!eol) continue;
        if (line > 1 && col != head.n)
            s = km_err(KM_EFORMAT, "%s: line %d has %d fields, the header has %d", t->path, line, col, head.n);
        line++;
        col = 0;
    }
    if (!s && col) s = km_err(KM_EFORMAT, "%s: the last line is incomplete", t->path);
    if (!s && head.n == 0) s = km_err(KM_EFORMAT, "%s: empty file, expected a CSV header", t->path);
    t->head = head.v;
    t->ncols = head.n;
    t->cells = cells.v;
    t->nrows = head.n ? cells.n / head.n : 0;
    if (s) { /* free what was read, including a partial last row */
        for (int i = t->nrows * t->ncols; i < cells.n; i++) km_free(cells.v[i]);
    }
    return s;
}

km_status km_table_load(const char *path, km_table *t) {
    memset(t, 0, sizeof *t);
    t->path = km_strdup(path);
    uint8_t *d = NULL;
    size_t n = 0;
    km_status s = km_read_file(path, (size_t)64 << 20, &d, &n);
    if (!s) s = parse(t, (const char *)d, n);
    km_free(d);
    if (s) km_table_free(t);
    return s;
}

void km_table_free(km_table *t) {
    for (int i = 0; i < t->ncols; i++) km_free(t->head[i]);
    for (int i = 0; i < t->nrows * t->ncols; i++) km_free(t->cells[i]);
    km_free(t->head);
    km_free(t->cells);
    km_free(t->path);
    memset(t, 0, sizeof *t);
}

int km_table_col(const km_table *t, const char *name) {
    for (int i = 0; i < t->ncols; i++)
        if (!strcmp(t->head[i], name)) return i;
    return -1;
}

const char *km_table_str(const km_table *t, int row, int col) {
    if (col < 0 || col >= t->ncols || row < 0 || row >= t->nrows) return "";
    return t->cells[(size_t)row * t->ncols + col];
}

double km_table_num(const km_table *t, int row, int col) {
    const char *s = km_table_str(t, row, col);
    if (!*s) return NAN;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v)) return NAN;
    return v;
}

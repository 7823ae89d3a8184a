/* log.h - run logs: CSV tables and JSON-lines records.
 *
 * Rows are built field by field and written (and flushed) as one line, so a
 * killed run leaves complete lines only. Numbers are printed with %.9g
 * (float32 values round-trip); NaN/inf are written as "nan"/"inf" in CSV and
 * null in JSON (JSON has no NaN). CSV strings are quoted when they contain a
 * comma, quote or newline (RFC 4180). JSON strings are escaped.
 *
 *   km_csv c; km_csv_open(&c, "metrics.csv", cols, 6, 0);
 *   km_csv_int(&c, epoch); km_csv_num(&c, loss); ...; km_csv_end_row(&c);
 *   km_jsonl j; km_jsonl_open(&j, "metrics.jsonl", 0);
 *   km_jsonl_int(&j, "epoch", 3); km_jsonl_num(&j, "loss", 0.5); km_jsonl_end(&j); */
#ifndef KM_LOG_H
#define KM_LOG_H

#include "km.h"

typedef struct {
    FILE *f;
    char *path;
    int ncols, col; /* columns per row, fields in the current row */
    char *row;      /* current row text */
    size_t len, cap;
} km_csv;

/* append = 1 keeps existing rows (and writes the header only to an empty
 * file); append = 0 truncates. */
km_status km_csv_open(km_csv *c, const char *path, const char *const *cols, int ncols, int append);
void km_csv_str(km_csv *c, const char *s);
void km_csv_num(km_csv *c, double v);
void km_csv_int(km_csv *c, int64_t v);
/* Writes the row; KM_EIO on a short write. The row must have ncols fields. */
km_status km_csv_end_row(km_csv *c);
km_status km_csv_close(km_csv *c);

typedef struct {
    FILE *f;
    char *path;
    char *rec;
    size_t len, cap;
    int nfields;
} km_jsonl;

km_status km_jsonl_open(km_jsonl *j, const char *path, int append);
void km_jsonl_str(km_jsonl *j, const char *key, const char *s);
void km_jsonl_num(km_jsonl *j, const char *key, double v);
void km_jsonl_int(km_jsonl *j, const char *key, int64_t v);
void km_jsonl_bool(km_jsonl *j, const char *key, int v);
km_status km_jsonl_end(km_jsonl *j); /* writes "{...}\n" */
km_status km_jsonl_close(km_jsonl *j);

/* Appends a JSON-escaped, quoted string to a growing buffer (exposed for
 * writers of config.json / summary.json). */
void km_json_escape(char **buf, size_t *len, size_t *cap, const char *s);

/* Keeps the first `nlines` lines of a text file (atomically rewritten): used
 * by --resume to drop log rows written after the checkpoint it resumes. */
km_status km_text_keep_lines(const char *path, int nlines);

#endif

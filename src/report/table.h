/* table.h - reading the CSV files runs write (metrics.csv, per_image.csv,
 * results.csv) for the report: RFC 4180 (fields quoted when they contain a
 * comma, quote or newline, "" inside quotes), first line = header, every row
 * must have the header's number of fields (else KM_EFORMAT naming the file and
 * line). Cells stay strings; km_table_num parses one on demand. */
#ifndef KM_REPORT_TABLE_H
#define KM_REPORT_TABLE_H

#include "../core/km.h"

typedef struct {
    char *path;
    int ncols, nrows;
    char **head;  /* [ncols] */
    char **cells; /* [nrows * ncols], row-major */
} km_table;

/* Reads `path` (at most 64 MiB). */
km_status km_table_load(const char *path, km_table *t);
void km_table_free(km_table *t);
/* Column index of `name`, -1 when absent. */
int km_table_col(const km_table *t, const char *name);
/* Cell text ("" when col < 0). */
const char *km_table_str(const km_table *t, int row, int col);
/* Cell as a number: NaN when col < 0, the cell is empty, "nan"/"inf" or not
 * a number, so missing values are skipped by the charts. */
double km_table_num(const km_table *t, int row, int col);

#endif

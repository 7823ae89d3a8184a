/* page.h - pieces shared by the run and experiments pages (internal to
 * src/report). */
#ifndef KM_REPORT_PAGE_H
#define KM_REPORT_PAGE_H

#include "html.h"
#include "report.h"

struct km_json;

/* <!DOCTYPE html> ... <body><h1>title</h1> with the inline style sheet. */
void km_page_begin(km_html *h, const char *title);
void km_page_end(km_html *h);
/* A summary card: label over value (both escaped). */
void km_page_card(km_html *h, const char *label, const char *value);
/* A two-column table of a JSON object's members (numbers as written by %.9g). */
void km_page_json_table(km_html *h, const struct km_json *obj, const char *caption);
/* Relative href from the folder holding `page` to `target` (both existing or
 * not; resolved against the current directory), percent-encoded for a URL
 * and HTML-escaped by the caller. Returns a km_malloc'ed string. */
char *km_page_relpath(const char *page, const char *target);
/* Appends `path` percent-encoded (RFC 3986 path characters kept) and escaped
 * for an attribute. */
void km_page_href(km_html *h, const char *path);
int km_page_exists(const char *path);
/* The folder of one results.csv run row: DIR/<dataset>/<fraction>/<folder>/seed<seed>
 * when it exists (the experiments folder may have moved), else run_dir
 * (the row's column; "" falls back to the first). <folder> is the method
 * folder named in run_dir (its parent's name: a derived row such as
 * "onetime+start-competes" or a weight chosen on validation shows another
 * run's folder), the method when run_dir is "". Owned by the caller. */
char *km_page_run_folder(const char *dir, const char *dataset, const char *fraction, const char *method,
                         const char *seed, const char *run_dir);
/* 1 when a results.csv method is a row kmseg experiments derives from other
 * runs ("<method>+refined", "<method>+start-competes"), not a trained method
 * (training methods may hold a '+' too: "points+box", "simclr+onetime"). */
int km_page_derived_method(const char *method);
/* Writes the page atomically. */
km_status km_page_save(const km_html *h, const char *out, FILE *log);

#endif

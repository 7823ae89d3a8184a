/* progress.h - a progress display for long loops (epochs, evaluation).
 *
 * On a terminal (isatty) one line is redrawn in place with '\r':
 *   "train 3/100 [#########.........]  45/125  12.3 img/s  ETA 0:06  loss 0.532"
 * at most every 0.1 s. Elsewhere (logs, pipes, CI) plain lines are printed
 * when another `every_pct` percent (default 10) is done or `every_s` seconds
 * (default 10) have passed since the last line, plus one at the end, so log
 * files stay short. Rate = items done / seconds since start; ETA = remaining
 * items / rate. The *_at variants take the clock explicitly (tests). */
#ifndef KM_PROGRESS_H
#define KM_PROGRESS_H

#include "km.h"

typedef struct {
    FILE *f;
    char label[64], unit[16];
    int64_t total, done;
    int tty;                 /* 1: redraw with '\r' */
    double every_pct, every_s;
    double t0, t_last;       /* start, last output */
    double pct_last;         /* percent at the last plain line */
    int width;               /* bar width in characters (tty) */
    int drawn;               /* something is on the current tty line */
} km_progress;

void km_progress_start(km_progress *p, FILE *f, const char *label, int64_t total, const char *unit);
void km_progress_start_at(km_progress *p, FILE *f, const char *label, int64_t total, const char *unit,
                          double now);
/* done items so far; extra (may be NULL) is appended, e.g. "loss 0.532". */
void km_progress_update(km_progress *p, int64_t done, const char *extra);
void km_progress_update_at(km_progress *p, int64_t done, const char *extra, double now);
/* Final line (always printed; on a tty ends the redrawn line with '\n'). */
void km_progress_end(km_progress *p, const char *extra);
void km_progress_end_at(km_progress *p, const char *extra, double now);

/* "1:02:03" / "2:03" formatting of seconds (negative or non-finite -> "?"). */
const char *km_format_duration(double s, char *buf, size_t n);

#endif

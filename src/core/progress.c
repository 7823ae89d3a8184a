/* progress.c - see progress.h. */
#include "progress.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

const char *km_format_duration(double s, char *buf, size_t n) {
    if (!(s >= 0) || !isfinite(s) || s > 1e8) {
        snprintf(buf, n, "?");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

void km_progress_start_at(km_progress *p, FILE *f, const char *label, int64_t total, const char *unit,
                          double now) {
    memset(p, 0, sizeof *p);
    p->f = f;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "it");
    p->total = total;
    p->tty = f && isatty(fileno(f));
    p->every_pct = 10.0;
    p->every_s = 10.0;
    p->t0 = p->t_last = now;
    p->width = 24;
}

void km_progress_start(km_progress *p, FILE *f, const char *label, int64_t total, const char *unit) {
    km_progress_start_at(p, f, label, total, unit, km_now());
}

static void format_line(const km_progress *p, const char *extra, double now, int bar, char *out, size_t n) {
    double el = now - p->t0, rate = el > 0 ? (double)p->done / el : 0.0;
    char eta[32], elapsed[32], barbuf[128] = "";
    int final = p->done >= p->total;
    if (final)
        km_format_duration(el, elapsed, sizeof elapsed);
    else
        km_format_duration(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
    if (bar && p->total > 0) {
        int w = p->width < (int)sizeof barbuf - 3 ? p->width : (int)sizeof barbuf - 3;
        int fill = (int)((double)p->done / (double)p->total * w);
        if (fill > w) fill = w;
        barbuf[0] = '[';
        for (int i = 0; i < w; i++) barbuf[1 + i] = i < fill ? '#' : '.';
        barbuf[1 + w] = ']';
        barbuf[2 + w] = 0;
    }
    snprintf(out, n, "%s%s%s%s%lld/%lld  %.1f %s/s  %s %s%s%s", p->label, p->label[0] ? " " : "", barbuf, barbuf[0] ? " " : "",
             (long long)p->done, (long long)p->total, rate, p->unit, final ? "in" : "ETA",
             final ? elapsed : eta, extra && extra[0] ? "  " : "", extra ? extra : "");
}

void km_progress_update_at(km_progress *p, int64_t done, const char *extra, double now) {
    p->done = done;
    if (!p->f) return;
    char line[512];
    if (p->tty) {
        if (now - p->t_last < 0.1 && p->drawn) return;
        format_line(p, extra, now, 1, line, sizeof line);
        fprintf(p->f, "\r%s\033[K", line);
        fflush(p->f);
        p->drawn = 1;
        p->t_last = now;
        return;
    }
    double pct = p->total > 0 ? 100.0 * (double)done / (double)p->total : 0.0;
    if (done >= p->total) return; /* the end line reports completion */
    if (pct - p->pct_last >= p->every_pct || now - p->t_last >= p->every_s) {
        format_line(p, extra, now, 0, line, sizeof line);
        fprintf(p->f, "%s\n", line);
        fflush(p->f);
        p->t_last = now;
        /* next line at the next multiple of every_pct */
        p->pct_last = floor(pct / p->every_pct) * p->every_pct;
    }
}

void km_progress_update(km_progress *p, int64_t done, const char *extra) {
    km_progress_update_at(p, done, extra, km_now());
}

void km_progress_end_at(km_progress *p, const char *extra, double now) {
    if (p->done < p->total) p->done = p->total;
    if (!p->f) return;
    char line[512];
    format_line(p, extra, now, p->tty, line, sizeof line);
    fprintf(p->f, p->tty ? "\r%s\033[K\n" : "%s\n", line);
    fflush(p->f);
}

void km_progress_end(km_progress *p, const char *extra) { km_progress_end_at(p, extra, km_now()); }

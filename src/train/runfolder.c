/* runfolder.c - see runfolder.h. */
#include "runfolder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int is_file(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

km_status km_run_open(km_run *r, const char *dir, const char *config, const char *command, int resume) {
    memset(r, 0, sizeof *r);
    r->dir = dir;
    if (!dir) return KM_OK;
    r->config = km_path_join(dir, config);
    if (!resume) return km_mkdir_p(dir);
    if (!is_file(r->config))
        return km_err(KM_EIO, "--resume %s: %s: no such file (not a kmseg %s run folder)", dir, r->config, command);
    return KM_OK;
}

char *km_run_path(const km_run *r, const char *name) { return r->dir ? km_path_join(r->dir, name) : NULL; }

int km_run_has(const km_run *r, const char *name) {
    char *p = km_run_path(r, name);
    int ok = is_file(p);
    km_free(p);
    return ok;
}

km_status km_run_metrics_open(km_run *r, const char *const *cols, int ncols, int nint, int jsonl, int keep) {
    r->cols = cols;
    r->ncols = ncols;
    r->nint = nint;
    if (!r->dir) return KM_OK;
    char *pc = km_run_path(r, "metrics.csv"), *pj = jsonl ? km_run_path(r, "metrics.jsonl") : NULL;
    km_status s = KM_OK;
    if (keep >= 0) {
        s = km_text_keep_lines(pc, keep + 1); /* + the header */
        if (!s && pj) s = km_text_keep_lines(pj, keep);
    }
    if (!s) s = km_csv_open(&r->csv, pc, cols, ncols, keep >= 0);
    if (!s && pj) s = km_jsonl_open(&r->jl, pj, keep >= 0);
    km_free(pc);
    km_free(pj);
    return s;
}

km_status km_run_metrics_row(km_run *r, const double *vals) {
    if (r->csv.f) {
        for (int i = 0; i < r->ncols; i++) {
            if (i < r->nint) km_csv_int(&r->csv, (int64_t)vals[i]);
            else km_csv_num(&r->csv, vals[i]);
        }
        km_status s = km_csv_end_row(&r->csv);
        if (s) return s;
    }
    if (r->jl.f) {
        for (int i = 0; i < r->ncols; i++) {
            if (i < r->nint) km_jsonl_int(&r->jl, r->cols[i], (int64_t)vals[i]);
            else km_jsonl_num(&r->jl, r->cols[i], vals[i]);
        }
        return km_jsonl_end(&r->jl);
    }
    return KM_OK;
}

km_status km_run_close(km_run *r, km_status s) {
    if (r->csv.f) {
        km_status s2 = km_csv_close(&r->csv);
        if (!s) s = s2;
    }
    if (r->jl.f) {
        km_status s2 = km_jsonl_close(&r->jl);
        if (!s) s = s2;
    }
    km_free(r->config);
    memset(r, 0, sizeof *r);
    return s;
}

km_status km_run_remove(const km_run *r, const char *name) {
    char *p = km_run_path(r, name);
    km_status s = KM_OK;
    if (p && remove(p) && errno != ENOENT)
        s = km_err(KM_EIO, "%s: cannot remove the earlier run's file: %s", p, strerror(errno));
    km_free(p);
    return s;
}

km_status km_run_note_resume(const km_run *r, int epoch) {
    if (!r->dir) return KM_OK;
    static const char header[] = "resumed_after_epoch,utc\n";
    char *p = km_run_path(r, "resumes.csv");
    uint8_t *old = NULL;
    size_t n = 0;
    km_status s = is_file(p) ? km_read_file(p, (size_t)1 << 20, &old, &n) : KM_OK;
    if (!s) {
        char row[64], when[32];
        time_t now = time(NULL);
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        int len = snprintf(row, sizeof row, "%d,%s\n", epoch, when);
        const char *head = n ? (const char *)old : header;
        size_t nh = n ? n : sizeof header - 1;
        char *b = km_malloc(nh + (size_t)len + 1);
        memcpy(b, head, nh);
        memcpy(b + nh, row, (size_t)len);
        s = km_write_file_atomic(p, b, nh + (size_t)len);
        km_free(b);
    }
    km_free(old);
    km_free(p);
    return s;
}

/* ---------------------------------------------------------------- metadata */

void km_meta_model(km_tdict *d, const char *arch, int resnet) {
    km_tdict_set_meta(d, "format", "pt");
    km_tdict_set_meta(d, "kmseg_version", KM_VERSION);
    km_tdict_set_meta(d, "arch", arch);
    km_tdict_set_meta(d, "encoder_name", resnet == 34 ? "resnet34" : "resnet18");
}

void km_meta_set_int(km_tdict *d, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    km_tdict_set_meta(d, key, b);
}

void km_meta_set_num(km_tdict *d, const char *key, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    km_tdict_set_meta(d, key, b);
}

void km_meta_set_rng(km_tdict *d, const char *key, const km_rng *r) {
    char b[80];
    snprintf(b, sizeof b, "%016llx %016llx %016llx %016llx", (unsigned long long)r->s[0], (unsigned long long)r->s[1],
             (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
    km_tdict_set_meta(d, key, b);
}

km_status km_meta_get_int(const km_tdict *d, const char *key, const char *file, long long *v) {
    const char *s = km_tdict_get_meta(d, key);
    char *end;
    if (!s) return km_err(KM_EMISSING, "%s: missing metadata '%s' (not a kmseg last.safetensors?)", file, key);
    errno = 0;
    *v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return km_err(KM_EFORMAT, "%s: metadata '%s' = '%s' is not an integer", file, key, s);
    return KM_OK;
}

km_status km_meta_get_num(const km_tdict *d, const char *key, const char *file, double *v) {
    const char *s = km_tdict_get_meta(d, key);
    char *end;
    if (!s) return km_err(KM_EMISSING, "%s: missing metadata '%s' (not a kmseg last.safetensors?)", file, key);
    *v = strtod(s, &end);
    if (end == s || *end) return km_err(KM_EFORMAT, "%s: metadata '%s' = '%s' is not a number", file, key, s);
    return KM_OK;
}

km_status km_meta_get_rng(const km_tdict *d, const char *key, const char *file, km_rng *r) {
    const char *v = km_tdict_get_meta(d, key);
    unsigned long long x[4];
    char tail;
    if (!v || sscanf(v, "%16llx %16llx %16llx %16llx%c", &x[0], &x[1], &x[2], &x[3], &tail) != 4)
        return km_err(KM_EFORMAT, "%s: missing or malformed metadata '%s'", file, key);
    for (int i = 0; i < 4; i++) r->s[i] = x[i];
    return KM_OK;
}

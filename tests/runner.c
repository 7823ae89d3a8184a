/* runner.c - runs every registered test (or those whose name contains one of
 * the command-line arguments) and ends with "N passed, N failed". */
#define _GNU_SOURCE
#include "test.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *name, *file;
    km_test_fn fn;
} entry;

static entry *g_tests;
static int g_n, g_cap;
static int g_failures_in_test;
static char g_base[512];   /* the run's folder, made on first use */
static char g_tmpdir[600]; /* the running test file's folder inside it */
static const char *g_test_file;

void km_test_register(const char *name, const char *file, km_test_fn fn) {
    if (g_n == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 64;
        g_tests = realloc(g_tests, sizeof *g_tests * g_cap);
    }
    g_tests[g_n++] = (entry){name, file, fn};
}

void km_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stdout, "    FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fprintf(stdout, "\n");
    fflush(stdout);
    g_failures_in_test++;
}

const char *km_test_shared(void) {
    const char *s = getenv("KMSEG_SHARED");
    return s ? s : "../shared";
}

const char *km_test_path(const char *rel) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", km_test_shared(), rel);
    return b;
}

/* The tests of one file share a folder (they share runs through static
 * caches); it is removed when the runner moves on to another file (unless
 * KMSEG_KEEP), so the suite's disk use peaks at its largest file, not at
 * the sum of all of them (the experiment-grid tests write gigabytes). */
const char *km_test_tmpdir(void) {
    if (!g_base[0]) {
        snprintf(g_base, sizeof g_base, "/tmp/kmseg-test-%d-XXXXXX", (int)getpid());
        if (!mkdtemp(g_base)) {
            perror("mkdtemp");
            abort();
        }
    }
    if (!g_tmpdir[0]) {
        const char *name = g_test_file ? g_test_file : "common";
        const char *f = strrchr(name, '/');
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/%s", g_base, f ? f + 1 : name);
        if (mkdir(g_tmpdir, 0700) && errno != EEXIST) {
            perror(g_tmpdir);
            abort();
        }
    }
    return g_tmpdir;
}

int km_test_sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    if (r == -1) return -1;
    return WIFEXITED(r) ? WEXITSTATUS(r) : 128 + WTERMSIG(r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

km_cmp km_compare(const char *label, const float *got, const float *ref, size_t n) {
    km_cmp c = {0, 0, 0, 0};
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        if (isnan(got[i]) != isnan(ref[i]) || isnan(e)) e = INFINITY;
        d[i] = e;
        if (e > c.max_abs) c.max_abs = e;
        if (fabs(ref[i]) > c.max_ref) c.max_ref = fabs(ref[i]);
    }
    qsort(d, n, sizeof *d, cmp_double);
    c.p99_abs = n ? d[(size_t)((n - 1) * 0.99)] : 0;
    free(d);
    c.max_rel = c.max_ref > 0 ? c.max_abs / c.max_ref : c.max_abs;
    printf("    %-58s max_abs=%.3g p99=%.3g max_rel=%.3g (max|ref|=%.3g, n=%zu)\n", label, c.max_abs,
           c.p99_abs, c.max_rel, c.max_ref, n);
    return c;
}

static void rm_dir(const char *dir) {
    if (dir[0] && !getenv("KMSEG_KEEP")) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    }
}

static void rm_tmpdir(void) { rm_dir(g_base); }

int main(int argc, char **argv) {
    km_set_omp_policy(argv);
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    atexit(rm_tmpdir);
    int threads = getenv("KMSEG_THREADS") ? atoi(getenv("KMSEG_THREADS")) : 2;
    km_set_threads(threads);
    double t_all = km_now();
    for (int i = 0; i < g_n; i++) {
        int want = argc <= 1;
        for (int a = 1; a < argc; a++)
            if (strstr(g_tests[i].name, argv[a])) want = 1;
        if (!want) continue;
        g_failures_in_test = 0;
        if (g_test_file && strcmp(g_test_file, g_tests[i].file)) { /* a new file: the last one's folder goes */
            rm_dir(g_tmpdir);
            g_tmpdir[0] = 0;
        }
        g_test_file = g_tests[i].file;
        printf("[ RUN  ] %s (%s)\n", g_tests[i].name, g_tests[i].file);
        double t0 = km_now();
        g_tests[i].fn();
        double dt = km_now() - t0;
        if (g_failures_in_test) {
            failed++;
            printf("[ FAIL ] %s (%.2f s)\n", g_tests[i].name, dt);
        } else {
            passed++;
            printf("[  OK  ] %s (%.2f s)\n", g_tests[i].name, dt);
        }
    }
    printf("total %.1f s\n", km_now() - t_all);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* core.c - errors, allocation, threads, clock, atomic file writes. */
#define _GNU_SOURCE
#include "km.h"
#include "../nn/gemm.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char g_errbuf[2048];

km_status km_err(km_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errbuf, sizeof g_errbuf, fmt, ap);
    va_end(ap);
    return code;
}

km_status km_err_prefix(km_status code, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_errbuf, sizeof old);
    snprintf(g_errbuf, sizeof g_errbuf, "%.1000s%.1000s", prefix, old);
    return code;
}

const char *km_errmsg(void) { return g_errbuf[0] ? g_errbuf : "unknown error"; }
void km_err_clear(void) { g_errbuf[0] = 0; }

void km_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "kmseg: internal error: assertion `%s` failed at %s:%d\n", expr, file, line);
    abort();
}

void *km_try_malloc(size_t n) {
    if (n == 0) n = 1;
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (rounded < n) return NULL;
    if (posix_memalign(&p, 64, rounded) != 0) return NULL;
    return p;
}

void *km_malloc(size_t n) {
    void *p = km_try_malloc(n);
    if (!p) {
        fprintf(stderr, "kmseg: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

void *km_calloc(size_t n) {
    /* Large blocks come from calloc, i.e. fresh zero pages from the kernel
     * that cost no memory until touched (gradient and Adam buffers of a model
     * that only runs inference stay free). Alignment is then 16 bytes, which
     * every kernel here accepts (no aligned-load intrinsics). */
    if (n >= ((size_t)1 << 20)) {
        void *p = calloc(1, n);
        if (!p) {
            fprintf(stderr, "kmseg: out of memory allocating %zu bytes\n", n);
            abort();
        }
        return p;
    }
    void *p = km_malloc(n);
    memset(p, 0, n);
    return p;
}

void km_free(void *p) { free(p); }

char *km_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = km_malloc(n);
    memcpy(d, s, n);
    return d;
}

static int g_threads = 1;

void km_set_threads(int n) {
    if (n < 1) n = 1;
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    km_gemm_set_threads(n);
}

int km_get_threads(void) { return g_threads; }

void km_set_omp_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("KMSEG_NO_REEXEC")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): carry on with the default policy */
}

double km_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

km_status km_atomic_open(km_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->path = km_strdup(path);
    af->tmp = km_malloc(n);
    snprintf(af->tmp, n, "%s.tmp.%d", path, (int)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        km_status s = km_err(KM_EIO, "%s: cannot create file: %s", path, strerror(errno));
        km_free(af->path);
        km_free(af->tmp);
        memset(af, 0, sizeof *af);
        return s;
    }
    return KM_OK;
}

km_status km_atomic_commit(km_atomic_file *af) {
    km_status s = KM_OK;
    if (fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) != 0) {
        s = km_err(KM_EIO, "%s: write failed: %s", af->path, strerror(errno));
        fclose(af->f);
        remove(af->tmp);
    } else if (fclose(af->f) != 0) {
        s = km_err(KM_EIO, "%s: close failed: %s", af->path, strerror(errno));
        remove(af->tmp);
    } else if (rename(af->tmp, af->path) != 0) {
        s = km_err(KM_EIO, "%s: rename from %s failed: %s", af->path, af->tmp, strerror(errno));
        remove(af->tmp);
    }
    km_free(af->path);
    km_free(af->tmp);
    memset(af, 0, sizeof *af);
    return s;
}

void km_atomic_abort(km_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) remove(af->tmp);
    km_free(af->path);
    km_free(af->tmp);
    memset(af, 0, sizeof *af);
}

km_status km_write_file_atomic(const char *path, const void *data, size_t n) {
    km_atomic_file af;
    km_status s = km_atomic_open(&af, path);
    if (s) return s;
    if (n && fwrite(data, 1, n, af.f) != n) {
        km_atomic_abort(&af);
        return km_err(KM_EIO, "%s: write failed", path);
    }
    return km_atomic_commit(&af);
}

km_status km_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *n) {
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return km_err(KM_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fseeko(f, 0, SEEK_END) != 0) {
        fclose(f);
        return km_err(KM_EIO, "%s: cannot seek (not a regular file?)", path);
    }
    off_t sz = ftello(f);
    if (sz < 0) {
        fclose(f);
        return km_err(KM_EIO, "%s: cannot determine size", path);
    }
    if ((uint64_t)sz > max_bytes) {
        fclose(f);
        return km_err(KM_ENOMEM, "%s: file is %lld bytes, more than the %zu allowed", path,
                      (long long)sz, max_bytes);
    }
    rewind(f);
    uint8_t *buf = km_try_malloc((size_t)sz + 1);
    if (!buf) {
        fclose(f);
        return km_err(KM_ENOMEM, "%s: cannot allocate %lld bytes", path, (long long)sz);
    }
    if (sz && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        km_free(buf);
        return km_err(KM_EIO, "%s: read failed", path);
    }
    fclose(f);
    buf[sz] = 0;
    *data = buf;
    *n = (size_t)sz;
    return KM_OK;
}

char *km_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = km_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

km_status km_mkdir_p(const char *dir) {
    char *p = km_strdup(dir);
    km_status s = KM_OK;
    for (char *q = p + 1;; q++) {
        if (*q == '/' || *q == 0) {
            char keep = *q;
            *q = 0;
            if (mkdir(p, 0777) && errno != EEXIST) {
                s = km_err(KM_EIO, "%s: cannot create folder: %s", p, strerror(errno));
                break;
            }
            *q = keep;
            if (!keep) break;
        }
    }
    km_free(p);
    return s;
}

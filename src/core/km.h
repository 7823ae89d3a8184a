/* km.h - kmseg common definitions: status codes, error messages, asserts,
 * allocation helpers and the thread-count context.
 *
 * Error convention (libvips/SQLite style): every fallible function returns a
 * km_status (KM_OK == 0). On failure it records one human-readable message with
 * km_err(), naming the file / tensor / flag and what was expected vs found.
 * Callers pass the status up unchanged; only main() prints km_errmsg() and exits.
 * Programmer errors use KM_ASSERT, which is always on and reports file:line. */
#ifndef KM_H
#define KM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define KM_VERSION "0.1.0"

typedef enum {
    KM_OK = 0,
    KM_EIO = 1,      /* cannot open/read/write a file */
    KM_EFORMAT = 2,  /* file content malformed, truncated or unsupported */
    KM_ESHAPE = 3,   /* tensor shape / size mismatch */
    KM_EMISSING = 4, /* missing key, tensor, mask, ... */
    KM_EARG = 5,     /* bad command-line flag or argument value */
    KM_ENOMEM = 6,   /* allocation failed / size limit exceeded */
    KM_EINTERNAL = 7
} km_status;

/* Record an error message (printf-style) and return `code`. The message buffer
 * is thread-local, like errno. */
km_status km_err(km_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prepend context ("while loading X: ") to the current message; returns code. */
km_status km_err_prefix(km_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *km_errmsg(void);
void km_err_clear(void);

/* Always-on assert for programmer errors. */
#define KM_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) km_assert_fail(#cond, __FILE__, __LINE__);                \
    } while (0)
_Noreturn void km_assert_fail(const char *expr, const char *file, int line);

/* Allocation: km_malloc aborts with a message on OOM for internal buffers;
 * loaders of untrusted sizes use km_try_malloc and report KM_ENOMEM. Memory is
 * 64-byte aligned, except km_calloc blocks of 1 MiB or more (16-byte aligned,
 * zero pages mapped lazily). */
void *km_malloc(size_t n);
void *km_calloc(size_t n);
void *km_try_malloc(size_t n);
void km_free(void *p);
char *km_strdup(const char *s);

/* Threads: one process-wide setting applied to OpenMP and to the BLAS. */
void km_set_threads(int n);
int km_get_threads(void);

/* Called first thing in main(): if OMP_WAIT_POLICY is unset, sets it to
 * PASSIVE and re-executes the program (/proc/self/exe) so that the OpenMP
 * runtime, which reads it only at start-up, sees it. With the default
 * (spinning) policy, idle workers burn their time slice at every barrier; on a
 * machine whose cores are shared with other work that made small workloads
 * 4x slower, and it is no faster on an idle machine (bench/README.md). A
 * user's own setting is respected; KMSEG_NO_REEXEC=1 disables this. */
void km_set_omp_policy(char **argv);

/* Wall clock in seconds (monotonic). */
double km_now(void);

/* Write a file atomically: data goes to "<path>.tmp.<pid>", is flushed and
 * fsync'ed, then renamed over `path`. */
typedef struct {
    FILE *f;
    char *path;
    char *tmp;
} km_atomic_file;
km_status km_atomic_open(km_atomic_file *af, const char *path);
km_status km_atomic_commit(km_atomic_file *af); /* closes, renames */
void km_atomic_abort(km_atomic_file *af);       /* closes, removes tmp */
km_status km_write_file_atomic(const char *path, const void *data, size_t n);
/* "dir/name" in a new km_malloc'ed string. */
char *km_path_join(const char *dir, const char *name);
/* mkdir -p: creates every missing folder of `dir` (error names the folder). */
km_status km_mkdir_p(const char *dir);
/* Read a whole file into memory (max_bytes guards against absurd sizes). */
km_status km_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *n);

#endif

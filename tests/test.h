/* test.h - the kmseg test runner's tiny API.
 *
 *   KM_TEST(name) { ... CHECK(cond); CHECK_NEAR(a, b, tol); ... }
 *
 * Tests self-register (constructor attribute) so each tests/test_*.c file is
 * independent. A failing CHECK records the failure with file:line and the test
 * continues; a test passes when no CHECK failed. */
#ifndef KM_TEST_H
#define KM_TEST_H

#include "../src/core/km.h"
#include <math.h>
#include <stdio.h>

typedef void (*km_test_fn)(void);
void km_test_register(const char *name, const char *file, km_test_fn fn);
void km_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Path of the shared/ folder (env KMSEG_SHARED, default ../shared). */
const char *km_test_shared(void);
/* Joins shared/ + relative path into a static rotating buffer. */
const char *km_test_path(const char *rel);
/* A fresh scratch directory for this test (removed at exit unless KMSEG_KEEP). */
const char *km_test_tmpdir(void);
/* Run a shell command, return its exit status (-1 if it could not run). */
int km_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Compares two float arrays; prints "label: max_abs=… max_rel=… (tol …)" and
 * returns max_abs. max_rel is max|a-b| / max|ref|. */
typedef struct {
    double max_abs, max_rel, p99_abs, max_ref;
} km_cmp;
km_cmp km_compare(const char *label, const float *got, const float *ref, size_t n);

#define KM_TEST(name)                                                                              \
    static void km_test_##name(void);                                                              \
    __attribute__((constructor)) static void km_test_reg_##name(void) {                           \
        km_test_register(#name, __FILE__, km_test_##name);                                        \
    }                                                                                              \
    static void km_test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) km_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                         \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) km_test_fail(__FILE__, __LINE__, __VA_ARGS__);                               \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double _a = (a), _b = (b), _t = (tol);                                                    \
        if (!(fabs(_a - _b) <= _t))                                                                \
            km_test_fail(__FILE__, __LINE__, "CHECK_NEAR(%s, %s): %.9g vs %.9g (|diff| %.3g > %.3g)", \
                         #a, #b, _a, _b, fabs(_a - _b), _t);                                      \
    } while (0)
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        km_status _s = (expr);                                                                     \
        if (_s != KM_OK) km_test_fail(__FILE__, __LINE__, "%s failed: %s", #expr, km_errmsg());   \
    } while (0)
/* Expects failure with the given status, and the message to contain `needle`. */
#define CHECK_ERR(expr, code, needle)                                                              \
    do {                                                                                           \
        km_err_clear();                                                                            \
        km_status _s = (expr);                                                                     \
        if (_s != (code))                                                                          \
            km_test_fail(__FILE__, __LINE__, "%s: expected status %d, got %d (%s)", #expr, (int)(code), \
                         (int)_s, km_errmsg());                                                    \
        else if (!strstr(km_errmsg(), (needle)))                                                   \
            km_test_fail(__FILE__, __LINE__, "%s: message '%s' lacks '%s'", #expr, km_errmsg(),    \
                         (needle));                                                                \
    } while (0)

#include <string.h>

#endif

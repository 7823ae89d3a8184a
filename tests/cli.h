/* cli.h - helpers of the tests that run the kmseg command line (the binary
 * in $KMSEG_BIN, default ./kmseg; `make test` sets it). */
#ifndef KM_TEST_CLI_H
#define KM_TEST_CLI_H

#include "test.h"

/* The kmseg binary under test. */
const char *km_test_bin(void);
/* "<the test's scratch folder>/<name>" in a static rotating buffer (32 live). */
const char *km_test_sub(const char *name);
/* A file's contents, NUL-terminated (km_free), or NULL when it cannot be read. */
char *km_test_slurp(const char *path);
/* Runs `kmseg ARGS` (args: shell words, quoted by the caller) with stdout and
 * stderr into the scratch folder's cli_out.txt; returns the exit status and
 * *output the text (never NULL; km_free). */
int km_test_kmseg(char **output, const char *args);
/* Runs `kmseg ARGS` and records a failure (at the caller's file:line) unless
 * it exits non-zero with `needle` in its output; prints the exit status and
 * the output. */
#define KM_CLI_EXPECT_FAIL(args, needle) km_test_cli_expect_fail(__FILE__, __LINE__, (args), (needle))
void km_test_cli_expect_fail(const char *file, int line, const char *args, const char *needle);

#endif

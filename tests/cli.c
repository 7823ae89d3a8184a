/* cli.c - see cli.h. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

const char *km_test_bin(void) { return getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg"; }

const char *km_test_sub(const char *name) {
    static char b[32][1024];
    static int k;
    char *p = b[k++ & 31];
    snprintf(p, sizeof b[0], "%s/%s", km_test_tmpdir(), name);
    return p;
}

char *km_test_slurp(const char *path) {
    uint8_t *txt = NULL;
    size_t n = 0;
    if (km_read_file(path, (size_t)1 << 20, &txt, &n) != KM_OK) {
        km_err_clear();
        return NULL;
    }
    char *s = km_malloc(n + 1);
    if (n) memcpy(s, txt, n);
    s[n] = 0;
    km_free(txt);
    return s;
}

int km_test_kmseg(char **output, const char *args) {
    const char *log = km_test_sub("cli_out.txt");
    int rc = km_test_sh("'%s' %s > '%s' 2>&1", km_test_bin(), args, log);
    *output = km_test_slurp(log);
    if (!*output) *output = km_strdup("");
    return rc;
}

void km_test_cli_expect_fail(const char *file, int line, const char *args, const char *needle) {
    char *o = NULL;
    int rc = km_test_kmseg(&o, args);
    if (rc == 0) km_test_fail(file, line, "kmseg %s: exit 0, expected failure", args);
    if (!strstr(o, needle)) km_test_fail(file, line, "kmseg %s: output '%s' lacks '%s'", args, o, needle);
    printf("    kmseg %.60s... -> exit %d: %s", args, rc, o);
    km_free(o);
}

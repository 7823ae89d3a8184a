/* test_experiments_knobs.c - knobs chosen on the validation split (issue 11
 * point 6): `kmseg experiments --knobs` (the teacher's gain per box rule on
 * each finished supervised run's val split) on a tiny grid against
 * `kmseg teacher-quality` run by hand, knobs.md from hand-made CSVs,
 * --pseudo-weights (runs appended, weight chosen on val Dice) and the
 * "+start-competes" rows, by hand from fake run folders and on a tiny grid. */
#include "cli.h"
#include "test.h"
#include "../src/cmd/experiments_knobs.h"
#include "../src/io/json.h"
#include "../src/report/page.h"

#include <stdlib.h>
#include <sys/stat.h>

static const char *k_tiny = "--size 32 --resnet 18 --epochs 1 --mine-epochs 1 --max-images 12 --val-fraction 0.25 "
                            "--test-fraction 0.25 --batch 3 --threads 1 --no-cache";

/* Number `key` of a JSON file, NaN when absent. */
static double json_num(const char *path, const char *key) {
    char *t = km_test_slurp(path);
    double v = NAN;
    km_json j;
    if (t && km_json_parse(path, t, strlen(t), &j) == KM_OK) {
        const km_json *x = km_json_get(&j, key);
        if (x && x->type == KM_JSON_NUM) v = x->num;
        km_json_free(&j);
    }
    km_free(t);
    return v;
}

/* Field k of the second line (the one data row) of a knobs CSV, as a number. */
static double row_num(const char *path, int k) {
    char *t = km_test_slurp(path);
    if (!t) return NAN;
    const char *l = strchr(t, '\n');
    for (int i = 0; l && i < k; i++) l = strchr(l + 1, ',');
    double v = l ? strtod(l + 1, NULL) : NAN;
    km_free(t);
    return v;
}

static int count_lines(const char *path) {
    char *t = km_test_slurp(path);
    int n = 0;
    for (const char *p = t; p && *p; p++) n += *p == '\n';
    km_free(t);
    return n;
}

/* --knobs on a tiny supervised grid (sam_tiny teacher, random weights:
 * plumbing and bookkeeping): every run x rule is teacher-quality on the val
 * split with the run's checkpoint (the same numbers as the command run by
 * hand), knobs.md holds the mean ± std over the two seeds, a rerun measures
 * nothing, and the test split is never touched. */
KM_TEST(experiments_knobs_tiny_grid_matches_teacher_quality) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], common[4096], args[8192], p[2048];
    snprintf(dir, sizeof dir, "%s/kn", km_test_tmpdir());
    snprintf(common, sizeof common, "--out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 0.5 --methods supervised "
             "--seeds 0,1 %s", dir, kv, sam, k_tiny);
    char *o = NULL;
    snprintf(args, sizeof args, "experiments %s --knobs", common);
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "0 finished supervised run(s)"), "--knobs before any run: exit %d: %s", rc, o);
    km_free(o);
    snprintf(args, sizeof args, "experiments %s", common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "2 runs: 2 ran"), "grid: exit %d: %s", rc, o);
    km_free(o);
    snprintf(args, sizeof args, "experiments %s --knobs", common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "[knobs 6/6] kvasir/0.5/supervised/seed1 per-component: 3 val images") &&
              strstr(o, "6 measured now, 0 earlier"), "--knobs: exit %d: %s", rc, o);
    km_free(o);

    /* seed 0, rule all, by hand: kmseg teacher-quality on the val split */
    const char *run0 = km_test_sub("kn/kvasir/0.5/supervised/seed0");
    char tq[1024];
    snprintf(tq, sizeof tq, "%s/tq", km_test_tmpdir());
    rc = km_test_sh("'%s' teacher-quality --data '%s' --out '%s' --prompts student --weights '%s/best.safetensors' "
                    "--split val --split-dir '%s/splits' --box-rule all --teacher '%s' --no-cache --threads 1 --quiet "
                    "> '%s.log' 2>&1", km_test_bin(), kv, tq, run0, run0, sam, tq);
    CHECK_MSG(rc == 0, "teacher-quality: exit %d", rc);
    snprintf(p, sizeof p, "%s/summary.json", tq);
    double st = json_num(p, "student_mean_dice_crop"), te = json_num(p, "teacher_mean_dice_crop");
    char csv[2048];
    snprintf(csv, sizeof csv, "%s/knobs/kvasir/0.5/supervised/seed0/all.csv", dir);
    printf("    seed0 all: teacher %.6f (by hand %.6f), student %.6f (by hand %.6f), gain %+.6f\n", row_num(csv, 6), te,
           row_num(csv, 7), st, row_num(csv, 8));
    CHECK(isfinite(st) && isfinite(te));
    CHECK_NEAR(row_num(csv, 6), te, 1e-8);
    CHECK_NEAR(row_num(csv, 7), st, 1e-8);
    CHECK_NEAR(row_num(csv, 8), te - st, 1e-8);
    CHECK_NEAR(row_num(csv, 9), json_num(p, "no_box"), 0);
    snprintf(p, sizeof p, "%s/splits/val.txt", run0);
    CHECK(row_num(csv, 5) == count_lines(p) && count_lines(p) == 3);

    /* knobs.md: mean ± sample std over the two seeds of each rule's CSVs */
    static const char *const rules[3] = {"all", "largest", "per-component"};
    snprintf(p, sizeof p, "%s/knobs.md", dir);
    char *md = km_test_slurp(p);
    CHECK(md && strstr(md, "## kvasir, 0.5 labelled, supervised"));
    int best = -1;
    double bestg = -1e9;
    for (int r = 0; r < 3 && md; r++) {
        double v[2][4];
        for (int k = 0; k < 2; k++) {
            snprintf(csv, sizeof csv, "%s/knobs/kvasir/0.5/supervised/seed%d/%s.csv", dir, k, rules[r]);
            for (int c = 0; c < 4; c++) v[k][c] = row_num(csv, 6 + c);
        }
        char row[512], cells[3][64];
        for (int c = 0; c < 3; c++) {
            double m = (v[0][c] + v[1][c]) / 2, sd = fabs(v[0][c] - v[1][c]) / sqrt(2.0);
            snprintf(cells[c], sizeof cells[c], c == 2 ? "%+.4f ± %.4f" : "%.4f ± %.4f", m, sd);
            if (c == 2 && m > bestg) bestg = m, best = r;
        }
        snprintf(row, sizeof row, "| %s | 2 | 3 | %s | %s | %s | %.1f |", rules[r], cells[0], cells[1], cells[2],
                 (v[0][3] + v[1][3]) / 2);
        CHECK_MSG(md && strstr(md, row) != NULL, "knobs.md lacks '%s':\n%s", row, md ? md : "(no file)");
    }
    char chosen[128];
    snprintf(chosen, sizeof chosen, "| %s | 2 | 3 |", best >= 0 ? rules[best] : "(none)");
    const char *at = md ? strstr(md, chosen) : NULL;
    CHECK(at && strstr(at, "**chosen**") && strstr(at, "**chosen**") < strchr(at, '\n') + 1);
    CHECK(md && strstr(md, "use the box rule per-component"));
    km_free(md);

    /* rerun: nothing measured again; the test split's files were never made */
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "0 measured now, 6 earlier") && strstr(o, "skipped (measured earlier)"),
              "rerun: exit %d: %s", rc, o);
    km_free(o);
    /* the images scored are exactly the val split's */
    CHECK(km_test_sh("cd '%s' && tail -n +2 '%s/knobs/kvasir/0.5/supervised/seed0/largest/per_image.csv' | cut -d, -f1 "
                     "| sort > ids.txt && sort '%s/splits/val.txt' | cmp -s - ids.txt", km_test_tmpdir(), dir, run0) == 0);
    snprintf(args, sizeof args, "experiments %s --knobs --collect", common);
    KM_CLI_EXPECT_FAIL(args, "exclude each other");
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void write_csv(const char *dir, const char *group, int seed, const char *rule, const char *row) {
    char p[2048];
    snprintf(p, sizeof p, "mkdir -p '%s/knobs/%s/seed%d'", dir, group, seed);
    CHECK(km_test_sh("%s", p) == 0);
    snprintf(p, sizeof p, "%s/knobs/%s/seed%d/%s.csv", dir, group, seed, rule);
    char t[1024];
    snprintf(t, sizeof t, "dataset,fraction,method,seed,box_rule,n_val,teacher_dice,student_dice,gain,no_box,"
             "empty_teacher,teacher_dice_orig,seconds\n%s\n", row);
    write_text(p, t);
}

/* knobs.md from hand-made CSVs; every number below computed by hand. */
KM_TEST(experiments_knobs_md_hand_computed) {
    const char *dir = km_test_tmpdir();
    const char *g = "kvasir/0.1/supervised";
    write_csv(dir, g, 0, "all", "kvasir,0.1,supervised,0,all,100,0.50,0.55,-0.05,5,0,0.5,1");
    write_csv(dir, g, 1, "all", "kvasir,0.1,supervised,1,all,100,0.60,0.50,0.10,4,0,0.5,1");
    write_csv(dir, g, 2, "all", "kvasir,0.1,supervised,2,all,100,0.70,0.65,0.05,6,0,0.5,1");
    write_csv(dir, g, 0, "largest", "kvasir,0.1,supervised,0,largest,100,0.52,0.50,0.02,0,0,0.5,1");
    write_csv(dir, g, 1, "largest", "kvasir,0.1,supervised,1,largest,100,0.53,0.50,0.03,1,0,0.5,1");
    write_csv(dir, g, 2, "largest", "kvasir,0.1,supervised,2,largest,100,0.54,0.50,0.04,2,0,0.5,1");
    write_csv(dir, g, 0, "per-component", "kvasir,0.1,supervised,0,per-component,100,0.61,0.55,0.06,3,0,0.5,1");
    write_csv(dir, g, 1, "per-component", "kvasir,0.1,supervised,1,per-component,100,0.57,0.55,0.02,4,0,0.5,1");
    write_csv(dir, "covid/0.1/supervised", 0, "all", "covid,0.1,supervised,0,all,186,0.90,0.89,0.01,0,0,0.9,1");
    write_csv(dir, "covid/0.1/supervised", 0, "largest", "covid,0.1,supervised,0,largest,186,0.87,0.89,-0.02,1,0,0.9,1");
    km_knobs_run runs[4] = {{"kvasir", "/x", "0.1", "supervised", 0, "/r0"},
                            {"kvasir", "/x", "0.1", "supervised", 1, "/r1"},
                            {"kvasir", "/x", "0.1", "supervised", 2, "/r2"},
                            {"covid", "/y", "0.1", "supervised", 0, "/r3"}};
    CHECK_OK(km_knobs_write_md(dir, runs, 4, "per-component"));
    char p[2048];
    snprintf(p, sizeof p, "%s/knobs.md", dir);
    char *md = km_test_slurp(p);
    static const char *const want[] = {
        "## kvasir, 0.1 labelled, supervised\n",
        /* gain: mean of (-0.05, 0.10, 0.05) = 0.0333, std sqrt(0.011667 / 2) = 0.0764 */
        "| all | 3 | 100 | 0.6000 ± 0.1000 | 0.5667 ± 0.0764 | +0.0333 ± 0.0764 | 5.0 |  |\n",
        "| largest | 3 | 100 | 0.5300 ± 0.0100 | 0.5000 ± 0.0000 | +0.0300 ± 0.0100 | 1.0 |  |\n",
        /* two seeds: std |0.06 - 0.02| / sqrt(2) = 0.0283; the highest mean gain */
        "| per-component | 2 | 100 | 0.5900 ± 0.0283 | 0.5500 ± 0.0000 | +0.0400 ± 0.0283 | 3.5 | **chosen** |\n",
        "## covid, 0.1 labelled, supervised\n",
        "| all | 1 | 186 | 0.9000 (n=1) | 0.8900 (n=1) | +0.0100 (n=1) | 0.0 | **chosen** |\n",
        "| largest | 1 | 186 | 0.8700 (n=1) | 0.8900 (n=1) | -0.0200 (n=1) | 1.0 |  |\n",
        "| per-component | 0 | - | - | - | - | - |  |\n",
        "2 run x rule measurement(s) not made yet"};
    const char *at = md;
    for (size_t i = 0; i < sizeof want / sizeof want[0] && md; i++) {
        const char *q = at ? strstr(at, want[i]) : NULL;
        CHECK_MSG(q != NULL, "knobs.md lacks (in order) '%s':\n%s", want[i], md);
        if (q) at = q;
    }
    km_free(md);
    /* a CSV with a missing column is an error naming the file */
    write_csv(dir, "covid/0.1/supervised", 0, "per-component", "covid,0.1");
    snprintf(p, sizeof p, "%s/knobs/covid/0.1/supervised/seed0/per-component.csv", dir);
    km_status s = km_knobs_write_md(dir, runs, 4, "per-component");
    CHECK(s != KM_OK && strstr(km_errmsg(), "per-component.csv"));
    km_err_clear();
}

/* A fake finished run: eval/summary.json and metrics.csv (epoch, val_loss,
 * val_dice: "e:loss:dice" triples). */
static void fake_run(const char *dir, const char *rel, double dice, const char *epochs) {
    char p[2048], t[2048];
    CHECK(km_test_sh("mkdir -p '%s/%s/eval'", dir, rel) == 0);
    snprintf(p, sizeof p, "%s/%s/eval/summary.json", dir, rel);
    snprintf(t, sizeof t, "{\"mean_dice\": %.17g, \"mean_iou\": %.17g, \"n\": 3}\n", dice, dice - 0.1);
    write_text(p, t);
    int n = snprintf(t, sizeof t, "epoch,val_loss,val_dice\n");
    for (const char *e = epochs; *e;) {
        int ep, used = 0;
        double l, d;
        if (sscanf(e, "%d:%lf:%lf%n", &ep, &l, &d, &used) != 3) break;
        n += snprintf(t + n, sizeof t - n, "%d,%.17g,%.17g\n", ep, l, d);
        e += used;
        while (*e == ' ') e++;
    }
    snprintf(p, sizeof p, "%s/%s/metrics.csv", dir, rel);
    write_text(p, t);
}

/* --collect on fake runs: --pseudo-weights 0.5,0.25 picks the weight by the
 * mean best-epoch val Dice (lowest val loss, not the highest Dice), the
 * onetime row then shows that weight's test Dice, and onetime+start-competes
 * takes per seed the supervised run unless the mining run's best val loss is
 * strictly lower. */
KM_TEST(experiments_collect_weights_and_start_competes_hand_computed) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], args[4096], p[2048];
    snprintf(dir, sizeof dir, "%s/fake", km_test_tmpdir());
    /* supervised: best val loss 0.40 (epoch 2), 0.42, 0.38 */
    fake_run(dir, "kvasir/0.5/supervised/seed0", 0.60, "1:0.50:0.55 2:0.40:0.58 3:0.45:0.70");
    fake_run(dir, "kvasir/0.5/supervised/seed1", 0.62, "1:0.42:0.50 2:0.43:0.60");
    fake_run(dir, "kvasir/0.5/supervised/seed2", 0.58, "1:0.38:0.50");
    /* weight 0.5: best-epoch val Dice 0.61, 0.70, 0.40 (mean 0.57; epoch 2 of seed 1 has Dice 0.99, not best) */
    fake_run(dir, "kvasir/0.5/onetime/seed0", 0.65, "1:0.39:0.60 2:0.37:0.61");
    fake_run(dir, "kvasir/0.5/onetime/seed1", 0.66, "1:0.45:0.70 2:0.50:0.99");
    fake_run(dir, "kvasir/0.5/onetime/seed2", 0.57, "1:0.36:0.59 2:0.35:0.40");
    /* weight 0.25: val Dice 0.66, 0.64, 0.62 (mean 0.64: chosen); best val loss 0.39 < 0.40, 0.44 >= 0.42,
     * 0.38 = 0.38 */
    fake_run(dir, "kvasir/0.5/onetime@w0.25/seed0", 0.70, "1:0.41:0.65 2:0.39:0.66");
    fake_run(dir, "kvasir/0.5/onetime@w0.25/seed1", 0.50, "1:0.44:0.64");
    fake_run(dir, "kvasir/0.5/onetime@w0.25/seed2", 0.68, "1:0.38:0.62 2:0.50:0.99");
    snprintf(args, sizeof args, "experiments --out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 0.5 "
             "--methods supervised,onetime --seeds 0,1,2 --pseudo-weights 0.5,0.25 --collect", dir, kv, sam);
    char *o = NULL;
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "collected 9 finished run(s) of 9"), "--collect: exit %d: %s", rc, o);
    km_free(o);
    snprintf(p, sizeof p, "%s/tables.md", dir);
    char *md = km_test_slurp(p);
    char want[6][256];
    /* onetime = weight 0.25's test Dice (0.70, 0.50, 0.68): mean 0.6267, std 0.1102 */
    snprintf(want[0], 256, "| onetime | %.4f ± %.4f |", (0.70 + 0.50 + 0.68) / 3, 0.110151410);
    /* start competes: 0.70 (mining), 0.62, 0.58 (supervised): mean 0.6333, std 0.0611 */
    snprintf(want[1], 256, "| onetime+start-competes | %.4f ± %.4f |", (0.70 + 0.62 + 0.58) / 3, 0.0611010093);
    snprintf(want[2], 256, "| supervised | 0.6000 ± 0.0200 |");
    snprintf(want[3], 256, "| kvasir | 50%% | onetime | 0.5 | 3 | 0.5700 ± 0.1539 |  |");
    snprintf(want[4], 256, "| kvasir | 50%% | onetime | 0.25 | 3 | 0.6400 ± 0.0200 | **chosen** |");
    snprintf(want[5], 256, "| onetime+start-competes | %.4f ± %.4f |", (0.60 + 0.52 + 0.48) / 3, 0.0611010093);
    for (int i = 0; i < 6; i++) CHECK_MSG(md && strstr(md, want[i]), "tables.md lacks '%s':\n%s", want[i], md);
    CHECK(md && strstr(md, "chosen on the validation split"));
    km_free(md);
    /* results.csv: the rows name the runs they took */
    snprintf(p, sizeof p, "%s/results.csv", dir);
    char *csv = km_test_slurp(p);
    static const char *const rows[] = {"run,kvasir,0.5,onetime,0,1,3,0.7,,0.6,,%s/kvasir/0.5/onetime@w0.25/seed0\n",
                                       "run,kvasir,0.5,onetime+start-competes,0,1,3,0.7,,0.6,,%s/kvasir/0.5/onetime@w0.25/seed0\n",
                                       "run,kvasir,0.5,onetime+start-competes,1,1,3,0.62,,0.52,,%s/kvasir/0.5/supervised/seed1\n",
                                       "run,kvasir,0.5,onetime+start-competes,2,1,3,0.58,,0.48,,%s/kvasir/0.5/supervised/seed2\n"};
    for (int i = 0; i < 4; i++) {
        char r[1024];
        snprintf(r, sizeof r, rows[i], dir);
        CHECK_MSG(csv && strstr(csv, r), "results.csv lacks '%s':\n%s", r, csv);
    }
    km_free(csv);
    /* the report's run folder of a row is the one its run_dir names, also
     * after the experiments folder moved (the chosen weight's, not the method's) */
    CHECK(km_test_sh("mv '%s' '%s2'", dir, dir) == 0);
    char moved[1100], old[1100];
    snprintf(moved, sizeof moved, "%s2", dir);
    snprintf(old, sizeof old, "%s/kvasir/0.5/onetime@w0.25/seed0", dir);
    char *rf = km_page_run_folder(moved, "kvasir", "0.5", "onetime", "0", old);
    snprintf(p, sizeof p, "%s/kvasir/0.5/onetime@w0.25/seed0", moved);
    CHECK_MSG(!strcmp(rf, p), "run folder %s, expected %s", rf, p);
    km_free(rf);
    rf = km_page_run_folder(moved, "kvasir", "0.5", "onetime", "0", "");
    snprintf(p, sizeof p, "%s/kvasir/0.5/onetime/seed0", moved);
    CHECK_MSG(!strcmp(rf, p), "run folder %s, expected %s", rf, p);
    km_free(rf);
    CHECK(km_test_sh("mv '%s2' '%s'", dir, dir) == 0);
    /* mining.md leaves the derived rows out; the grid report shows them */
    snprintf(p, sizeof p, "%s/mining.md", dir);
    md = km_test_slurp(p);
    CHECK(md && strstr(md, "onetime") && !strstr(md, "start-competes"));
    km_free(md);
}

/* --pseudo-weights on a tiny real grid: the variant runs come after the
 * existing ones (indices unchanged), are mined with their weight, and the
 * tables show the weight with the higher val Dice. */
KM_TEST(experiments_pseudo_weights_tiny_grid) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], common[4096], args[8192], p[2048];
    snprintf(dir, sizeof dir, "%s/pw", km_test_tmpdir());
    snprintf(common, sizeof common, "--out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 0.5 "
             "--methods supervised,onetime --seeds 0 %s", dir, kv, sam, k_tiny);
    char *o = NULL;
    snprintf(args, sizeof args, "experiments %s --pseudo-weights 0.25,0.5 --list-runs", common);
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "0\tsupervised\tkvasir/0.5/supervised/seed0\t-\n") &&
              strstr(o, "1\tmining\tkvasir/0.5/onetime/seed0\t0\n") &&
              strstr(o, "2\tmining\tkvasir/0.5/onetime@w0.25/seed0\t0\n") && !strstr(o, "\n3\t"),
              "--list-runs: exit %d: %s", rc, o);
    km_free(o);
    snprintf(args, sizeof args, "experiments %s --pseudo-weights 0.25,x", common);
    KM_CLI_EXPECT_FAIL(args, "--pseudo-weights: 'x'");
    snprintf(args, sizeof args, "experiments %s --pseudo-weights 0.25,0.5", common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "3 runs: 3 ran"), "grid: exit %d: %s", rc, o);
    km_free(o);
    const char *var[2] = {"onetime", "onetime@w0.25"}, *w[2] = {"0.5", "0.25"};
    double vd[2], td[2];
    for (int v = 0; v < 2; v++) {
        snprintf(p, sizeof p, "%s/kvasir/0.5/%s/seed0/mine_config.json", dir, var[v]);
        CHECK_NEAR(json_num(p, "pseudo_weight"), atof(w[v]), 0);
        char rd[1800];
        snprintf(rd, sizeof rd, "%s/kvasir/0.5/%s/seed0", dir, var[v]);
        double loss;
        int found;
        CHECK_OK(km_best_val_epoch(rd, &loss, &vd[v], &found));
        CHECK(found);
        snprintf(p, sizeof p, "%s/eval/summary.json", rd);
        td[v] = json_num(p, "mean_dice");
    }
    int c = vd[1] > vd[0];
    printf("    val Dice: weight 0.5 %.4f, 0.25 %.4f -> %s; its test Dice %.4f\n", vd[0], vd[1], w[c], td[c]);
    snprintf(p, sizeof p, "%s/tables.md", dir);
    char *md = km_test_slurp(p), row[256];
    snprintf(row, sizeof row, "| onetime | %.4f (n=1) |", td[c]);
    CHECK_MSG(md && strstr(md, row), "tables.md lacks '%s':\n%s", row, md ? md : "(no file)");
    snprintf(row, sizeof row, "| kvasir | 50%% | onetime | %s | 1 | %.4f (n=1) | **chosen** |", w[c], vd[c]);
    CHECK_MSG(md && strstr(md, row), "tables.md lacks '%s':\n%s", row, md ? md : "(no file)");
    km_free(md);
}

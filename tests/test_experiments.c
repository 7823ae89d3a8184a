/* test_experiments.c - `kmseg experiments` end to end on a tiny grid: 12 real
 * Kvasir images (6 train / 3 val / 3 test) at 32x32, ResNet18, 1 epoch,
 * fractions 1 and 0.5, methods supervised + onetime (sam_tiny teacher, random
 * weights: plumbing only), seeds 0 and 1. Checks the tables against a
 * recomputation from the per-run eval summaries, skipping on restart, the
 * restart (supervised) or resume (mining) of an interrupted run, the one-seed
 * table and bad inputs. */
#include "cli.h"
#include "test.h"
#include "../src/cmd/experiments_knobs.h"
#include "../src/io/json.h"

#include <stdlib.h>
#include <sys/stat.h>

static int summary(const char *run, double *dice, double *iou) {
    char p[2048];
    snprintf(p, sizeof p, "%s/eval/summary.json", run);
    char *t = km_test_slurp(p);
    if (!t) return 0;
    km_json j;
    int ok = km_json_parse(p, t, strlen(t), &j) == KM_OK;
    if (ok) {
        *dice = km_json_get(&j, "mean_dice")->num;
        *iou = km_json_get(&j, "mean_iou")->num;
        km_json_free(&j);
    }
    km_free(t);
    return ok;
}

/* Field k (0-based) of a CSV line without quoted fields, into buf. */
static const char *field(const char *line, int k, char *buf, size_t n) {
    for (int i = 0; i < k && line; i++) {
        line = strchr(line, ',');
        if (line) line++;
    }
    if (!line) return "";
    size_t len = strcspn(line, ",\n");
    if (len >= n) len = n - 1;
    memcpy(buf, line, len);
    buf[len] = 0;
    return buf;
}

static double mtime(const char *path) {
    struct stat st;
    if (stat(path, &st)) return -1;
    return (double)st.st_mtim.tv_sec + 1e-9 * st.st_mtim.tv_nsec;
}

KM_TEST(experiments_tiny_grid_tables_skip_restart) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], args[4096], p[2048];
    snprintf(dir, sizeof dir, "%s/exp", km_test_tmpdir());
    const char *knobs = "--size 32 --resnet 18 --epochs 1 --mine-epochs 1 --max-images 12 --val-fraction 0.25 "
                        "--test-fraction 0.25 --batch 3 --threads 1 --no-cache --box-rule all";
    snprintf(args, sizeof args, "experiments --out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 1,0.5 "
             "--methods supervised,onetime --seeds 0,1 %s", dir, kv, sam, knobs);
    char *o = NULL;
    double t0 = km_now();
    int rc = km_test_kmseg(&o, args);
    double t_first = km_now() - t0;
    CHECK_MSG(rc == 0, "first invocation: exit %d: %s", rc, o);
    CHECK_MSG(strstr(o, "8 runs: 8 ran, 0 skipped") != NULL, "first invocation output: %s", o);
    km_free(o);

    /* recompute mean +- sample std (ddof 1) over seeds from the run summaries;
     * row 2, onetime+start-competes: per seed the onetime run if its best val
     * loss is below its supervised run's, else the supervised run */
    const char *fr[2] = {"1", "0.5"}, *me[3] = {"supervised", "onetime", "onetime+start-competes"};
    double mean[2][3][2], sd[2][3][2], runv[2][3][2][2]; /* [f][m][dice|iou] ([seed]) */
    for (int f = 0; f < 2; f++)
        for (int m = 0; m < 3; m++) {
            for (int s = 0; s < 2; s++) {
                double vl[2], vd;
                int found[2] = {0, 0};
                for (int k = 0; k < 2 && m == 2; k++) {
                    snprintf(p, sizeof p, "%s/kvasir/%s/%s/seed%d", dir, fr[f], me[k], s);
                    CHECK_OK(km_best_val_epoch(p, &vl[k], &vd, &found[k]));
                    CHECK(found[k]);
                }
                const char *from = m < 2 ? me[m] : vl[1] < vl[0] ? "onetime" : "supervised";
                if (m == 2) printf("    %s seed%d: best val loss supervised %.6f, onetime %.6f -> %s\n", fr[f], s, vl[0], vl[1], from);
                snprintf(p, sizeof p, "%s/kvasir/%s/%s/seed%d", dir, fr[f], from, s);
                CHECK_MSG(summary(p, &runv[f][m][0][s], &runv[f][m][1][s]), "%s: no eval summary", p);
                snprintf(p, sizeof p, "%s/kvasir/%s/%s/seed%d/best.safetensors", dir, fr[f], from, s);
                CHECK(mtime(p) > 0);
            }
            for (int k = 0; k < 2; k++) {
                double a = runv[f][m][k][0], b = runv[f][m][k][1];
                mean[f][m][k] = (a + b) / 2;
                sd[f][m][k] = sqrt(((a - mean[f][m][k]) * (a - mean[f][m][k]) + (b - mean[f][m][k]) * (b - mean[f][m][k])) / 1.0);
            }
        }

    /* results.csv: header, 8 run rows + 4 mean rows with the recomputed numbers */
    snprintf(p, sizeof p, "%s/results.csv", dir);
    char *csv = km_test_slurp(p);
    CHECK(csv != NULL);
    if (csv) {
        CHECK(!strncmp(csv, "kind,dataset,fraction,method,seed,n_seeds,n_test,dice_mean,dice_std,iou_mean,iou_std,run_dir\n",
                       strlen("kind,dataset,fraction,method,seed,n_seeds,n_test,dice_mean,dice_std,iou_mean,iou_std,run_dir\n")));
        int nrun = 0, nmean = 0;
        char b[6][256];
        for (char *save = NULL, *l = strtok_r(csv, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            const char *kind = field(l, 0, b[0], 256);
            if (!strcmp(kind, "kind")) continue;
            CHECK(!strcmp(field(l, 1, b[1], 256), "kvasir"));
            int f = !strcmp(field(l, 2, b[2], 256), "1") ? 0 : !strcmp(b[2], "0.5") ? 1 : -1;
            int m = !strcmp(field(l, 3, b[3], 256), "supervised") ? 0 : !strcmp(b[3], "onetime") ? 1
                    : !strcmp(b[3], "onetime+start-competes") ? 2 : -1;
            CHECK_MSG(f >= 0 && m >= 0, "unexpected row %s", l);
            if (f < 0 || m < 0) continue;
            if (!strcmp(kind, "run")) {
                int s = atoi(field(l, 4, b[4], 256));
                CHECK(s == 0 || s == 1);
                if (s < 0 || s > 1) continue;
                nrun++;
                CHECK(atoi(field(l, 6, b[5], 256)) == 3); /* 3 test images */
                CHECK_NEAR(strtod(field(l, 7, b[5], 256), NULL), runv[f][m][0][s], 1e-8);
                CHECK_NEAR(strtod(field(l, 9, b[5], 256), NULL), runv[f][m][1][s], 1e-8);
            } else {
                CHECK(!strcmp(kind, "mean"));
                nmean++;
                CHECK(atoi(field(l, 5, b[5], 256)) == 2);
                CHECK_NEAR(strtod(field(l, 7, b[5], 256), NULL), mean[f][m][0], 1e-8);
                CHECK_NEAR(strtod(field(l, 8, b[5], 256), NULL), sd[f][m][0], 1e-8);
                CHECK_NEAR(strtod(field(l, 9, b[5], 256), NULL), mean[f][m][1], 1e-8);
                CHECK_NEAR(strtod(field(l, 10, b[5], 256), NULL), sd[f][m][1], 1e-8);
                printf("    %s %-10s Dice %.4f +- %.4f  IoU %.4f +- %.4f\n", fr[f], me[m], mean[f][m][0], sd[f][m][0],
                       mean[f][m][1], sd[f][m][1]);
            }
        }
        CHECK(nrun == 12);
        CHECK(nmean == 6);
        km_free(csv);
    }

    /* tables.md: Dice and IoU tables, columns 100% 50%, rows = method, cells "mean ± std" */
    snprintf(p, sizeof p, "%s/tables.md", dir);
    char *md = km_test_slurp(p);
    CHECK(md != NULL);
    if (md) {
        const char *dsec = strstr(md, "## kvasir - Dice"), *isec = strstr(md, "## kvasir - IoU");
        CHECK(dsec && isec && dsec < isec);
        CHECK(strstr(md, "| method | 100% | 50% |") != NULL);
        for (int k = 0; k < 2 && dsec && isec; k++)
            for (int m = 0; m < 3; m++) {
                char row[512];
                snprintf(row, sizeof row, "| %s | %.4f ± %.4f | %.4f ± %.4f |\n", me[m], mean[0][m][k], sd[0][m][k],
                         mean[1][m][k], sd[1][m][k]);
                const char *at = strstr(k ? isec : dsec, row);
                CHECK_MSG(at && (k || at < isec), "tables.md lacks row '%s' in the %s table:\n%s", row,
                          k ? "IoU" : "Dice", md);
            }
        km_free(md);
    }

    /* second invocation: everything skipped, no checkpoint touched */
    snprintf(p, sizeof p, "%s/kvasir/0.5/onetime/seed1/best.safetensors", dir);
    double mt = mtime(p);
    t0 = km_now();
    rc = km_test_kmseg(&o, args);
    double t_second = km_now() - t0;
    CHECK_MSG(rc == 0 && strstr(o, "8 runs: 0 ran, 8 skipped") != NULL, "second invocation: exit %d: %s", rc, o);
    CHECK(mtime(p) == mt);
    CHECK(t_second < t_first / 4);
    printf("    first invocation %.1f s, second (all skipped) %.2f s\n", t_first, t_second);
    km_free(o);

    /* interrupted runs (no eval/summary.json): a mining run is resumed in its
     * folder (kmseg mine --resume), a supervised one deleted and restarted
     * from scratch */
    CHECK(km_test_sh("rm '%s/kvasir/0.5/onetime/seed1/eval/summary.json' && touch '%s/kvasir/0.5/onetime/seed1/stray'",
                     dir, dir) == 0);
    CHECK(km_test_sh("rm '%s/kvasir/1/supervised/seed0/eval/summary.json' && touch '%s/kvasir/1/supervised/seed0/stray'",
                     dir, dir) == 0);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "8 runs: 2 ran, 6 skipped") != NULL && strstr(o, "restarting it from scratch") &&
              strstr(o, "interrupted mining run (no eval/summary.json), resuming it"),
              "restart: exit %d: %s", rc, o);
    snprintf(p, sizeof p, "%s/kvasir/0.5/onetime/seed1/stray", dir);
    CHECK(mtime(p) > 0);
    snprintf(p, sizeof p, "%s/kvasir/1/supervised/seed0/stray", dir);
    CHECK(mtime(p) < 0);
    double d1, i1;
    snprintf(p, sizeof p, "%s/kvasir/0.5/onetime/seed1", dir);
    CHECK(summary(p, &d1, &i1));
    CHECK_NEAR(d1, runv[1][1][0][1], 1e-12); /* deterministic: the same score again */
    snprintf(p, sizeof p, "%s/kvasir/1/supervised/seed0", dir);
    CHECK(summary(p, &d1, &i1));
    CHECK_NEAR(d1, runv[0][0][0][0], 1e-12);
    km_free(o);

    /* other knobs in the same folder: refused, finished runs are not reused with other settings */
    snprintf(args, sizeof args, "experiments --out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 1 "
             "--methods supervised --seeds 0 %s --epochs 2", dir, kv, sam, knobs);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc != 0 && strstr(o, "made with '--epochs 1', now '--epochs 2'"), "other knobs: exit %d: %s", rc, o);
    km_free(o);

    /* one seed: the tables show the mean and n=1 (all runs skipped) */
    snprintf(args, sizeof args, "experiments --out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 1,0.5 "
             "--methods supervised,onetime --seeds 0 %s", dir, kv, sam, knobs);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "4 runs: 0 ran, 4 skipped") != NULL, "one seed: exit %d: %s", rc, o);
    km_free(o);
    snprintf(p, sizeof p, "%s/tables.md", dir);
    md = km_test_slurp(p);
    if (md) {
        char row[512];
        snprintf(row, sizeof row, "| supervised | %.4f (n=1) | %.4f (n=1) |\n", runv[0][0][0][0], runv[1][0][0][0]);
        CHECK_MSG(strstr(md, row) != NULL, "tables.md lacks '%s':\n%s", row, md);
        km_free(md);
    }
}

KM_TEST(experiments_bad_inputs_fail_clearly) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    const char *t = km_test_tmpdir();
    char a[4096];
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s' --teacher '%s' --methods supervised,magic", t, kv, sam);
    KM_CLI_EXPECT_FAIL(a, "unknown method 'magic'");
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s/nowhere' --methods supervised", t, t);
    KM_CLI_EXPECT_FAIL(a, "nowhere: no such folder");
    snprintf(a, sizeof a, "experiments --out '%s/e' --data '%s' --methods supervised", t, kv);
    KM_CLI_EXPECT_FAIL(a, "expected name=path");
    /* no --teacher and no default teacher installed: says how to install it */
    char *saved = getenv("KMSEG_TEACHER") ? km_strdup(getenv("KMSEG_TEACHER")) : NULL;
    setenv("KMSEG_TEACHER", "/nonexistent/lite_medsam.pth", 1);
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s' --methods onetime", t, kv);
    KM_CLI_EXPECT_FAIL(a, "install-teacher.sh");
    if (saved) setenv("KMSEG_TEACHER", saved, 1);
    else unsetenv("KMSEG_TEACHER");
    km_free(saved);
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s' --teacher '%s/none.pth' --methods box", t, kv, t);
    KM_CLI_EXPECT_FAIL(a, "none.pth");
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s' --fractions 1,1.5 --methods supervised", t, kv);
    KM_CLI_EXPECT_FAIL(a, "'1.5'");
    snprintf(a, sizeof a, "experiments --out '%s/e' --data 'kvasir=%s' --seeds 0,x --methods supervised", t, kv);
    KM_CLI_EXPECT_FAIL(a, "--seeds");
    /* nothing was run or written by a rejected invocation */
    char p[1024];
    snprintf(p, sizeof p, "%s/e", t);
    struct stat st;
    CHECK(stat(p, &st) != 0);
}

/* --simclr and a prompt ablation: one SimCLR pretraining feeds the
 * simclr+supervised run's encoder; "box" is continuous mining with box prompts
 * from the supervised run of the same seed; supervised runs made only as
 * dependencies are left out of the tables. */
KM_TEST(experiments_simclr_variant_and_prompt_ablation) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], args[4096], p[2048];
    snprintf(dir, sizeof dir, "%s/exps", km_test_tmpdir());
    snprintf(args, sizeof args, "experiments --out '%s' --data 'kvasir=%s' --teacher '%s' --fractions 0.5 --methods box "
             "--simclr --seeds 0 --pretrain-epochs 1 --pretrain-batch 3 --size 32 --resnet 18 --epochs 1 --mine-epochs 1 "
             "--max-images 12 --val-fraction 0.25 --test-fraction 0.25 --batch 3 --threads 1 --no-cache --box-rule largest "
             "--encoder-depth 3 --decoder-channels 16,8,8", dir, kv, sam);
    char *o = NULL;
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "2 runs: 2 ran, 0 skipped (finished earlier); 2 supervised dependency run(s), 1 SimCLR pretraining(s)"),
              "exit %d: %s", rc, o);
    km_free(o);
    snprintf(p, sizeof p, "%s/kvasir/0.5/simclr+supervised/seed0/config.json", dir);
    char *cfg = km_test_slurp(p), want[2048];
    snprintf(want, sizeof want, "\"encoder_weights\": \"%s/kvasir/simclr/seed0/encoder.safetensors\"", dir);
    CHECK_MSG(cfg && strstr(cfg, want), "%s lacks %s", p, want);
    km_free(cfg);
    /* the model's shape reached pretrain, train and mine (mine_config.json holds train's settings) */
    static const char *const made[] = {"simclr/seed0/config.json", "0.5/simclr+supervised/seed0/config.json",
                                       "0.5/supervised/seed0/config.json", "0.5/box/seed0/mine_config.json"};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/kvasir/%s", dir, made[k]);
        CHECK_MSG(km_test_sh("grep -q '\"encoder_depth\": 3' '%s' && grep -q '\"decoder_channels\": \"16,8,8\"' "
                             "'%s'", p, p) == 0, "%s: no encoder_depth 3 / decoder_channels 16,8,8", p);
    }
    CHECK(km_test_sh("grep -qx -- '--encoder-depth 3' '%s/settings.txt' && grep -qx -- '--decoder-channels 16,8,8' "
                     "'%s/settings.txt'", dir, dir) == 0);
    const char *var[2] = {"", "simclr+"};
    for (int v = 0; v < 2; v++) {
        snprintf(p, sizeof p, "%s/kvasir/0.5/%sbox/seed0/mine_config.json", dir, var[v]);
        cfg = km_test_slurp(p);
        snprintf(want, sizeof want, "\"init\": \"%s/kvasir/0.5/%ssupervised/seed0/best.safetensors\"", dir, var[v]);
        CHECK_MSG(cfg && strstr(cfg, want) && strstr(cfg, "\"prompt_mode\": \"box\"") && strstr(cfg, "\"box_rule\": \"largest\"") &&
                  strstr(cfg, "\"schedule\": \"continuous\""), "%s: %s", p, cfg ? cfg : "(missing)");
        km_free(cfg);
    }
    snprintf(p, sizeof p, "%s/tables.md", dir);
    char *md = km_test_slurp(p);
    CHECK(md && strstr(md, "\n| box | ") && strstr(md, "\n| simclr+box | ") && !strstr(md, "supervised |"));
    km_free(md);

    /* an interrupted pretraining (no pretrain.done: encoder.safetensors is
     * written every epoch) is resumed, not taken as finished nor redone: here
     * it had finished, so the encoder keeps its bytes */
    CHECK(km_test_sh("test -f '%s/kvasir/simclr/seed0/pretrain.done' && "
                     "cp '%s/kvasir/simclr/seed0/encoder.safetensors' '%s/enc_before' && "
                     "rm '%s/kvasir/simclr/seed0/pretrain.done' '%s/kvasir/0.5/simclr+box/seed0/eval/summary.json' "
                     "'%s/kvasir/0.5/simclr+supervised/seed0/eval/summary.json'",
                     dir, dir, km_test_tmpdir(), dir, dir, dir) == 0);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "interrupted SimCLR pretraining (no pretrain.done), resuming it") &&
              strstr(o, "2 runs: 1 ran, 1 skipped"), "exit %d: %s", rc, o);
    km_free(o);
    CHECK(km_test_sh("test -f '%s/kvasir/simclr/seed0/pretrain.done' && "
                     "cmp -s '%s/kvasir/simclr/seed0/encoder.safetensors' '%s/enc_before'",
                     dir, dir, km_test_tmpdir()) == 0);
}

/* The grid as independent jobs (issue: beyond one machine, point 1):
 * --list-runs numbers the runs stage by stage; --run-index refuses a run
 * whose dependency has not finished; two shards run as parallel background
 * processes (plus a duplicate of one run racing them on its lock), then
 * --collect, give the same tables and the same per-run checkpoints as the
 * serial grid (at 64 px with the depth-3 student: seconds per run). */
KM_TEST(experiments_shards_and_collect_equal_serial_grid) {
    const char *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    const char *t = km_test_tmpdir();
    char common[4096], args[8192], p[2048];
    snprintf(common, sizeof common, "--data 'kvasir=%s' --teacher '%s' --fractions 0.5 --methods supervised,onetime "
             "--seeds 0,1 --size 64 --resnet 18 --encoder-depth 3 --decoder-channels 16,8,8 --epochs 1 --mine-epochs 1 "
             "--max-images 12 --val-fraction 0.25 --test-fraction 0.25 --batch 3 --threads 1 --no-cache", kv, sam);
    char *o = NULL;
    snprintf(args, sizeof args, "experiments --out '%s/ser' %s --list-runs", t, common);
    int rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "0\tsupervised\tkvasir/0.5/supervised/seed0\t-\n") &&
              strstr(o, "1\tsupervised\tkvasir/0.5/supervised/seed1\t-\n") &&
              strstr(o, "2\tmining\tkvasir/0.5/onetime/seed0\t0\n") && strstr(o, "3\tmining\tkvasir/0.5/onetime/seed1\t1\n") &&
              strstr(o, "# stage supervised: --array=0-1\n") && strstr(o, "# stage mining: --array=2-3\n"),
              "--list-runs: exit %d: %s", rc, o);
    km_free(o);
    snprintf(args, sizeof args, "experiments --out '%s/ser' %s --run-index 2", t, common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc != 0 && strstr(o, "run 2 (kvasir/0.5/onetime/seed0) waits for run 0 (kvasir/0.5/supervised/seed0"),
              "--run-index before its dependency: exit %d: %s", rc, o);
    km_free(o);
    snprintf(args, sizeof args, "experiments --out '%s/ser' %s --run-index 9", t, common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc != 0 && strstr(o, "the grid has 4 runs"), "--run-index 9: exit %d: %s", rc, o);
    km_free(o);

    snprintf(args, sizeof args, "experiments --out '%s/ser' %s", t, common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "4 runs: 4 ran, 0 skipped"), "serial grid: exit %d: %s", rc, o);
    km_free(o);

    /* three shards and a duplicate of run 1, in parallel: shard 0/3 runs 0
     * and 3, 1/3 runs 1, 2/3 runs 2, which waits for run 0 (shard 0's: it
     * runs it itself or waits on its lock); the duplicate --run-index 1 races
     * shard 1 for run 1's lock */
    rc = km_test_sh("B='%s'; T='%s'; "
                    "\"$B\" experiments --out \"$T/par\" %s --shard 0/3 > \"$T/s0.txt\" 2>&1 & p0=$!; "
                    "\"$B\" experiments --out \"$T/par\" %s --shard 1/3 > \"$T/s1.txt\" 2>&1 & p1=$!; "
                    "\"$B\" experiments --out \"$T/par\" %s --shard 2/3 > \"$T/s2.txt\" 2>&1 & p2=$!; "
                    "\"$B\" experiments --out \"$T/par\" %s --run-index 1 > \"$T/s3.txt\" 2>&1 & p3=$!; "
                    "wait $p0 && wait $p1 && wait $p2 && wait $p3",
                    km_test_bin(), t, common, common, common, common);
    CHECK_MSG(rc == 0, "parallel shards failed: exit %d", rc);
    snprintf(args, sizeof args, "experiments --out '%s/par' %s --collect", t, common);
    rc = km_test_kmseg(&o, args);
    CHECK_MSG(rc == 0 && strstr(o, "collected 4 finished run(s) of 4; 0 not finished"), "--collect: exit %d: %s", rc, o);
    km_free(o);
    /* every run trained exactly once (the racing duplicate waited, then found it finished) */
    CHECK(km_test_sh("cd '%s' && test $(cat s0.txt s1.txt s2.txt s3.txt | grep -c ': running -> ') -eq 4", t) == 0);
    const char *runs[4] = {"supervised/seed0", "supervised/seed1", "onetime/seed0", "onetime/seed1"};
    for (int i = 0; i < 4; i++) {
        CHECK_MSG(km_test_sh("cmp -s '%s/ser/kvasir/0.5/%s/best.safetensors' '%s/par/kvasir/0.5/%s/best.safetensors'", t,
                             runs[i], t, runs[i]) == 0, "%s: checkpoints differ between serial and sharded grids", runs[i]);
        CHECK_MSG(km_test_sh("cmp -s '%s/ser/kvasir/0.5/%s/eval/per_image.csv' '%s/par/kvasir/0.5/%s/eval/per_image.csv'",
                             t, runs[i], t, runs[i]) == 0, "%s: per-image scores differ", runs[i]);
    }
    snprintf(p, sizeof p, "%s/ser/tables.md", t);
    char *a = km_test_slurp(p);
    snprintf(p, sizeof p, "%s/par/tables.md", t);
    char *b = km_test_slurp(p);
    CHECK_MSG(a && b && !strcmp(a, b), "tables differ:\n%s\n---\n%s", a ? a : "", b ? b : "");
    km_free(a);
    km_free(b);
}

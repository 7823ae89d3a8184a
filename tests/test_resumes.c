/* test_resumes.c - resumes recorded in the run folder (runfolder.h,
 * resumes.csv) and marked by `kmseg report`: a training run stopped after
 * epoch 1 and resumed records exactly one resume, after epoch 1, ends with
 * the uninterrupted run's bytes, and its page marks that epoch on every
 * curve (a dashed rule with its label, and a row of each chart's data
 * table); the uninterrupted run has no record and no mark. A pretraining run
 * and a mining run record their resumes the same way; a mining folder's
 * marks sit on the joined epoch axis (supervised epochs, then mining
 * epochs). */
#include "cli.h"
#include "test.h"

#include <string.h>

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay ? strstr(hay, needle) : NULL; p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* "resumed_after_epoch,utc\n" then rows "E,YYYY-MM-DDTHH:MM:SSZ": the epochs
 * into e (at most 8); -1 when the file is not that. */
static int read_resumes(const char *path, int *e) {
    char *t = km_test_slurp(path);
    if (!t) return 0; /* no file: no resume */
    int n = -1;
    if (!strncmp(t, "resumed_after_epoch,utc\n", 24)) {
        n = 0;
        for (char *p = t + 24; *p && n >= 0; p = strchr(p, '\n') + 1) {
            int y, mo, d, h, mi, s;
            char z;
            if (n == 8 || sscanf(p, "%d,%4d-%2d-%2dT%2d:%2d:%2d%c", &e[n], &y, &mo, &d, &h, &mi, &s, &z) != 8 ||
                z != 'Z' || y < 2024 || !strchr(p, '\n'))
                n = -1;
            else
                n++;
        }
    }
    km_free(t);
    return n;
}

#define TRAIN_ARGS "--max-images 10 --val-fraction 0.2 --test-fraction 0.2 --size 32 --resnet 18 --batch 2 " \
                   "--epochs 3 --seed 2 --threads 1 --quiet"

KM_TEST(resume_recorded_and_marked_in_report) {
    const char *data = km_test_path("data/kvasir-seg"), *a = km_test_sub("rs_full"), *b = km_test_sub("rs_killed");
    CHECK(km_test_sh("'%s' train --data '%s' --out '%s' " TRAIN_ARGS, km_test_bin(), data, a) == 0);
    CHECK(km_test_sh("'%s' train --data '%s' --out '%s' " TRAIN_ARGS " --stop-after 1", km_test_bin(), data, b) == 0);
    char p[1200], q[1200];
    int e[8];
    snprintf(p, sizeof p, "%s/resumes.csv", b);
    CHECK(read_resumes(p, e) == 0); /* stopped, not yet resumed */
    CHECK(km_test_sh("'%s' train --resume '%s' --quiet", km_test_bin(), b) == 0);
    int n = read_resumes(p, e);
    printf("    resumes recorded: %d (after epoch %d)\n", n, n > 0 ? e[0] : -1);
    CHECK(n == 1 && e[0] == 1);
    snprintf(q, sizeof q, "%s/resumes.csv", a);
    CHECK(read_resumes(q, e) == 0);
    /* resuming the finished run trains nothing and records nothing */
    CHECK(km_test_sh("'%s' train --resume '%s' --quiet", km_test_bin(), b) == 0);
    CHECK(read_resumes(p, e) == 1 && e[0] == 1);
    /* the record changes no result */
    CHECK(km_test_sh("cmp -s '%s/last.safetensors' '%s/last.safetensors' && cmp -s '%s/best.safetensors' "
                     "'%s/best.safetensors'", a, b, a, b) == 0);
    CHECK(km_test_sh("cut -d, -f1-10 '%s/metrics.csv' > '%s.a' && cut -d, -f1-10 '%s/metrics.csv' > '%s.b' && "
                     "cmp -s '%s.a' '%s.b'", a, p, b, p, p, p) == 0);
    CHECK(km_test_sh("'%s' report '%s' --quiet && '%s' report '%s' --quiet", km_test_bin(), a, km_test_bin(), b) == 0);
    snprintf(p, sizeof p, "%s/report.html", a);
    snprintf(q, sizeof q, "%s/report.html", b);
    char *ha = km_test_slurp(p), *hb = km_test_slurp(q);
    CHECK(ha && hb);
    /* four curves per epoch (losses, Dice, learning rate, seconds): the mark
     * drawn on each (dashed line + label) and listed in each data table, at
     * epoch 1; the fifth chart (per-image Dice) has no epoch axis */
    int charts = count(hb, "<svg "), dashed = count(hb, "stroke-dasharray=\"3 3\"/><text");
    int drawn = count(hb, ">resumed after epoch 1</text>");
    int listed = count(hb, "<tr><td>resumed after epoch 1 (vertical rule)</td><td>1</td>");
    printf("    resumed run: %d charts, %d dashed rules, the mark drawn %d and listed %d times; uninterrupted run: %d "
           "marks, %d dashed rules\n", charts, dashed, drawn, listed, count(ha, "resumed after"),
           count(ha, "stroke-dasharray=\"3 3\"/><text"));
    CHECK(charts == 5 && drawn == 4 && listed == 4);
    CHECK(dashed == count(ha, "stroke-dasharray=\"3 3\"/><text") + 4); /* the best-epoch rules, + the resumes */
    CHECK(count(hb, "resumed after") == 9); /* + the header's list of resumes */
    CHECK(count(hb, "<th scope=\"row\">resumes</th><td>resumed after epoch 1 (20") == 1);
    CHECK(count(ha, "resumed after") == 0 && count(ha, "<th scope=\"row\">resumes</th><td>none") == 1);
    km_free(ha);
    km_free(hb);

    /* pretraining records its resume the same way */
    const char *pa = km_test_sub("rs_pre");
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s' --max-images 6 --size 32 --resnet 18 --batch 2 --epochs 2 "
                     "--threads 1 --quiet --stop-after 1 && '%s' pretrain --resume '%s' --quiet", km_test_bin(), data,
                     pa, km_test_bin(), pa) == 0);
    snprintf(p, sizeof p, "%s/resumes.csv", pa);
    CHECK(read_resumes(p, e) == 1 && e[0] == 1);

    /* and mining, from the trained student: stopped after mining epoch 1 of
     * 2, resumed; the page draws the mark after the 3 supervised epochs of
     * the --init's run folder */
    const char *m = km_test_sub("rs_mine_run");
    CHECK(km_test_sh("'%s' mine --data '%s' --out '%s' --init '%s/best.safetensors' --teacher '%s' --no-cache "
                     "--box-rule all --max-images 10 --val-fraction 0.2 --test-fraction 0.2 --size 32 --resnet 18 "
                     "--batch 2 --seed 2 --threads 1 --mine-epochs 2 --quiet --stop-after 1 && '%s' mine --resume '%s' "
                     "--quiet && '%s' report '%s' --quiet", km_test_bin(), data, m, a,
                     km_test_path("fixtures/sam_tiny/sam_tiny.pth"), km_test_bin(), m, km_test_bin(), m) == 0);
    snprintf(p, sizeof p, "%s/resumes.csv", m);
    CHECK(read_resumes(p, e) == 1 && e[0] == 1);
    snprintf(p, sizeof p, "%s/report.html", m);
    char *hm = km_test_slurp(p);
    int listed_m = count(hm, "<tr><td>resumed after mining epoch 1 (vertical rule)</td><td>4</td>");
    printf("    mining run: resume listed %d times at x = 3 + 1\n", listed_m);
    CHECK(listed_m >= 4 && listed_m == count(hm, "<tr><td>resumed after")); /* no other resume */
    km_free(hm);
}

/* A mining folder written by hand: 3 supervised epochs (resumed after 2),
 * 2 mining epochs (resumed after mining epoch 1): marks at x = 2 and x = 3 + 1. */
KM_TEST(resume_marks_on_mining_axis) {
    const char *d = km_test_sub("rs_mine");
    CHECK(km_test_sh("mkdir -p '%s/supervised'", d) == 0);
    static const char *const files[][2] = {
        {"mine_config.json", "{\"kmseg_version\": \"0.1.0\", \"data\": \"/nonexistent\", \"size\": 32, "
                             "\"mine_epochs\": 5, \"seed\": 3, \"threads\": 1, \"schedule\": \"onetime\"}"},
        {"metrics.csv", "epoch,train_loss,val_loss,val_dice,lr,seconds\n1,0.5,0.45,0.5,1e-3,2\n2,0.4,0.44,0.6,1e-3,2\n"},
        {"resumes.csv", "resumed_after_epoch,utc\n1,2026-12-03T12:00:00Z\n"},
        {"supervised/metrics.csv", "epoch,train_loss,val_loss,val_dice,lr,seconds\n1,0.7,0.6,0.2,1e-3,1\n"
                                   "2,0.6,0.5,0.3,1e-3,1\n3,0.55,0.47,0.4,1e-3,1\n"},
        {"supervised/resumes.csv", "resumed_after_epoch,utc\n2,2026-12-03T11:00:00Z\n"},
    };
    char p[1200];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", d, files[i][0]);
        CHECK_OK(km_write_file_atomic(p, files[i][1], strlen(files[i][1])));
    }
    CHECK(km_test_sh("'%s' report '%s' --quiet", km_test_bin(), d) == 0);
    snprintf(p, sizeof p, "%s/report.html", d);
    char *h = km_test_slurp(p);
    int sup = count(h, "<tr><td>resumed after supervised epoch 2 (vertical rule)</td><td>2</td>");
    int mine = count(h, "<tr><td>resumed after mining epoch 1 (vertical rule)</td><td>4</td>");
    printf("    mining page: supervised resume listed %d times at x = 2, mining resume %d times at x = 4\n", sup, mine);
    CHECK(sup >= 4 && sup == mine); /* one per chart, charts without data included */
    CHECK(count(h, "resumed after supervised epoch 2 (2026-12-03T11:00:00Z); resumed after mining epoch 1 "
                   "(2026-12-03T12:00:00Z)") == 1);
    km_free(h);
    /* a record that is not one fails naming the file */
    snprintf(p, sizeof p, "%s/resumes.csv", d);
    CHECK_OK(km_write_file_atomic(p, "resumed_after_epoch,utc\nx,now\n", 30));
    char *o = NULL;
    char args[1300];
    snprintf(args, sizeof args, "report '%s' --quiet", d);
    CHECK(km_test_kmseg(&o, args) == 1);
    CHECK_MSG(strstr(o, "resumes.csv: line 2: 'x' is not an epoch") != NULL, "output: %s", o);
    km_free(o);
}

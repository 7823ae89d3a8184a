/* The teacher's gain and cost table of an experiments folder (report/mining.h)
 * on hand-written metrics whose means and sample stds are computed by hand. */
#include "../src/report/mining.h"
#include "test.h"

#include <math.h>
#include <string.h>

static void put(const char *dir, const char *rel, const char *text) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    CHECK(km_test_sh("mkdir -p \"$(dirname '%s')\"", p) == 0);
    CHECK_OK(km_write_file_atomic(p, text, strlen(text)));
}

KM_TEST(mining_summary_hand_computed) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/mining-summary", km_test_tmpdir());
    put(dir, "results.csv",
        "kind,dataset,fraction,method,seed,n_seeds,n_test,dice_mean,dice_std,iou_mean,iou_std,run_dir\n"
        "run,d,0.1,supervised,0,1,3,0.5,,0.4,,\n"
        "run,d,0.1,supervised+refined,0,1,3,0.55,,0.45,,\n"
        "run,d,0.1,onetime,0,1,3,0.6,,0.5,,\n"
        "run,d,0.1,onetime,1,1,3,0.6,,0.5,,\n"
        "run,d,0.1,onetime,2,1,3,0.6,,0.5,,/nonexistent/run\n"
        "run,d,0.1,onetime+start-competes,0,1,3,0.6,,0.5,,\n"
        "run,d,0.1,points+box,0,1,3,0.6,,0.5,,\n"
        "mean,d,0.1,onetime,,3,,0.6,0,0.5,0,\n");
    /* an epoch-0 row (the starting checkpoint) is not an epoch of work */
    put(dir, "d/0.1/supervised/seed0/metrics.csv", "epoch,seconds\n0,99\n1,4\n2,6\n");
    const char *head =
        "epoch,seconds,unl_visits,no_box,encoder_seconds,decoder_seconds,pseudo_dice,student_unl_dice,teacher_calls\n";
    char m0[512], m1[512];
    snprintf(m0, sizeof m0, "%s1,10,100,10,1,2,0.6,0.5,90\n2,20,100,20,0,4,0.8,0.6,80\n", head);
    /* seed 1's row called no teacher (as one-time epochs): no no-box rate from it */
    snprintf(m1, sizeof m1, "%s1,30,50,7,0,1,0.5,0.45,0\n", head);
    put(dir, "d/0.1/onetime/seed0/metrics.csv", m0);
    put(dir, "d/0.1/onetime/seed1/metrics.csv", m1);
    put(dir, "d/0.1/points+box/seed0/metrics.csv", m1); /* a method that trains, '+' in its name */

    km_mining_row *rows = NULL;
    int n = 0, skipped = 0;
    CHECK_OK(km_mining_summary(dir, &rows, &n, &skipped));
    CHECK(n == 3 && skipped == 1);
    if (n != 3) return;
    CHECK(!strcmp(rows[2].method, "points+box") && rows[2].n == 1);
    const km_mining_row *s = &rows[0], *o = &rows[1];
    CHECK(!strcmp(s->method, "supervised") && s->n == 1 && !strcmp(o->method, "onetime") && o->n == 2);
    CHECK_NEAR(s->mean[KM_MQ_SEC], 5.0, 1e-12);
    CHECK_NEAR(s->mean[KM_MQ_EPOCHS], 2.0, 0);
    CHECK(isnan(s->mean[KM_MQ_PSEUDO]) && isnan(s->std[KM_MQ_SEC]));
    /* seed 0: pseudo 0.7, student 0.55, gain 0.15, no box 15 %, 15 s, teacher 3.5 s, 2 epochs;
     * seed 1: 0.5, 0.45, 0.05, no rate (no teacher call), 30 s, 1 s, 1 epoch */
    CHECK_NEAR(o->mean[KM_MQ_PSEUDO], 0.6, 1e-12);
    CHECK_NEAR(o->std[KM_MQ_PSEUDO], sqrt(0.02), 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_STUDENT], 0.5, 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_GAIN], 0.10, 1e-12);
    CHECK_NEAR(o->std[KM_MQ_GAIN], sqrt(0.005), 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_NOBOX], 15.0, 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_SEC], 22.5, 1e-12);
    CHECK_NEAR(o->std[KM_MQ_SEC], sqrt(112.5), 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_TEACHER], 2.25, 1e-12);
    CHECK_NEAR(o->mean[KM_MQ_EPOCHS], 1.5, 1e-12);

    char md[2048];
    snprintf(md, sizeof md, "%s/mining.md", km_test_tmpdir());
    FILE *f = fopen(md, "w");
    CHECK(f != NULL);
    if (f) {
        km_mining_md(f, rows, n);
        fclose(f);
    }
    CHECK(km_test_sh("grep -qF '| d | 0.1 | onetime | 2 | 0.6000 ± 0.1414 | 0.5000 ± 0.0707 | 0.1000 ± 0.0707 | "
                     "15.0 | 22.5 ± 10.6 | 2.2 ± 1.8 | 1.5 ± 0.7 |' '%s'",
                     md) == 0);
    CHECK(km_test_sh("grep -qF '| d | 0.1 | supervised | 1 | - | - | - | - | 5.0 | - | 2.0 |' '%s'", md) == 0);
    km_free(rows);
}

KM_TEST(mining_summary_errors) {
    km_mining_row *rows = (km_mining_row *)1;
    int n = 7, skipped = 7;
    char dir[1024], p[2048];
    snprintf(dir, sizeof dir, "%s/mining-summary-bad", km_test_tmpdir());
    CHECK(km_mining_summary(dir, &rows, &n, &skipped) != KM_OK);
    CHECK(strstr(km_errmsg(), "mining-summary-bad/results.csv") != NULL);
    CHECK(rows == NULL && n == 0);
    CHECK(km_test_sh("mkdir -p '%s'", dir) == 0);
    snprintf(p, sizeof p, "%s/results.csv", dir);
    CHECK_OK(km_write_file_atomic(p, "kind,dataset\nrun,d\n", 19));
    CHECK(km_mining_summary(dir, &rows, &n, &skipped) == KM_EFORMAT);
    CHECK(strstr(km_errmsg(), "results.csv: no 'fraction' column") != NULL);
    CHECK(rows == NULL && n == 0);
    km_err_clear();
}

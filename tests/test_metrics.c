/* test_metrics.c - Dice/IoU with hand-counted cases, mean +- std, the plateau
 * scheduler against torch 1.13's ReduceLROnPlateau, early stopping, the
 * progress display and the CSV / JSON-lines writers. */
#include "test.h"
#include "../src/core/log.h"
#include "../src/core/progress.h"
#include "../src/eval/metrics.h"
#include "../src/train/sched.h"

KM_TEST(metrics_dice_iou_hand_counted) {
    /* 3x3: pred = logit > 0 (0 itself is background) */
    const float L[9] = {1, -1, 2, -3, 0.5f, -0.1f, 0, 4, -2};
    const float G[9] = {1, 1, 0, 0, 1, 0, 1, 1, 0};
    const uint8_t Gu[9] = {1, 1, 0, 0, 1, 0, 1, 1, 0};
    km_conf c = km_conf_logits_f32(L, G, 9);
    CHECK(c.tp == 3 && c.fp == 1 && c.fn == 2 && c.tn == 3);
    km_conf c2 = km_conf_logits_u8(L, Gu, 9);
    CHECK(c2.tp == 3 && c2.fp == 1 && c2.fn == 2 && c2.tn == 3);
    CHECK_NEAR(km_dice_score(c), 6.0 / 9.0, 1e-15);
    CHECK_NEAR(km_iou_score(c), 3.0 / 6.0, 1e-15);

    const float neg[4] = {-1, -2, -0.001f, 0};
    const float z[4] = {0, 0, 0, 0}, two[4] = {0, 1, 1, 0};
    km_conf e = km_conf_logits_f32(neg, z, 4); /* both empty */
    CHECK(e.tp == 0 && e.fp == 0 && e.fn == 0 && e.tn == 4);
    CHECK(km_dice_score(e) == 1.0 && km_iou_score(e) == 1.0);
    km_conf pe = km_conf_logits_f32(neg, two, 4); /* prediction empty, truth not */
    CHECK(km_dice_score(pe) == 0.0 && km_iou_score(pe) == 0.0);
    const float pos[4] = {3, -1, -1, -1};
    km_conf ge = km_conf_logits_f32(pos, z, 4); /* truth empty, prediction not */
    CHECK(ge.fp == 1 && km_dice_score(ge) == 0.0 && km_iou_score(ge) == 0.0);
    const uint8_t pm[4] = {1, 0, 1, 0}, gm[4] = {1, 1, 0, 0};
    km_conf m = km_conf_masks_u8(pm, gm, 4);
    CHECK(m.tp == 1 && m.fp == 1 && m.fn == 1 && m.tn == 1);

    /* mean (per image) vs global (micro) */
    km_metric_acc a;
    km_metric_acc_init(&a);
    CHECK(isnan(km_metric_mean_dice(&a)));
    double d, j;
    km_metric_acc_add(&a, c, &d, &j);
    CHECK_NEAR(d, 2.0 / 3.0, 1e-15);
    km_metric_acc_add(&a, e, NULL, NULL);
    km_metric_acc_add(&a, pe, &d, &j);
    CHECK(d == 0.0 && j == 0.0);
    CHECK_NEAR(km_metric_mean_dice(&a), (2.0 / 3.0 + 1.0 + 0.0) / 3.0, 1e-15);
    CHECK_NEAR(km_metric_mean_iou(&a), (0.5 + 1.0 + 0.0) / 3.0, 1e-15);
    /* sums: tp 3, fp 1, fn 2 + 2 = 4 */
    CHECK(a.total.tp == 3 && a.total.fp == 1 && a.total.fn == 4 && a.total.tn == 3 + 4 + 2);
    CHECK_NEAR(km_metric_global_dice(&a), 6.0 / 11.0, 1e-15);
    CHECK_NEAR(km_metric_global_iou(&a), 3.0 / 8.0, 1e-15);
}

KM_TEST(metrics_mean_std_ddof1) {
    const double x[3] = {0.753, 0.768, 0.738};
    double m, s;
    km_mean_std(x, 3, &m, &s);
    CHECK_NEAR(m, 0.753, 1e-12);
    CHECK_NEAR(s, 0.015, 1e-12); /* sqrt((0 + 0.015^2 + 0.015^2) / 2) */
    const double y[4] = {1, 2, 3, 4};
    km_mean_std(y, 4, &m, &s);
    CHECK_NEAR(m, 2.5, 0);
    CHECK_NEAR(s, sqrt(5.0 / 3.0), 1e-15); /* numpy.std([1,2,3,4], ddof=1) = 1.2909944487358056 */
    CHECK_NEAR(s, 1.2909944487358056, 1e-15);
    km_mean_std(x, 1, &m, &s);
    CHECK(m == 0.753 && isnan(s));
    km_mean_std(x, 0, &m, &s);
    CHECK(isnan(m) && isnan(s));
}

KM_TEST(sched_plateau_hand_simulated) {
    /* patience 2, factor 0.5, min 0.1, lr 1: rel threshold 1e-4 */
    km_plateau p;
    km_plateau_init(&p, 1.0, 0.5, 2, 0.1);
    const double loss[] = {1.0, 0.9, 0.89995, 0.9, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    /* epoch: 1 best=1; 2 best=.9; 3 .89995 is not < .9*(1-1e-4)=.89991 -> bad 1;
     * 4 bad 2; 5 bad 3 > 2 -> lr .5, bad 0; 6 best .5; 7,8 bad 1,2; 9 bad 3 ->
     * .25; 10,11,12 -> bad 3 -> .125; 13,14,15 -> max(.0625, .1) = .1 */
    const double want[] = {1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125, 0.1};
    const int red[] = {0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1};
    for (int i = 0; i < 15; i++) {
        int r = km_plateau_step(&p, loss[i]);
        CHECK_MSG(p.lr == want[i] && r == red[i], "epoch %d: lr %g (want %g), reduced %d", i + 1, p.lr,
                  want[i], r);
    }
    /* at min_lr: no further change */
    for (int i = 0; i < 6; i++) CHECK(km_plateau_step(&p, 0.5) == 0 && p.lr == 0.1);
}

KM_TEST(sched_plateau_matches_torch) {
    /* Expected lrs from torch 1.13: ReduceLROnPlateau(Adam(lr=5e-5), mode='min',
     * factor=0.5, patience=3, min_lr=1e-7), step(loss) per epoch, printed with %.17g. */
    const double A[69] = {1.0, 0.9, 0.85, 0.8499, 0.84995, 0.8499, 0.8498, 0.8497, 0.7, 0.71, 0.72,
                          0.73, 0.74, 0.69993, 0.69995, 0.6999, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
                          NAN, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
                          0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
                          0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    const double lr5 = 5.0000000000000002e-05, lr25 = 2.5000000000000001e-05,
                 lr12 = 1.2500000000000001e-05, lr6 = 6.2500000000000003e-06, lr3 = 3.1250000000000001e-06,
                 lr15 = 1.5625000000000001e-06, lr7 = 7.8125000000000004e-07, lr39 = 3.9062500000000002e-07,
                 lr19 = 1.9531250000000001e-07, lrmin = 9.9999999999999995e-08;
    double want[69];
    int k = 0;
    for (int i = 0; i < 12; i++) want[k++] = lr5;
    for (int i = 0; i < 8; i++) want[k++] = lr25;
    for (int i = 0; i < 4; i++) want[k++] = lr12;
    for (int i = 0; i < 5; i++) want[k++] = lr6;
    for (int i = 0; i < 4; i++) want[k++] = lr3;
    for (int i = 0; i < 4; i++) want[k++] = lr15;
    for (int i = 0; i < 4; i++) want[k++] = lr7;
    for (int i = 0; i < 4; i++) want[k++] = lr39;
    for (int i = 0; i < 4; i++) want[k++] = lr19;
    while (k < 69) want[k++] = lrmin;
    km_plateau p;
    km_plateau_init(&p, 5e-5, 0.5, 3, 1e-7);
    int bad = 0;
    for (int i = 0; i < 69; i++) {
        km_plateau_step(&p, A[i]);
        if (p.lr != want[i] && bad++ < 5) CHECK_MSG(0, "epoch %d: lr %.17g, torch %.17g", i + 1, p.lr, want[i]);
    }
    CHECK(bad == 0);
    /* eps rule (torch: lr stays 1.05e-7 for 12 plateau epochs with min_lr 1e-7,
     * since 1.05e-7 - 1e-7 = 5e-9 < eps 1e-8) */
    km_plateau_init(&p, 1.05e-7, 0.5, 3, 1e-7);
    for (int i = 0; i < 12; i++) {
        CHECK(km_plateau_step(&p, 1.0) == 0);
        CHECK(p.lr == 1.05e-7);
    }
}

KM_TEST(sched_early_stop_and_meta_roundtrip) {
    km_early_stop e;
    km_early_stop_init(&e, 3);
    const double v[] = {1.0, 0.8, 0.8, 0.9, 0.7, 0.71, 0.75, 0.7};
    /* improvements strictly below the best: epochs 0, 1, 4; stop after 3 bad (5, 6, 7) */
    const int imp_want[] = {1, 1, 0, 0, 1, 0, 0, 0}, stop_want[] = {0, 0, 0, 0, 0, 0, 0, 1};
    for (int i = 0; i < 8; i++) {
        int imp, stop = km_early_stop_step(&e, v[i], i, &imp);
        CHECK_MSG(imp == imp_want[i] && stop == stop_want[i], "epoch %d: improved %d stop %d", i, imp, stop);
    }
    CHECK(e.best == 0.7 && e.best_epoch == 4 && e.num_bad == 3);
    int imp;
    km_early_stop e2;
    km_early_stop_init(&e2, 10);
    CHECK(km_early_stop_step(&e2, NAN, 0, &imp) == 0 && imp == 0 && e2.best_epoch == -1);

    km_plateau p, q;
    km_plateau_init(&p, 5e-5, 0.5, 3, 1e-7);
    km_plateau_step(&p, 0.123456789012345678);
    km_plateau_step(&p, 0.2);
    km_tdict d;
    km_tdict_init(&d);
    km_plateau_to_meta(&p, &d, "plateau");
    km_early_stop_to_meta(&e, &d, "early_stop");
    memset(&q, 0, sizeof q);
    CHECK_OK(km_plateau_from_meta(&q, &d, "plateau", "ckpt"));
    CHECK(!memcmp(&p, &q, sizeof p));
    km_early_stop f;
    CHECK_OK(km_early_stop_from_meta(&f, &d, "early_stop", "ckpt"));
    CHECK(f.best == e.best && f.best_epoch == e.best_epoch && f.num_bad == e.num_bad && f.patience == 3);
    /* the restored scheduler continues identically */
    for (int i = 0; i < 8; i++) {
        km_plateau_step(&p, 0.3);
        km_plateau_step(&q, 0.3);
        CHECK(p.lr == q.lr);
    }
    CHECK_ERR(km_plateau_from_meta(&q, &d, "nothere", "ckpt.safetensors"), KM_EMISSING, "nothere.factor");
    km_tdict_free(&d);
}

static char *slurp(const char *path) {
    uint8_t *d;
    size_t n;
    if (km_read_file(path, 1 << 20, &d, &n)) return km_strdup("");
    char *s = km_malloc(n + 1);
    memcpy(s, d, n);
    s[n] = 0;
    km_free(d);
    return s;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

KM_TEST(progress_plain_lines_when_not_a_tty) {
    char path[600];
    snprintf(path, sizeof path, "%s/progress.txt", km_test_tmpdir());
    FILE *f = fopen(path, "w");
    km_progress p;
    km_progress_start_at(&p, f, "epoch 1/3", 100, "img", 0.0);
    CHECK(p.tty == 0);
    /* 1 item per 0.01 s: lines at 10 %, 20 %, ..., 90 % + the end line */
    for (int i = 1; i <= 100; i++) km_progress_update_at(&p, i, "loss 0.5", i * 0.01);
    km_progress_end_at(&p, "loss 0.4", 1.0);
    /* time rule: 1 % done after 11 s -> one line */
    km_progress_start_at(&p, f, "eval", 100, "img", 0.0);
    km_progress_update_at(&p, 1, NULL, 11.0);
    km_progress_update_at(&p, 2, NULL, 12.0); /* neither 10 % nor 10 s more: silent */
    fclose(f);
    char *s = slurp(path);
    printf("    %.*s...\n", 80, s);
    CHECK_MSG(count_lines(s) == 11, "got %d lines:\n%s", count_lines(s), s);
    CHECK(strstr(s, "epoch 1/3 10/100  100.0 img/s  ETA 0:01  loss 0.5\n") != NULL);
    CHECK(strstr(s, "epoch 1/3 100/100  100.0 img/s  in 0:01  loss 0.4\n") != NULL);
    CHECK(strstr(s, "eval 1/100  0.1 img/s  ETA 18:09") != NULL); /* 99 / (1/11) = 1089 s */
    CHECK(!strchr(s, '\r'));
    km_free(s);
    char b[32];
    CHECK(!strcmp(km_format_duration(3725, b, sizeof b), "1:02:05"));
    CHECK(!strcmp(km_format_duration(-1, b, sizeof b), "?"));
}

KM_TEST(progress_tty_redraws_in_place) {
    char path[600];
    snprintf(path, sizeof path, "%s/progress_tty.txt", km_test_tmpdir());
    FILE *f = fopen(path, "w");
    km_progress p;
    km_progress_start_at(&p, f, "train", 8, "img", 0.0);
    p.tty = 1; /* as if a terminal */
    p.width = 8;
    for (int i = 1; i <= 8; i++) km_progress_update_at(&p, i, NULL, i * 0.5);
    km_progress_end_at(&p, NULL, 4.0);
    fclose(f);
    char *s = slurp(path);
    CHECK(count_lines(s) == 1);
    CHECK(strstr(s, "\rtrain [####....] 4/8  2.0 img/s  ETA 0:02") != NULL);
    CHECK(strstr(s, "\rtrain [########] 8/8  2.0 img/s  in 0:04\033[K\n") != NULL);
    km_free(s);
}

KM_TEST(log_csv_and_jsonl_writers) {
    char pc[600], pj[600];
    snprintf(pc, sizeof pc, "%s/m.csv", km_test_tmpdir());
    snprintf(pj, sizeof pj, "%s/m.jsonl", km_test_tmpdir());
    const char *cols[] = {"epoch", "id", "loss", "lr"};
    km_csv c;
    CHECK_OK(km_csv_open(&c, pc, cols, 4, 0));
    km_csv_int(&c, 1);
    km_csv_str(&c, "Non_COVID (28), \"x\"");
    km_csv_num(&c, 0.25);
    km_csv_num(&c, 5e-5);
    CHECK_OK(km_csv_end_row(&c));
    km_csv_int(&c, 2);
    km_csv_str(&c, "plain");
    km_csv_num(&c, NAN);
    km_csv_num(&c, 2.5e-5);
    CHECK_OK(km_csv_end_row(&c));
    CHECK_OK(km_csv_close(&c));
    /* append mode does not repeat the header */
    CHECK_OK(km_csv_open(&c, pc, cols, 4, 1));
    km_csv_int(&c, 3);
    km_csv_str(&c, "z");
    km_csv_num(&c, 1.0 / 3.0);
    km_csv_num(&c, 1e-7);
    CHECK_OK(km_csv_end_row(&c));
    CHECK_OK(km_csv_close(&c));
    char *s = slurp(pc);
    CHECK_MSG(!strcmp(s, "epoch,id,loss,lr\n1,\"Non_COVID (28), \"\"x\"\"\",0.25,5e-05\n2,plain,nan,2.5e-05\n"
                         "3,z,0.333333333,1e-07\n"),
              "csv:\n%s", s);
    km_free(s);
    CHECK_OK(km_text_keep_lines(pc, 2));
    s = slurp(pc);
    CHECK(count_lines(s) == 2 && strstr(s, "0.25,5e-05\n") && !strstr(s, "plain"));
    km_free(s);

    km_jsonl j;
    CHECK_OK(km_jsonl_open(&j, pj, 0));
    km_jsonl_int(&j, "epoch", 1);
    km_jsonl_num(&j, "val_loss", 0.5);
    km_jsonl_num(&j, "dice", NAN);
    km_jsonl_str(&j, "note", "a\"b\\c\n");
    km_jsonl_bool(&j, "best", 1);
    CHECK_OK(km_jsonl_end(&j));
    CHECK_OK(km_jsonl_end(&j));
    CHECK_OK(km_jsonl_close(&j));
    s = slurp(pj);
    CHECK_MSG(!strcmp(s, "{\"epoch\": 1, \"val_loss\": 0.5, \"dice\": null, \"note\": \"a\\\"b\\\\c\\n\", \"best\": true}\n{}\n"),
              "jsonl:\n%s", s);
    km_free(s);
}

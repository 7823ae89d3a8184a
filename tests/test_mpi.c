/* test_mpi.c - data-parallel training with Open MPI (issue 12, dist.h):
 * the fixed-order sum, N ranks bit-identical to one process accumulating the
 * same micro-batches, launch refusals, failures and resume. The multi-rank
 * tests run `mpirun --allow-run-as-root --oversubscribe -np N` with one
 * thread per rank on real Kvasir-SEG images at 64 px, with the smallest
 * student: ResNet18 stages 0..3 (--encoder-depth 3: 0.84M parameters instead
 * of 12.7M at depth 5; best/last checkpoints of 3.4/10 MB instead of 51/153
 * MB) and a tiny decoder
 * (--decoder-channels 16,8,8); the code paths are those of any depth. Without
 * mpirun (or in a build without MPI) they fail and say how to install it. */
#include "cli.h"
#include "test.h"

#include "../src/core/dist.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1"
#define STUDENT "--size 64 --resnet 18 --encoder-depth 3 --decoder-channels 16,8,8"

/* 1 when mpirun can be used (else a failure saying what to do). */
static int have_mpirun(const char *file, int line) {
    if (!km_dist_have_mpi()) {
        km_test_fail(file, line, "this kmseg was built with MPI=0: data-parallel tests need the default build");
        return 0;
    }
    if (km_test_sh("command -v mpirun > /dev/null 2>&1") != 0) {
        km_test_fail(file, line, "mpirun not found: run tools/install-deps.sh (Debian openmpi-bin, libopenmpi-dev)");
        return 0;
    }
    return 1;
}
#define NEED_MPIRUN() \
    if (!have_mpirun(__FILE__, __LINE__)) return

/* The common arguments of `cmd` (train, pretrain): the first `images`
 * Kvasir-SEG images, 64 px, the depth-3 ResNet18 student, at most 2 steps of
 * batch `batch` (micro-batches of `micro`, 0: none), one thread, then
 * `extra`. */
static const char *cmd_args(const char *cmd, int images, int batch, int micro, const char *epochs, const char *extra,
                            const char *out) {
    static char b[4][1024];
    static int k;
    char *s = b[k++ & 3];
    snprintf(s, sizeof b[0],
             "%s --data '%s' --max-images %d " STUDENT " --batch %d --max-steps 2 --threads 1 --quiet "
             "--out '%s' %s %s",
             cmd, km_test_path("data/kvasir-seg"), images, batch, out, epochs, extra);
    if (micro) snprintf(s + strlen(s), sizeof b[0] - strlen(s), " --micro-batch %d", micro);
    return s;
}
/* train: 20 images (16 train), 1 epoch: batches of 12 then 4 (batch 12 =
 * 6 micro-batches of 2: with 2 or 3 ranks, the second step leaves ranks with
 * no images at all). pretrain: 32 images (26 train), 1 epoch: 2 steps. */
#define train_args(batch, micro, extra, out) cmd_args("train", 20, batch, micro, "--epochs 1", extra, out)
#define pretrain_args(batch, micro, extra, out) cmd_args("pretrain", 32, batch, micro, "--epochs 1", extra, out)

/* Runs kmseg with args in one process or under mpirun; a failed run's
 * output is printed. */
static int run_np(int np, const char *args) {
    const char *log = km_test_sub(np == 1 ? "np1.log" : "npN.log");
    int rc = np == 1 ? km_test_sh("'%s' %s > '%s' 2>&1", km_test_bin(), args, log)
                     : km_test_sh(MPIRUN " -np %d '%s' %s > '%s' 2>&1", np, km_test_bin(), args, log);
    if (rc) {
        char *o = km_test_slurp(log);
        printf("  -np %d %s: exit %d\n%s", np, args, rc, o ? o : "(no output)\n");
        km_free(o);
    }
    return rc;
}

static int same_file(const char *a, const char *b) { return km_test_sh("cmp -s '%s' '%s'", a, b) == 0; }

/* The single-process reference run `name` of a test (args: its flags with
 * --out km_test_sub(name)); made once per test process: the tests that
 * compare against the same reference share it (each makes it when run
 * alone). Returns its folder (static storage per name slot). */
static const char *np1_ref(const char *name, const char *args) {
    static char dirs[8][1024];
    static int n;
    char *d = NULL;
    const char *sub = km_test_sub(name);
    for (int i = 0; i < n && !d; i++)
        if (!strcmp(dirs[i], sub)) d = dirs[i];
    if (!d) {
        KM_ASSERT(n < 8);
        d = dirs[n++];
        snprintf(d, sizeof dirs[0], "%s", sub);
    }
    char p[1100];
    snprintf(p, sizeof p, "%s/last.safetensors", sub);
    if (access(p, F_OK) != 0) CHECK_MSG(run_np(1, args) == 0, "reference run %s failed", name);
    return d;
}

/* metrics.csv without its last two columns (seconds, img/s: timing). */
static char *metrics_untimed(const char *run) {
    char p[1200];
    snprintf(p, sizeof p, "%s/metrics.csv", run);
    char *t = km_test_slurp(p);
    if (!t) return NULL;
    char *o = t, *w = t;
    while (*o) {
        char *eol = strchr(o, '\n');
        size_t len = eol ? (size_t)(eol - o) : strlen(o);
        int cut = 0;
        for (size_t i = len; i > 0 && cut < 2; i--)
            if (o[i - 1] == ',') {
                len = i - 1;
                cut++;
            }
        memmove(w, o, len);
        w += len;
        *w++ = '\n';
        o = eol ? eol + 1 : o + strlen(o);
    }
    *w = 0;
    return t;
}

/* Two runs' files agree: checkpoints byte for byte, logs but for timing. */
static void check_same_run(const char *a, const char *b) {
    char pa[1200], pb[1200];
    static const char *const files[] = {"last.safetensors", "best.safetensors", "splits/labelled.txt"};
    for (int i = 0; i < 3; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        CHECK_MSG(same_file(pa, pb), "%s and %s differ", pa, pb);
    }
    /* config.json: the same settings but for the folder ("out") */
    CHECK_MSG(km_test_sh("grep -v '\"out\"' '%s/config.json' > '%s.cfg' && grep -v '\"out\"' '%s/config.json' | "
                         "cmp -s - '%s.cfg'", a, a, b, a) == 0,
              "%s/config.json and %s/config.json differ in more than \"out\"", a, b);
    char *ma = metrics_untimed(a), *mb = metrics_untimed(b);
    CHECK(ma && mb);
    if (ma && mb) CHECK_MSG(!strcmp(ma, mb), "metrics differ:\n%s---\n%s", ma, mb);
    km_free(ma);
    km_free(mb);
}

/* ------------------------------------------------------------ the tree */

KM_TEST(mpi_tree_sum_order_by_hand) {
    /* 1e8 + 1 = 1e8 in float (ulp 8): the grouping decides what survives */
    const float v[7] = {1.0f, 1e8f, -1e8f, 1.0f, 1.0f, 1.0f, 1.0f};
    float L[7];
    memcpy(L, v, sizeof L);
    km_tree_sum(L, 3, 1, 1);
    CHECK(L[0] == (v[0] + v[1]) + v[2]);
    CHECK(L[0] == 0.0f); /* (1 + 1e8) - 1e8 */
    memcpy(L, v, sizeof L);
    km_tree_sum(L, 4, 1, 1);
    CHECK(L[0] == (v[0] + v[1]) + (v[2] + v[3])); /* 1e8 + -1e8 = 0 */
    memcpy(L, v, sizeof L);
    km_tree_sum(L, 6, 1, 1);
    CHECK(L[0] == ((v[0] + v[1]) + (v[2] + v[3])) + (v[4] + v[5]));
    memcpy(L, v, sizeof L);
    km_tree_sum(L, 7, 1, 1);
    float want7 = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + v[6]);
    CHECK(L[0] == want7);
    float seq = 0;
    for (int i = 0; i < 7; i++) seq += v[i];
    printf("  tree of 7: %.9g, left to right: %.9g\n", L[0], seq);
    CHECK(L[0] == 3.0f && seq == 4.0f); /* by hand: (1e8 + -1e8) + 3, and 0 + 1 + 1 + 1 + 1 */
    /* one process: km_dist_sum is the tree over its K leaves */
    km_dist_sum r;
    CHECK_OK(km_dist_sum_init(&r, 2, 7));
    for (int i = 0; i < 7; i++) {
        float g[2] = {v[i], v[6 - i]};
        km_dist_sum_put(&r, i, g);
    }
    float out[2];
    km_dist_sum_run(&r, out);
    CHECK(out[0] == want7);
    CHECK(out[1] == ((v[6] + v[5]) + (v[4] + v[3])) + ((v[2] + v[1]) + v[0]));
    km_dist_sum_free(&r);
}

/* ------------------------------------------------- the sum across ranks */

KM_TEST(mpi_reduce_adversarial_values_equal_tree_sum) {
    NEED_MPIRUN();
    char bin[1024];
    snprintf(bin, sizeof bin, "%s", km_test_bin());
    char *sl = strrchr(bin, '/');
    snprintf(sl ? sl + 1 : bin, sizeof bin - (size_t)(sl ? sl + 1 - bin : 0), "tests/mpi_reduce_check");
    if (access(bin, X_OK)) { /* built by `make test` (Makefile MPI_CHECK), not by the runner's own target */
        CHECK_MSG(0, "%s missing: run `make test`, which builds it", bin);
        return;
    }
    /* np, allreduce algorithm (0: Open MPI's choice), alltoallv, allgatherv */
    static const int runs[][4] = {{2, 0, 0, 0}, {3, 0, 0, 0}, {4, 0, 0, 0}, {2, 1, 1, 1}, {2, 2, 2, 2},
                                  {2, 3, 1, 3}, {2, 4, 2, 4}, {2, 5, 1, 5}, {2, 6, 2, 1}, {3, 3, 2, 2},
                                  {3, 4, 1, 3}, {3, 6, 2, 4}, {4, 2, 1, 2}, {4, 5, 2, 3}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char mca[256] = "";
        if (runs[i][1])
            snprintf(mca, sizeof mca,
                     "--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm %d "
                     "--mca coll_tuned_alltoallv_algorithm %d --mca coll_tuned_allgatherv_algorithm %d",
                     runs[i][1], runs[i][2], runs[i][3]);
        const char *log = km_test_sub("reduce.log");
        int rc = km_test_sh(MPIRUN " -np %d %s '%s' > '%s' 2>&1", runs[i][0], mca, bin, log);
        char *out = km_test_slurp(log);
        printf("  np %d %s\n%s", runs[i][0], mca, out ? out : "(no output)\n");
        CHECK_MSG(rc == 0 && out && strstr(out, "\nOK\n"), "np %d %s: exit %d", runs[i][0], mca, rc);
        km_free(out);
    }
}

/* ---------------------------------------------- training: N ranks = one */

/* The references: batch 12 in 6 micro-batches of 2, per micro-batch
 * BatchNorm or --sync-bn. */
static const char *sync_flag(int sync) { return sync ? "--sync-bn" : ""; }
static const char *train_ref(int sync) {
    const char *name = sync ? "train_ref_sync" : "train_ref";
    return np1_ref(name, train_args(12, 2, sync_flag(sync), km_test_sub(name)));
}

KM_TEST(mpi_train_micro_batch_whole_batch_equals_default) {
    /* M = B: one micro-batch, the captured BatchNorm update applied after the
     * forward; must be today's step exactly, and so must --sync-bn with one
     * micro-batch. M = 2 must differ (the comparison can fail). */
    const char *a = km_test_sub("default"), *b = km_test_sub("m12"), *c = km_test_sub("m12sync");
    CHECK(run_np(1, train_args(12, 0, "", a)) == 0);
    CHECK(run_np(1, train_args(12, 12, "", b)) == 0);
    CHECK(run_np(1, train_args(12, 12, "--sync-bn", c)) == 0);
    char pa[1200], pb[1200], pc[1200], pr[1200];
    snprintf(pa, sizeof pa, "%s/last.safetensors", a);
    snprintf(pb, sizeof pb, "%s/last.safetensors", b);
    snprintf(pc, sizeof pc, "%s/last.safetensors", c);
    snprintf(pr, sizeof pr, "%s/last.safetensors", train_ref(0));
    CHECK_MSG(same_file(pa, pb), "--micro-batch 12 of batch 12 differs from no micro-batches");
    CHECK_MSG(same_file(pa, pc), "--micro-batch 12 --sync-bn of batch 12 differs from no micro-batches");
    CHECK_MSG(!same_file(pa, pr), "--micro-batch 2 gave the default's weights: micro-batches not in effect");
    char *ma = metrics_untimed(a), *mb = metrics_untimed(b), *mc = metrics_untimed(c);
    CHECK(ma && mb && mc && !strcmp(ma, mb) && !strcmp(ma, mc));
    km_free(ma);
    km_free(mb);
    km_free(mc);
    /* config.json: sync_bn written only when set (older folders re-write byte for byte) */
    CHECK(km_test_sh("grep -q '\"sync_bn\": 1' '%s/config.json'", c) == 0);
    CHECK(km_test_sh("grep -q sync_bn '%s/config.json'", b) != 0);
}

/* np 2 and np 3 against one single-process reference: 6 micro-batches of 2
 * (3 or 2 per rank; in the second step of 4 images ranks 1 and 2 hold
 * none), per micro-batch BatchNorm and --sync-bn. */
static void train_np_equals_one(int sync) {
    NEED_MPIRUN();
    const char *ref = train_ref(sync);
    for (int np = 2; np <= 3; np++) {
        const char *run = km_test_sub(np == 2 ? "np2" : "np3");
        int rc = run_np(np, train_args(12, 2, sync_flag(sync), run));
        CHECK_MSG(rc == 0, "mpirun -np %d exit %d", np, rc);
        check_same_run(ref, run);
    }
}

KM_TEST(mpi_train_np2_np3_equal_one_process) { train_np_equals_one(0); }

KM_TEST(mpi_train_sync_bn_np2_np3_equal_one_process) { train_np_equals_one(1); }

/* -------------------------------------------------------- launch errors */

KM_TEST(mpi_refuses_copies_that_do_not_know_each_other) {
    char *o = NULL;
    const char *run = km_test_sub("lonely");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "SLURM_STEP_NUM_TASKS=4 '%s' %s > '%s' 2>&1", km_test_bin(), train_args(8, 4, "", run),
             km_test_sub("out.txt"));
    int rc = km_test_sh("%s", cmd);
    o = km_test_slurp(km_test_sub("out.txt"));
    printf("  exit %d: %s", rc, o ? o : "");
    CHECK(rc != 0);
    CHECK(o && strstr(o, "SLURM_STEP_NUM_TASKS=4") && strstr(o, "do not know each other"));
    km_free(o);
    /* N ranks need micro-batches they can share */
    if (!have_mpirun(__FILE__, __LINE__)) return;
    rc = km_test_sh(MPIRUN " -np 2 '%s' %s > '%s' 2>&1", km_test_bin(), train_args(6, 2, "", run),
                    km_test_sub("o2.txt"));
    o = km_test_slurp(km_test_sub("o2.txt"));
    CHECK(rc != 0);
    CHECK(o && strstr(o, "3 micro-batches cannot be shared by 2 processes"));
    km_free(o);
}

/* ------------------------------------------------- pretrain: N ranks = one */

static void check_same_pretrain(const char *a, const char *b, int want_same) {
    static const char *const files[] = {"last.safetensors", "encoder.safetensors", "projection_head.safetensors"};
    char pa[1200], pb[1200];
    for (int i = 0; i < 3; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        CHECK_MSG(same_file(pa, pb) == want_same, "%s and %s %s", pa, pb, want_same ? "differ" : "are the same");
    }
    if (!want_same) return;
    char *ma = metrics_untimed(a), *mb = metrics_untimed(b);
    CHECK(ma && mb && !strcmp(ma, mb));
    km_free(ma);
    km_free(mb);
}

/* The references: batch 12 in 6 micro-batches of 2 (2M = 4 views each). */
static const char *pretrain_ref(int sync) {
    const char *name = sync ? "pretrain_ref_sync" : "pretrain_ref";
    return np1_ref(name, pretrain_args(12, 2, sync_flag(sync), km_test_sub(name)));
}

KM_TEST(mpi_pretrain_micro_batch_whole_batch_equals_default) {
    const char *a = km_test_sub("pdefault"), *b = km_test_sub("pm12"), *c = km_test_sub("pm12sync");
    CHECK(run_np(1, pretrain_args(12, 0, "", a)) == 0);
    CHECK(run_np(1, pretrain_args(12, 12, "", b)) == 0);
    CHECK(run_np(1, pretrain_args(12, 12, "--sync-bn", c)) == 0);
    check_same_pretrain(a, b, 1);
    check_same_pretrain(a, c, 1);          /* one micro-batch: its BatchNorm is the whole batch's */
    check_same_pretrain(a, pretrain_ref(0), 0); /* NT-Xent per micro-batch: other negatives, other weights */
}

static void pretrain_np_equals_one(int sync) {
    NEED_MPIRUN();
    const char *ref = pretrain_ref(sync);
    for (int np = 2; np <= 3; np++) {
        const char *run = km_test_sub(np == 2 ? "pnp2" : "pnp3");
        int rc = run_np(np, pretrain_args(12, 2, sync_flag(sync), run));
        CHECK_MSG(rc == 0, "mpirun -np %d exit %d", np, rc);
        check_same_pretrain(ref, run, 1);
    }
}

KM_TEST(mpi_pretrain_np2_np3_equal_one_process) { pretrain_np_equals_one(0); }

KM_TEST(mpi_pretrain_sync_bn_np2_np3_equal_one_process) {
    pretrain_np_equals_one(1);
    /* whole-batch statistics are in effect: not the per-micro-batch weights */
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/last.safetensors", pretrain_ref(0));
    snprintf(pb, sizeof pb, "%s/last.safetensors", pretrain_ref(1));
    CHECK_MSG(!same_file(pa, pb), "--sync-bn gave the per-micro-batch BatchNorm's weights");
}

/* ------------------------------------------------------------- failures */

/* Files a killed writer would leave (km_write_file_atomic's "<path>.tmp.<pid>"). */
static int temp_files(const char *run) {
    return km_test_sh("find '%s' -name '*.tmp.*' | grep -q .", run) == 0;
}

static char *run_log(int np, const char *env, const char *args, int *rc) {
    const char *log = km_test_sub("fault.log");
    if (np == 1)
        *rc = km_test_sh("%s '%s' %s > '%s' 2>&1", env, km_test_bin(), args, log);
    else
        *rc = km_test_sh("%s " MPIRUN " -np %d '%s' %s > '%s' 2>&1", env, np, km_test_bin(), args, log);
    char *o = km_test_slurp(log);
    printf("  %s -np %d: exit %d\n%s", env, np, *rc, o ? o : "");
    return o;
}

/* 2 epochs of 2 steps (16 train images, batch 8 = 2 x 4). */
static const char *fault_train_args(const char *out) {
    static char b[1024];
    snprintf(b, sizeof b,
             "train --data '%s' --max-images 20 " STUDENT " --batch 8 --micro-batch 4 --epochs 2 "
             "--threads 1 --quiet --out '%s'",
             km_test_path("data/kvasir-seg"), out);
    return b;
}

static void check_resumed_equals(const char *ref, const char *run) {
    char args[1300];
    snprintf(args, sizeof args, "train --resume '%s' --threads 1 --quiet", run);
    CHECK(run_np(1, args) == 0);
    check_same_run(ref, run);
}

KM_TEST(mpi_train_killed_rank_and_stop_signal_resume_with_np1) {
    NEED_MPIRUN();
    const char *ref = km_test_sub("ref"), *k = km_test_sub("killed"), *u = km_test_sub("usr1");
    CHECK(run_np(1, fault_train_args(ref)) == 0);
    /* rank 1 dies after step 3 (epoch 2): mpirun ends the job and names it */
    int rc;
    char *o = run_log(2, "KMSEG_TEST_FAULT=1:3:kill", fault_train_args(k), &rc);
    CHECK(rc != 0);
    CHECK(o && strstr(o, "rank 1") && strstr(o, "signal 9"));
    km_free(o);
    CHECK_MSG(!temp_files(k), "%s holds half-written files", k);
    char p[1200];
    snprintf(p, sizeof p, "%s/metrics.csv", k);
    char *m = km_test_slurp(p);
    CHECK(m && !strstr(m, "\n2,")); /* epoch 2 never finished */
    km_free(m);
    check_resumed_equals(ref, k);
    /* SIGUSR1 on rank 1 after step 3 (mid-epoch 2): every rank stops after
     * that step, rank 0 checkpoints, exit 0; a resume with one process ends
     * as the uninterrupted run */
    o = run_log(2, "KMSEG_TEST_FAULT=1:3:usr1", fault_train_args(u), &rc);
    CHECK(rc == 0);
    km_free(o);
    CHECK_MSG(!temp_files(u), "%s holds half-written files", u);
    check_resumed_equals(ref, u);
}

KM_TEST(mpi_pretrain_stop_signal_resumes_with_np1) {
    NEED_MPIRUN();
    const char *ref = km_test_sub("ref"), *u = km_test_sub("usr1");
    char a[1024], b[1024];
    const char *fmt = "pretrain --data '%s' --max-images 24 " STUDENT " --batch 8 --micro-batch 4 "
                      "--epochs 2 --threads 1 --quiet --out '%s'";
    snprintf(a, sizeof a, fmt, km_test_path("data/kvasir-seg"), ref);
    snprintf(b, sizeof b, fmt, km_test_path("data/kvasir-seg"), u);
    CHECK(run_np(1, a) == 0);
    int rc;
    char *o = run_log(2, "KMSEG_TEST_FAULT=1:3:usr1", b, &rc); /* 2 steps per epoch: step 1 of epoch 2 */
    CHECK(rc == 0);
    km_free(o);
    snprintf(b, sizeof b, "pretrain --resume '%s' --threads 1 --quiet", u);
    CHECK(run_np(1, b) == 0);
    check_same_pretrain(ref, u, 1);
}

KM_TEST(mpi_step_timeout_ends_a_hung_job) {
    NEED_MPIRUN();
    /* rank 1 sleeps after step 2; rank 0 waits in step 3's collectives until
     * its watchdog ends the job (8 s: a step here takes well under 2 s) */
    const char *run = km_test_sub("hung");
    char args[1200];
    snprintf(args, sizeof args, "%s --step-timeout 8", fault_train_args(run));
    double t0 = km_now();
    int rc;
    char *o = run_log(2, "KMSEG_TEST_FAULT=1:2:hang", args, &rc);
    double t = km_now() - t0;
    printf("  ended after %.1f s\n", t);
    CHECK(rc != 0);
    CHECK(o && strstr(o, "rank 0: ") && strstr(o, "more than --step-timeout 8"));
    CHECK(t < 120);
    km_free(o);
    CHECK_MSG(!temp_files(run), "%s holds half-written files", run);
}

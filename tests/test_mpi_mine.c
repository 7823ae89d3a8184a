/* test_mpi_mine.c - `kmseg mine` under Open MPI (issue 12, mine_dist.h):
 * with --micro-batch M, N ranks give the files of one process with the same
 * micro-batches byte for byte (time columns aside): the supervised phase,
 * the one-time and continuous mining steps, sharded teacher work and
 * embedding precompute, stop / kill and resume with another N; without
 * --micro-batch only the one-time labelling pass of a run from --init is
 * shared (its steps run whole on every rank), anything else is refused
 * before any file is written. Real Kvasir-SEG images at 64 px, the sam_tiny
 * fixture teacher, one thread per rank, the smallest student (ResNet18 stages
 * 0..3, --encoder-depth 3 --decoder-channels 16,8,8: 0.84M parameters). */
#include "cli.h"
#include "test.h"

#include "../src/core/dist.h"

#include <stdlib.h>
#include <string.h>

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1"

static int have_mpirun(void) {
    return km_dist_have_mpi() && km_test_sh("command -v mpirun > /dev/null 2>&1") == 0;
}

/* 20 images -> 16 train (8 labelled, 8 unlabelled) / 4 val, 64 px, batch 4. */
#define STUDENT "--size 64 --resnet 18 --encoder-depth 3 --decoder-channels 16,8,8"
#define DATA_ARGS "--max-images 20 --val-fraction 0.2 --test-fraction 0 " STUDENT " --batch 4 --seed 5 --threads 1 --quiet"

/* A supervised student to mine from (2 steps of train: enough foreground for boxes). */
static const char *student(void) {
    static char path[1200];
    if (path[0]) return path;
    const char *run = km_test_sub("sup");
    int rc = km_test_sh("'%s' train --data '%s' --out '%s' --epochs 1 --lr 1e-3 " DATA_ARGS " > '%s.log' 2>&1",
                        km_test_bin(), km_test_path("data/kvasir-seg"), run, run);
    if (rc) return NULL;
    snprintf(path, sizeof path, "%s/best.safetensors", run);
    return path;
}

/* `[mpirun [-x ENV] -np N] kmseg mine ... --out OUT` (one-time from the student unless `extra` says
 * otherwise; env: "VAR=VALUE" or "", np > 1 only). */
static int mine_np_env(int np, const char *env, const char *out, const char *extra) {
    char launch[256] = "";
    if (np > 1) snprintf(launch, sizeof launch, MPIRUN " %s%s -np %d ", env[0] ? "-x " : "", env, np);
    return km_test_sh("%s'%s' mine --data '%s' --teacher '%s' --box-rule all --mine-epochs 1 --cache-dir '%s.cache' "
                      "--out '%s' %s " DATA_ARGS " > '%s.log' 2>&1",
                      launch, km_test_bin(), km_test_path("data/kvasir-seg"),
                      km_test_path("fixtures/sam_tiny/sam_tiny.pth"), out, out, extra, out);
}

static int mine_np(int np, const char *out, const char *extra) { return mine_np_env(np, "", out, extra); }

/* The one-process one-time run from the student (NULL when it failed). */
static const char *np1_run(void) {
    static char dir[1200];
    static int done, ok;
    if (done) return ok ? dir : NULL;
    done = 1;
    const char *ck = student();
    if (!ck) return NULL;
    char extra[1400];
    snprintf(extra, sizeof extra, "--init '%s' --schedule onetime", ck);
    snprintf(dir, sizeof dir, "%s", km_test_sub("np1"));
    double t0 = km_now();
    ok = mine_np(1, dir, extra) == 0;
    printf("    one-time mining of 8 unlabelled images + 1 epoch, one process: %.1f s\n", km_now() - t0);
    return ok ? dir : NULL;
}

KM_TEST(mpi_mine_onetime_sharded_labels_equal_one_process) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *a = np1_run(), *b = km_test_sub("np2");
    CHECK(a != NULL);
    if (!a) return;
    char extra[1400];
    snprintf(extra, sizeof extra, "--init '%s' --schedule onetime", student());
    double t1 = km_now();
    CHECK(mine_np(2, b, extra) == 0);
    printf("    the same with mpirun -np 2: %.1f s\n", km_now() - t1);
    /* both ranks had teacher work: 8 labels of 8 images (no NO_BOX); np 2's checkpoint counts the 8 teacher
     * calls of both ranks (also implied by the byte comparison below) */
    CHECK_MSG(km_test_sh("test $(ls '%s/pseudo' | grep -c png) -eq 8", a) == 0, "expected 8 pseudo labels in %s", a);
    CHECK(km_test_sh("grep -aq '\"mine.teacher_calls\":\"8\",\"mine.no_box\":\"0\"' '%s/last.safetensors' && "
                     "grep -aq '\"mine.onetime.labelled\":\"11111111\"' '%s/last.safetensors'", b, b) == 0);
    CHECK_MSG(km_test_sh("diff -r '%s/pseudo' '%s/pseudo' > /dev/null", a, b) == 0, "pseudo/ differs");
    static const char *const files[] = {"last.safetensors", "best.safetensors", "splits/labelled.txt",
                                        "splits/val.txt"};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(km_test_sh("cmp -s '%s/%s' '%s/%s'", a, files[i], b, files[i]) == 0, "%s differs", files[i]);
    /* metrics.csv without seconds, encoder_seconds, decoder_seconds (columns 11, 18, 19) */
    CHECK_MSG(km_test_sh("cut -d, -f1-10,12-17,20- '%s/metrics.csv' > '%s.m' && cut -d, -f1-10,12-17,20- "
                         "'%s/metrics.csv' | cmp -s - '%s.m'", a, a, b, a) == 0,
              "metrics.csv differs beyond its time columns");
    /* mine_config.json: the same but for "out" (not written at all: the same path is not allowed) */
    CHECK(km_test_sh("grep -v '\"cache_dir\"' '%s/mine_config.json' > '%s.c' && grep -v '\"cache_dir\"' "
                     "'%s/mine_config.json' | cmp -s - '%s.c'", a, a, b, a) == 0);
    /* no stray temporary files from either rank; the shared cache holds whole entries */
    CHECK(km_test_sh("! find '%s' '%s.cache' -name '*.tmp.*' | grep -q .", b, b) == 0);
    CHECK(km_test_sh("test $(find '%s.cache' -type f | wc -l) -eq $(find '%s.cache' -type f | wc -l)", a, b) == 0);
}

/* ---- --micro-batch: N ranks = one process with the same micro-batches ---- */

/* 12 images -> 10 train (5 labelled, 5 unlabelled) / 2 val, 64 px; logs on (the per-rank lines). */
#define SMALL_ARGS "--max-images 12 --val-fraction 0.2 --test-fraction 0 " STUDENT " --seed 5 --threads 1"

/* `[env] [mpirun -np N] kmseg mine ... --out OUT ARGS` (env: "VAR=VALUE" or ""); the exit status. */
static int mine_micro(int np, const char *env, const char *out, const char *args) {
    char launch[256] = "";
    if (np > 1) snprintf(launch, sizeof launch, MPIRUN " %s%s -np %d ", env[0] ? "-x " : "", env, np);
    else if (env[0]) snprintf(launch, sizeof launch, "env %s ", env);
    double t0 = km_now();
    int rc = km_test_sh("%s'%s' mine --data '%s' --teacher '%s' --box-rule all --cache-dir '%s.cache' --out '%s' %s "
                        SMALL_ARGS " > '%s.log' 2>&1",
                        launch, km_test_bin(), km_test_path("data/kvasir-seg"),
                        km_test_path("fixtures/sam_tiny/sam_tiny.pth"), out, out, args, out);
    printf("    %s%s -np %d: exit %d, %.1f s\n", env, env[0] ? " " : "", np, rc, km_now() - t0);
    return rc;
}

/* Run b's files equal run a's byte for byte: checkpoints, pseudo/ (labels
 * and samples), splits, the supervised phase's folder, mine_config.json but
 * its cache_dir line (supervised/config.json but its out line),
 * metrics.csv but its time columns (mining: seconds,
 * encoder_seconds, decoder_seconds = 11, 18, 19; supervised: seconds,
 * img/s = the last two). */
static void check_same_run(const char *a, const char *b) {
    static const char *const files[] = {"last.safetensors", "best.safetensors", "splits/train.txt",
                                        "splits/labelled.txt", "splits/unlabelled.txt", "splits/val.txt",
                                        "supervised/best.safetensors", "supervised/last.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        int sup = !strncmp(files[i], "supervised/", 11);
        if (sup && km_test_sh("test -d '%s/supervised'", a) != 0) continue;
        CHECK_MSG(km_test_sh("cmp -s '%s/%s' '%s/%s'", a, files[i], b, files[i]) == 0, "%s: %s differs from %s's",
                  b, files[i], a);
    }
    CHECK_MSG(km_test_sh("diff -r '%s/pseudo' '%s/pseudo' > /dev/null", a, b) == 0, "%s: pseudo/ differs", b);
    CHECK_MSG(km_test_sh("cut -d, -f1-10,12-17,20- '%s/metrics.csv' > '%s.m' && cut -d, -f1-10,12-17,20- "
                         "'%s/metrics.csv' | cmp -s - '%s.m'", a, b, b, b) == 0,
              "%s: metrics.csv differs beyond its time columns", b);
    if (km_test_sh("test -d '%s/supervised'", a) == 0)
        CHECK_MSG(km_test_sh("cut -d, -f1-10 '%s/supervised/metrics.csv' > '%s.sm' && cut -d, -f1-10 "
                             "'%s/supervised/metrics.csv' | cmp -s - '%s.sm'", a, b, b, b) == 0,
                  "%s: supervised/metrics.csv differs beyond its time columns", b);
    CHECK_MSG(km_test_sh("grep -v '\"cache_dir\"' '%s/mine_config.json' > '%s.c' && grep -v '\"cache_dir\"' "
                         "'%s/mine_config.json' | cmp -s - '%s.c'", a, b, b, b) == 0, "%s: mine_config.json differs",
              b);
    if (km_test_sh("test -d '%s/supervised'", a) == 0)
        CHECK_MSG(km_test_sh("grep -v '\"out\"' '%s/supervised/config.json' > '%s.sc' && grep -v '\"out\"' "
                             "'%s/supervised/config.json' | cmp -s - '%s.sc'", a, b, b, b) == 0,
                  "%s: supervised/config.json differs beyond its out", b);
    CHECK_MSG(km_test_sh("! find '%s' '%s.cache' -name '*.tmp.*' | grep -q .", b, b) == 0, "%s: temporary files", b);
}

/* A stop request in the one-time labelling pass under np 2 (rank 1 gets SIGUSR1 after the pass's first
 * batch of 4 images): both ranks stop there, the labels of images 0-3 (made by ranks 0 and 1) are shared
 * and written with a checkpoint that says so, no log row; one process finishes the pass (images 4-7) and
 * the run, with the files of the one-process run. */
KM_TEST(mpi_mine_stop_in_labelling_pass_resumes_with_np1) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *a = np1_run(), *b = km_test_sub("np2_stop_pass");
    CHECK(a != NULL);
    if (!a) return;
    char extra[1400];
    snprintf(extra, sizeof extra, "--init '%s' --schedule onetime", student());
    CHECK(mine_np_env(2, "KMSEG_TEST_FAULT=1:-1:usr1", b, extra) == 0);
    CHECK(km_test_sh("test $(wc -l < '%s/metrics.csv') -eq 1 && test $(ls '%s/pseudo' | grep -c png) -eq 4 && "
                     "grep -aq '\"mine.onetime.pass.images\":\"4\"' '%s/last.safetensors' && "
                     "grep -aq '\"mine.onetime.labelled\":\"11110000\"' '%s/last.safetensors'", b, b, b, b) == 0);
    CHECK(km_test_sh("'%s' mine --resume '%s' --quiet > '%s.resume.log' 2>&1", km_test_bin(), b, b) == 0);
    check_same_run(a, b);
}

/* The continuous run of (b) and (d): from the student, 2 mining epochs of 3 steps (10 images, batch 4 in 2
 * micro-batches of 2), 1 sample PNG per epoch: the first pseudo label of the epoch, which depends on the
 * order in which the ranks' visits are counted (a rank-major order that is not the micro-batch order
 * picks another one here: the test fails). */
static const char *cont_args(void) {
    static char b[1600];
    const char *ck = student();
    if (!ck) return NULL;
    snprintf(b, sizeof b, "--init '%s' --schedule continuous --mine-epochs 2 --batch 4 --micro-batch 2 "
             "--sample-pngs 1", ck);
    return b;
}

/* (b)'s one-process run (NULL when it failed). */
static const char *cont_np1(void) {
    static int done, ok;
    const char *dir = "cont_np1";
    static char path[1200];
    if (done) return ok ? path : NULL;
    done = 1;
    snprintf(path, sizeof path, "%s", km_test_sub(dir));
    const char *args = cont_args();
    ok = args && mine_micro(1, "", path, args) == 0;
    return ok ? path : NULL;
}

/* (a) one-time mining with its supervised phase, both in micro-batches. */
KM_TEST(mpi_mine_micro_onetime_with_supervised_equals_one_process) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *a = km_test_sub("ot_np1"), *b = km_test_sub("ot_np2");
    const char *args = "--schedule onetime --epochs 1 --lr 1e-3 --mine-epochs 1 --batch 4 --micro-batch 2";
    CHECK(mine_micro(1, "", a, args) == 0);
    CHECK(mine_micro(2, "", b, args) == 0);
    check_same_run(a, b);
    /* the supervised phase ran in micro-batches (its config says so), one-time labels exist and were shared */
    CHECK(km_test_sh("grep -q '\"micro_batch\": 2' '%s/supervised/config.json' && grep -q '\"micro_batch\": 2' "
                     "'%s/mine_config.json'", b, b) == 0);
    CHECK(km_test_sh("test $(ls '%s/pseudo' | grep -c png) -ge 1", b) == 0);
    CHECK_MSG(km_test_sh("grep -q 'one-time labels shared by 2 ranks; encoder runs per rank: [1-9] [1-9]' '%s.log'",
                         b) == 0, "%s.log: no per-rank encoder runs line (both ranks encode)", b);
}

/* (b) continuous mining: teacher calls on the micro-batches' ranks, sample PNGs gathered to rank 0, the
 * embedding precompute shared out. */
KM_TEST(mpi_mine_micro_continuous_equals_one_process) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *a = cont_np1(), *b = km_test_sub("cont_np2");
    CHECK(a != NULL);
    if (!a) return;
    CHECK(mine_micro(2, "", b, cont_args()) == 0);
    check_same_run(a, b);
    /* 2 epochs x 5 visits, each a teacher call unless NO_BOX; 1 sample per epoch, written by rank 0 */
    CHECK(km_test_sh("test $(wc -l < '%s/metrics.csv') -eq 3 && test $(ls '%s/pseudo/epoch_001' | wc -l) -eq 1 && "
                     "test $(ls '%s/pseudo/epoch_002' | wc -l) -eq 1", b, b, b) == 0);
    CHECK(km_test_sh("cut -d, -f12 '%s/metrics.csv' | tail -n 2 | tr '\\n' ' ' | grep -q '^5 5 $'", b) == 0);
    CHECK_MSG(km_test_sh("grep -q 'embedding precompute: 5 of 5 unlabelled images encoded (the rest cached), per "
                         "rank: 3 2' '%s.log'", b) == 0, "%s.log: precompute not shared 3 / 2", b);
    CHECK(km_test_sh("grep -q 'embedding precompute: 5 of 5 .* per rank: 5 ' '%s.log'", a) == 0);
}

/* A stop request in the embedding precompute of (b) under np 2 (rank 1 gets SIGUSR1 after its first round
 * of 2 images): both ranks stop there with the 2 embeddings cached and no mining checkpoint yet (the run
 * starts from --init); one process resumes, encodes the other 3 and ends with (b)'s one-process files. */
KM_TEST(mpi_mine_stop_in_precompute_resumes_with_np1) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *a = cont_np1(), *b = km_test_sub("cont_stop_pre");
    CHECK(a != NULL);
    if (!a) return;
    CHECK(mine_micro(2, "KMSEG_TEST_FAULT=1:-1:usr1", b, cont_args()) == 0);
    CHECK_MSG(km_test_sh("grep -q 'embedding precompute stopped after 2 of 5 unlabelled images: 2 encoded, per "
                         "rank: 1 1' '%s.log' && grep -q 'stop requested (SIGTERM/SIGUSR1) in the embedding "
                         "precompute' '%s.log' && test $(wc -l < '%s/metrics.csv') -eq 1 && ! test -e "
                         "'%s/last.safetensors'", b, b, b, b) == 0, "%s: not stopped after the first round", b);
    CHECK(km_test_sh("'%s' mine --resume '%s' > '%s.resume.log' 2>&1", km_test_bin(), b, b) == 0);
    CHECK_MSG(km_test_sh("grep -q 'embedding precompute: 3 of 5 ' '%s.resume.log'", b) == 0,
              "%s.resume.log: the 2 cached embeddings encoded again", b);
    check_same_run(a, b);
}

/* (c) three ranks: batch 6 = 3 micro-batches of 2 (batches of 6 and 4 images); every pseudo label of the
 * epoch is a sample PNG, so labels made on ranks 1 and 2 reach rank 0 (rank 0 holds at most 4 of the 10
 * images, so at least one of the 5 unlabelled visits is another rank's). */
KM_TEST(mpi_mine_micro_three_ranks_equal_one_process) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *ck = student(), *a = km_test_sub("three_np1"), *b = km_test_sub("three_np3");
    CHECK(ck != NULL);
    if (!ck) return;
    char args[1600];
    snprintf(args, sizeof args, "--init '%s' --schedule continuous --mine-epochs 1 --batch 6 --micro-batch 2 "
             "--sample-pngs 5", ck);
    CHECK(mine_micro(1, "", a, args) == 0);
    CHECK(mine_micro(3, "", b, args) == 0);
    check_same_run(a, b);
    CHECK(km_test_sh("test $(ls '%s/pseudo/epoch_001' | wc -l) -eq $(cut -d, -f13 '%s/metrics.csv' | tail -n 1)", b,
                     b) == 0);
    CHECK(km_test_sh("grep -q 'per rank: 2 2 1' '%s.log'", b) == 0);
}

/* (d) stopped by SIGUSR1 under 2 ranks in mid-epoch and resumed as one process; killed as one process and
 * resumed under 2 ranks: both end as the uninterrupted run. */
KM_TEST(mpi_mine_micro_stop_and_kill_resume_with_other_n) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *ref = cont_np1(), *u = km_test_sub("usr1"), *k = km_test_sub("killed");
    CHECK(ref != NULL);
    if (!ref) return;
    /* rank 1 gets SIGUSR1 after step 2 (of 3 in epoch 1): every rank stops after that step, rank 0 writes a
     * checkpoint holding the partial epoch (no log row), exit 0; one process finishes the epoch */
    CHECK(mine_micro(2, "KMSEG_TEST_FAULT=1:2:usr1", u, cont_args()) == 0);
    CHECK(km_test_sh("test $(wc -l < '%s/metrics.csv') -eq 1 && grep -q 'stop requested (SIGTERM/SIGUSR1): "
                     "checkpoint after step 2 of mining epoch 1' '%s.log' && grep -aq '\"mine.partial.steps\":\"2\"' "
                     "'%s/last.safetensors' && test $(ls '%s/pseudo/epoch_001' | wc -l) -eq 1", u, u, u, u) == 0);
    CHECK(km_test_sh("'%s' mine --resume '%s' > '%s.resume.log' 2>&1", km_test_bin(), u, u) == 0);
    check_same_run(ref, u);
    /* one process killed (SIGKILL) after step 4 = epoch 2's first; 2 ranks resume from epoch 1's checkpoint */
    CHECK(mine_micro(1, "KMSEG_TEST_FAULT=0:4:kill", k, cont_args()) != 0);
    CHECK(km_test_sh("test $(wc -l < '%s/metrics.csv') -eq 2", k) == 0);
    CHECK(km_test_sh(MPIRUN " -np 2 '%s' mine --resume '%s' > '%s.resume.log' 2>&1", km_test_bin(), k, k) == 0);
    check_same_run(ref, k);
    CHECK(km_test_sh("grep -q '^0,' '%s/resumes.csv' && grep -q '^1,' '%s/resumes.csv'", u, k) == 0);
}

/* Without --micro-batch only a one-time run from --init is shared; the rest is refused before any file is
 * written, as are micro-batches that N ranks cannot share. */
KM_TEST(mpi_mine_refuses_what_it_does_not_shard) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *ck = student();
    CHECK(ck != NULL);
    if (!ck) return;
    char extra[1400];
    const char *r1 = km_test_sub("refuse_sup"), *r2 = km_test_sub("refuse_cont"), *r3 = km_test_sub("refuse_k");
    CHECK(mine_np(2, r1, "--schedule onetime") != 0); /* no --init: a supervised phase */
    snprintf(extra, sizeof extra, "--init '%s' --schedule continuous", ck);
    CHECK(mine_np(2, r2, extra) != 0);
    snprintf(extra, sizeof extra, "--init '%s' --schedule continuous --micro-batch 4", ck); /* 1 micro-batch */
    CHECK(mine_np(2, r3, extra) != 0);
    for (int i = 0; i < 2; i++)
        CHECK(km_test_sh("grep -q '2 processes need --micro-batch M (the batch is shared out in micro-batches; "
                         "without it only the one-time labelling pass of a run from --init is shared)' '%s.log'",
                         i ? r2 : r1) == 0);
    CHECK(km_test_sh("grep -q 'micro-batches cannot be shared by 2 processes' '%s.log'", r3) == 0);
    /* copies that do not know each other (srun without PMI) are refused with --micro-batch, as train does */
    const char *r4 = km_test_sub("refuse_alone");
    snprintf(extra, sizeof extra, "--init '%s' --schedule continuous --micro-batch 2", ck);
    CHECK(km_test_sh("SLURM_STEP_NUM_TASKS=2 '%s' mine --data '%s' --teacher '%s' --out '%s' %s " DATA_ARGS
                     " > '%s.log' 2>&1", km_test_bin(), km_test_path("data/kvasir-seg"),
                     km_test_path("fixtures/sam_tiny/sam_tiny.pth"), r4, extra, r4) != 0);
    CHECK(km_test_sh("grep -q 'SLURM_STEP_NUM_TASKS=2 but this process is alone' '%s.log' && test ! -e '%s'", r4,
                     r4) == 0);
    CHECK_MSG(km_test_sh("test ! -e '%s' && test ! -e '%s' && test ! -e '%s'", r1, r2, r3) == 0,
              "a refused run wrote its folder");
    CHECK_MSG(km_test_sh("test ! -e '%s.cache' && test ! -e '%s.cache' && test ! -e '%s.cache'", r1, r2, r3) == 0,
              "a refused run made a cache");
    /* --resume under mpirun of a finished one-time run from --init: allowed, nothing changes */
    const char *a = np1_run();
    CHECK(a != NULL);
    if (a) {
        CHECK(km_test_sh("cp '%s/last.safetensors' '%s.last' && cp '%s/metrics.csv' '%s.csv' && " MPIRUN
                         " -np 2 '%s' mine --resume '%s' > '%s.resume.log' 2>&1", a, a, a, a, km_test_bin(), a, a) == 0);
        CHECK(km_test_sh("grep -q 'the run had already finished' '%s.resume.log' && cmp -s '%s/last.safetensors' "
                         "'%s.last' && cmp -s '%s/metrics.csv' '%s.csv'", a, a, a, a, a) == 0);
    }
}

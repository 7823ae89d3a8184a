/* test_mpi_mine.c - sharded one-time labelling under Open MPI (issue 12
 * point 3, mine.c label_onetime): `mpirun -np 2 kmseg mine --init CKPT
 * --schedule onetime` gives the files of one process byte for byte (timing
 * columns aside), and every other use of mine under mpirun is refused before
 * any file is written. Real Kvasir-SEG images at 64 px, the sam_tiny
 * fixture teacher, one thread per rank. */
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
#define DATA_ARGS "--max-images 20 --val-fraction 0.2 --test-fraction 0 --size 64 --resnet 18 --batch 4 --seed 5 " \
                  "--threads 1 --quiet"

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

/* `[mpirun -np N] kmseg mine ... --out OUT` (one-time from the student unless `extra` says otherwise). */
static int mine_np(int np, const char *out, const char *extra) {
    char launch[256] = "";
    if (np > 1) snprintf(launch, sizeof launch, MPIRUN " -np %d ", np);
    return km_test_sh("%s'%s' mine --data '%s' --teacher '%s' --box-rule all --mine-epochs 1 --cache-dir '%s.cache' "
                      "--out '%s' %s " DATA_ARGS " > '%s.log' 2>&1",
                      launch, km_test_bin(), km_test_path("data/kvasir-seg"),
                      km_test_path("fixtures/sam_tiny/sam_tiny.pth"), out, out, extra, out);
}

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

KM_TEST(mpi_mine_refuses_what_it_does_not_shard) {
    CHECK_MSG(have_mpirun(), "mpirun not found or MPI=0 build: run tools/install-deps.sh");
    const char *ck = student();
    CHECK(ck != NULL);
    if (!ck) return;
    char extra[1400];
    const char *r1 = km_test_sub("refuse_sup"), *r2 = km_test_sub("refuse_cont");
    CHECK(mine_np(2, r1, "--schedule onetime") != 0); /* no --init: a supervised phase */
    snprintf(extra, sizeof extra, "--init '%s' --schedule continuous", ck);
    CHECK(mine_np(2, r2, extra) != 0);
    CHECK(km_test_sh("grep -q 'refused: no --init: the supervised phase is not sharded' '%s.log'", r1) == 0);
    CHECK(km_test_sh("grep -q 'refused: --schedule continuous' '%s.log'", r2) == 0);
    CHECK_MSG(km_test_sh("test ! -e '%s' && test ! -e '%s'", r1, r2) == 0, "a refused run wrote its folder");
    CHECK_MSG(km_test_sh("test ! -e '%s.cache' && test ! -e '%s.cache'", r1, r2) == 0, "a refused run made a cache");
    /* --resume under mpirun: refused too, the finished one-process run untouched */
    const char *a = np1_run();
    CHECK(a != NULL);
    if (a) {
        CHECK(km_test_sh("cp '%s/last.safetensors' '%s.last' && " MPIRUN " -np 2 '%s' mine --resume '%s' --quiet "
                         "> '%s.resume.log' 2>&1", a, a, km_test_bin(), a, a) != 0);
        CHECK(km_test_sh("grep -q 'refused: --resume' '%s.resume.log' && cmp -s '%s/last.safetensors' '%s.last'", a,
                         a, a) == 0);
    }
}

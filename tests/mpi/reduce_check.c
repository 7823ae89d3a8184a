/* reduce_check.c - run under mpirun by tests/test_mpi.c: the cross-rank sum
 * (km_dist_sum, dist.h) on adversarial values equals the single-process tree
 * sum bit for bit.
 *
 *   mpirun -np N reduce_check [n]
 *
 * For K = N, 2N, 3N micro-batches of n floats (default 1001: chunks of
 * unequal length), leaf j element e is a value drawn from {1e8, -1e8, 1, -1,
 * 3.1415927, 1e-3, 2^24+1, -2^24} by a hash of (j, e), scaled by a power of
 * two: sums whose value depends on the order. Every rank builds all K leaves,
 * sums them with km_tree_sum (the reference) and with km_dist_sum over its
 * own K/N, and counts differing bits; rank 0 prints one line per K with the
 * mismatches (must be 0), how many elements a left-to-right sum would get
 * wrong (must be > 0 from K = 4 on: the values do test the order) and how many MPI_SUM
 * (MPI_Allreduce of each rank's left-to-right partial sum) gets wrong
 * (informational: it depends on the algorithm Open MPI picks). Exit status 0
 * when every K matched on every rank. */
#include "../../src/core/dist.h"
#include "../../src/core/km.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float leaf_value(int j, size_t e) {
    static const float v[8] = {1e8f, -1e8f, 1.0f, -1.0f, 3.1415927f, 1e-3f, 16777217.0f, -16777216.0f};
    uint64_t h = ((uint64_t)j * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)e * 0xC2B2AE3D27D4EB4FULL);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    float x = v[h & 7];
    return x * (float)(1 << ((h >> 3) & 3));
}

static int check(int K, size_t n, int rank, int N) {
    float *all = km_malloc(sizeof(float) * n * (size_t)K), *out = km_malloc(sizeof(float) * n);
    float *seq = km_malloc(sizeof(float) * n), *part = km_malloc(sizeof(float) * n);
    float *mpisum = km_malloc(sizeof(float) * n);
    for (int j = 0; j < K; j++)
        for (size_t e = 0; e < n; e++) all[(size_t)j * n + e] = leaf_value(j, e);
    km_dist_sum r;
    if (km_dist_sum_init(&r, n, K)) {
        fprintf(stderr, "reduce_check: %s\n", km_errmsg());
        return 1;
    }
    int Kl = K / N;
    for (int i = 0; i < Kl; i++) km_dist_sum_put(&r, i, all + (size_t)(rank * Kl + i) * n);
    km_dist_sum_run(&r, out);
    for (size_t e = 0; e < n; e++) {
        seq[e] = 0;
        for (int j = 0; j < K; j++) seq[e] += all[(size_t)j * n + e];
        part[e] = 0;
        for (int i = 0; i < Kl; i++) part[e] += all[(size_t)(rank * Kl + i) * n + e];
    }
    MPI_Allreduce(part, mpisum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    km_tree_sum(all, K, n, n); /* the reference, in all[0..n) */
    int bad = 0, seq_diff = 0, mpi_diff = 0;
    for (size_t e = 0; e < n; e++) {
        bad += memcmp(&out[e], &all[e], sizeof(float)) != 0;
        seq_diff += memcmp(&seq[e], &all[e], sizeof(float)) != 0;
        mpi_diff += memcmp(&mpisum[e], &all[e], sizeof(float)) != 0;
    }
    int bad_all = km_dist_max_int(bad);
    if (rank == 0)
        printf("np %d K %d n %zu: mismatches %d, left-to-right differs in %d, MPI_SUM differs in %d\n", N, K, n,
               bad_all, seq_diff, mpi_diff);
    km_dist_sum_free(&r);
    km_free(all);
    km_free(out);
    km_free(seq);
    km_free(part);
    km_free(mpisum);
    return bad_all != 0 || (K >= 4 && seq_diff == 0); /* up to 3 leaves the tree is left-to-right */
}

int main(int argc, char **argv) {
    if (km_dist_init()) {
        fprintf(stderr, "reduce_check: %s\n", km_errmsg());
        return 1;
    }
    int rank = km_dist_rank(), N = km_dist_size(), fail = 0;
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 1001;
    for (int m = 1; m <= 3; m++) fail |= check(m * N, n, rank, N);
    if (rank == 0) printf("%s\n", fail ? "FAIL" : "OK");
    return fail;
}

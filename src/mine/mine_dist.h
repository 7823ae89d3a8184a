/* mine_dist.h - the parts of the mining run (mine.h) that share work
 * between the ranks of `mpirun -np N kmseg mine` (issue 12; the sum itself:
 * src/core/dist.h, micro-batches: src/train/microbatch.h). Internal to
 * src/mine: mine.c is the only caller.
 *
 * What is shared, and how the result stays that of one process:
 *   - training steps (--micro-batch M): rank r computes micro-batches
 *     [r K/N, (r+1) K/N) of every batch (supervised phase: train.c; mining
 *     phase: mine.c mine_step_micro), gradients summed in the fixed tree
 *     order, BatchNorm statistics applied in micro-batch order, and every
 *     number that goes into a log (loss parts, visits, NO_BOX, Dice sums) is
 *     gathered per micro-batch and summed in micro-batch order;
 *   - teacher calls: the one-time labelling pass labels image u on rank
 *     u mod N; in the continuous schedule a visit is labelled by the rank
 *     that owns its micro-batch, its prompts drawn from a stream of its own
 *     (km_mine_visit_rng), so they do not depend on N;
 *   - the embedding precompute (km_mine_precompute);
 *   - the refiner's counters are summed over ranks (km_mine_counts_sync) so
 *     teacher calls and cache counts in logs and checkpoints are the job's. */
#ifndef KM_MINE_DIST_H
#define KM_MINE_DIST_H

#include "mine.h"
#include "refine.h"
#include "../train/dataset.h"

#include <stdio.h>

/* Before any file is written: with --micro-batch M, km_micro_check (M >= 2
 * dividing the batch into a multiple of N micro-batches; copies started by a
 * launcher that do not know each other refused); without it, under mpirun
 * (N > 1 ranks) only a one-time run from --init (its labelling pass is
 * shared, its steps run whole on every rank), anything else KM_EARG "N
 * processes need --micro-batch M (...)". One rank without M: KM_OK. */
km_status km_mine_dist_check(const km_mine_config *c);

/* The refiner's counters as last made equal on every rank. */
typedef struct {
    long n[7];     /* teacher calls, decodes, encoder runs, images, memory hits, disk hits, misses */
    double sec[2]; /* encoder, decoder seconds */
} km_mine_counts;
/* Collective: every rank's counters since `at` are summed (integers; the
 * seconds in rank order) onto `at`, and the refiner's counters set to the
 * result on every rank. enc (N longs, may be NULL): each rank's encoder
 * runs since `at`. One rank: nothing changes (enc[0] is still given). */
void km_mine_counts_sync(km_refiner *R, km_mine_counts *at, long *enc);

/* The prompt RNG of one continuous visit under micro-batches: a stream of
 * its own from the run seed, the epoch and the visit's position in the
 * epoch's order, the same whichever rank computes it. */
void km_mine_visit_rng(km_rng *r, uint64_t seed, int epoch, int pos);

/* Collective, before the first continuous epoch of a process with a disk
 * cache: rank r encodes the unlabelled images u = r, r + N, ... (pool
 * positions first + u, u < n) that have no cache file yet, then a barrier;
 * the counters are synced and, with a log, one line says how many each rank
 * encoded. A rank that later does not find a file (no shared filesystem)
 * encodes the image itself (embcache.h): the same bytes. The images go in
 * rounds of N (one per rank); a stop request (SIGTERM/SIGUSR1) seen after a
 * round ends the pass there with *stopped = 1 (the embeddings made so far
 * stay in the cache); KMSEG_TEST_FAULT=R:-B:KIND fires after round B. */
km_status km_mine_precompute(km_refiner *R, const km_train_split *sp, const km_dataset *pool, int first, int n,
                             km_mine_counts *at, FILE *log, int *stopped);

/* The one-time labelling pass (image u labelled on rank u mod N): every rank
 * gets every frozen label frozen[u] (P bytes) and its Dice numbers pd[u],
 * sd[u] from the rank that made it, in rounds of N images (one per rank,
 * MPI_Allgather); has[u] (the same on every rank) says which exist. */
void km_mine_share_frozen(uint8_t *frozen, const uint8_t *has, int n, size_t P, double *pd, double *sd);

/* "encoder runs per rank: a b c" into buf (N entries of enc). */
void km_mine_rank_list(const long *enc, char *buf, size_t n);

#endif

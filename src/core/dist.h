/* dist.h - data-parallel training across processes with Open MPI (issue 12,
 * ../shared/docs/scale-out.md), and the fixed-order gradient sum that makes
 * its result independent of the number of processes.
 *
 * Processes ("ranks"): `mpirun -np N kmseg train|pretrain ...` starts N
 * copies; km_dist_init joins them (MPI_Init_thread, FUNNELED: only the main
 * thread calls MPI). Without mpirun (no OMPI_COMM_WORLD_SIZE / PMIX_RANK in
 * the environment) MPI is never initialised and kmseg is one process, rank 0
 * of 1, exactly as before. A data-parallel run (--micro-batch) that a
 * launcher started as several copies which do not know each other (srun
 * without PMI) is refused by km_dist_check_alone: SLURM_STEP_NUM_TASKS,
 * OMPI_COMM_WORLD_SIZE or PMI_SIZE > 1 with an MPI size of 1 (independent
 * copies of other work, e.g. `srun -n 4 kmseg experiments --shard`, are
 * left alone). A build without MPI (make MPI=0) is always one process.
 *
 * The sum (km_dist_sum): a batch is K micro-batches; rank r holds the
 * gradients of micro-batches [r K/N, (r+1) K/N) (K a multiple of N). The
 * result is the pairwise tree sum of the K gradients in micro-batch order
 * (km_tree_sum), the same bits for every N: MPI_Alltoallv sends chunk j of
 * every local gradient to rank j, which sums its chunk over the K micro-
 * batches with the tree, and MPI_Allgatherv returns every chunk to every
 * rank. MPI moves bytes only (no MPI_SUM, whose order depends on the
 * algorithm Open MPI picks), so neither timing nor MCA settings change it.
 * Per rank and step it sends (K/N) x n x (N-1)/N floats and receives as many
 * again in the allgather: for K = N, the traffic of a ring allreduce. */
#ifndef KM_DIST_H
#define KM_DIST_H

#include "km.h"

#include <stddef.h>

/* Joins the job (idempotent; the first call decides). KM_EINTERNAL when
 * MPI cannot start. Finalises at exit (km_dist_fail ends a failed job). */
km_status km_dist_init(void);
/* KM_EARG "VAR=N but this process is alone ..." when the launcher says it
 * started N > 1 copies and MPI says 1 (see above). */
km_status km_dist_check_alone(void);
int km_dist_rank(void); /* 0 before km_dist_init */
int km_dist_size(void); /* 1 before km_dist_init */
/* 1 when this build links MPI. */
int km_dist_have_mpi(void);

/* A failure on this rank: with more than one rank prints "kmseg: rank R of N
 * failed: <message>" and ends the whole job (MPI_Abort), since the others
 * would wait for it forever; with one rank returns s. */
km_status km_dist_fail(km_status s);

/* Collectives over all ranks (no-ops for one rank). */
void km_dist_barrier(void);
void km_dist_bcast(void *buf, size_t bytes);          /* from rank 0 */
void km_dist_allgather(const void *mine, void *all, size_t bytes); /* all: size x bytes, rank order */
/* max over ranks of an int flag (a stop request, an error). */
int km_dist_max_int(int v);
/* KM_EINTERNAL "<what> differs between ranks: rank R has hash H, rank 0 H0"
 * unless every rank passes the same hash. */
km_status km_dist_check_same(uint64_t hash, const char *what);
/* FNV-1a 64 of bytes, continuing from h (start with 1469598103934665603). */
uint64_t km_dist_hash(uint64_t h, const void *p, size_t bytes);

/* ---- failures (issue 12 point 4) ----
 * Stop requests: SIGTERM and SIGUSR1 (Slurm's warning before its time
 * limit, `sbatch --signal=USR1@120`) set a flag instead of ending the
 * process; km_dist_stop_requested, called by every rank at the same point
 * (a step's end), returns the maximum of the ranks' flags, so all stop after
 * the same step, checkpoint and exit 0. The handlers are installed by
 * km_dist_signals_install and restored by km_dist_signals_restore; the flag,
 * once set, stays set for the process. */
void km_dist_signals_install(void);
void km_dist_signals_restore(void);
int km_dist_stop_requested(void); /* collective */
int km_dist_stop_pending(void);   /* this process's flag (not collective) */

/* The step watchdog (--step-timeout SEC, 0: none): a thread that ends the
 * job with MPI_Abort (without MPI: exit 1), after printing "kmseg: rank R:
 * step S has run for T s, more than --step-timeout SEC (a rank hung or
 * died?)", when a step (between km_dist_step_begin and _end, its
 * collectives included) lasts longer than SEC, or any collective of this
 * file waits longer than SEC (outside steps: the stop check, barriers). */
km_status km_dist_watchdog_start(double seconds);
void km_dist_watchdog_stop(void);
void km_dist_step_begin(int step);
void km_dist_step_end(void);

/* Test hook: with KMSEG_TEST_FAULT=RANK:STEP:KIND in the environment, rank
 * RANK after optimiser step STEP (STEP = -B: after batch B of mine's
 * one-time labelling pass) kills itself (KIND kill: SIGKILL), sleeps for an
 * hour (hang) or raises SIGUSR1 (usr1). Tests only. */
void km_dist_test_fault(int step);

/* Pairwise tree sum in place: leaf i is leaves + i*stride (n floats each),
 * the result lands in leaf 0. sum(leaves 0..K) = sum(0..p) + sum(p..K) with
 * p the largest power of two below K: balanced for K a power of two, and the
 * order a running binary-counter accumulation produces otherwise. Each
 * element is summed in that order whatever the thread count. */
void km_tree_sum(float *leaves, int K, size_t stride, size_t n);

/* The cross-rank sum of one gradient per micro-batch. */
typedef struct {
    int K, Kl, N, rank;
    size_t n;
    float *send, *recv;
    int *cnt, *dsp; /* per rank: counts and displacements of the chunks (floats) */
} km_dist_sum;
/* n floats per gradient, K micro-batches in all (K % N == 0: KM_EARG). */
km_status km_dist_sum_init(km_dist_sum *r, size_t n, int K);
/* Copies the gradient g of local micro-batch i (0 <= i < K/N; global
 * micro-batch rank * K/N + i) into the send buffer. */
void km_dist_sum_put(km_dist_sum *r, int i, const float *g);
/* out (n floats, every rank) = tree sum over the K micro-batches. */
void km_dist_sum_run(km_dist_sum *r, float *out);
/* Seconds spent in MPI calls by km_dist_sum_run since the start (benchmarks). */
double km_dist_comm_seconds(void);
void km_dist_sum_free(km_dist_sum *r);

#endif

/* microbatch.h - a batch as K micro-batches, shared by the ranks of mpirun
 * (issue 12; the sum itself is src/core/dist.h). Used by the supervised loop
 * (train.c) and SimCLR pretraining (simclr.c) with --micro-batch M.
 *
 * A batch of B images is K = B/M micro-batches of M; rank r of N computes
 * micro-batches [r K/N, (r+1) K/N) (K a multiple of N), each on its own:
 * BatchNorm statistics of the micro-batch alone, loss scaled by its share of
 * the batch's images (n_j / n, n the images of the micro-batches that count),
 * so that the summed gradient is that of sum_j share_j loss_j. The gradients
 * are summed in the fixed tree order of km_dist_sum; each micro-batch's
 * BatchNorm statistics are captured (km_unetpp_bn_capture) and every rank
 * applies all K updates in micro-batch order. Every rank thus ends the step
 * with the same bits as one process accumulating the same micro-batches, for
 * any N. A micro-batch of fewer than 2 images (the end of a short last batch)
 * does not count: zero gradient, no statistics (BatchNorm of one image is
 * degenerate, the rule of the loop's dropped trailing batch of one). */
#ifndef KM_MICROBATCH_H
#define KM_MICROBATCH_H

#include "../core/dist.h"
#include "../models/unetpp.h"

/* --sync-bn's help, one text for the train and pretrain settings tables. */
#define KM_HELP_SYNC_BN                                                                                          \
    "with --micro-batch: BatchNorm statistics of the whole batch, every micro-batch of every process (like "     \
    "PyTorch's SyncBatchNorm; per BatchNorm layer two small allgathers in the forward, one in the backward)"

typedef struct {
    int M, K, Kl, rank;
    size_t nst; /* BatchNorm statistics floats per micro-batch */
    km_dist_sum sum;
    float *st, *st_all;  /* [Kl][nst] this rank's, [K][nst] everyone's */
    double *ls, *ls_all; /* loss per micro-batch, likewise */
    /* --sync-bn (km_micro_sync_open) */
    int sync;
    int *cnt;      /* [K] images (rows) per micro-batch of the current batch */
    km_bn_sync bs; /* the model's hook: groups = micro-batches, gather = km_dist_allgather */
} km_micro;

/* KM_EARG naming the flags unless M = 0 with one process, or M >= 2 divides
 * batch into a multiple of mpirun's -np micro-batches (and, M > 0, the
 * launcher did not start copies that do not know each other:
 * km_dist_check_alone). */
km_status km_micro_check(int batch, int M);
/* batch / M micro-batches over this process's ranks, gradients of `ngrad`
 * floats (km_micro_check first). */
km_status km_micro_open(km_micro *u, int batch, int M, size_t ngrad, const km_unetpp *m);
void km_micro_close(km_micro *u);
/* Images in micro-batch j of a batch of bn that count (0 or >= 2). */
int km_micro_n(const km_micro *u, int j, int bn);
/* Images of a batch of bn that count: the sum of km_micro_n over the K. */
int km_micro_total(const km_micro *u, int bn);
/* This rank's images [*lo, *hi) of a batch of bn (u == NULL or M == 0: all). */
void km_micro_rank_images(const km_micro *u, int bn, int *lo, int *hi);
/* The global index of local micro-batch i. */
static inline int km_micro_global(const km_micro *u, int i) { return u->rank * u->Kl + i; }
/* Before local micro-batch i's forward: its BatchNorm statistics go to its
 * slot (the running statistics are left alone until km_micro_finish). */
void km_micro_begin(km_micro *u, km_unetpp *m, int i);
/* After local micro-batch i's backward: its loss and gradient g (ngrad). */
void km_micro_end(km_micro *u, km_unetpp *m, int i, double loss, const float *g);
/* Every rank: gsum = the tree sum of the K gradients, the K running-
 * statistics updates applied in order; returns the batch loss
 * sum_j share_j loss_j. */
double km_micro_finish(km_micro *u, km_unetpp *m, int bn, float *gsum);

/* --sync-bn: BatchNorm with the statistics of the whole batch, every
 * micro-batch of every rank (PyTorch's SyncBatchNorm), still bit-identical
 * for any N. After km_micro_open, km_micro_sync_open hooks u into the model
 * (km_unetpp_set_sync: this rank's Kl micro-batches are the model's groups,
 * the gather an allgather of every BatchNorm's per-micro-batch partial sums,
 * combined in micro-batch order) and allocates Kl gradient blocks in the
 * model. A step then runs this rank's micro-batches as ONE train-mode
 * forward and ONE backward of the km_micro_sync_batch images (each
 * convolution still per micro-batch), the loss per micro-batch as before
 * (u->ls[i], scaled by its share), km_micro_end(u, m, i, ls[i], micro-batch
 * i's gradient: km_unetpp_group_grads(m, i) or built from it) for every
 * local i, then km_micro_finish, which with sync applies no captured
 * statistics (the forward updated the running statistics once, from the
 * whole batch). Costs one allgather of 2 C doubles per micro-batch for each
 * BatchNorm layer in the forward and again in the backward, and Kl gradient
 * blocks of memory. km_micro_begin is not used. */
km_status km_micro_sync_open(km_micro *u, km_unetpp *m);
/* Sets the micro-batches' sizes for a batch of bn images, rows_per_image
 * rows per image (pretraining: 2 views); returns this rank's rows, the N of
 * its forward (0 when its micro-batches are all empty: it still runs the
 * forward and backward, which take part in every gather). */
int km_micro_sync_batch(km_micro *u, int bn, int rows_per_image);

/* Hash (dist.h) of a student's whole state: weights, BatchNorm buffers and
 * counters, its Adam moments and step; ranks compare it at the start. */
uint64_t km_unetpp_state_hash(const km_unetpp *m);

#endif

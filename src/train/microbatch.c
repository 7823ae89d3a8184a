/* microbatch.c - micro-batches across ranks; see microbatch.h. */
#include "microbatch.h"

#include <string.h>

km_status km_micro_check(int batch, int M) {
    int N = km_dist_size();
    km_status s = M ? km_dist_check_alone() : KM_OK;
    if (s) return s;
    if (N > 1 && !M)
        return km_err(KM_EARG, "%d processes need --micro-batch M (the batch is shared out in micro-batches)", N);
    if (M && (M < 2 || batch % M))
        return km_err(KM_EARG, "--micro-batch %d: expected 0 (off) or a divisor of --batch %d of at least 2 "
                      "(BatchNorm statistics per micro-batch)", M, batch);
    if (M && (batch / M) % N)
        return km_err(KM_EARG, "--batch %d / --micro-batch %d = %d micro-batches cannot be shared by %d processes "
                      "(a multiple of %d is needed)", batch, M, batch / M, N, N);
    return KM_OK;
}

km_status km_micro_open(km_micro *u, int batch, int M, size_t ngrad, const km_unetpp *m) {
    memset(u, 0, sizeof *u);
    km_status s = km_micro_check(batch, M);
    if (s) return s;
    u->M = M;
    u->K = batch / M;
    u->rank = km_dist_rank();
    s = km_dist_sum_init(&u->sum, ngrad, u->K);
    if (s) return s;
    u->Kl = u->sum.Kl;
    u->nst = km_unetpp_bn_stats_floats(m);
    u->st = km_malloc(sizeof(float) * u->nst * (size_t)u->Kl);
    u->st_all = km_malloc(sizeof(float) * u->nst * (size_t)u->K);
    u->ls = km_malloc(sizeof(double) * (size_t)u->Kl);
    u->ls_all = km_malloc(sizeof(double) * (size_t)u->K);
    return KM_OK;
}

void km_micro_close(km_micro *u) {
    km_dist_sum_free(&u->sum);
    km_free(u->cnt);
    km_free(u->bs.part);
    km_free(u->bs.all);
    km_free(u->st);
    km_free(u->st_all);
    km_free(u->ls);
    km_free(u->ls_all);
    memset(u, 0, sizeof *u);
}

int km_micro_n(const km_micro *u, int j, int bn) {
    int n = bn - j * u->M;
    n = n < 0 ? 0 : (n > u->M ? u->M : n);
    return n < 2 ? 0 : n;
}

int km_micro_total(const km_micro *u, int bn) {
    int total = 0;
    for (int j = 0; j < u->K; j++) total += km_micro_n(u, j, bn);
    return total;
}

void km_micro_rank_images(const km_micro *u, int bn, int *lo, int *hi) {
    if (!u || !u->M) {
        *lo = 0;
        *hi = bn;
        return;
    }
    int a = u->rank * u->Kl * u->M, b = a + u->Kl * u->M;
    *lo = a < bn ? a : bn;
    *hi = b < bn ? b : bn;
}

void km_micro_begin(km_micro *u, km_unetpp *m, int i) {
    km_unetpp_bn_capture(m, u->st + u->nst * (size_t)i); /* zeroed: an empty micro-batch updates nothing */
}

void km_micro_end(km_micro *u, km_unetpp *m, int i, double loss, const float *g) {
    km_unetpp_bn_capture(m, NULL);
    u->ls[i] = loss;
    km_dist_sum_put(&u->sum, i, g);
}

double km_micro_finish(km_micro *u, km_unetpp *m, int bn, float *gsum) {
    int total = km_micro_total(u, bn);
    km_dist_sum_run(&u->sum, gsum);
    if (!u->sync) km_dist_allgather(u->st, u->st_all, sizeof(float) * u->nst * (size_t)u->Kl);
    km_dist_allgather(u->ls, u->ls_all, sizeof(double) * (size_t)u->Kl);
    double l = 0;
    for (int j = 0; j < u->K; j++) {
        int nj = km_micro_n(u, j, bn);
        if (!nj) continue;
        if (!u->sync) km_unetpp_bn_apply(m, u->st_all + u->nst * (size_t)j);
        l += u->ls_all[j] * ((double)nj / total); /* share 1 for one micro-batch: the loss exactly */
    }
    return l;
}

/* The model's gather (km_bn_sync): every rank's Kl groups of n doubles, in
 * rank order = micro-batch order. */
static void sync_gather(void *ud, const double *mine, double *all, size_t n) {
    const km_micro *u = ud;
    km_dist_allgather(mine, all, sizeof(double) * n * (size_t)u->Kl);
}

km_status km_micro_sync_open(km_micro *u, km_unetpp *m) {
    enum { CMAX = 512 }; /* the most channels of a student BatchNorm */
    u->sync = 1;
    u->cnt = km_calloc(sizeof(int) * (size_t)u->K);
    km_bn_sync *b = &u->bs;
    b->K = u->K;
    b->G = u->Kl;
    b->g0 = u->rank * u->Kl;
    b->count = u->cnt;
    b->gather = km_dist_size() > 1 ? sync_gather : NULL;
    b->ud = u;
    b->cmax = CMAX;
    b->part = km_malloc(sizeof(double) * 2 * CMAX * (size_t)u->Kl);
    b->all = km_malloc(sizeof(double) * 2 * CMAX * (size_t)u->K);
    return km_unetpp_set_sync(m, b);
}

int km_micro_sync_batch(km_micro *u, int bn, int rows_per_image) {
    int rows = 0;
    for (int j = 0; j < u->K; j++) u->cnt[j] = km_micro_n(u, j, bn) * rows_per_image;
    for (int i = 0; i < u->Kl; i++) rows += u->cnt[km_micro_global(u, i)];
    return rows;
}

uint64_t km_unetpp_state_hash(const km_unetpp *m) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    km_unetpp_optim_to_tdict(m, &d);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < d.n; i++) h = km_dist_hash(h, d.items[i].data, d.items[i].nbytes);
    km_tdict_free(&d);
    return h;
}

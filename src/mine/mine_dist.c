/* mine_dist.c - the mining run's work shared across ranks; see mine_dist.h. */
#include "mine_dist.h"

#include "../core/dist.h"
#include "../train/microbatch.h"

#include <string.h>

#define KM_VISIT_SALT 0x7669736974000000ULL /* "visit" */

km_status km_mine_dist_check(const km_mine_config *c) {
    int N = km_dist_size();
    if (c->train.micro_batch) return km_micro_check(c->train.batch, c->train.micro_batch); /* any N */
    if (N == 1 || (c->init && c->schedule == KM_MINE_ONETIME)) return KM_OK;
    return km_err(KM_EARG, "%d processes need --micro-batch M (the batch is shared out in micro-batches; without it "
                  "only the one-time labelling pass of a run from --init is shared)", N);
}

/* The refiner's counters, in km_mine_counts order. */
static void counters(km_refiner *R, long **n, double **sec) {
    long *p[] = {&R->teacher_calls, &R->decodes, &R->encoder_runs, &R->images,
                 &R->cache.hits_mem, &R->cache.hits_disk, &R->cache.misses};
    memcpy(n, p, sizeof p);
    sec[0] = &R->encoder_seconds;
    sec[1] = &R->decoder_seconds;
}

void km_mine_counts_sync(km_refiner *R, km_mine_counts *at, long *enc) {
    enum { NN = (int)(sizeof at->n / sizeof at->n[0]) };
    int N = km_dist_size();
    long *n[NN];
    double *sec[2];
    counters(R, n, sec);
    if (N == 1) { /* nothing to sum: the counters stay as they are (bit for bit) */
        if (enc) enc[0] = R->encoder_runs - at->n[2];
        return;
    }
    km_mine_counts d, *all = km_malloc(sizeof d * (size_t)N);
    memset(&d, 0, sizeof d);
    for (int i = 0; i < NN; i++) d.n[i] = *n[i] - at->n[i];
    for (int i = 0; i < 2; i++) d.sec[i] = *sec[i] - at->sec[i];
    km_dist_allgather(&d, all, sizeof d);
    for (int q = 0; q < N; q++) {
        for (int i = 0; i < NN; i++) at->n[i] += all[q].n[i];
        for (int i = 0; i < 2; i++) at->sec[i] += all[q].sec[i];
        if (enc) enc[q] = all[q].n[2];
    }
    km_free(all);
    for (int i = 0; i < NN; i++) *n[i] = at->n[i];
    for (int i = 0; i < 2; i++) *sec[i] = at->sec[i];
}

void km_mine_visit_rng(km_rng *r, uint64_t seed, int epoch, int pos) {
    uint64_t v[3] = {seed, (uint64_t)epoch, (uint64_t)pos};
    km_rng_seed(r, km_hash64(v, sizeof v, KM_VISIT_SALT));
}

void km_mine_rank_list(const long *enc, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int q = 0; q < km_dist_size() && k + 1 < n; q++) {
        int w = snprintf(buf + k, n - k, "%s%ld", q ? " " : "", enc[q]);
        if (w < 0) break;
        k += (size_t)w;
    }
}

km_status km_mine_precompute(km_refiner *R, const km_train_split *sp, const km_dataset *pool, int first, int n,
                             km_mine_counts *at, FILE *log, int *stopped) {
    int N = km_dist_size(), r = km_dist_rank(), done = n;
    double t0 = km_now();
    km_status s = KM_OK;
    for (int u0 = 0; u0 < n && !s; u0 += N) { /* rounds: every rank checks for a stop request after each */
        int u = u0 + r, pi = first + u, encoded = 0;
        if (u < n) {
            char *path = km_dataset_image_path(&sp->idx, pool->src[pi]);
            km_refine_image im;
            km_refine_image_file(&im, path, pool->orig_w[pi], pool->orig_h[pi], pool->orig_hash[pi]);
            s = km_refine_precompute(R, &im, &encoded);
            km_free(path);
        }
        if (s || u0 + N >= n) continue;
        km_dist_test_fault(-(u0 / N + 1));
        if (km_dist_stop_requested()) {
            done = u0 + N;
            break;
        }
    }
    if (s) return s; /* the caller ends the job (km_dist_fail): the others wait in a collective */
    km_dist_barrier();
    long *enc = km_malloc(sizeof(long) * (size_t)N);
    km_mine_counts_sync(R, at, enc);
    if (log) {
        char list[512];
        km_mine_rank_list(enc, list, sizeof list);
        long tot = 0;
        for (int q = 0; q < N; q++) tot += enc[q];
        if (done < n)
            fprintf(log, "embedding precompute stopped after %d of %d unlabelled images: %ld encoded, per rank: %s "
                    "(%.1f s)\n", done, n, tot, list, km_now() - t0);
        else
            fprintf(log, "embedding precompute: %ld of %d unlabelled images encoded (the rest cached), per rank: %s "
                    "(%.1f s)\n", tot, n, list, km_now() - t0);
    }
    km_free(enc);
    *stopped = done < n;
    return KM_OK;
}

void km_mine_share_frozen(uint8_t *frozen, const uint8_t *has, int n, size_t P, double *pd, double *sd) {
    int N = km_dist_size(), r = km_dist_rank();
    size_t rec = P + 2 * sizeof(double);
    uint8_t *mine = km_malloc(rec), *all = km_malloc(rec * (size_t)N);
    for (int j0 = 0; j0 < n; j0 += N) {
        memset(mine, 0, rec);
        if (j0 + r < n && has[j0 + r]) {
            memcpy(mine, frozen + P * (j0 + r), P);
            memcpy(mine + P, &pd[j0 + r], sizeof(double));
            memcpy(mine + P + sizeof(double), &sd[j0 + r], sizeof(double));
        }
        km_dist_allgather(mine, all, rec);
        for (int q = 0; q < N && j0 + q < n; q++) {
            const uint8_t *a = all + rec * (size_t)q;
            memcpy(frozen + P * (j0 + q), a, P);
            memcpy(&pd[j0 + q], a + P, sizeof(double));
            memcpy(&sd[j0 + q], a + P + sizeof(double), sizeof(double));
        }
    }
    km_free(all);
    km_free(mine);
}

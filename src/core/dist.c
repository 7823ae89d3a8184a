/* dist.c - processes under mpirun and the fixed-order gradient sum; see
 * dist.h. Built with MPI when KM_MPI is defined (the default build, Makefile);
 * without it every collective is the one-process case. */
#include "dist.h"

#ifdef KM_MPI
#include <mpi.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_init, g_rank, g_size = 1;
static double g_comm_s;
#ifdef KM_MPI
static int g_mpi;
static void wd_enter(void); /* the watchdog, below */
static void wd_leave(void);
#endif

int km_dist_rank(void) { return g_rank; }
int km_dist_size(void) { return g_size; }
double km_dist_comm_seconds(void) { return g_comm_s; }

int km_dist_have_mpi(void) {
#ifdef KM_MPI
    return 1;
#else
    return 0;
#endif
}

/* The number of copies a launcher says it started (0: no launcher). */
static long launcher_size(const char **which) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            *which = vars[i];
            return strtol(v, NULL, 10);
        }
    }
    return 0;
}

#ifdef KM_MPI
static void finalize_at_exit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}
#endif

km_status km_dist_init(void) {
    if (g_init) return KM_OK;
    g_init = 1;
#ifdef KM_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK")) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return km_err(KM_EINTERNAL, "MPI_Init_thread failed");
        g_mpi = 1;
        atexit(finalize_at_exit);
        MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g_size);
        if (provided < MPI_THREAD_FUNNELED)
            return km_dist_fail(km_err(KM_EINTERNAL, "MPI gives thread level %d, FUNNELED needed", provided));
    }
#endif
    return KM_OK;
}

km_status km_dist_check_alone(void) {
    const char *which = NULL;
    long want = launcher_size(&which);
    if (want > 1 && g_size == 1)
        return km_err(KM_EARG,
                      "%s=%ld but this process is alone (MPI size 1%s): the launcher started copies that do "
                      "not know each other and would all write the same run; start them with mpirun (inside a "
                      "Slurm allocation: mpirun kmseg ...), or run one task",
                      which, want, km_dist_have_mpi() ? "" : "; this kmseg was built without MPI");
    return KM_OK;
}

km_status km_dist_fail(km_status s) {
#ifdef KM_MPI
    if (g_mpi && g_size > 1) {
        fprintf(stderr, "kmseg: rank %d of %d failed: %s\n", g_rank, g_size, km_errmsg());
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#endif
    return s;
}

void km_dist_barrier(void) {
#ifdef KM_MPI
    if (g_size > 1) {
        wd_enter();
        MPI_Barrier(MPI_COMM_WORLD);
        wd_leave();
    }
#endif
}

void km_dist_bcast(void *buf, size_t bytes) {
#ifdef KM_MPI
    wd_enter();
    for (size_t o = 0; g_size > 1 && o < bytes;) {
        size_t c = bytes - o < (1u << 30) ? bytes - o : (1u << 30);
        MPI_Bcast((char *)buf + o, (int)c, MPI_BYTE, 0, MPI_COMM_WORLD);
        o += c;
    }
    wd_leave();
#else
    (void)buf;
    (void)bytes;
#endif
}

void km_dist_allgather(const void *mine, void *all, size_t bytes) {
#ifdef KM_MPI
    if (g_size > 1) {
        wd_enter();
        MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
        wd_leave();
        return;
    }
#endif
    memmove(all, mine, bytes);
}

int km_dist_max_int(int v) {
#ifdef KM_MPI
    if (g_size > 1) {
        int r = v; /* MPI_MAX of integers: exact, order-free */
        wd_enter();
        MPI_Allreduce(&v, &r, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        wd_leave();
        return r;
    }
#endif
    return v;
}

uint64_t km_dist_hash(uint64_t h, const void *p, size_t bytes) {
    const unsigned char *b = p;
    for (size_t i = 0; i < bytes; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

km_status km_dist_check_same(uint64_t hash, const char *what) {
    if (g_size == 1) return KM_OK;
    uint64_t *all = km_malloc(sizeof(uint64_t) * (size_t)g_size);
    km_dist_allgather(&hash, all, sizeof hash);
    km_status s = KM_OK;
    for (int r = 1; r < g_size && !s; r++)
        if (all[r] != all[0])
            s = km_err(KM_EINTERNAL, "%s differs between ranks: rank %d has hash %016llx, rank 0 %016llx", what, r,
                       (unsigned long long)all[r], (unsigned long long)all[0]);
    km_free(all);
    return s;
}

/* ---------------------------------------------------------------- failures */

static volatile sig_atomic_t g_stop;
static struct sigaction g_old_term, g_old_usr1;
static int g_sig_installed;

static void on_stop_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

void km_dist_signals_install(void) {
    if (g_sig_installed) return;
    g_sig_installed = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, &g_old_term);
    sigaction(SIGUSR1, &sa, &g_old_usr1);
}

void km_dist_signals_restore(void) {
    if (!g_sig_installed) return;
    g_sig_installed = 0;
    sigaction(SIGTERM, &g_old_term, NULL);
    sigaction(SIGUSR1, &g_old_usr1, NULL);
}

int km_dist_stop_requested(void) {
    if (km_dist_max_int(g_stop ? 1 : 0)) g_stop = 1; /* every rank then reports it pending */
    return g_stop != 0;
}
int km_dist_stop_pending(void) { return g_stop != 0; }

static struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int on, quit, in_step, step, in_coll;
    double limit, t0, tc; /* tc: start of the collective outside a step */
} g_wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

#ifdef KM_MPI
/* Every collective is watched too, also outside a step (the stop check, the
 * epoch's barrier): a rank that stopped answering hangs the others there. */
static void wd_enter(void) {
    if (!g_wd.on) return;
    pthread_mutex_lock(&g_wd.mu);
    if (!g_wd.in_coll++) g_wd.tc = km_now();
    pthread_mutex_unlock(&g_wd.mu);
}

static void wd_leave(void) {
    if (!g_wd.on) return;
    pthread_mutex_lock(&g_wd.mu);
    g_wd.in_coll--;
    pthread_mutex_unlock(&g_wd.mu);
}
#endif

static void *watchdog_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_wd.mu);
    while (!g_wd.quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000000L; /* look 5 times a second */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_wd.cv, &g_wd.mu, &ts);
        double ran = g_wd.in_step ? km_now() - g_wd.t0 : 0, waited = g_wd.in_coll ? km_now() - g_wd.tc : 0;
        if (!g_wd.quit && (ran > g_wd.limit || waited > g_wd.limit)) {
            if (ran > g_wd.limit)
                fprintf(stderr, "kmseg: rank %d: step %d has run for %.1f s, more than --step-timeout %g (a rank "
                        "hung or died?): ending the job\n", g_rank, g_wd.step, ran, g_wd.limit);
            else
                fprintf(stderr, "kmseg: rank %d: a collective after step %d has waited %.1f s, more than "
                        "--step-timeout %g (a rank hung or died?): ending the job\n", g_rank, g_wd.step, waited,
                        g_wd.limit);
            fflush(stderr);
#ifdef KM_MPI
            /* FUNNELED allows MPI calls on the main thread only, which is
             * stuck; Open MPI's abort only signals its daemon, and a return
             * falls through to the exit below. */
            if (g_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
            _exit(1);
        }
    }
    pthread_mutex_unlock(&g_wd.mu);
    return NULL;
}

km_status km_dist_watchdog_start(double seconds) {
    if (seconds <= 0 || g_wd.on) return KM_OK;
    g_wd.limit = seconds;
    g_wd.quit = 0;
    g_wd.in_step = g_wd.in_coll = 0;
    int e = pthread_create(&g_wd.th, NULL, watchdog_main, NULL);
    if (e) return km_err(KM_EINTERNAL, "cannot start the --step-timeout watchdog: %s", strerror(e));
    g_wd.on = 1;
    return KM_OK;
}

void km_dist_watchdog_stop(void) {
    if (!g_wd.on) return;
    pthread_mutex_lock(&g_wd.mu);
    g_wd.quit = 1;
    pthread_cond_broadcast(&g_wd.cv);
    pthread_mutex_unlock(&g_wd.mu);
    pthread_join(g_wd.th, NULL);
    g_wd.on = 0;
}

void km_dist_step_begin(int step) {
    if (!g_wd.on) return;
    pthread_mutex_lock(&g_wd.mu);
    g_wd.step = step;
    g_wd.t0 = km_now();
    g_wd.in_step = 1;
    pthread_mutex_unlock(&g_wd.mu);
}

void km_dist_step_end(void) {
    if (!g_wd.on) return;
    pthread_mutex_lock(&g_wd.mu);
    g_wd.in_step = 0;
    pthread_mutex_unlock(&g_wd.mu);
}

void km_dist_test_fault(int step) {
    const char *v = getenv("KMSEG_TEST_FAULT");
    int r, st;
    char kind[16];
    if (!v || sscanf(v, "%d:%d:%15s", &r, &st, kind) != 3 || r != g_rank || st != step) return;
    fprintf(stderr, "kmseg: KMSEG_TEST_FAULT: rank %d after step %d: %s\n", r, st, kind);
    fflush(stderr);
    if (!strcmp(kind, "kill")) raise(SIGKILL);
    if (!strcmp(kind, "hang")) sleep(3600);
    if (!strcmp(kind, "usr1")) raise(SIGUSR1);
}

/* ------------------------------------------------------------ the tree sum */

static void add_into(float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

void km_tree_sum(float *leaves, int K, size_t stride, size_t n) {
    if (K < 2) return;
    int p = 1;
    while (2 * p < K) p *= 2;
    km_tree_sum(leaves, p, stride, n);
    km_tree_sum(leaves + (size_t)p * stride, K - p, stride, n);
    add_into(leaves, leaves + (size_t)p * stride, n);
}

/* ------------------------------------------------------- the sum over ranks */

km_status km_dist_sum_init(km_dist_sum *r, size_t n, int K) {
    memset(r, 0, sizeof *r);
    int N = g_size;
    if (K < 1 || K % N)
        return km_err(KM_EARG, "%d micro-batches per batch cannot be shared by %d processes (a multiple of %d is "
                      "needed: --batch / --micro-batch)", K, N, N);
    r->K = K;
    r->Kl = K / N;
    r->N = N;
    r->rank = g_rank;
    r->n = n;
    r->cnt = km_malloc(sizeof(int) * (size_t)N);
    r->dsp = km_malloc(sizeof(int) * (size_t)N);
    for (int j = 0; j < N; j++) {
        size_t c0 = n * (size_t)j / (size_t)N, c1 = n * (size_t)(j + 1) / (size_t)N;
        if ((c1 - c0) * (size_t)r->Kl > (size_t)2147483647 || c1 > (size_t)2147483647) {
            km_dist_sum_free(r);
            return km_err(KM_ENOMEM, "gradient chunks of %zu floats x %d micro-batches exceed MPI's int counts",
                          c1 - c0, r->Kl);
        }
        r->cnt[j] = (int)(c1 - c0);
        r->dsp[j] = (int)c0;
    }
    r->send = km_try_malloc(sizeof(float) * n * (size_t)r->Kl);
    r->recv = N > 1 ? km_try_malloc(sizeof(float) * (size_t)r->cnt[g_rank] * (size_t)K) : r->send;
    if (!r->send || !r->recv) {
        km_dist_sum_free(r);
        return km_err(KM_ENOMEM, "cannot allocate %.2f GB for %d micro-batch gradients", 8.0 * n * r->Kl / 1e9, r->Kl);
    }
    return KM_OK;
}

/* Send layout: per destination j, the local micro-batches' chunks j in
 * order; so rank j receives, per source rank s, the chunks of micro-batches
 * s*Kl .. s*Kl+Kl-1: its receive buffer holds the K leaves in global order. */
void km_dist_sum_put(km_dist_sum *r, int i, const float *g) {
    for (int j = 0; j < r->N; j++)
        memcpy(r->send + (size_t)r->Kl * r->dsp[j] + (size_t)i * r->cnt[j], g + r->dsp[j], sizeof(float) * r->cnt[j]);
}

void km_dist_sum_run(km_dist_sum *r, float *out) {
    size_t mine = (size_t)r->cnt[r->rank];
#ifdef KM_MPI
    if (r->N > 1) {
        int N = r->N;
        int *sc = km_malloc(sizeof(int) * 4 * (size_t)N), *sd = sc + N, *rc = sc + 2 * N, *rd = sc + 3 * N;
        for (int j = 0; j < N; j++) {
            sc[j] = r->Kl * r->cnt[j];
            sd[j] = r->Kl * r->dsp[j];
            rc[j] = r->Kl * (int)mine;
            rd[j] = j * r->Kl * (int)mine;
        }
        wd_enter();
        double t0 = MPI_Wtime();
        MPI_Alltoallv(r->send, sc, sd, MPI_FLOAT, r->recv, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
        g_comm_s += MPI_Wtime() - t0;
        km_tree_sum(r->recv, r->K, mine, mine);
        t0 = MPI_Wtime();
        MPI_Allgatherv(r->recv, (int)mine, MPI_FLOAT, out, r->cnt, r->dsp, MPI_FLOAT, MPI_COMM_WORLD);
        g_comm_s += MPI_Wtime() - t0;
        wd_leave();
        km_free(sc);
        return;
    }
#endif
    km_tree_sum(r->recv, r->K, mine, mine);
    memcpy(out, r->recv, sizeof(float) * mine);
}

void km_dist_sum_free(km_dist_sum *r) {
    if (r->recv != r->send) km_free(r->recv);
    km_free(r->send);
    km_free(r->cnt);
    km_free(r->dsp);
    memset(r, 0, sizeof *r);
}

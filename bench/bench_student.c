/* bench_student.c - kmseg side of the student benchmark (bench/run_all.sh).
 *
 *   bench_student --mode eval|train [--size 224] [--batch 8] [--threads 2]
 *                 [--warmup 1] [--repeats 5] [--resnet 34]
 *
 * Same workload as bench/ref_unetpp.py: U-Net++/ResNet34, random weights and
 * inputs; eval = eval-mode forward; train = train-mode forward, loss
 * (BCE + Dice), backward, Adam (lr 5e-5). Prints one JSON line with the
 * per-repeat times, the peak RSS (this process runs one mode only) and the
 * convolutions' share of time and GFLOP/s. */
#include "../src/core/args.h"
#include "../src/core/rng.h"
#include "../src/models/unetpp.h"
#include "../src/nn/gemm.h"

#include <string.h>
#include <sys/resource.h>

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *mode = "train";
    int size = 224, batch = 8, threads = 2, warmup = 1, repeats = 5, resnet = 34;
    km_flag flags[] = {{"--mode", KM_FLAG_STR, &mode, "eval or train", 0, 0},
                       {"--size", KM_FLAG_INT, &size, "input size", 0, 0},
                       {"--batch", KM_FLAG_INT, &batch, "batch", 0, 0},
                       {"--threads", KM_FLAG_INT, &threads, "threads", 0, 0},
                       {"--warmup", KM_FLAG_INT, &warmup, "untimed runs", 0, 0},
                       {"--repeats", KM_FLAG_INT, &repeats, "timed runs", 0, 0},
                       {"--resnet", KM_FLAG_INT, &resnet, "18 or 34", 0, 0},
                       {0}};
    int help;
    if (km_parse_flags("bench_student", "", flags, argc, argv, &help) || help) {
        if (!help) fprintf(stderr, "%s\n", km_errmsg());
        return help ? 0 : 2;
    }
    km_set_threads(threads);
    int train = !strcmp(mode, "train");
    km_unetpp *m = km_unetpp_create(resnet, 1);
    size_t nx = (size_t)batch * 3 * size * size, ny = (size_t)batch * size * size;
    float *x = km_malloc(nx * 4), *y = km_malloc(ny * 4), *lg = km_malloc(ny * 4),
          *dl = km_malloc(ny * 4);
    km_rng r;
    km_rng_seed(&r, 2);
    for (size_t i = 0; i < nx; i++) x[i] = (float)km_rng_normal(&r);
    for (size_t i = 0; i < ny; i++) y[i] = km_rng_uniform(&r) > 0.5 ? 1.0f : 0.0f;
    double rss_build = peak_rss_mb();
    km_unetpp_profile prof;
    double *t = km_malloc(sizeof(double) * (repeats > 0 ? repeats : 1));
    for (int it = 0; it < warmup + repeats; it++) {
        if (it == warmup) {
            memset(&prof, 0, sizeof prof);
            km_unetpp_set_profile(m, &prof);
        }
        double t0 = km_now();
        if (train) {
            km_unetpp_zero_grad(m);
            if (km_unetpp_forward(m, x, batch, size, size, 1, lg)) {
                fprintf(stderr, "%s\n", km_errmsg());
                return 1;
            }
            km_seg_loss(lg, y, ny, 0.5, 2.0f, dl, NULL, NULL);
            km_unetpp_backward(m, dl, NULL);
            km_unetpp_adam_step(m, 5e-5f, 0.9f, 0.999f, 1e-8f, 0.0f);
        } else if (km_unetpp_forward(m, x, batch, size, size, 0, lg)) {
            fprintf(stderr, "%s\n", km_errmsg());
            return 1;
        }
        if (it >= warmup) t[it - warmup] = km_now() - t0;
    }
    double sum = 0;
    for (int i = 0; i < repeats; i++) sum += t[i];
    qsort(t, repeats, sizeof *t, cmp);
    double conv_s = prof.fwd_s + prof.bwd_s, conv_flop = prof.fwd_flop + prof.bwd_flop;
    double gemm_flop = prof.fwd_gemm_flop + prof.bwd_gemm_flop;
    printf("{\"impl\": \"kmseg\", \"mode\": \"%s\", \"median_s\": %.4f, \"min_s\": %.4f, \"max_s\": %.4f, "
           "\"peak_rss_mb\": %.1f, \"rss_mb_after_build\": %.1f, \"conv_time_frac\": %.3f, "
           "\"conv_gflops\": %.1f, \"conv_fwd_gflops\": %.1f, \"conv_bwd_gflops\": %.1f, "
           "\"conv_gemm_gflops\": %.1f, \"gemm_gflop_per_step\": %.1f, "
           "\"gflop_per_step\": %.1f, \"threads\": %d, \"batch\": %d, \"size\": %d, \"blas\": \"%s\"}\n",
           mode, t[repeats / 2], t[0], t[repeats - 1], peak_rss_mb(), rss_build,
           conv_s / sum, conv_flop / conv_s / 1e9, prof.fwd_flop / prof.fwd_s / 1e9,
           prof.bwd_s > 0 ? prof.bwd_flop / prof.bwd_s / 1e9 : 0.0, gemm_flop / conv_s / 1e9,
           gemm_flop / repeats / 1e9, conv_flop / repeats / 1e9,
           threads, batch, size, km_gemm_backend());
    km_unetpp_free(m);
    return 0;
}

/* bench_decode.c - kmseg's side of bench/run_decode.sh: one box-prompt decode
 * (prompt encoder + mask decoder, single mask) with a real SAM-family
 * checkpoint's prompt_encoder.* / mask_decoder.* weights (LiteMedSAM by
 * default) on a fixed random image embedding, timed like bench/ref_decode.py.
 *
 *   bench_decode --checkpoint lite_medsam.pth --embedding-out EMB.f32
 *                --lowres-out LOW.f32 [--input 256] [--box x0,y0,x1,y1]
 *                [--threads 2] [--warmup 5] [--repeats 100] [--embedding-in E.f32]
 *
 * The embedding [1, 256, 64, 64] is N(0, 1) from km_rng seed 1 (or the raw
 * float32 file --embedding-in), written as raw little-endian float32 to
 * EMB.f32 so that ref_decode.py decodes the same one.
 * The box is in the prompt encoder's input frame (--input: 256 for LiteMedSAM,
 * 1024 for SAM / MedSAM); kmseg's prompt encoder works in the 1024 frame and
 * adds 0.5 before dividing by 1024, so a box coordinate b of a 256-input model
 * is handed over as 4b + 1.5: (4b + 1.5 + 0.5) / 1024 = (b + 0.5) / 256, exact
 * in float32 for these magnitudes.
 *
 * One timed decode = km_sam_prompt_sparse (the box) + km_sam_prompt_dense (no
 * mask: no_mask_embed broadcast) + km_sam_decoder_forward, i.e. what
 * km_sam_predict runs before its post-processing; the dense positional
 * encoding of the 64x64 grid is constant and computed once outside the timing
 * (the predictor caches it too). The low-res logits of mask token 0 (the
 * single-mask output) are written to LOW.f32 [256*256] for the parity check.
 * Prints one JSON line: median / min / max wall and median CPU time (all
 * threads) per decode. Build: see bench/run_decode.sh. */
#include "../src/core/km.h"
#include "../src/core/rng.h"
#include "../src/io/load.h"
#include "../src/models/sam_decoder.h"
#include "../src/models/sam_prompt.h"
#include "../src/nn/gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fail(void) {
    fprintf(stderr, "bench_decode: %s\n", km_errmsg());
    exit(1);
}

static void write_raw(const char *path, const float *x, size_t n) {
    if (km_write_file_atomic(path, x, sizeof(float) * n)) fail();
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *emb_out = NULL, *emb_in = NULL, *low_out = NULL;
    const char *box_s = "60,50,180,200";
    int threads = 2, warmup = 5, repeats = 100, input = 256;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--checkpoint")) ckpt = v;
        else if (!strcmp(f, "--embedding-out")) emb_out = v;
        else if (!strcmp(f, "--embedding-in")) emb_in = v;
        else if (!strcmp(f, "--lowres-out")) low_out = v;
        else if (!strcmp(f, "--box")) box_s = v;
        else if (!strcmp(f, "--input")) input = atoi(v);
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--warmup")) warmup = atoi(v);
        else if (!strcmp(f, "--repeats")) repeats = atoi(v);
        else {
            fprintf(stderr, "bench_decode: unknown flag %s\n", f);
            return 2;
        }
    }
    float b[4];
    if (!ckpt || sscanf(box_s, "%f,%f,%f,%f", &b[0], &b[1], &b[2], &b[3]) != 4 || repeats < 1 ||
        warmup < 0 || threads < 1 || (input != 256 && input != 1024)) {
        fprintf(stderr, "usage: bench_decode --checkpoint F [--embedding-out E.f32] [--embedding-in "
                        "E.f32] [--lowres-out L.f32] [--input 256|1024] [--box x0,y0,x1,y1] "
                        "[--threads N] [--warmup N] [--repeats N]\n");
        return 2;
    }
    km_set_threads(threads);
    km_tdict sd;
    km_tdict_init(&sd);
    km_sam_prompt pe;
    km_sam_decoder dec;
    if (km_load_checkpoint(ckpt, &sd) || km_sam_prompt_load(&pe, &sd, ckpt, "prompt_encoder.") ||
        km_sam_decoder_load(&dec, &sd, ckpt, "mask_decoder."))
        fail();
    const int D = dec.D, HW = KM_SAM_EMB_HW * KM_SAM_EMB_HW, LOW = KM_SAM_MASK_HW * KM_SAM_MASK_HW;
    const int M = dec.n_mask_tokens, ns = km_sam_prompt_num_sparse(0, 1);
    float *emb = km_malloc(sizeof(float) * D * HW), *dpe = km_malloc(sizeof(float) * D * HW);
    float *dense = km_malloc(sizeof(float) * D * HW), *masks = km_malloc(sizeof(float) * M * LOW);
    float *sparse = km_malloc(sizeof(float) * ns * D), iou[8];
    size_t nw = km_sam_decoder_work_floats(&dec, ns);
    float *work = km_malloc(sizeof(float) * nw);
    km_rng r;
    km_rng_seed(&r, 1);
    for (int i = 0; i < D * HW; i++) emb[i] = (float)km_rng_normal(&r);
    if (emb_in) {
        uint8_t *buf;
        size_t n;
        if (km_read_file(emb_in, (size_t)1 << 30, &buf, &n)) fail();
        if (n != sizeof(float) * D * HW) {
            fprintf(stderr, "bench_decode: %s: %zu bytes, expected %zu (raw float32 [1, %d, 64, 64])\n",
                    emb_in, n, sizeof(float) * D * HW, D);
            return 1;
        }
        memcpy(emb, buf, n);
        km_free(buf);
    }
    if (emb_out) write_raw(emb_out, emb, (size_t)D * HW);
    km_sam_prompt_dense_pe(&pe, dpe);
    float box[4];
    for (int k = 0; k < 4; k++) box[k] = input == 256 ? 4.0f * b[k] + 1.5f : b[k];

    double *tw = km_malloc(sizeof(double) * repeats), *tc = km_malloc(sizeof(double) * repeats);
    for (int k = 0; k < warmup + repeats; k++) {
        double w = km_now(), c = cpu_s();
        km_sam_prompt_sparse(&pe, sparse, NULL, NULL, 0, box);
        km_sam_prompt_dense(&pe, dense, NULL, NULL);
        km_sam_decoder_forward(&dec, masks, iou, emb, dpe, sparse, ns, dense, work);
        if (k >= warmup) {
            tw[k - warmup] = km_now() - w;
            tc[k - warmup] = cpu_s() - c;
        }
    }
    if (low_out) write_raw(low_out, masks, (size_t)LOW);
    double mn = tw[0], mx = tw[0];
    for (int k = 0; k < repeats; k++) mn = fmin(mn, tw[k]), mx = fmax(mx, tw[k]);
    printf("{\"impl\": \"kmseg\", \"checkpoint\": \"%s\", \"gemm\": \"%s\", \"input\": %d, "
           "\"box\": [%g, %g, %g, %g], \"decode_s\": %.5f, \"decode_min_max_s\": [%.5f, %.5f], "
           "\"decode_cpu_s\": %.5f, \"iou0\": %.6f, \"threads\": %d, \"warmup\": %d, "
           "\"repeats\": %d}\n",
           ckpt, km_gemm_backend(), input, b[0], b[1], b[2], b[3], median(tw, repeats), mn, mx,
           median(tc, repeats), iou[0], threads, warmup, repeats);
    km_free(tw);
    km_free(tc);
    km_free(work);
    km_free(sparse);
    km_free(masks);
    km_free(dense);
    km_free(dpe);
    km_free(emb);
    km_tdict_free(&sd);
    return 0;
}

/* forward.c - `kmseg forward`: run the student on an .npy batch.
 *
 *   kmseg forward --weights FILE --input X.npy --output Y.npy [--mode eval|train]
 *
 * The architecture (ResNet18/34 encoder) is read from the checkpoint (.pth zip
 * or legacy, or safetensors; smp- or kmseg-written). Input (N,3,H,W) float32
 * with H, W multiples of 32; output logits (N,1,H,W) float32. --mode train runs
 * BatchNorm with batch statistics, as model.train() does in PyTorch. */
#include "cmd.h"
#include "../core/args.h"
#include "../io/npy.h"
#include "../models/unetpp.h"

#include <string.h>

km_status km_cmd_forward(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *output = NULL, *mode = "eval";
    int threads = 2;
    km_flag flags[] = {
        {"--weights", KM_FLAG_STR, &weights, "student checkpoint (.pth or .safetensors)", 1, 0},
        {"--input", KM_FLAG_STR, &input, "input batch .npy, float32 (N,3,H,W), H and W multiples of 2^D (the student's encoder depth D: 32 by default)", 1, 0},
        {"--output", KM_FLAG_STR, &output, "output logits .npy, float32 (N,1,H,W)", 1, 0},
        {"--mode", KM_FLAG_STR, &mode, "eval or train (BatchNorm batch statistics)", 0, 0},
        KM_CMD_THREADS_FLAG(&threads),
        {0}};
    int help;
    km_status s = km_parse_flags("forward", "--weights FILE --input X.npy --output Y.npy [--mode eval|train]",
                                 flags, argc, argv, &help);
    if (s || help) return s;
    int train;
    if (!strcmp(mode, "eval")) train = 0;
    else if (!strcmp(mode, "train")) train = 1;
    else return km_err(KM_EARG, "--mode must be 'eval' or 'train', got '%s'", mode);
    if (threads < 1) return km_err(KM_EARG, "--threads must be >= 1, got %d", threads);
    km_set_threads(threads);

    km_tensor x;
    int64_t want[4] = {-1, 3, -1, -1};
    s = km_npy_load_f32(input, 4, want, &x);
    if (s) return s;
    int N = (int)x.shape[0], H = (int)x.shape[2], W = (int)x.shape[3];
    km_unetpp *m = NULL;
    s = km_unetpp_load(&m, weights);
    if (s) {
        km_tensor_free(&x);
        return s;
    }
    int D = km_unetpp_encoder_depth(m), q = 1 << D;
    if (N < 1 || H % q || W % q || H < q || W < q) {
        km_tensor_free(&x);
        km_unetpp_free(m);
        return km_err(KM_ESHAPE, "%s: input is (%d,3,%d,%d); H and W must be positive multiples of %d (%s: encoder "
                      "depth %d)", input, N, H, W, q, weights, D);
    }
    float *y = km_try_malloc(sizeof(float) * (size_t)N * H * W);
    if (!y) s = km_err(KM_ENOMEM, "cannot allocate the output");
    if (!s) s = km_unetpp_forward(m, x.data, N, H, W, train, y);
    if (!s) {
        int64_t shape[4] = {N, 1, H, W};
        s = km_npy_save(output, KM_F32, 4, shape, y);
    }
    km_free(y);
    km_unetpp_free(m);
    km_tensor_free(&x);
    return s;
}

/* unetpp.h - the student: smp UnetPlusPlus with a torchvision ResNet18/34
 * encoder (BasicBlock), encoder_depth 5 (or 3, 4), decoder channels
 * (256,128,64,32,16) by default, 1 class, and its training step machinery
 * (reference-arch.md section 2).
 *
 * encoder_depth D: encoder stages 0..D (1: conv1/bn1/relu at stride 2, 2:
 * maxpool + layer1 at stride 4, 3: layer2, 4: layer3, 5: layer4), D decoder
 * levels (blocks x_d_l, l < D - 1, d <= l, then x_0_{D-1}), input sides
 * multiples of 2^D. smp keeps the unused layers past stage D in its state
 * dict (never run by its forward); this model leaves them out: its key list
 * is smp's without 'encoder.layerK.*', K >= D, and loading ignores those.
 *
 * Parameters live in one float block in smp state_dict order (llm.c style);
 * gradients and Adam moments mirror it, so the optimiser is one loop and a
 * checkpoint is one table. BatchNorm running statistics live in a second block.
 * Activation memory for a given (N, H, W) is allocated by km_unetpp_reserve and
 * reused by every step: no allocation inside a training step. */
#ifndef KM_UNETPP_H
#define KM_UNETPP_H

#include "../io/tensor.h"
#include "../core/rng.h"
#include "../nn/ops.h"

typedef struct km_unetpp km_unetpp;

/* What a state-dict entry is, and where its values live. */
typedef enum {
    KM_UNETPP_PARAM = 0,   /* a parameter: offset into params (grads, Adam moments alike) */
    KM_UNETPP_BUFFER = 1,  /* a float buffer (BatchNorm running_mean/var): offset into buffers */
    KM_UNETPP_COUNTER = 2, /* BatchNorm num_batches_tracked, an int64 scalar: offset = BatchNorm index */
} km_unetpp_kind;

typedef struct {
    const char *name; /* smp state_dict key */
    int ndim;
    int64_t shape[4];
    size_t offset; /* see kind */
    size_t numel;
    km_unetpp_kind kind;
} km_unetpp_entry;

/* --decoder-channels' and --encoder-depth's help, one text each for the train
 * and pretrain settings tables. */
#define KM_HELP_DECODER_CHANNELS                                                                                \
    "smp's decoder_channels a,b,c,d,e: output channels of the 5 decoder stages (default 256,128,64,32,16; "     \
    "smaller: a smaller, faster student, e.g. 16,16,8,8,8); --encoder-depth D takes D of them"
#define KM_HELP_ENCODER_DEPTH                                                                                   \
    "smp's encoder_depth: ResNet stages used, 3, 4 or 5 (default 5); below 5 a smaller, faster student for "    \
    "small images (--size a multiple of 2^D, --decoder-channels with D entries, e.g. 3 with 16,8,8)"

/* resnet_depth: 18 or 34 (ResNet variant). Weights are randomly initialised
 * as smp / torchvision do (kaiming for convs, BN 1/0), from `seed`. Encoder
 * depth 5, decoder channels smp's default, km_unetpp_default_decoder. */
km_unetpp *km_unetpp_create(int resnet_depth, uint64_t seed);
/* The same with smp's decoder_channels (the output channels of decoder blocks
 * x_0_0 .. x_0_4; the segmentation head reads the last); each in
 * [1, KM_UNETPP_MAX_DECODER_CH]. The default gives km_unetpp_create's model. */
km_unetpp *km_unetpp_create_dec(int resnet_depth, const int decoder_channels[5], uint64_t seed);
/* The same with smp's encoder_depth (KM_UNETPP_MIN_ENCODER_DEPTH..5) and its
 * encoder_depth decoder channels (blocks x_0_0 .. x_0_{D-1}). Depth 5 gives
 * km_unetpp_create_dec's model, bit for bit. */
km_unetpp *km_unetpp_create_arch(int resnet_depth, int encoder_depth, const int *decoder_channels, uint64_t seed);
extern const int km_unetpp_default_decoder[5]; /* 256, 128, 64, 32, 16 */
enum { KM_UNETPP_MAX_DECODER_CH = 4096, KM_UNETPP_MIN_ENCODER_DEPTH = 3 };
/* The model's decoder channels (km_unetpp_encoder_depth ints). */
const int *km_unetpp_decoder_channels(const km_unetpp *m);
/* KM_EARG naming --encoder-depth unless 3 <= encoder_depth <= 5. */
km_status km_unetpp_check_encoder_depth(int encoder_depth);
/* KM_EARG naming --size unless size is a positive multiple of 2^encoder_depth
 * (the encoder halves the image encoder_depth times). */
km_status km_unetpp_check_size(int size, int encoder_depth);
/* "a,b,c,.." (--decoder-channels, encoder_depth entries) into ch; NULL: smp's
 * default at depth 5, refused below (smp has none). KM_EARG on a bad depth or
 * anything but encoder_depth comma-separated integers in range. */
km_status km_unetpp_parse_decoder(const char *spec, int encoder_depth, int ch[5]);
void km_unetpp_format_decoder(const int *ch, int encoder_depth, char buf[64]);
/* KM_EARG "FILE: a model of encoder depth D, but --encoder-depth E" or
 * "FILE: decoder channels a,b,.., but --decoder-channels ..." when the model
 * loaded from `file` is not the one --encoder-depth encoder_depth and
 * --decoder-channels spec (NULL: the default) name. */
km_status km_unetpp_check_arch(const km_unetpp *m, int encoder_depth, const char *spec, const char *file);
/* Loads a full smp state dict (.pth zip/legacy or safetensors); the ResNet
 * depth is read from the keys (layer1.2 present -> 34), the encoder depth D
 * from the decoder's blocks (x_0_0 .. x_0_{D-1} present), the decoder
 * channels from the shapes of decoder.blocks.x_0_*.conv1.0.weight. smp's
 * unused layers past stage D are ignored when present. */
km_status km_unetpp_load(km_unetpp **out, const char *path);
km_status km_unetpp_from_tdict(km_unetpp **out, const km_tdict *sd, const char *file);
/* Loads a torchvision ResNet checkpoint (keys conv1.*, layer*.*, fc.*) or an
 * encoder-only kmseg checkpoint ("encoder." prefix) into the encoder; fc.* and
 * the layers past the model's encoder depth (as smp, which loads and never
 * runs them) are ignored and counted in *n_ignored. */
km_status km_unetpp_load_encoder(km_unetpp *m, const char *path, int *n_ignored);
/* Writes the full state dict (350 entries for ResNet34 at depth 5, smp key names, with
 * int64 num_batches_tracked) as safetensors, metadata added (atomic). */
km_status km_unetpp_save(const km_unetpp *m, const char *path, const km_tdict *extra_meta);
/* Exports to a tdict (copies). */
void km_unetpp_to_tdict(const km_unetpp *m, km_tdict *out);
void km_unetpp_free(km_unetpp *m);

int km_unetpp_resnet_depth(const km_unetpp *m);
/* smp's encoder_depth D (3..5). */
int km_unetpp_encoder_depth(const km_unetpp *m);
/* C_D: channels of the last encoder stage (km_unetpp_encoder_forward's
 * feat): 128, 256, 512 for D = 3, 4, 5. */
int km_unetpp_feature_channels(const km_unetpp *m);
size_t km_unetpp_num_params(const km_unetpp *m);
/* The encoder's parameters ('encoder.*') are the first block of the
 * parameter array, [0, km_unetpp_num_encoder_params) (smp state-dict order):
 * an optimiser of the encoder alone (SimCLR) steps that prefix. */
size_t km_unetpp_num_encoder_params(const km_unetpp *m);
int km_unetpp_num_entries(const km_unetpp *m);
const km_unetpp_entry *km_unetpp_entry_at(const km_unetpp *m, int i);
float *km_unetpp_params(km_unetpp *m);
float *km_unetpp_grads(km_unetpp *m);
float *km_unetpp_buffers(km_unetpp *m);
/* Pointer to the data of a named parameter/buffer (NULL if unknown). */
float *km_unetpp_tensor(km_unetpp *m, const char *name, int grad);

/* Allocates activation/workspace memory for batches up to N x 3 x H x W
 * (H, W multiples of 2^D, 32 at encoder depth 5). Called implicitly by
 * forward if needed. */
km_status km_unetpp_reserve(km_unetpp *m, int N, int H, int W);
/* Forward. train = 1: BatchNorm in training mode (batch stats, running stats
 * updated) and activations kept for backward. logits: [N,1,H,W]. */
km_status km_unetpp_forward(km_unetpp *m, const float *x, int N, int H, int W, int train,
                            float *logits);
/* Backward of the last train-mode forward: grads += d(loss)/d(params) given
 * dlogits [N,1,H,W]. dx (may be NULL) receives d(loss)/d(input) (+=). */
void km_unetpp_backward(km_unetpp *m, const float *dlogits, float *dx);
void km_unetpp_zero_grad(km_unetpp *m);

/* BatchNorm statistics of a forward, to be applied later (micro-batches
 * computed by other processes, train.c). With stats != NULL (floats:
 * km_unetpp_bn_stats_floats; zeroed here) train-mode forwards leave the
 * running statistics and counters alone and write each BatchNorm's batch mean
 * and unbiased variance at its buffers' offsets, and 1 after the buffers at
 * its counter's index; NULL: normal forwards. km_unetpp_bn_apply performs the
 * running-statistics updates (and counter increments) of one captured
 * forward, bit-identical to the forward's own. */
size_t km_unetpp_bn_stats_floats(const km_unetpp *m);
void km_unetpp_bn_capture(km_unetpp *m, float *stats);
void km_unetpp_bn_apply(km_unetpp *m, const float *stats);

/* Synchronised BatchNorm (--sync-bn, microbatch.h). With s != NULL, a
 * train-mode forward takes this process's s->G groups (micro-batches) of
 * s->count[s->g0 + g] images, one after the other (N = their sum; N = 0 is
 * allowed once the model is reserved: a process whose groups are empty still
 * takes part in every gather). Every BatchNorm normalises with the statistics
 * of all s->K groups (km_bn_sync_forward) and updates its running statistics
 * once from them; every convolution runs per group on the group's images
 * alone. The backward (km_unetpp_backward, km_unetpp_encoder_backward) uses
 * the whole-batch BatchNorm sums too and adds each group's parameter
 * gradients to its own block, km_unetpp_group_grads(m, g) (nparams floats;
 * km_unetpp_zero_grad clears them, km_unetpp_grads is left alone). s must
 * stay valid while set; NULL: normal forwards. KM_ENOMEM when the G blocks
 * cannot be allocated. Eval-mode forwards ignore it. */
km_status km_unetpp_set_sync(km_unetpp *m, const km_bn_sync *s);
float *km_unetpp_group_grads(km_unetpp *m, int g);

/* The encoder alone (SimCLR pretraining): feat receives the last encoder
 * stage [N, C_D, H/2^D, W/2^D] (km_unetpp_feature_channels; after its final
 * ReLU). km_unetpp_encoder_backward adds
 * d(loss)/d(encoder params) given dfeat (decoder gradients untouched); it
 * follows a train-mode km_unetpp_encoder_forward. */
km_status km_unetpp_encoder_forward(km_unetpp *m, const float *x, int N, int H, int W, int train,
                                    float *feat);
void km_unetpp_encoder_backward(km_unetpp *m, const float *dfeat, float *dx);

/* Adam over all parameters (bias-corrected, torch 1.13 semantics). The
 * optimiser state (m, v, step) belongs to the model object. */
void km_unetpp_adam_step(km_unetpp *m, float lr, float beta1, float beta2, float eps,
                         float weight_decay);
int km_unetpp_adam_t(const km_unetpp *m);
void km_unetpp_adam_reset(km_unetpp *m);
/* Optimiser state as tensors ("adam.exp_avg" and "adam.exp_avg_sq", flat
 * [num_params] in parameter order, "adam.step" int64 scalar) for resumable
 * checkpoints, and back. */
void km_unetpp_optim_to_tdict(const km_unetpp *m, km_tdict *out);
km_status km_unetpp_optim_from_tdict(km_unetpp *m, const km_tdict *d, const char *file);

/* Optional timing of the convolutions (forward and backward), for the
 * benchmarks: when set, every conv call adds its seconds and FLOPs
 * (2 x MACs) here: *_flop as a direct convolution would count them,
 * *_gemm_flop as actually performed in the GEMMs (fewer with Winograd, see
 * km_conv2d_gemm_flop). Pass NULL to stop. */
typedef struct {
    double fwd_s, bwd_s, fwd_flop, bwd_flop, fwd_gemm_flop, bwd_gemm_flop;
} km_unetpp_profile;
void km_unetpp_set_profile(km_unetpp *m, km_unetpp_profile *p);

/* Loss used for training: a*BCEWithLogits(mean) + (1-a)*Dice(binary, batch-pooled);
 * returns the loss and writes dlogits (overwritten, scaled by `scale`). */
double km_seg_loss(const float *logits, const float *y, size_t n, double bce_weight,
                   float scale, float *dlogits, double *bce_out, double *dice_out);

#endif

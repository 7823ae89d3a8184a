/* cmd.h - subcommand entry points (argv[0] is the command name) and the
 * flags and checks several commands share. */
#ifndef KM_CMD_H
#define KM_CMD_H

#include "../core/args.h"
#include "../core/km.h"
#include "../io/settings.h"

typedef km_status (*km_cmd_fn)(int argc, char **argv);
typedef struct {
    const char *name;
    km_cmd_fn fn;
    const char *help;
} km_command;

/* Every command, once: X(name as typed, entry point, one line of help), in
 * the order `kmseg --help` lists them. main.c's dispatch table and the
 * declarations below are made from this list. */
#define KM_COMMANDS(X)  \
    X("forward", km_cmd_forward, "run the student on an .npy batch and write its logits") \
    X("info", km_cmd_info, "list the tensors of a checkpoint (.pth, safetensors) or .npy file") \
    X("demo", km_cmd_demo, "train the student for a few steps on real images, showing the loss") \
    X("check-data", km_cmd_check_data, "validate a dataset folder (and split lists), listing every problem") \
    X("train", km_cmd_train, "train the student on images + masks (run folder, resumable)") \
    X("eval", km_cmd_eval, "per-image Dice/IoU of a checkpoint on a dataset split (CSV + JSON)") \
    X("predict", km_cmd_predict, "predict masks (PNG, original resolution) for a folder of images") \
    X("pretrain", km_cmd_pretrain, "SimCLR pretraining of the student's encoder on the train images") \
    X("sam", km_cmd_sam, "segment one image with SAM from point/box/mask prompts") \
    X("experiments", km_cmd_experiments, "the paper's grid: datasets x fractions x methods x seeds -> tables.md, results.csv") \
    X("teacher-quality", km_cmd_teacher_quality, "Dice/IoU of the teacher on a dataset, prompted by ground truth or a student") \
    X("report", km_cmd_report, "static HTML report (charts, tables, gallery) of a run or an experiments folder") \
    X("mine", km_cmd_mine, "knowledge mining: student + SAM teacher pseudo labels (one-time / continuous)")
#define KM_CMD_DECLARE(name, fn, help) km_status fn(int argc, char **argv);
KM_COMMANDS(KM_CMD_DECLARE)
#undef KM_CMD_DECLARE

/* ---- what several commands share (common.c) ---- */

/* --data DIR (required) of the commands that read a dataset. */
#define KM_CMD_DATA_FLAG(ptr) \
    {"--data", KM_FLAG_STR, (ptr), "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", 1, 0}
/* --threads N: compute threads. */
#define KM_CMD_THREADS_FLAG(ptr) {"--threads", KM_FLAG_INT, (ptr), "compute threads", 0, 0}
/* --quiet: no progress lines. */
#define KM_CMD_QUIET_FLAG(ptr) {"--quiet", KM_FLAG_BOOL, (ptr), "no progress lines", 0, 0}
/* The teacher checkpoint flag `name` (--teacher, sam's --checkpoint), NULL:
 * the default teacher (km_teacher_resolve). */
#define KM_CMD_TEACHER_FLAG(name, ptr) \
    {(name), KM_FLAG_STR, (ptr), "teacher checkpoint (.pth or .safetensors; default: the installed LiteMedSAM, $KMSEG_TEACHER)", 0, 0}
/* The teacher profile flag `name` (--teacher-profile, sam's --profile). */
#define KM_CMD_PROFILE_FLAG(name, ptr) \
    {(name), KM_FLAG_STR, (ptr), "auto (from the checkpoint), sam, medsam (box only), litemedsam or mobilesam", 0, 0}
/* --cache-dir DIR and --no-cache: the teacher's embedding cache (embcache.h). */
#define KM_CMD_CACHE_FLAGS(dir, no)                                                                                    \
    {"--cache-dir", KM_FLAG_STR, (dir), "teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", 0, 0}, \
    {"--no-cache", KM_FLAG_BOOL, (no), "keep teacher embeddings in memory only, no cache folder", 0, 0}

/* KM_EARG "--threads N: expected >= 1", else km_set_threads(n). */
km_status km_cmd_set_threads(int n);
/* KM_EARG "--size N: expected a positive multiple of 8 ..." unless size is
 * 0 (the checkpoint's) or a positive multiple of 8 (2^3, the shallowest
 * student; km_cmd_open_student checks the loaded student's own 2^D). */
km_status km_cmd_check_size(int size);
/* What eval and predict open: the student (km_refine_open_student) and, in
 * refined mode, the teacher; --refine without --teacher takes the default
 * teacher (rf->teacher then points into tbuf). KM_EARG "WEIGHTS: --size N:
 * expected a positive multiple of 2^D ..." when *size does not suit the
 * student's encoder depth D. */
struct km_refiner;
struct km_unetpp;
struct km_refine_flags;
km_status km_cmd_open_student(const char *weights, struct km_refine_flags *rf, char *tbuf, size_t n,
                              struct km_refiner *ref, struct km_unetpp **m, int *size);
/* `train/pretrain --resume RUN`: only --threads, --stop-after, --quiet and
 * --step-timeout may go with it (km_flags_resume_only; the settings come from
 * RUN/config.json). */
km_status km_cmd_resume_flags(const km_cli *cli, const char *run, int *threads_seen);
/* Parses the command's own flags (a {0}-terminated array) followed by the
 * flags of settings table t into cfg (km_cli: parse, then apply). *help: the
 * --help text was shown (then nothing is applied). */
km_status km_cmd_parse_with(const char *cmd, const char *usage, const km_flag *own, const km_settings *t, void *cfg,
                            int argc, char **argv, int *help);

#endif

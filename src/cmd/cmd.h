/* cmd.h - subcommand entry points (argv[0] is the command name) and the
 * flags and checks several commands share. */
#ifndef KM_CMD_H
#define KM_CMD_H

#include "../core/args.h"
#include "../core/km.h"

typedef km_status (*km_cmd_fn)(int argc, char **argv);
typedef struct {
    const char *name;
    km_cmd_fn fn;
    const char *help;
} km_command;

km_status km_cmd_forward(int argc, char **argv);
km_status km_cmd_info(int argc, char **argv);
km_status km_cmd_demo(int argc, char **argv);
km_status km_cmd_check_data(int argc, char **argv);
km_status km_cmd_train(int argc, char **argv);
km_status km_cmd_eval(int argc, char **argv);
km_status km_cmd_predict(int argc, char **argv);
km_status km_cmd_sam(int argc, char **argv);
km_status km_cmd_pretrain(int argc, char **argv);
km_status km_cmd_mine(int argc, char **argv);
km_status km_cmd_experiments(int argc, char **argv);
km_status km_cmd_teacher_quality(int argc, char **argv);
km_status km_cmd_report(int argc, char **argv);

/* ---- what several commands share (common.c) ---- */

/* --data DIR (required) of the commands that read a dataset. */
#define KM_CMD_DATA_FLAG(ptr) \
    {"--data", KM_FLAG_STR, (ptr), "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", 1, 0}
/* --threads N: compute threads. */
#define KM_CMD_THREADS_FLAG(ptr) {"--threads", KM_FLAG_INT, (ptr), "compute threads", 0, 0}

/* KM_EARG "--threads N: expected >= 1", else km_set_threads(n). */
km_status km_cmd_set_threads(int n);
/* KM_EARG "--size N: expected a positive multiple of 32" unless size is 0
 * (the checkpoint's) or a positive multiple of 32. */
km_status km_cmd_check_size(int size);
/* Parses flags (km_parse_flags); *stop is set when the command must return
 * the status now (an error, or --help was shown). */
km_status km_cmd_parse(const char *cmd, const char *usage, km_flag *flags, int argc, char **argv, int *stop);

#endif

/* cmd.h - subcommand entry points (argv[0] is the command name) and the
 * shared flag parser. */
#ifndef KM_CMD_H
#define KM_CMD_H

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

#endif

/* main.c - kmseg command dispatch. Each subcommand lives in src/cmd/<name>.c
 * and returns a km_status; only here are errors printed and turned into a
 * non-zero exit. */
#include "core/km.h"
#include "cmd/cmd.h"

#include <string.h>

static const km_command g_commands[] = {
    {"forward", km_cmd_forward, "run the student on an .npy batch and write its logits"},
    {"info", km_cmd_info, "list the tensors of a checkpoint (.pth, safetensors) or .npy file"},
    {"demo", km_cmd_demo, "train the student for a few steps on real images, showing the loss"},
    {"check-data", km_cmd_check_data, "validate a dataset folder (and split lists), listing every problem"},
    {"train", km_cmd_train, "train the student on images + masks (run folder, resumable)"},
    {"eval", km_cmd_eval, "per-image Dice/IoU of a checkpoint on a dataset split (CSV + JSON)"},
    {"predict", km_cmd_predict, "predict masks (PNG, original resolution) for a folder of images"},
    {"pretrain", km_cmd_pretrain, "SimCLR pretraining of the student's encoder on the train images"},
    {"sam", km_cmd_sam, "segment one image with SAM from point/box/mask prompts"},
    {"experiments", km_cmd_experiments, "the paper's grid: datasets x fractions x methods x seeds -> tables.md, results.csv"},
    {"teacher-quality", km_cmd_teacher_quality, "Dice/IoU of the teacher on a dataset, prompted by ground truth or a student"},
    {"report", km_cmd_report, "static HTML report (charts, tables, gallery) of a run or an experiments folder"},
    {"mine", km_cmd_mine, "knowledge mining: student + SAM teacher pseudo labels (one-time / continuous)"},
};

static void usage(FILE *f) {
    fprintf(f, "kmseg %s - semi-supervised medical image segmentation by knowledge mining\n\n",
            KM_VERSION);
    fprintf(f, "usage: kmseg <command> [options]   (kmseg <command> --help for its options)\n\n");
    fprintf(f, "commands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        fprintf(f, "  %-15s %s\n", g_commands[i].name, g_commands[i].help);
}

int main(int argc, char **argv) {
    km_set_omp_policy(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("kmseg %s\n", KM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++) {
        if (strcmp(argv[1], g_commands[i].name)) continue;
        km_status s = g_commands[i].fn(argc - 1, argv + 1);
        if (s == KM_OK) return 0;
        fprintf(stderr, "kmseg %s: error: %s\n", argv[1], km_errmsg());
        return s == KM_EARG ? 2 : 1;
    }
    fprintf(stderr, "kmseg: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

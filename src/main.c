/* main.c - kmseg command dispatch. Each subcommand lives in src/cmd/<name>.c
 * and returns a km_status; only here are errors printed and turned into a
 * non-zero exit. */
#include "core/km.h"
#include "cmd/cmd.h"

#include <string.h>

#define KM_CMD_ROW(name, fn, help) {name, fn, help},
static const km_command g_commands[] = {KM_COMMANDS(KM_CMD_ROW)};
#undef KM_CMD_ROW

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

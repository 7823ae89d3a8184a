/* common.c - what several commands share; see cmd.h. */
#include "cmd.h"

km_status km_cmd_set_threads(int n) {
    if (n < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", n);
    km_set_threads(n);
    return KM_OK;
}

km_status km_cmd_check_size(int size) {
    if (size && (size < 32 || size % 32)) return km_err(KM_EARG, "--size %d: expected a positive multiple of 32", size);
    return KM_OK;
}

km_status km_cmd_parse(const char *cmd, const char *usage, km_flag *flags, int argc, char **argv, int *stop) {
    int help = 0;
    km_status s = km_parse_flags(cmd, usage, flags, argc, argv, &help);
    *stop = s || help;
    return s;
}

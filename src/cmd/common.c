/* common.c - what several commands share; see cmd.h. */
#include "cmd.h"

#include "../mine/refine.h"
#include "../models/unetpp.h"

#include <string.h>

km_status km_cmd_set_threads(int n) {
    if (n < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", n);
    km_set_threads(n);
    return KM_OK;
}

km_status km_cmd_check_size(int size) {
    int q = 1 << KM_UNETPP_MIN_ENCODER_DEPTH; /* the student's own depth is checked once it is loaded */
    if (size && (size < q || size % q))
        return km_err(KM_EARG, "--size %d: expected a positive multiple of %d (of 32 for a student of encoder depth 5)",
                      size, q);
    return KM_OK;
}

km_status km_cmd_parse_with(const char *cmd, const char *usage, const km_flag *own, const km_settings *t, void *cfg,
                            int argc, char **argv, int *help) {
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_flags(&cli, own);
    km_cli_add_settings(&cli, t, cfg, NULL);
    km_status s = km_cli_parse(&cli, cmd, usage, argc, argv, help);
    if (!s && !*help) s = km_cli_apply(&cli);
    return s;
}

km_status km_cmd_open_student(const char *weights, km_refine_flags *rf, char *tbuf, size_t n, km_refiner *ref,
                              km_unetpp **m, int *size) {
    memset(ref, 0, sizeof *ref); /* km_refiner_close is safe on it */
    *m = NULL;
    km_status s = km_refine_flags_teacher(rf, tbuf, n);
    if (!s) s = km_refine_open_student(weights, rf, ref, m, size);
    if (!s && *m && (s = km_unetpp_check_size(*size, km_unetpp_encoder_depth(*m))))
        s = km_err_prefix(s, "%s: ", weights);
    return s;
}

km_status km_cmd_resume_flags(const km_cli *cli, const char *run, int *threads_seen) {
    static const char *const allowed[] = {"--threads", "--stop-after", "--quiet", "--step-timeout", NULL};
    return km_flags_resume_only(cli->flags, allowed, run, "config.json", threads_seen);
}

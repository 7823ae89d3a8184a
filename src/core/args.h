/* args.h - declarative command-line flags.
 *
 *   km_flag flags[] = {
 *       {"--weights", KM_FLAG_STR, &weights, "checkpoint (.pth or .safetensors)", 1},
 *       {"--threads", KM_FLAG_INT, &threads, "worker threads", 0},
 *       {0}};
 *   km_status s = km_parse_flags("forward", "usage line", flags, argc, argv, &help);
 *
 * Accepts "--name value" and "--name=value". Unknown flags, missing values,
 * non-numeric numbers and missing required flags are KM_EARG errors naming the
 * flag. --help prints every flag with its default and sets *help. KM_FLAG_MULTI
 * collects repeated string flags into a km_strlist. */
#ifndef KM_ARGS_H
#define KM_ARGS_H

#include "km.h"

typedef enum { KM_FLAG_STR, KM_FLAG_INT, KM_FLAG_FLOAT, KM_FLAG_BOOL, KM_FLAG_MULTI } km_flag_type;

typedef struct {
    char **items;
    int n;
} km_strlist;

typedef struct {
    const char *name;
    km_flag_type type;
    void *ptr; /* char** | int* | double* | int* (bool) | km_strlist* */
    const char *help;
    int required;
    int seen; /* set by the parser */
} km_flag;

km_status km_parse_flags(const char *cmd, const char *usage, km_flag *flags, int argc, char **argv,
                         int *help_shown);
void km_strlist_free(km_strlist *l);

/* For `cmd --resume RUN`, whose settings come from RUN/<config>: any flag
 * given besides --resume and those in `allowed` (NULL-terminated) is a
 * KM_EARG error naming that file. *threads_seen: whether --threads was given. */
km_status km_flags_resume_only(const km_flag *flags, const char *const *allowed, const char *run,
                               const char *config, int *threads_seen);
/* A --threads given with --resume replaces the run's count (*run_threads),
 * with a warning on stderr (when `warn`) that the bits will differ. */
void km_resume_threads(int *run_threads, int given, int threads_seen, int warn);

#endif

/* report.c - `kmseg report`: a static HTML page of a run or an experiments
 * folder (src/report/report.h).
 *
 *   kmseg report DIR [--out FILE] [--teacher CKPT] [--data DIR] [--seed N]
 *
 * DIR is a run folder (kmseg train / kmseg mine) or an experiments folder
 * (kmseg experiments); the page goes to DIR/report.html unless --out. */
#include "cmd.h"

#include "../core/args.h"
#include "../report/report.h"
#include "../models/teacher.h"

#include <string.h>

km_status km_cmd_report(int argc, char **argv) {
    km_report_opts o;
    km_report_opts_default(&o);
    const char *out = NULL, *data = NULL, *teacher = NULL, *profile = "auto", *cache_dir = NULL;
    int seed = 0, threads = 2, random_rows = 1, pseudo_rows = 4, no_run_reports = 0, quiet = 0, no_cache = 0;
    km_flag flags[] = {
        {"--out", KM_FLAG_STR, &out, "page to write (default: DIR/report.html)", 0, 0},
        {"--data", KM_FLAG_STR, &data, "dataset folder (default: the one in the run's config)", 0, 0},
        {"--teacher", KM_FLAG_STR, &teacher, "teacher checkpoint: add teacher-refined masks to the gallery", 0, 0},
        KM_CMD_PROFILE_FLAG("--teacher-profile", &profile),
        {"--cache-dir", KM_FLAG_STR, &cache_dir,
         "teacher embedding cache, shared with eval and mine (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or "
         "~/.cache/kmseg)", 0, 0},
        {"--no-cache", KM_FLAG_BOOL, &no_cache, "encode the test images again, keeping embeddings in memory only", 0, 0},
        {"--seed", KM_FLAG_INT, &seed, "seed of the gallery's random pick", 0, 0},
        {"--random-rows", KM_FLAG_INT, &random_rows, "random rows in the test gallery (0-32)", 0, 0},
        {"--pseudo-rows", KM_FLAG_INT, &pseudo_rows, "rows in a mining run's pseudo-label gallery", 0, 0},
        KM_CMD_THREADS_FLAG(&threads),
        {"--no-run-reports", KM_FLAG_BOOL, &no_run_reports, "experiments folder: do not (re)write each run's report", 0, 0},
        KM_CMD_QUIET_FLAG(&quiet),
        {0}};
    int help = 0;
    /* the folder is the one positional argument: take it out before the flags */
    const char *dir = NULL;
    char **rest = km_malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        int is_flag_value = i > 1 && argv[i - 1][0] == '-' && argv[i - 1][1] == '-' && !strchr(argv[i - 1], '=');
        for (const km_flag *f = flags; is_flag_value && f->name; f++)
            if (!strcmp(f->name, argv[i - 1]) && f->type == KM_FLAG_BOOL) is_flag_value = 0;
        if (i > 0 && argv[i][0] != '-' && !is_flag_value && !dir) dir = argv[i];
        else rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    km_status s = km_parse_flags("report", "DIR [--out FILE] [--teacher CKPT] [options]", flags, nrest, rest, &help);
    km_free(rest);
    if (s || help) return s;
    if (!dir) return km_err(KM_EARG, "missing the folder: kmseg report DIR (a run or an experiments folder)");
    if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
    if (threads < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", threads);
    if (random_rows < 0 || random_rows > 32) return km_err(KM_EARG, "--random-rows %d: expected 0-32", random_rows);
    if (pseudo_rows < 0 || pseudo_rows > 64) return km_err(KM_EARG, "--pseudo-rows %d: expected 0-64", pseudo_rows);
    km_sam_profile prof;
    if ((s = km_sam_profile_parse_auto(profile, &prof))) return km_err_prefix(s, "--teacher-profile: ");
    km_set_threads(threads);
    o.out = out;
    o.data = data;
    o.teacher = teacher;
    o.teacher_profile = profile;
    o.cache_dir = cache_dir;
    o.no_cache = no_cache;
    o.seed = (uint64_t)seed;
    o.gallery_random = random_rows;
    o.pseudo_rows = pseudo_rows;
    o.threads = threads;
    o.run_reports = !no_run_reports;
    o.log = quiet ? NULL : stderr;
    return km_report_write(dir, &o);
}

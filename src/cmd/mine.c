/* mine.c - `kmseg mine`: knowledge mining (method.md 4, 5): a supervised
 * phase (or --init), then fine-tuning on labelled + teacher-labelled images
 * with the one-time or continuous schedule. Protocol and run folder:
 * src/mine/mine.h. Every default is shown by --help.
 *
 *   kmseg mine --data DIR --out RUN --teacher SAM.pth [knobs]   a new run
 *   kmseg mine --resume RUN [--threads N]                       continue a killed run
 *   mpirun -np N kmseg mine ... --micro-batch M                 data parallel: the steps of
 *       both phases in micro-batches across N ranks, teacher work and the embedding
 *       precompute shared out, files as one process's with --micro-batch M (mine_dist.h);
 *       without --micro-batch only a one-time run from --init (its labelling pass
 *       shared), anything else refused before any file is written
 *   SIGTERM / SIGUSR1: the supervised phase stops as train does, the mining phase after
 *       its current epoch's checkpoint; --resume with any valid N continues
 *
 * The knobs are the flags of two settings tables: the training ones
 * (km_train_settings, train.c; except km_mine_train_skip) and the mining
 * ones (km_mine_settings, mine.c). --split-file is the one flag outside
 * them, as for train. With --resume the settings come from
 * RUN/mine_config.json; any other setting with it is an error, except
 * --threads (bit-identical results need the original count), the cache
 * flags (they change speed and the cache columns only), --step-timeout,
 * --stop-after and --quiet. */
#include "cmd.h"

#include "../core/args.h"
#include "../core/dist.h"
#include "../io/settings.h"
#include "../mine/embcache.h"
#include "../mine/mine.h"

#include <stdlib.h>
#include <string.h>

/* --resume RUN: the run's own settings; --threads and the cache flags
 * (`given`) may override. */
static km_status resume_run(const km_cli *cli, const km_mine_config *given, const char *run,
                            const km_train_hooks *hooks, km_mine_result *r) {
    static const char *const allowed[] = {"--threads", "--cache-dir", "--no-cache", "--cache-mem",
                                          "--stop-after", "--quiet", "--step-timeout", NULL};
    int threads_seen;
    km_status s = km_flags_resume_only(cli->flags, allowed, run, "mine_config.json", &threads_seen);
    if (s) return s;
    km_mine_config rc;
    s = km_mine_config_load(run, &rc);
    if (s) return s;
    km_resume_threads(&rc.train.threads, given->train.threads, threads_seen, hooks->log != NULL);
    if (km_cli_seen(cli, "--cache-mem")) rc.cache_mem = given->cache_mem;
    if (given->no_cache || given->cache_dir) {
        km_free(rc.cache_dir);
        rc.cache_dir = given->no_cache ? NULL : km_strdup(given->cache_dir);
    }
    if (km_cli_seen(cli, "--step-timeout")) rc.train.step_timeout = given->train.step_timeout;
    s = km_mine_run(&rc, 1, hooks, r);
    km_mine_config_free(&rc);
    return s;
}

/* A new run: the default teacher and embedding cache folder, the split file. */
static km_status new_run(km_mine_config *c, const char *split_file, const km_train_hooks *hooks, km_mine_result *r) {
    if (!c->train.data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg mine --help)");
    if (!c->out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
    char tbuf[4096], dbuf[4096];
    const char *teacher = c->teacher, *split_dir = c->train.split_dir;
    km_status s = km_teacher_resolve(teacher, tbuf, sizeof tbuf, &teacher);
    if (!s) s = km_split_choose(&split_dir, split_file, c->train.fold);
    if (s) return s;
    c->teacher = (char *)teacher;
    c->train.split_dir = (char *)split_dir;
    if (c->no_cache) c->cache_dir = NULL;
    else if (!c->cache_dir) c->cache_dir = (char *)km_embcache_default_dir(dbuf, sizeof dbuf);
    return km_mine_run(c, 0, hooks, r);
}

km_status km_cmd_mine(int argc, char **argv) {
    km_mine_config c;
    km_mine_config_default(&c);
    const char *resume = NULL, *split_file = NULL;
    int quiet = 0, stop_after = 0;
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_settings(&cli, &km_train_settings, &c.train, km_mine_train_skip);
    km_cli_add_settings(&cli, &km_mine_settings, &c, NULL);
    km_cli_add(&cli, "--split-file", KM_FLAG_STR, &split_file,
               "nnU-Net splits_final.json: train/val of --fold (instead of --split-dir)");
    km_cli_add(&cli, "--resume", KM_FLAG_STR, &resume,
               "continue the run in this folder (settings from its mine_config.json)");
    km_cli_add(&cli, "--stop-after", KM_FLAG_INT, &stop_after,
               "exit after this many epochs in total (supervised, then mining), resumable (0 = off)");
    km_cli_add(&cli, "--quiet", KM_FLAG_BOOL, &quiet, "no progress or epoch lines");
    int help = 0;
    km_status s = km_cli_parse(&cli, "mine", "--data DIR --out RUN [--teacher FILE] [options] | --resume RUN", argc,
                               argv, &help);
    if (!s && !help) s = km_cli_apply(&cli);
    if (s || help) return s;
    if (stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", stop_after);
    km_train_hooks hooks = {quiet ? NULL : stderr, !quiet, stop_after, NULL, NULL};
    km_mine_result r;
    km_dist_signals_install(); /* SIGTERM/SIGUSR1: checkpoint after the current step and stop (dist.h) */
    s = resume ? resume_run(&cli, &c, resume, &hooks, &r) : new_run(&c, split_file, &hooks, &r);
    km_dist_signals_restore();
    if (s) return s;
    if (km_dist_stop_pending()) exit(0); /* SIGTERM/SIGUSR1: checkpoint written; end here, also inside a grid */
    if (km_dist_rank()) quiet = 1; /* mpirun: rank 0 speaks */
    if (!quiet)
        fprintf(stderr, "mining %s after epoch %d: best val loss %.4f at epoch %d; teacher calls %ld, "
                        "teacher decodes %ld, encoder runs %ld, cache %ld hit(s) / %ld miss(es), NO_BOX %ld\n",
                r.finished ? "finished" : "stopped", r.epochs_done, r.best_val_loss, r.best_epoch, r.teacher_calls,
                r.decodes, r.encoder_runs, r.cache_hits, r.cache_misses, r.no_box);
    return KM_OK;
}

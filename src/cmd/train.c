/* train.c - `kmseg train`: supervised training of the student (method.md 3).
 *
 *   kmseg train --data DIR --out RUN [knobs]     a new run into RUN/
 *   kmseg train --resume RUN [--threads N]       continue a killed run
 *
 * Every knob is a flag from the settings table (km_train_settings, train.c)
 * whose default (the paper's protocol, method.md) is shown by --help; the
 * loop and the run folder are described in src/train/train.h. --split-file
 * (an nnU-Net splits_final.json) is the one data flag outside the table: it
 * is saved as split_dir, with its fold (km_split_choose). With --resume
 * the settings come from RUN/config.json; passing any other setting with it
 * is an error (it would silently change the run), except --threads (results
 * are bit-identical only for the thread count of the original run),
 * --stop-after and --quiet. */
#include "cmd.h"

#include "../core/args.h"
#include "../core/dist.h"
#include "../io/settings.h"
#include "../train/train.h"

#include <stdlib.h>
#include <string.h>

/* --resume RUN: the run's own settings, --threads may override. */
static km_status resume_run(const km_cli *cli, const char *run, int threads, double step_timeout,
                            const km_train_hooks *hooks, km_train_result *res) {
    int threads_seen;
    km_status s = km_cmd_resume_flags(cli, run, &threads_seen);
    if (s) return s;
    km_train_config rc;
    s = km_train_config_load(run, &rc);
    if (s) return s;
    km_resume_threads(&rc.threads, threads, threads_seen, hooks->log != NULL);
    rc.step_timeout = step_timeout;
    km_free(rc.out);
    rc.out = km_strdup(run); /* the folder may have moved */
    s = km_train_run(&rc, 1, hooks, res);
    km_train_config_free(&rc);
    return s;
}

km_status km_cmd_train(int argc, char **argv) {
    km_train_config c;
    km_train_config_default(&c);
    const char *resume = NULL, *split_file = NULL;
    int stop_after = 0, quiet = 0;
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_settings(&cli, &km_train_settings, &c, NULL);
    km_cli_add(&cli, "--split-file", KM_FLAG_STR, &split_file,
               "nnU-Net splits_final.json: train/val of --fold (instead of --split-dir)");
    km_cli_add(&cli, "--resume", KM_FLAG_STR, &resume, "continue the run in this folder from last.safetensors");
    km_cli_add(&cli, "--stop-after", KM_FLAG_INT, &stop_after, "exit after this many epochs in total, resumable (0 = off)");
    km_cli_add(&cli, "--quiet", KM_FLAG_BOOL, &quiet, "no progress or epoch lines");
    int help = 0;
    km_status s = km_cli_parse(&cli, "train", "--data DIR --out RUN [options] | --resume RUN", argc, argv, &help);
    if (!s && !help) s = km_cli_apply(&cli);
    if (s || help) return s;
    km_train_hooks hooks = {quiet ? NULL : stderr, !quiet, stop_after, NULL, NULL};
    if (stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", stop_after);
    km_train_result res;
    km_dist_signals_install(); /* SIGTERM/SIGUSR1: checkpoint and stop (dist.h) */
    if (resume) {
        s = resume_run(&cli, resume, c.threads, c.step_timeout, &hooks, &res);
    } else {
        if (!c.data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg train --help)");
        if (!c.out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
        const char *split_dir = c.split_dir;
        if ((s = km_split_choose(&split_dir, split_file, c.fold))) return s;
        c.split_dir = (char *)split_dir;
        s = km_train_run(&c, 0, &hooks, &res);
    }
    km_dist_signals_restore();
    if (s) return s;
    if (km_dist_stop_pending()) exit(0); /* SIGTERM/SIGUSR1: checkpoint written; end here, also inside a grid */
    if (km_dist_rank()) quiet = 1; /* mpirun: rank 0 speaks */
    if (!quiet) {
        fprintf(stderr, "%s after epoch %d: best val loss %.4f at epoch %d; %d steps, %.2f train img/s\n",
                res.finished ? "finished" : "stopped", res.epochs_done, res.best_val_loss, res.best_epoch,
                res.steps, res.train_seconds > 0 ? res.train_images / res.train_seconds : 0.0);
    }
    return KM_OK;
}

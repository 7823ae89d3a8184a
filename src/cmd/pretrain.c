/* pretrain.c - `kmseg pretrain`: SimCLR self-supervised pretraining of the
 * student's ResNet encoder (issue 6, method.md 6; the method and the run
 * folder are described in src/train/simclr.h).
 *
 *   kmseg pretrain --data DIR --out RUN [knobs]
 *   kmseg pretrain --resume RUN [--threads N]     continue a killed run
 *   kmseg train --data DIR --out RUN2 --encoder-weights RUN/encoder.safetensors
 *
 * The knobs are the flags of the settings table (km_simclr_settings,
 * simclr.c). With --resume the settings come from RUN/config.json; passing
 * any other setting with it is an error (it would silently change the run),
 * except --threads (results are bit-identical only for the thread count of
 * the original run), --stop-after and --quiet, as for `kmseg train --resume`.
 *
 * Use the same --seed and --max-images as the later `kmseg train` runs: the
 * pretraining images are the train split of that seeded 80/10/10 split, so
 * the supervised run's val/test images are never seen. */
#include "cmd.h"

#include "../core/args.h"
#include "../core/dist.h"
#include "../io/settings.h"
#include "../train/simclr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --resume RUN: the run's own settings, --threads may override. */
static km_status resume_run(const km_cli *cli, const char *run, int threads, int stop_after, double step_timeout,
                            FILE *log, km_simclr_result *r) {
    int threads_seen;
    km_status s = km_cmd_resume_flags(cli, run, &threads_seen);
    if (s) return s;
    km_simclr_config rc;
    s = km_simclr_config_load(run, &rc);
    if (s) return s;
    km_resume_threads(&rc.threads, threads, threads_seen, log != NULL);
    rc.step_timeout = step_timeout;
    rc.out = run; /* the folder may have moved */
    rc.resume = 1;
    rc.stop_after = stop_after;
    s = km_simclr_run(&rc, log, r);
    km_simclr_config_free(&rc);
    return s;
}

km_status km_cmd_pretrain(int argc, char **argv) {
    km_simclr_config c;
    km_simclr_config_default(&c);
    const char *resume = NULL, *label = NULL;
    int quiet = 0;
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_settings(&cli, &km_simclr_settings, &c, NULL);
    km_cli_add(&cli, "--label", KM_FLAG_STR, &label, "accepted as by train; no effect (pretraining reads no masks)");
    km_cli_add(&cli, "--resume", KM_FLAG_STR, &resume, "continue the run in this folder from last.safetensors");
    km_cli_add(&cli, "--stop-after", KM_FLAG_INT, &c.stop_after, "exit after this many epochs in total, resumable (0 = off)");
    km_cli_add(&cli, "--quiet", KM_FLAG_BOOL, &quiet, "no progress or summary lines");
    int help = 0;
    km_status s = km_cli_parse(&cli, "pretrain", "--data DIR --out RUN [options] | --resume RUN", argc, argv, &help);
    if (!s && !help) s = km_cli_apply(&cli);
    if (s || help) return s;
    if (c.stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", c.stop_after);
    FILE *log = quiet ? NULL : stderr;
    km_simclr_result r;
    km_dist_signals_install(); /* SIGTERM/SIGUSR1: checkpoint and stop (dist.h) */
    if (resume) {
        s = resume_run(&cli, resume, c.threads, c.stop_after, c.step_timeout, log, &r);
    } else {
        if (!c.data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg pretrain --help)");
        s = km_simclr_run(&c, log, &r);
    }
    km_dist_signals_restore();
    if (s) return s;
    if (km_dist_stop_pending()) exit(0); /* SIGTERM/SIGUSR1: checkpoint written; end here, also inside a grid */
    if (km_dist_rank()) quiet = 1; /* mpirun: rank 0 speaks */
    if (!quiet && !isnan(r.last_epoch_loss)) /* NaN: resumed, nothing left to train */
        fprintf(stderr, "%s epoch %d: loss %.4f (%s %.4f); %d steps, %.2f img/s\n",
                r.finished ? "finished after" : "at", r.epochs_done, r.last_epoch_loss,
                r.resumed_epoch ? "first epoch after resuming" : "first epoch", r.first_epoch_loss, r.steps,
                r.seconds > 0 ? r.images / r.seconds : 0.0);
    if (!quiet && !r.finished)
        fprintf(stderr, "stopped after epoch %d as asked (--stop-after): continue with --resume %s\n", r.epochs_done,
                resume ? resume : c.out);
    return KM_OK;
}

/* mine.c - `kmseg mine`: knowledge mining (method.md 4, 5): a supervised
 * phase (or --init), then fine-tuning on labelled + teacher-labelled images
 * with the one-time or continuous schedule. Protocol and run folder:
 * src/mine/mine.h. Every default is shown by --help.
 *
 *   kmseg mine --data DIR --out RUN --teacher SAM.pth [knobs]   a new run
 *   kmseg mine --resume RUN [--threads N]                       continue a killed run
 *
 * With --resume the settings come from RUN/mine_config.json; any other
 * setting with it is an error, except --threads (bit-identical results need
 * the original count), the cache flags (they change speed and the cache
 * columns only), --stop-after and --quiet. */
#include "cmd.h"

#include "../core/args.h"
#include "../mine/embcache.h"
#include "../mine/mine.h"

#include <string.h>

km_status km_cmd_mine(int argc, char **argv) {
    km_mine_config c;
    km_mine_config_default(&c);
    km_train_config *t = &c.train;
    const char *data = NULL, *out = NULL, *split_dir = NULL, *enc = NULL, *init = NULL, *teacher = NULL;
    const char *profile = "auto", *schedule = "continuous", *mode = "auto", *cache_dir = NULL, *resume = NULL;
    const char *box_rule = "per-component";
    const char *label = NULL, *split_file = NULL;
    int seed = 0, quiet = 0, no_cache = 0, stop_after = 0;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", 0, 0},
        KM_DATA_FLAGS(&label, &split_file, &t->fold),
        {"--out", KM_FLAG_STR, &out, "run folder (supervised/, pseudo/, metrics, best/last checkpoints)", 0, 0},
        {"--resume", KM_FLAG_STR, &resume, "continue the run in this folder (settings from its mine_config.json)", 0, 0},
        {"--teacher", KM_FLAG_STR, &teacher, "teacher checkpoint (.pth or safetensors; default: the installed LiteMedSAM, $KMSEG_TEACHER)", 0, 0},
        {"--teacher-profile", KM_FLAG_STR, &profile, "teacher profile: auto (from the checkpoint), sam, medsam (box only), litemedsam or mobilesam", 0, 0},
        {"--schedule", KM_FLAG_STR, &schedule, "pseudo labels: onetime (frozen after the supervised phase) or continuous", 0, 0},
        {"--init", KM_FLAG_STR, &init, "student checkpoint to mine from (skips the supervised phase)", 0, 0},
        {"--prompt-mode", KM_FLAG_STR, &mode, "auto (the teacher's: box for MedSAM / LiteMedSAM, else points+box), points, box, points+box or points+box+mask", 0, 0},
        {"--box-rule", KM_FLAG_STR, &box_rule, "boxes from the student's mask: all, largest or per-component (one decode per 8-connected component of >= 10 % of the largest, masks united)", 0, 0},
        {"--points", KM_FLAG_INT, &c.points, "guiding points per image (highest student probability)", 0, 0},
        {"--pseudo-weight", KM_FLAG_FLOAT, &c.pseudo_weight, "lambda in L = L_labelled + lambda * L_pseudo", 0, 0},
        {"--mine-epochs", KM_FLAG_INT, &c.mine_epochs, "maximum mining epochs", 0, 0},
        {"--cache-dir", KM_FLAG_STR, &cache_dir, "teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", 0, 0},
        {"--no-cache", KM_FLAG_BOOL, &no_cache, "keep teacher embeddings in memory only", 0, 0},
        {"--cache-mem", KM_FLAG_INT, &c.cache_mem, "teacher embeddings kept in memory (4 MB each)", 0, 0},
        {"--sample-pngs", KM_FLAG_INT, &c.sample_pngs, "continuous: pseudo labels written per epoch", 0, 0},
        {"--split-dir", KM_FLAG_STR, &split_dir, "folder with train.txt [val.txt test.txt] (default: seeded random split)", 0, 0},
        {"--val-fraction", KM_FLAG_FLOAT, &t->val_fraction, "random split: validation fraction", 0, 0},
        {"--test-fraction", KM_FLAG_FLOAT, &t->test_fraction, "random split: test fraction", 0, 0},
        {"--labelled-fraction", KM_FLAG_FLOAT, &t->labelled_fraction, "nested labelled fraction of the train split", 0, 0},
        {"--max-images", KM_FLAG_INT, &t->max_images, "random split over the first N ids only (0 = all)", 0, 0},
        {"--size", KM_FLAG_INT, &t->size, "student crop size, multiple of 32 (the teacher sees the original image)", 0, 0},
        {"--resnet", KM_FLAG_INT, &t->resnet, "encoder depth: 34 or 18", 0, 0},
        {"--encoder-weights", KM_FLAG_STR, &enc, "torchvision ResNet checkpoint for the supervised phase", 0, 0},
        {"--batch", KM_FLAG_INT, &t->batch, "batch size (both phases)", 0, 0},
        {"--epochs", KM_FLAG_INT, &t->epochs, "maximum supervised epochs", 0, 0},
        {"--lr", KM_FLAG_FLOAT, &t->lr, "Adam learning rate", 0, 0},
        {"--beta1", KM_FLAG_FLOAT, &t->beta1, "Adam beta1", 0, 0},
        {"--beta2", KM_FLAG_FLOAT, &t->beta2, "Adam beta2", 0, 0},
        {"--eps", KM_FLAG_FLOAT, &t->eps, "Adam eps", 0, 0},
        {"--weight-decay", KM_FLAG_FLOAT, &t->weight_decay, "Adam weight decay", 0, 0},
        {"--plateau-patience", KM_FLAG_INT, &t->plateau_patience, "ReduceLROnPlateau patience (epochs)", 0, 0},
        {"--plateau-factor", KM_FLAG_FLOAT, &t->plateau_factor, "ReduceLROnPlateau factor", 0, 0},
        {"--min-lr", KM_FLAG_FLOAT, &t->min_lr, "ReduceLROnPlateau minimum lr", 0, 0},
        {"--early-stop", KM_FLAG_INT, &t->early_stop, "stop after this many epochs without val-loss improvement", 0, 0},
        {"--bce-weight", KM_FLAG_FLOAT, &t->bce_weight, "a in loss = a*BCE + (1-a)*Dice", 0, 0},
        {"--seed", KM_FLAG_INT, &seed, "seed of split, init, shuffling, augmentation and prompt ties", 0, 0},
        {"--threads", KM_FLAG_INT, &t->threads, "compute threads", 0, 0},
        {"--eval-test", KM_FLAG_BOOL, &t->eval_test, "also score the test split every epoch (reported only)", 0, 0},
        {"--stop-after", KM_FLAG_INT, &stop_after, "exit after this many epochs in total (supervised, then mining), resumable (0 = off)", 0, 0},
        {"--quiet", KM_FLAG_BOOL, &quiet, "no progress or epoch lines", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("mine", "--data DIR --out RUN [--teacher FILE] [options] | --resume RUN", flags, argc,
                                 argv, &help);
    if (s || help) return s;
    if (stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", stop_after);
    km_train_hooks hooks = {quiet ? NULL : stderr, !quiet, stop_after, NULL, NULL};
    km_mine_result r;
    if (resume) {
        static const char *const allowed[] = {"--threads", "--cache-dir", "--no-cache", "--cache-mem",
                                              "--stop-after", "--quiet", NULL};
        int threads_seen;
        s = km_flags_resume_only(flags, allowed, resume, "mine_config.json", &threads_seen);
        if (s) return s;
        km_mine_config rc;
        s = km_mine_config_load(resume, &rc);
        if (s) return s;
        km_resume_threads(&rc.train.threads, t->threads, threads_seen, hooks.log != NULL);
        for (km_flag *f = flags; f->name; f++)
            if (f->seen && !strcmp(f->name, "--cache-mem")) rc.cache_mem = c.cache_mem;
        if (no_cache || cache_dir) {
            km_free(rc.cache_dir);
            rc.cache_dir = no_cache ? NULL : km_strdup(cache_dir);
        }
        s = km_mine_run(&rc, 1, &hooks, &r);
        km_mine_config_free(&rc);
    } else {
        if (!data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg mine --help)");
        if (!out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
        char tbuf[4096];
        if ((s = km_teacher_resolve(teacher, tbuf, sizeof tbuf, &teacher))) return s;
        if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
        if (!strcmp(schedule, "onetime") || !strcmp(schedule, "one-time")) c.schedule = KM_MINE_ONETIME;
        else if (!strcmp(schedule, "continuous")) c.schedule = KM_MINE_CONTINUOUS;
        else return km_err(KM_EARG, "--schedule '%s': expected onetime or continuous", schedule);
        if ((s = km_sam_profile_parse_auto(profile, &c.profile))) return km_err_prefix(s, "--teacher-profile: ");
        if ((s = km_prompt_mode_parse_auto(mode, &c.prompt_mode))) return km_err_prefix(s, "--prompt-mode: ");
        if ((s = km_box_rule_parse(box_rule, &c.box_rule))) return km_err_prefix(s, "--box-rule: ");
        char dbuf[4096];
        if (!no_cache && !cache_dir) cache_dir = km_embcache_default_dir(dbuf, sizeof dbuf);
        c.cache_dir = no_cache ? NULL : (char *)cache_dir;
        if ((s = km_split_choose(&split_dir, split_file, t->fold))) return s;
        t->data = (char *)data;
        t->label = (char *)label;
        t->split_dir = (char *)split_dir;
        t->encoder_weights = (char *)enc;
        t->seed = (uint64_t)seed;
        c.out = (char *)out;
        c.teacher = (char *)teacher;
        c.init = (char *)init;
        s = km_mine_run(&c, 0, &hooks, &r);
    }
    if (s) return s;
    if (!quiet)
        fprintf(stderr, "mining %s after epoch %d: best val loss %.4f at epoch %d; teacher calls %ld, "
                        "teacher decodes %ld, encoder runs %ld, cache %ld hit(s) / %ld miss(es), NO_BOX %ld\n",
                r.finished ? "finished" : "stopped", r.epochs_done, r.best_val_loss, r.best_epoch, r.teacher_calls, r.decodes,
                r.encoder_runs, r.cache_hits, r.cache_misses, r.no_box);
    return KM_OK;
}

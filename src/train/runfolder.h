/* runfolder.h - the mechanics shared by the run folders of `kmseg train`,
 * `kmseg pretrain` and `kmseg mine`: paths, config file, per-epoch metric
 * files with resume truncation, the record of resumes, checkpoint metadata.
 *
 *   km_run r;
 *   s = km_run_open(&r, c->out, "config.json", "train", resume);   // mkdir, or check a resumable folder
 *   if (!resume && c->out) s = km_train_config_save(c, r.config);     // the config's own writer (km_jw)
 *   s = km_run_metrics_open(&r, cols, ncols, 1, 1, resume ? rows_kept : -1);
 *   per epoch: best -> km_run_metrics_row(&r, vals) -> last checkpoint
 *   on --resume, once the checkpoint is read: km_run_note_resume(&r, epoch)
 *   s = km_run_close(&r, s);                                       // always, on every path
 *
 * A run with dir == NULL (a library run that writes nothing) gets the same
 * calls, which then do nothing: km_run_path returns NULL and
 * km_run_metrics_row writes no row.
 *
 * Resume protocol (train, pretrain, mine): every epoch writes its log row
 * before its resumable checkpoint, so a run killed between the two has rows
 * beyond the checkpoint's epoch; km_run_metrics_open with keep >= 0 drops
 * them (the header line of the CSV is kept) and appends from there, so the
 * resumed run's log is the uninterrupted run's. */
#ifndef KM_RUNFOLDER_H
#define KM_RUNFOLDER_H

#include "../core/km.h"
#include "../core/log.h"
#include "../core/rng.h"
#include "../io/settings.h"
#include "../io/tensor.h"

typedef struct {
    const char *dir;    /* NULL: no files */
    char *config;       /* <dir>/<config name> (NULL without a folder) */
    const char *const *cols;
    int ncols, nint;    /* metric columns; the first nint are integers */
    km_csv csv;         /* metrics.csv */
    km_jsonl jl;        /* metrics.jsonl (when asked for) */
} km_run;

/* Fills r for run folder `dir` (may be NULL) with config file `config`.
 * resume = 0: creates dir (and parents). resume = 1: the config file must
 * exist: KM_EIO "--resume DIR: DIR/CONFIG: no such file (not a kmseg
 * COMMAND run folder)" otherwise. r needs km_run_close in every case. */
km_status km_run_open(km_run *r, const char *dir, const char *config, const char *command, int resume);
/* "<dir>/<name>" (km_free it), NULL when the run has no folder. */
char *km_run_path(const km_run *r, const char *name);
/* Whether <dir>/<name> is a regular file (0 without a folder). */
int km_run_has(const km_run *r, const char *name);
/* Opens metrics.csv (and metrics.jsonl when jsonl) with columns cols[ncols],
 * the first nint written as integers. keep < 0: a fresh run (files
 * truncated); keep >= 0: a resumed run, rows beyond the first `keep` dropped
 * and new rows appended. */
km_status km_run_metrics_open(km_run *r, const char *const *cols, int ncols, int nint, int jsonl, int keep);
/* One row of ncols values to every open metric file. */
km_status km_run_metrics_row(km_run *r, const double *vals);
/* Closes the metric files and frees the paths; returns s, or the first close
 * error when s is KM_OK. */
km_status km_run_close(km_run *r, km_status s);
/* Removes <dir>/<name> if present (a file of an earlier run in the folder
 * that must not be resumed); KM_EIO naming it when it cannot. */
km_status km_run_remove(const km_run *r, const char *name);

/* ---- resumes: <dir>/resumes.csv ----
 * A record of each time the run was continued with --resume from the
 * checkpoint of an unfinished run (resuming a finished run trains nothing
 * and records nothing; callers skip it): a header "resumed_after_epoch,utc", then one row per resume,
 * the epoch of the checkpoint the run went on from and when (ISO 8601 UTC to
 * the second, "2026-12-03T11:37:28Z"). A run never resumed has no file. The
 * file is rewritten atomically with the row appended, so a crash leaves
 * either the old or the new file. It is a record only: nothing that
 * computes reads it, so a resumed run's results stay bit-identical to an
 * uninterrupted run's. `kmseg report` marks the resumes on the curves. */
km_status km_run_note_resume(const km_run *r, int epoch);

/* ---- checkpoint metadata (safetensors string metadata) ---- */
/* format "pt", kmseg_version, arch and encoder_name (resnet18 / resnet34),
 * the header every kmseg checkpoint starts with. */
void km_meta_model(km_tdict *d, const char *arch, int resnet);
void km_meta_set_int(km_tdict *d, const char *key, long long v);
void km_meta_set_num(km_tdict *d, const char *key, double v); /* %.17g */
/* An RNG state as four hex words. */
void km_meta_set_rng(km_tdict *d, const char *key, const km_rng *r);
/* Integer metadata `key` of d (read from `file`): KM_EMISSING / KM_EFORMAT
 * naming the file and the key. */
km_status km_meta_get_int(const km_tdict *d, const char *key, const char *file, long long *v);
/* The same for a number (strtod: "%.17g" as km_meta_set_num writes it). */
km_status km_meta_get_num(const km_tdict *d, const char *key, const char *file, double *v);
km_status km_meta_get_rng(const km_tdict *d, const char *key, const char *file, km_rng *r);

#endif

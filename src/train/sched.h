/* sched.h - learning-rate plateau schedule and early stopping on the
 * validation loss (method.md section 3; reference-arch.md 3.3).
 *
 * km_plateau is torch.optim.lr_scheduler.ReduceLROnPlateau (torch 1.13) with
 * one parameter group, stepped once per epoch with the validation loss:
 *   better(a) = a < best * (1 - threshold)   [mode min, threshold_mode rel]
 *             = a < best - threshold          [mode min, abs]
 *             (mode max: a > best * (1 + threshold) / a > best + threshold)
 *   better -> best = a, num_bad = 0; else num_bad += 1
 *   cooldown_counter > 0 -> cooldown_counter -= 1, num_bad = 0
 *   num_bad > patience -> new = max(lr * factor, min_lr); if lr - new > eps:
 *                         lr = new; then cooldown_counter = cooldown, num_bad = 0
 * A NaN metric is never "better" (as in torch). lr is a double like torch's
 * param_group["lr"]; the optimiser receives it rounded to float.
 * kmseg defaults (method.md 3): patience 3, factor 0.5, min_lr 1e-7,
 * threshold 1e-4 rel, cooldown 0, eps 1e-8.
 *
 * km_early_stop [choice, method.md 3]: an epoch "improves" when its validation
 * loss is strictly below the best so far (no threshold; NaN never improves).
 * The run stops after `patience` (10) consecutive epochs without improvement;
 * the checkpoint of the best epoch is the one kept as "best".
 *
 * Both states are plain structs so a resumable checkpoint can store them;
 * *_to_meta / *_from_meta round-trip them exactly through string metadata
 * (doubles printed with %.17g). */
#ifndef KM_SCHED_H
#define KM_SCHED_H

#include "../io/tensor.h"

typedef struct {
    /* settings */
    double factor, threshold, min_lr, eps;
    int patience, cooldown;
    int mode_max;      /* 0 = min (loss), 1 = max */
    int threshold_abs; /* 0 = rel, 1 = abs */
    /* state */
    double lr, best;
    int num_bad, cooldown_counter, last_epoch;
} km_plateau;

/* Torch defaults except the given lr0, factor, patience, min_lr. */
void km_plateau_init(km_plateau *p, double lr0, double factor, int patience, double min_lr);
/* One epoch's metric; updates p->lr. Returns 1 if the lr was reduced. */
int km_plateau_step(km_plateau *p, double metric);

typedef struct {
    int patience;
    double best;    /* +inf before the first epoch */
    int best_epoch; /* epoch number passed to step (-1 before the first) */
    int num_bad;
} km_early_stop;

void km_early_stop_init(km_early_stop *e, int patience);
/* Records the validation loss of `epoch`. *improved = 1 when this epoch is the
 * new best (save the "best" checkpoint). Returns 1 when training should stop
 * after this epoch. */
int km_early_stop_step(km_early_stop *e, double val_loss, int epoch, int *improved);

/* Stores / restores the state under "<prefix>.<field>" metadata keys. */
void km_plateau_to_meta(const km_plateau *p, km_tdict *d, const char *prefix);
km_status km_plateau_from_meta(km_plateau *p, const km_tdict *d, const char *prefix,
                               const char *file);
void km_early_stop_to_meta(const km_early_stop *e, km_tdict *d, const char *prefix);
km_status km_early_stop_from_meta(km_early_stop *e, const km_tdict *d, const char *prefix,
                                  const char *file);

#endif

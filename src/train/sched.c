/* sched.c - ReduceLROnPlateau (torch/optim/lr_scheduler.py, torch 1.13) and
 * early stopping; see sched.h. */
#include "sched.h"

#include <math.h>
#include <string.h>

void km_plateau_init(km_plateau *p, double lr0, double factor, int patience, double min_lr) {
    KM_ASSERT(factor < 1.0 && patience >= 0 && min_lr >= 0);
    memset(p, 0, sizeof *p);
    p->factor = factor;
    p->patience = patience;
    p->min_lr = min_lr;
    p->threshold = 1e-4;
    p->eps = 1e-8;
    p->cooldown = 0;
    p->mode_max = 0;
    p->threshold_abs = 0;
    p->lr = lr0;
    p->best = INFINITY;
    p->num_bad = 0;
    p->cooldown_counter = 0;
    p->last_epoch = 0;
}

static int plateau_better(const km_plateau *p, double a) {
    if (!p->mode_max) {
        if (!p->threshold_abs) return a < p->best * (1.0 - p->threshold);
        return a < p->best - p->threshold;
    }
    if (!p->threshold_abs) return a > p->best * (1.0 + p->threshold);
    return a > p->best + p->threshold;
}

int km_plateau_step(km_plateau *p, double metric) {
    /* torch _init_is_better: best starts at the worst value of the mode, so
     * mode_max / threshold_abs may be changed after init, before the first step */
    if (p->last_epoch == 0) p->best = p->mode_max ? -INFINITY : INFINITY;
    p->last_epoch++;
    if (plateau_better(p, metric)) {
        p->best = metric;
        p->num_bad = 0;
    } else {
        p->num_bad++;
    }
    if (p->cooldown_counter > 0) {
        p->cooldown_counter--;
        p->num_bad = 0;
    }
    int reduced = 0;
    if (p->num_bad > p->patience) {
        double old = p->lr, nl = old * p->factor;
        if (nl < p->min_lr) nl = p->min_lr;
        if (old - nl > p->eps) {
            p->lr = nl;
            reduced = 1;
        }
        p->cooldown_counter = p->cooldown;
        p->num_bad = 0;
    }
    return reduced;
}

void km_early_stop_init(km_early_stop *e, int patience) {
    KM_ASSERT(patience >= 1);
    e->patience = patience;
    e->best = INFINITY;
    e->best_epoch = -1;
    e->num_bad = 0;
}

int km_early_stop_step(km_early_stop *e, double val_loss, int epoch, int *improved) {
    int imp = val_loss < e->best;
    if (imp) {
        e->best = val_loss;
        e->best_epoch = epoch;
        e->num_bad = 0;
    } else {
        e->num_bad++;
    }
    if (improved) *improved = imp;
    return e->num_bad >= e->patience;
}

/* ---- metadata round trip ---- */

static void set_d(km_tdict *d, const char *prefix, const char *field, double v) {
    char k[256], s[64];
    snprintf(k, sizeof k, "%s.%s", prefix, field);
    snprintf(s, sizeof s, "%.17g", v);
    km_tdict_set_meta(d, k, s);
}

static km_status get_d(const km_tdict *d, const char *prefix, const char *field, const char *file,
                       double *out) {
    char k[256];
    snprintf(k, sizeof k, "%s.%s", prefix, field);
    const char *s = km_tdict_get_meta(d, k);
    if (!s) return km_err(KM_EMISSING, "%s: metadata key '%s' missing (not a resumable checkpoint?)", file, k);
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end)
        return km_err(KM_EFORMAT, "%s: metadata '%s' = '%s', expected a number", file, k, s);
    *out = v;
    return KM_OK;
}

#define GET_D(field, dst)                                                                          \
    do {                                                                                           \
        double v_;                                                                                 \
        km_status s_ = get_d(d, prefix, field, file, &v_);                                         \
        if (s_) return s_;                                                                         \
        dst = v_;                                                                                  \
    } while (0)

void km_plateau_to_meta(const km_plateau *p, km_tdict *d, const char *prefix) {
    set_d(d, prefix, "factor", p->factor);
    set_d(d, prefix, "threshold", p->threshold);
    set_d(d, prefix, "min_lr", p->min_lr);
    set_d(d, prefix, "eps", p->eps);
    set_d(d, prefix, "patience", p->patience);
    set_d(d, prefix, "cooldown", p->cooldown);
    set_d(d, prefix, "mode_max", p->mode_max);
    set_d(d, prefix, "threshold_abs", p->threshold_abs);
    set_d(d, prefix, "lr", p->lr);
    set_d(d, prefix, "best", p->best);
    set_d(d, prefix, "num_bad", p->num_bad);
    set_d(d, prefix, "cooldown_counter", p->cooldown_counter);
    set_d(d, prefix, "last_epoch", p->last_epoch);
}

km_status km_plateau_from_meta(km_plateau *p, const km_tdict *d, const char *prefix,
                               const char *file) {
    GET_D("factor", p->factor);
    GET_D("threshold", p->threshold);
    GET_D("min_lr", p->min_lr);
    GET_D("eps", p->eps);
    GET_D("patience", p->patience);
    GET_D("cooldown", p->cooldown);
    GET_D("mode_max", p->mode_max);
    GET_D("threshold_abs", p->threshold_abs);
    GET_D("lr", p->lr);
    GET_D("best", p->best);
    GET_D("num_bad", p->num_bad);
    GET_D("cooldown_counter", p->cooldown_counter);
    GET_D("last_epoch", p->last_epoch);
    return KM_OK;
}

void km_early_stop_to_meta(const km_early_stop *e, km_tdict *d, const char *prefix) {
    set_d(d, prefix, "patience", e->patience);
    set_d(d, prefix, "best", e->best);
    set_d(d, prefix, "best_epoch", e->best_epoch);
    set_d(d, prefix, "num_bad", e->num_bad);
}

km_status km_early_stop_from_meta(km_early_stop *e, const km_tdict *d, const char *prefix,
                                  const char *file) {
    GET_D("patience", e->patience);
    GET_D("best", e->best);
    GET_D("best_epoch", e->best_epoch);
    GET_D("num_bad", e->num_bad);
    return KM_OK;
}

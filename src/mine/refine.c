/* refine.c - student -> prompts -> teacher mask; see refine.h. */
#include "refine.h"

#include "../models/sam_encoder.h"
#include "../models/sam_preprocess.h"
#include "../train/train.h"

#include <string.h>
#include <sys/stat.h>

void km_refine_config_default(km_refine_config *c) {
    memset(c, 0, sizeof *c);
    c->profile = KM_SAM_PROFILE_AUTO;
    c->mode = KM_PROMPT_AUTO;
    c->points = 1;
    c->cache_mem = 16;
}

km_status km_refine_config_from_flags(km_refine_config *c, const char *teacher, const char *profile,
                                      const char *prompt_mode, int points, const char *cache_dir,
                                      int no_cache, char *dbuf, size_t ndbuf) {
    km_status s;
    if ((s = km_sam_profile_parse_auto(profile, &c->profile))) return km_err_prefix(s, "--teacher-profile: ");
    if ((s = km_prompt_mode_parse_auto(prompt_mode, &c->mode))) return km_err_prefix(s, "--prompt-mode: ");
    c->teacher = teacher;
    c->points = points;
    c->cache_dir = no_cache ? NULL : cache_dir ? cache_dir : km_embcache_default_dir(dbuf, ndbuf);
    return KM_OK;
}

const char *km_refine_outcome_name(km_refine_outcome o) {
    switch (o) {
    case KM_REFINE_TEACHER: return "teacher";
    case KM_REFINE_FALLBACK_NO_BOX: return "student_no_box";
    case KM_REFINE_FALLBACK_EMPTY: return "student_empty_teacher";
    }
    return "?";
}

km_status km_refine_config_check(const km_refine_config *c) {
    if (!c->teacher || !c->teacher[0]) return km_err(KM_EARG, "--teacher: a teacher checkpoint is required");
    struct stat st;
    if (stat(c->teacher, &st) || !S_ISREG(st.st_mode))
        return km_err(KM_EIO, "--teacher %s: no such checkpoint file", c->teacher);
    if (c->points < 1 || c->points > KM_PROMPTS_MAX_POINTS)
        return km_err(KM_EARG, "--points %d: expected 1..%d", c->points, KM_PROMPTS_MAX_POINTS);
    if (c->profile != KM_SAM_PROFILE_AUTO && km_teacher_profile_of(c->profile)->box_only &&
        km_prompt_mode_for(c->mode, c->profile) != KM_PROMPT_BOX)
        return km_err(KM_EARG, "--prompt-mode %s: the %s teacher takes box prompts only (use --prompt-mode box)",
                      km_prompt_mode_name(c->mode), km_sam_profile_name(c->profile));
    if (c->cache_mem < 0) return km_err(KM_EARG, "cache_mem %d: expected >= 0", c->cache_mem);
    return KM_OK;
}

km_status km_refiner_open(km_refiner *r, const km_refine_config *c) {
    memset(r, 0, sizeof *r);
    km_status s = km_refine_config_check(c);
    if (s) return s;
    r->cfg = *c;
    s = km_sam_load(&r->sam, c->teacher, 1);
    if (s) return km_err_prefix(s, "--teacher: ");
    r->loaded = 1;
    /* "auto" settings resolved from the checkpoint, then checked again */
    if (r->cfg.profile == KM_SAM_PROFILE_AUTO) r->cfg.profile = km_sam_auto_profile(&r->sam);
    r->cfg.mode = km_prompt_mode_for(r->cfg.mode, r->cfg.profile);
    if ((s = km_refine_config_check(&r->cfg))) goto fail;
    s = km_sam_predictor_init(&r->p, &r->sam, r->cfg.profile);
    if (s) goto fail;
    r->predictor_on = 1;
    if ((s = km_checkpoint_fingerprint(c->teacher, &r->fp))) goto fail;
    if ((s = km_embcache_init(&r->cache, c->cache_dir, 256, c->cache_mem))) goto fail;
    r->cache_on = 1;
    r->emb = km_malloc(sizeof(float) * 256 * KM_EMB_HW * KM_EMB_HW);
    r->m256 = km_malloc(sizeof(float) * 256 * 256);
    return KM_OK;
fail:
    km_refiner_close(r);
    return s;
}

void km_refiner_close(km_refiner *r) {
    if (r->cache_on) km_embcache_free(&r->cache);
    if (r->predictor_on) km_sam_predictor_free(&r->p);
    if (r->loaded) km_sam_free(&r->sam);
    km_free(r->emb);
    km_free(r->m256);
    km_free(r->mask);
    r->emb = r->m256 = NULL;
    r->mask = NULL;
    r->cap = 0;
    r->loaded = r->predictor_on = r->cache_on = 0;
}

long km_refiner_cache_hits(const km_refiner *r) { return r->cache.hits_mem + r->cache.hits_disk; }

km_status km_refine_teacher_mask(km_refiner *r, const uint8_t *rgb, int S, km_prompts *pr, const float *z,
                                 uint8_t *mask) {
    KM_ASSERT(r->loaded && S > 0);
    km_embkey k;
    km_embkey_make(&k, km_hash_image(rgb, S, S, 3), r->fp,
                   km_sam_profile_name(r->cfg.profile), S, S);
    km_status s;
    if (!km_embcache_lookup(&r->cache, &k, r->emb)) {
        double t0 = km_now();
        s = km_sam_encode(&r->sam, r->cfg.profile, rgb, S, S, 3, r->emb);
        r->encoder_seconds += km_now() - t0;
        if (s) return s;
        r->encoder_runs++;
        /* a failed disk write only costs a recompute next time */
        if (km_embcache_insert(&r->cache, &k, r->emb))
            fprintf(stderr, "kmseg: warning: teacher embedding not cached: %s\n", km_errmsg());
    }
    s = km_sam_set_embedding(&r->p, r->emb, S, S);
    if (s) return s;
    const float *m256 = NULL;
    if (r->cfg.mode & KM_PROMPT_USE_MASK) {
        km_prompts_mask_input(r->m256, z, S, S, r->p.input_h, r->p.input_w);
        m256 = r->m256;
    }
    km_sam_prompts sp;
    km_prompts_to_sam(pr, m256, &sp);
    km_sam_result res;
    memset(&res, 0, sizeof res);
    double t0 = km_now();
    s = km_sam_predict(&r->p, &sp, &res);
    r->decoder_seconds += km_now() - t0;
    if (!s) {
        KM_ASSERT(res.K >= 1 && res.h == S && res.w == S);
        memcpy(mask, res.masks, (size_t)S * S);
        r->teacher_calls++;
    }
    km_sam_result_free(&res);
    return s;
}

km_status km_refine_logits(km_refiner *r, const uint8_t *rgb, int S, float *z, km_refine_outcome *outcome) {
    KM_ASSERT(r->loaded && S > 0);
    size_t P = (size_t)S * S;
    if (P > r->cap) {
        km_free(r->mask);
        r->mask = km_malloc(P);
        r->cap = P;
    }
    km_rng rng;
    km_rng_seed(&rng, KM_REFINE_SEED);
    km_prompts pr;
    km_status s = km_prompts_from_logits(&pr, z, S, S, r->cfg.mode, r->cfg.points, &rng);
    if (s) return s;
    r->images++;
    if (pr.outcome == KM_PROMPTS_NO_BOX) {
        r->fallback_no_box++;
        *outcome = KM_REFINE_FALLBACK_NO_BOX;
        return KM_OK;
    }
    if ((s = km_refine_teacher_mask(r, rgb, S, &pr, z, r->mask))) return s;
    size_t fg = 0;
    for (size_t i = 0; i < P; i++) fg += r->mask[i] != 0;
    if (!fg) {
        r->fallback_empty++;
        *outcome = KM_REFINE_FALLBACK_EMPTY;
        return KM_OK;
    }
    for (size_t i = 0; i < P; i++) z[i] = r->mask[i] ? 1.0f : -1.0f;
    *outcome = KM_REFINE_TEACHER;
    return KM_OK;
}

km_status km_refine_open_student(const char *weights, const char *teacher, const char *profile,
                                 const char *prompt_mode, int points, const char *cache_dir,
                                 int no_cache, km_refiner *ref, struct km_unetpp **m, int *size) {
    memset(ref, 0, sizeof *ref);
    *m = NULL;
    km_refine_config rc;
    km_refine_config_default(&rc);
    char dbuf[4096];
    km_status s;
    if (teacher && (s = km_refine_config_from_flags(&rc, teacher, profile, prompt_mode, points, cache_dir,
                                                    no_cache, dbuf, sizeof dbuf)))
        return s;
    if (teacher && (s = km_refiner_open(ref, &rc))) return s;
    int msize = 0;
    s = km_train_load_student(weights, m, &msize);
    if (s) {
        km_refiner_close(ref);
        return s;
    }
    if (!*size) *size = msize ? msize : 224;
    return KM_OK;
}

/* refine.c - student -> prompts -> teacher mask; see refine.h. */
#include "refine.h"

#include "../io/image.h"
#include "../train/train.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void km_refine_config_default(km_refine_config *c) {
    memset(c, 0, sizeof *c);
    c->profile = KM_SAM_PROFILE_AUTO;
    c->mode = KM_PROMPT_AUTO;
    c->box_rule = KM_BOX_PER_COMPONENT;
    c->points = 1;
    c->cache_mem = 16;
}

km_status km_refine_config_from_flags(km_refine_config *c, const char *teacher, const char *profile,
                                      const char *prompt_mode, const char *box_rule, int points,
                                      const char *cache_dir, int no_cache, char *dbuf, size_t ndbuf) {
    km_status s;
    if ((s = km_sam_profile_parse_auto(profile, &c->profile))) return km_err_prefix(s, "--teacher-profile: ");
    if ((s = km_prompt_mode_parse_auto(prompt_mode, &c->mode))) return km_err_prefix(s, "--prompt-mode: ");
    if ((s = km_box_rule_parse(box_rule, &c->box_rule))) return km_err_prefix(s, "--box-rule: ");
    c->teacher = teacher;
    c->points = points;
    c->cache_dir = no_cache ? NULL : cache_dir ? cache_dir : km_embcache_default_dir(dbuf, ndbuf);
    return KM_OK;
}

/* KM_SET_PASS: `kmseg experiments` passes these to mine and to eval --refine
 * (--teacher is its own flag there, --prompt-mode set per method). */
#define O(f) offsetof(km_refine_flags, f)
static const km_setting k_flag_rows[] = {
    {NULL, "--teacher", KM_SET_STR, O(teacher), 0, 0, 0, 0, 0, NULL, 0,
     "refined mode with this teacher checkpoint (implies --refine)", NULL, NULL},
    {NULL, "--refine", KM_SET_BOOL, O(refine), 0, 0, 0, 0, 0, NULL, 0,
     "refined mode: the student's prediction prompts the teacher (default teacher: the installed LiteMedSAM, "
     "$KMSEG_TEACHER)", NULL, NULL},
    {NULL, "--teacher-profile", KM_SET_STR, O(profile), 0, 0, 0, 0, 0, NULL, KM_SET_PASS,
     "refined mode: auto (from the checkpoint), sam, medsam, litemedsam or mobilesam", NULL, NULL},
    {NULL, "--prompt-mode", KM_SET_STR, O(prompt_mode), 0, 0, 0, 0, 0, NULL, 0,
     "refined mode: auto (the teacher's: box for MedSAM / LiteMedSAM, else points+box), points, box, points+box "
     "or points+box+mask", NULL, NULL},
    {NULL, "--box-rule", KM_SET_STR, O(box_rule), 0, 0, 0, 0, 0, NULL, KM_SET_PASS,
     "refined mode: boxes from the student's mask: all, largest or per-component (one decode per component of "
     ">= 10 % of the largest)", NULL, NULL},
    {NULL, "--points", KM_SET_INT, O(points), 1, 0, 0, 0, 0, NULL, KM_SET_PASS, "refined mode: guiding points per image", NULL,
     NULL},
    {NULL, "--cache-dir", KM_SET_STR, O(cache_dir), 0, 0, 0, 0, 0, NULL, KM_SET_PASS | KM_SET_NEUTRAL,
     "refined mode: teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", NULL,
     NULL},
    {NULL, "--no-cache", KM_SET_BOOL, O(no_cache), 0, 0, 0, 0, 0, NULL, KM_SET_PASS | KM_SET_NEUTRAL,
     "refined mode: keep teacher embeddings in memory only", NULL, NULL},
};
#undef O
const km_settings km_refine_settings = {"refine", k_flag_rows, (int)(sizeof k_flag_rows / sizeof k_flag_rows[0])};

void km_refine_flags_default(km_refine_flags *f) {
    km_settings_default(&km_refine_settings, f);
    f->profile = "auto";
    f->prompt_mode = "auto";
    f->box_rule = "per-component";
}

km_status km_refine_flags_teacher(km_refine_flags *f, char *buf, size_t n) {
    if (!f->refine || f->teacher) return KM_OK;
    const char *t;
    km_status s = km_teacher_resolve(NULL, buf, n, &t);
    if (!s) f->teacher = (char *)t;
    return s;
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
    if ((int)c->box_rule < 0 || (int)c->box_rule > KM_BOX_PER_COMPONENT)
        return km_err(KM_EARG, "--box-rule: unknown rule %d", (int)c->box_rule);
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
    km_free(r->cS);
    km_free(r->conf);
    km_free(r->zo);
    r->emb = r->m256 = r->cS = r->conf = r->zo = NULL;
    r->mask = NULL;
    r->cap = r->ocap = 0;
    r->loaded = r->predictor_on = r->cache_on = 0;
}

long km_refiner_cache_hits(const km_refiner *r) { return r->cache.hits_mem + r->cache.hits_disk; }

void km_refiner_print(const km_refiner *r, FILE *f) {
    fprintf(f, "refined by %s (box rule %s): %ld teacher call(s), %ld decode(s) (%ld encoder run(s), %ld cached), %ld "
            "fallback(s) to the student (%ld NO_BOX, %ld empty teacher mask)\n",
            r->cfg.teacher, km_box_rule_name(r->cfg.box_rule), r->teacher_calls, r->decodes, r->encoder_runs,
            km_refiner_cache_hits(r), r->fallback_no_box + r->fallback_empty, r->fallback_no_box, r->fallback_empty);
}

void km_refine_image_rgb(km_refine_image *im, const uint8_t *rgb, int w, int h) {
    memset(im, 0, sizeof *im);
    im->rgb = rgb;
    im->w = w;
    im->h = h;
    im->hash = km_hash_image(rgb, w, h, 3);
}

void km_refine_image_file(km_refine_image *im, const char *path, int w, int h, uint64_t hash) {
    memset(im, 0, sizeof *im);
    im->path = path;
    im->w = w;
    im->h = h;
    im->hash = hash;
}

/* The profile's pre-processing and the image encoder on the original pixels
 * (decoded from im->path when not in memory), into r->emb. */
static km_status encode(km_refiner *r, const km_refine_image *im) {
    km_image img = {0};
    const uint8_t *rgb = im->rgb;
    if (!rgb) {
        km_status s = km_image_load(im->path, &img, 3);
        if (s) return km_err_prefix(s, "teacher: ");
        int w = img.w, h = img.h;
        if (w != im->w || h != im->h || km_hash_image(img.data, w, h, 3) != im->hash) {
            km_image_free(&img);
            return km_err(KM_EFORMAT, "%s: the image changed on disk since it was loaded (was %dx%d, now %dx%d%s)",
                          im->path, im->w, im->h, w, h, w == im->w && h == im->h ? ", other pixels" : "");
        }
        rgb = img.data;
    }
    double t0 = km_now();
    km_status s = km_sam_encode(&r->sam, r->cfg.profile, rgb, im->w, im->h, 3, r->emb);
    r->encoder_seconds += km_now() - t0;
    km_image_free(&img);
    if (!s) r->encoder_runs++;
    return s;
}

/* The embedding of the original image (cache, else encoder) set on the
 * predictor. */
static km_status set_image(km_refiner *r, const km_refine_image *im) {
    km_embkey k;
    km_embkey_make(&k, im->hash, r->fp, km_sam_profile_name(r->cfg.profile), im->w, im->h);
    if (!km_embcache_lookup(&r->cache, &k, r->emb)) {
        km_status s = encode(r, im);
        if (s) return s;
        /* a failed disk write only costs a recompute next time */
        if (km_embcache_insert(&r->cache, &k, r->emb))
            fprintf(stderr, "kmseg: warning: teacher embedding not cached: %s\n", km_errmsg());
    }
    return km_sam_set_embedding(&r->p, r->emb, im->w, im->h);
}

km_status km_refine_precompute(km_refiner *r, const km_refine_image *im, int *encoded) {
    *encoded = 0;
    if (!r->cache.dir) return km_err(KM_EARG, "embedding precompute: no cache folder (--no-cache)");
    km_embkey k;
    km_embkey_make(&k, im->hash, r->fp, km_sam_profile_name(r->cfg.profile), im->w, im->h);
    char path[4096];
    struct stat st;
    if (!stat(km_embcache_path(&r->cache, &k, path, sizeof path), &st) && S_ISREG(st.st_mode)) return KM_OK;
    km_status s = encode(r, im);
    if (s) return s;
    *encoded = 1;
    if (km_embcache_insert(&r->cache, &k, r->emb))
        fprintf(stderr, "kmseg: warning: teacher embedding not cached: %s\n", km_errmsg());
    return KM_OK;
}

static void grow_orig(km_refiner *r, size_t n) {
    if (n <= r->ocap) return;
    km_free(r->conf);
    km_free(r->zo);
    r->conf = km_malloc(sizeof(float) * n);
    r->zo = km_malloc(sizeof(float) * n);
    r->ocap = n;
}

static void grow_crop(km_refiner *r, size_t n) {
    if (n <= r->cap) return;
    km_free(r->mask);
    km_free(r->cS);
    r->mask = km_malloc(n);
    r->cS = km_malloc(sizeof(float) * n);
    r->cap = n;
}

/* The student's logits z [S, S] of the crop of g as a map over the original
 * frame [h, w]: half-pixel bilinear (edge-clamped) at each original pixel's
 * position in the crop, where that lies within the crop's extent, else the
 * smallest logit ("background, as sure as the student ever is", as
 * km_prompts_mask_input pads). */
static void mask_logits_to_orig(const km_geom *g, const float *z, float *out) {
    const int S = g->size;
    float lo = z[0];
    for (long i = 1; i < (long)S * S; i++)
        if (z[i] < lo) lo = z[i];
    for (int yo = 0; yo < g->h; yo++) {
        double v = (yo + 0.5) * g->rh / g->h - 0.5 - g->top;
        for (int xo = 0; xo < g->w; xo++) {
            double u = (xo + 0.5) * g->rw / g->w - 0.5 - g->left;
            float *d = out + (size_t)yo * g->w + xo;
            if (u < -0.5 || u > S - 0.5 || v < -0.5 || v > S - 0.5) {
                *d = lo;
                continue;
            }
            double fu = u < 0 ? 0 : u > S - 1 ? S - 1 : u, fv = v < 0 ? 0 : v > S - 1 ? S - 1 : v;
            int x0 = (int)fu, y0 = (int)fv, x1 = x0 + 1 < S ? x0 + 1 : x0, y1 = y0 + 1 < S ? y0 + 1 : y0;
            double wx = fu - x0, wy = fv - y0;
            double a = z[(size_t)y0 * S + x0] * (1 - wx) + z[(size_t)y0 * S + x1] * wx;
            double b = z[(size_t)y1 * S + x0] * (1 - wx) + z[(size_t)y1 * S + x1] * wx;
            *d = (float)(a * (1 - wy) + b * wy);
        }
    }
}

/* One decode's scores [h, w] as confidence c = 2p - 1 (header), united into
 * conf by maximum (first decode: stored). */
static void unite_conf(km_sam_profile prof, const float *scores, size_t n, int first, float *conf) {
    const int probs = km_teacher_profile_of(prof)->scores_are_probs; /* else logits (teacher.h) */
    for (size_t i = 0; i < n; i++) {
        float c = probs ? 2.0f * scores[i] - 1.0f : (float)tanh(0.5 * (double)scores[i]);
        if (first || c > conf[i]) conf[i] = c;
    }
}

km_status km_refine_prompts(km_refiner *r, const float *z, int H, int W, km_rng *rng, km_prompts *pr) {
    km_status s = km_prompts_from_logits(pr, z, H, W, r->cfg.mode, r->cfg.points, rng);
    if (!s) s = km_prompts_set_box_rule(pr, z, H, W, r->cfg.box_rule);
    return s;
}

km_status km_refine_teacher_conf(km_refiner *r, const km_refine_image *im, km_prompts *pr, const km_geom *g,
                                 const float *zmask, float *conf) {
    KM_ASSERT(r->loaded && pr->outcome == KM_PROMPTS_READY);
    KM_ASSERT(g ? g->w == im->w && g->h == im->h : pr->w == im->w && pr->h == im->h);
    const size_t n = (size_t)im->w * im->h;
    km_status s = set_image(r, im);
    if (s) return s;
    const float *m256 = NULL;
    if (r->cfg.mode & KM_PROMPT_USE_MASK) {
        const float *zm = zmask;
        if (g) {
            grow_orig(r, n);
            mask_logits_to_orig(g, zmask, r->zo);
            zm = r->zo;
        }
        km_prompts_mask_input(r->m256, zm, im->h, im->w, r->p.input_h, r->p.input_w);
        m256 = r->m256;
    }
    const int nd = km_prompts_n_decodes(pr);
    double t0 = km_now();
    for (int k = 0; k < nd && !s; k++) {
        km_sam_prompts sp;
        km_prompts_to_sam(pr, k, g, m256, &sp);
        km_sam_result res;
        memset(&res, 0, sizeof res);
        s = km_sam_predict(&r->p, &sp, &res);
        if (!s) {
            KM_ASSERT(res.K >= 1 && res.h == im->h && res.w == im->w);
            unite_conf(r->cfg.profile, res.scores, n, k == 0, conf);
            r->decodes++;
        }
        km_sam_result_free(&res);
    }
    r->decoder_seconds += km_now() - t0;
    if (!s) r->teacher_calls++;
    return s;
}

km_status km_refine_teacher_mask(km_refiner *r, const km_refine_image *im, int S, km_prompts *pr, const float *zmask,
                                 uint8_t *mask) {
    KM_ASSERT(r->loaded && S > 0 && pr->w == S && pr->h == S);
    km_geom g;
    km_geom_compute(im->w, im->h, S, &g);
    grow_orig(r, (size_t)im->w * im->h);
    grow_crop(r, (size_t)S * S);
    km_status s = km_refine_teacher_conf(r, im, pr, &g, zmask, r->conf);
    if (s) return s;
    km_geom_resize_crop_f32(&g, r->conf, r->cS);
    for (size_t i = 0; i < (size_t)S * S; i++) mask[i] = r->cS[i] > 0.0f;
    return KM_OK;
}

km_status km_refine_logits(km_refiner *r, const km_refine_image *im, int S, float *z, km_refine_outcome *outcome) {
    KM_ASSERT(r->loaded && S > 0);
    size_t P = (size_t)S * S;
    grow_crop(r, P);
    km_rng rng;
    km_rng_seed(&rng, KM_REFINE_SEED);
    km_prompts pr;
    km_status s = km_refine_prompts(r, z, S, S, &rng, &pr);
    if (s) return s;
    r->images++;
    if (pr.outcome == KM_PROMPTS_NO_BOX) {
        r->fallback_no_box++;
        *outcome = KM_REFINE_FALLBACK_NO_BOX;
        return KM_OK;
    }
    if ((s = km_refine_teacher_mask(r, im, S, &pr, z, r->mask))) return s;
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

km_status km_refine_teacher_mask_orig(km_refiner *r, const km_refine_image *im, const float *z, const km_geom *g,
                                      uint8_t *mask, float *conf, km_refine_outcome *outcome) {
    KM_ASSERT(r->loaded && (!g || (g->w == im->w && g->h == im->h)));
    const int H = g ? g->size : im->h, W = g ? g->size : im->w;
    const size_t n = (size_t)im->w * im->h;
    grow_orig(r, n);
    float *c = conf ? conf : r->conf;
    km_rng rng;
    km_rng_seed(&rng, KM_REFINE_SEED);
    km_prompts pr;
    km_status s = km_refine_prompts(r, z, H, W, &rng, &pr);
    if (s) return s;
    r->images++;
    if (pr.outcome == KM_PROMPTS_NO_BOX) {
        r->fallback_no_box++;
        memset(mask, 0, n);
        for (size_t i = 0; i < n; i++) c[i] = -1.0f;
        *outcome = KM_REFINE_FALLBACK_NO_BOX;
        return KM_OK;
    }
    if ((s = km_refine_teacher_conf(r, im, &pr, g, z, c))) return s;
    size_t fg = 0;
    for (size_t i = 0; i < n; i++) fg += (mask[i] = c[i] > 0.0f);
    if (!fg) r->fallback_empty++;
    *outcome = fg ? KM_REFINE_TEACHER : KM_REFINE_FALLBACK_EMPTY;
    return KM_OK;
}

km_status km_refine_open_student(const char *weights, const km_refine_flags *f, km_refiner *ref,
                                 struct km_unetpp **m, int *size) {
    memset(ref, 0, sizeof *ref);
    *m = NULL;
    km_refine_config rc;
    km_refine_config_default(&rc);
    char dbuf[4096];
    km_status s;
    if (f->teacher && (s = km_refine_config_from_flags(&rc, f->teacher, f->profile, f->prompt_mode, f->box_rule,
                                                       f->points, f->cache_dir, f->no_cache, dbuf, sizeof dbuf)))
        return s;
    if (f->teacher && (s = km_refiner_open(ref, &rc))) return s;
    int msize = 0;
    s = km_train_load_student(weights, m, &msize);
    if (s) {
        km_refiner_close(ref);
        return s;
    }
    if (!*size) *size = msize ? msize : 224;
    return KM_OK;
}

/* prompts.c - teacher prompts from a student prediction (see prompts.h). */
#include "prompts.h"

#include "../models/sam_postprocess.h"
#include "../models/sam_prompt.h"
#include "../train/augment.h"

#include <math.h>
#include <string.h>

static const struct {
    km_prompt_mode mode;
    const char *name;
} k_modes[] = {{KM_PROMPT_POINTS, "points"},
               {KM_PROMPT_BOX, "box"},
               {KM_PROMPT_POINTS_BOX, "points+box"},
               {KM_PROMPT_POINTS_BOX_MASK, "points+box+mask"}};
#define N_MODES ((int)(sizeof k_modes / sizeof k_modes[0]))

const char *km_prompt_mode_name(km_prompt_mode m) {
    for (int i = 0; i < N_MODES; i++)
        if (k_modes[i].mode == m) return k_modes[i].name;
    return m == KM_PROMPT_AUTO ? "auto" : "?";
}

km_status km_prompt_mode_parse(const char *s, km_prompt_mode *m) {
    for (int i = 0; i < N_MODES; i++)
        if (strcmp(s, k_modes[i].name) == 0) {
            *m = k_modes[i].mode;
            return KM_OK;
        }
    return km_err(KM_EARG, "prompt mode '%s' is unknown, expected points, box, points+box or "
                  "points+box+mask", s);
}

km_status km_prompt_mode_parse_auto(const char *s, km_prompt_mode *m) {
    if (!s || !strcmp(s, "auto")) {
        *m = KM_PROMPT_AUTO;
        return KM_OK;
    }
    return km_prompt_mode_parse(s, m);
}

km_prompt_mode km_prompt_mode_for(km_prompt_mode m, km_sam_profile profile) {
    if (m != KM_PROMPT_AUTO) return m;
    return km_teacher_profile_of(profile)->default_box ? KM_PROMPT_BOX : KM_PROMPT_POINTS_BOX;
}

static int mode_valid(km_prompt_mode m) {
    for (int i = 0; i < N_MODES; i++)
        if (k_modes[i].mode == m) return 1;
    return 0;
}

/* The student's probability, bit for bit as km_sigmoid_forward computes it
 * (nn/elementwise.c); a test checks the two agree. Inlined here because that
 * kernel opens an OpenMP region per call. */
static inline float prob(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Floyd's sampling: k distinct ranks out of [0, n), sorted ascending into
 * out[k]. Exactly k km_rng_below draws. */
static void draw_ranks(km_rng *rng, long n, int k, long *out) {
    int m = 0;
    for (long j = n - k; j < n; j++) {
        long r = (long)km_rng_below(rng, (uint64_t)j + 1), pick = r;
        for (int i = 0; i < m; i++)
            if (out[i] == r) {
                pick = j;
                break;
            }
        out[m++] = pick;
    }
    for (int i = 1; i < m; i++) /* insertion sort: k is small */
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            long t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
}

km_status km_prompts_from_logits(km_prompts *out, const float *z, int H, int W, km_prompt_mode mode,
                                 int x, km_rng *rng) {
    KM_ASSERT(out && z && H > 0 && W > 0);
    memset(out, 0, sizeof *out);
    if (!mode_valid(mode)) return km_err(KM_EARG, "prompts: unknown prompt mode %d", (int)mode);
    const int use_points = (mode & KM_PROMPT_USE_POINTS) != 0;
    if (use_points && (x < 1 || x > KM_PROMPTS_MAX_POINTS))
        return km_err(KM_EARG, "prompts: %d guiding points requested, expected 1..%d", x,
                      KM_PROMPTS_MAX_POINTS);
    KM_ASSERT(rng || !use_points);
    out->mode = mode;
    out->w = W;
    out->h = H;
    const long N = (long)H * W;

    /* Pass 1: foreground box and count; NaN check; the top-x probabilities
     * (with multiplicity), kept sorted descending in top[0..nt). */
    int x0 = W, y0 = H, x1 = -1, y1 = -1;
    const int want = use_points ? (N < x ? (int)N : x) : 0;
    float top[KM_PROMPTS_MAX_POINTS];
    int nt = 0;
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++) {
            float v = z[(size_t)r * W + c];
            if (isnan(v))
                return km_err(KM_EARG, "prompts: student logit at pixel (x=%d, y=%d) of the %dx%d "
                              "map is NaN (diverged training?)", c, r, W, H);
            if (v > 0.0f) {
                out->n_fg++;
                if (c < x0) x0 = c;
                if (c > x1) x1 = c;
                if (r < y0) y0 = r;
                y1 = r;
            }
            if (!want) continue;
            float p = prob(v);
            if (nt == want && !(p > top[nt - 1])) continue;
            int i = nt < want ? nt++ : nt - 1;
            for (; i > 0 && top[i - 1] < p; i--) top[i] = top[i - 1];
            top[i] = p;
        }
    if (out->n_fg > 0) {
        out->has_box = 1;
        out->box[0] = x0;
        out->box[1] = y0;
        out->box[2] = x1;
        out->box[3] = y1;
    }
    out->outcome = (mode & KM_PROMPT_USE_BOX) && !out->has_box ? KM_PROMPTS_NO_BOX
                                                                : KM_PROMPTS_READY;
    if (!want) return KM_OK;

    /* Pass 2: how many pixels lie strictly above the cut-off t, how many on it. */
    const float t = top[want - 1];
    long n_gt = 0, n_eq = 0;
    for (long i = 0; i < N; i++) {
        float p = prob(z[i]);
        n_gt += p > t;
        n_eq += p == t;
    }
    const int k = want - (int)n_gt; /* slots left for the tied pixels, 1..n_eq */
    KM_ASSERT(k >= 1 && k <= n_eq);
    long ranks[KM_PROMPTS_MAX_POINTS];
    if (n_eq > k) {
        draw_ranks(rng, n_eq, k, ranks);
        out->n_drawn = k;
    } else {
        for (int i = 0; i < k; i++) ranks[i] = i;
    }
    out->n_tie = n_eq;

    /* Pass 3: collect, then order by decreasing p (stable: ties keep scan order). */
    int n = 0, next = 0;
    long tie = 0;
    for (long i = 0; i < N && n < want; i++) {
        float p = prob(z[i]);
        int take = p > t;
        if (p == t) {
            if (next < k && ranks[next] == tie) {
                take = 1;
                next++;
            }
            tie++;
        }
        if (!take) continue;
        int j = n++;
        for (; j > 0 && out->p[j - 1] < p; j--) {
            out->p[j] = out->p[j - 1];
            out->xy[j][0] = out->xy[j - 1][0];
            out->xy[j][1] = out->xy[j - 1][1];
        }
        out->p[j] = p;
        out->xy[j][0] = (int)(i % W);
        out->xy[j][1] = (int)(i / W);
    }
    KM_ASSERT(n == want);
    out->n_points = n;
    return KM_OK;
}

void km_prompts_unaugment(km_prompts *pr, uint8_t code, int S) {
    KM_ASSERT(pr->w == S && pr->h == S);
    for (int i = 0; i < pr->n_points; i++)
        km_aug_map_point(code, S, pr->xy[i][0], pr->xy[i][1], 1, &pr->xy[i][0], &pr->xy[i][1]);
    if (pr->has_box) {
        int b[4];
        km_aug_map_box(code, S, pr->box, 1, b);
        memcpy(pr->box, b, sizeof b);
    }
}

void km_prompts_unaugment_map(uint8_t code, int S, const float *aug, float *orig) {
    KM_ASSERT(aug != orig);
    /* km_aug_apply_f32 gathers aug[d] = orig[src(d)]; scatter it back. */
    km_aug_affine a = km_aug_inverse_affine(code, S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int sx = a.ox + a.axx * x + a.axy * y, sy = a.oy + a.ayx * x + a.ayy * y;
            orig[(size_t)sy * S + sx] = aug[(size_t)y * S + x];
        }
}

void km_prompts_mask_input(float *out, const float *z, int H, int W, int input_h, int input_w) {
    const int L = KM_SAM_MASK_HW, S = KM_SAM_INPUT;
    KM_ASSERT(H > 0 && W > 0 && input_h > 0 && input_h <= S && input_w > 0 && input_w <= S);
    int mh = (int)(input_h * (double)L / S + 0.5), mw = (int)(input_w * (double)L / S + 0.5);
    if (mh < 1) mh = 1;
    if (mw < 1) mw = 1;
    /* Resize into the first mh*mw floats, then spread the rows to stride L
     * from the last row backwards (a destination never precedes its source). */
    km_bilinear_resize(out, z, H, W, mh, mw, mh, mw);
    if (mh == L && mw == L) return;
    float lo = out[0];
    for (long i = 1; i < (long)mh * mw; i++)
        if (out[i] < lo) lo = out[i];
    for (int r = mh - 1; r >= 0; r--) {
        memmove(out + (size_t)r * L, out + (size_t)r * mw, sizeof(float) * mw);
        for (int c = mw; c < L; c++) out[(size_t)r * L + c] = lo;
    }
    for (size_t i = (size_t)mh * L; i < (size_t)L * L; i++) out[i] = lo;
}

void km_prompts_to_sam(km_prompts *pr, const float *mask256, km_sam_prompts *sp) {
    KM_ASSERT(pr->outcome == KM_PROMPTS_READY);
    KM_ASSERT(((pr->mode & KM_PROMPT_USE_MASK) != 0) == (mask256 != NULL));
    memset(sp, 0, sizeof *sp);
    if (pr->mode & KM_PROMPT_USE_POINTS) {
        for (int i = 0; i < pr->n_points; i++) {
            pr->sam_points[2 * i] = (float)pr->xy[i][0];
            pr->sam_points[2 * i + 1] = (float)pr->xy[i][1];
            pr->sam_labels[i] = 1;
        }
        sp->points = pr->sam_points;
        sp->labels = pr->sam_labels;
        sp->n_points = pr->n_points;
    }
    if ((pr->mode & KM_PROMPT_USE_BOX) && pr->has_box) {
        for (int k = 0; k < 4; k++) pr->sam_box[k] = (float)pr->box[k];
        sp->box = pr->sam_box;
    }
    if (mask256) {
        sp->mask_input = mask256;
        sp->mask_h = sp->mask_w = KM_SAM_MASK_HW;
    }
    sp->multimask = 0;
}

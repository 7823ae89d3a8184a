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

static const char *const k_rules[] = {"all", "largest", "per-component"};

const char *km_box_rule_name(km_box_rule r) {
    return (int)r >= 0 && (int)r < 3 ? k_rules[r] : "?";
}

km_status km_box_rule_parse(const char *s, km_box_rule *r) {
    for (int i = 0; i < 3; i++)
        if (strcmp(s, k_rules[i]) == 0) {
            *r = (km_box_rule)i;
            return KM_OK;
        }
    return km_err(KM_EARG, "box rule '%s' is unknown, expected all, largest or per-component", s);
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
    out->box_rule = KM_BOX_ALL;
    if (out->n_fg > 0) {
        out->has_box = 1;
        out->box[0] = x0;
        out->box[1] = y0;
        out->box[2] = x1;
        out->box[3] = y1;
        out->n_boxes = 1;
        memcpy(out->boxes[0], out->box, sizeof out->box);
        out->box_area[0] = out->n_fg;
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

/* ------------------------------------------------------------ box rule */

typedef struct {
    long area;
    int box[4];
} component;

/* 8-connected components of z > 0: lab[i] = component index (scan order of
 * first pixels) or -1; returns the count, stats in comp[] (capacity: one per
 * 2 x 2 cell, the most 8-connected components an H x W grid can hold). */
static int label_components(const float *z, int H, int W, int *lab, int *stack, component *comp) {
    const long N = (long)H * W;
    for (long i = 0; i < N; i++) lab[i] = z[i] > 0.0f ? -2 : -1; /* -2: foreground, unvisited */
    int nc = 0;
    for (long i0 = 0; i0 < N; i0++) {
        if (lab[i0] != -2) continue;
        component *c = &comp[nc];
        c->area = 0;
        c->box[0] = c->box[2] = (int)(i0 % W);
        c->box[1] = c->box[3] = (int)(i0 / W);
        long top = 0;
        stack[top++] = (int)i0;
        lab[i0] = nc;
        while (top) {
            int i = stack[--top], x = i % W, y = i / W;
            c->area++;
            if (x < c->box[0]) c->box[0] = x;
            if (x > c->box[2]) c->box[2] = x;
            if (y < c->box[1]) c->box[1] = y;
            if (y > c->box[3]) c->box[3] = y;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                    long j = (long)yy * W + xx;
                    if (lab[j] != -2) continue;
                    lab[j] = nc;
                    stack[top++] = (int)j;
                }
        }
        nc++;
    }
    return nc;
}

/* Squared distance from pixel (x, y) to an inclusive box (0 inside). */
static long box_dist2(int x, int y, const int b[4]) {
    long dx = x < b[0] ? b[0] - x : x > b[2] ? x - b[2] : 0;
    long dy = y < b[1] ? b[1] - y : y > b[3] ? y - b[3] : 0;
    return dx * dx + dy * dy;
}

km_status km_prompts_set_box_rule(km_prompts *pr, const float *z, int H, int W, km_box_rule rule) {
    KM_ASSERT(pr->w == W && pr->h == H && (int)rule >= 0 && (int)rule <= 2);
    pr->box_rule = rule;
    for (int i = 0; i < pr->n_points; i++) pr->point_box[i] = 0;
    if (rule == KM_BOX_ALL || !pr->has_box) return KM_OK; /* km_prompts_from_logits' box */
    const long N = (long)H * W;
    const long cap = (long)((H + 1) / 2) * ((W + 1) / 2);
    int *lab = km_try_malloc(sizeof(int) * (size_t)N * 2);
    component *comp = km_try_malloc(sizeof(component) * (size_t)cap);
    if (!lab || !comp) {
        km_free(lab);
        km_free(comp);
        return km_err(KM_ENOMEM, "prompts: no memory for the connected components of a %dx%d map", W, H);
    }
    int nc = label_components(z, H, W, lab, lab + N, comp);
    KM_ASSERT(nc >= 1 && nc <= cap);
    pr->n_components = nc;
    long amax = 0;
    for (int c = 0; c < nc; c++)
        if (comp[c].area > amax) amax = comp[c].area;
    /* kept components, by decreasing area then scan order: selection into
     * the first KM_PROMPTS_MAX_BOXES slots (insertion, nc is usually small) */
    int keep[KM_PROMPTS_MAX_BOXES], nk = 0, want = rule == KM_BOX_LARGEST ? 1 : KM_PROMPTS_MAX_BOXES;
    for (int c = 0; c < nc; c++) {
        if (10 * comp[c].area < amax) continue;
        if (nk == want && comp[c].area <= comp[keep[nk - 1]].area) continue;
        int j = nk < want ? nk++ : nk - 1;
        for (; j > 0 && comp[keep[j - 1]].area < comp[c].area; j--) keep[j] = keep[j - 1];
        keep[j] = c;
    }
    pr->n_boxes = nk;
    for (int k = 0; k < nk; k++) {
        memcpy(pr->boxes[k], comp[keep[k]].box, sizeof pr->boxes[k]);
        pr->box_area[k] = comp[keep[k]].area;
    }
    for (int i = 0; i < pr->n_points; i++) {
        int x = pr->xy[i][0], y = pr->xy[i][1], c = lab[(long)y * W + x], best = -1;
        for (int k = 0; k < nk; k++)
            if (keep[k] == c) best = k; /* the box of the point's own component */
        if (best < 0) {                 /* else the nearest box, ties: the earlier */
            long bd = -1;
            for (int k = 0; k < nk; k++) {
                long d = box_dist2(x, y, pr->boxes[k]);
                if (bd < 0 || d < bd) {
                    bd = d;
                    best = k;
                }
            }
        }
        pr->point_box[i] = best;
    }
    km_free(lab);
    km_free(comp);
    return KM_OK;
}

int km_prompts_n_decodes(const km_prompts *pr) {
    return (pr->mode & KM_PROMPT_USE_BOX) ? pr->n_boxes : 1;
}

void km_prompts_unaugment(km_prompts *pr, uint8_t code, int S) {
    KM_ASSERT(pr->w == S && pr->h == S);
    for (int i = 0; i < pr->n_points; i++)
        km_aug_map_point(code, S, pr->xy[i][0], pr->xy[i][1], 1, &pr->xy[i][0], &pr->xy[i][1]);
    int b[4];
    if (pr->has_box) {
        km_aug_map_box(code, S, pr->box, 1, b);
        memcpy(pr->box, b, sizeof b);
    }
    for (int k = 0; k < pr->n_boxes; k++) {
        km_aug_map_box(code, S, pr->boxes[k], 1, b);
        memcpy(pr->boxes[k], b, sizeof b);
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

/* Pixel (x, y) of pr's frame -> the teacher's frame through g (or as is). */
static void to_frame(const km_geom *g, int x, int y, float *out) {
    if (!g) {
        out[0] = (float)x;
        out[1] = (float)y;
        return;
    }
    double xo, yo;
    km_geom_to_orig(g, x, y, &xo, &yo);
    out[0] = (float)xo;
    out[1] = (float)yo;
}

void km_prompts_to_sam(km_prompts *pr, int k, const km_geom *g, const float *mask256, km_sam_prompts *sp) {
    KM_ASSERT(pr->outcome == KM_PROMPTS_READY);
    KM_ASSERT(((pr->mode & KM_PROMPT_USE_MASK) != 0) == (mask256 != NULL));
    KM_ASSERT(k >= 0 && k < km_prompts_n_decodes(pr));
    KM_ASSERT(!g || (g->size == pr->w && g->size == pr->h));
    const int use_box = (pr->mode & KM_PROMPT_USE_BOX) != 0;
    memset(sp, 0, sizeof *sp);
    if (pr->mode & KM_PROMPT_USE_POINTS) {
        int n = 0;
        for (int i = 0; i < pr->n_points; i++) {
            if (use_box && pr->point_box[i] != k) continue;
            to_frame(g, pr->xy[i][0], pr->xy[i][1], &pr->sam_points[2 * n]);
            pr->sam_labels[n++] = 1;
        }
        sp->points = pr->sam_points;
        sp->labels = pr->sam_labels;
        sp->n_points = n;
    }
    if (use_box) {
        to_frame(g, pr->boxes[k][0], pr->boxes[k][1], pr->sam_box);
        to_frame(g, pr->boxes[k][2], pr->boxes[k][3], pr->sam_box + 2);
        sp->box = pr->sam_box;
    }
    if (mask256) {
        sp->mask_input = mask256;
        sp->mask_h = sp->mask_w = KM_SAM_MASK_HW;
    }
    sp->multimask = 0;
}

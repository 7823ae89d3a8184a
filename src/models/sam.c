/* sam.c - SAM-family model loader and the profile-driven predictor (see
 * sam.h, teacher.h). Ports segment_anything/predictor.py (set_image,
 * predict, predict_torch), utils/transforms.py (apply_coords / apply_boxes)
 * and the inference parts of MedSAM_Inference.py and
 * CVPR24_LiteMedSAM_infer.py; the profile table holds what differs. */
#include "sam.h"
#include "sam_postprocess.h"
#include "sam_preprocess.h"
#include "../io/load.h"

#include <math.h>
#include <string.h>

#define EMB_HW (KM_SAM_EMB_HW * KM_SAM_EMB_HW)
#define LOW_HW (KM_SAM_MASK_HW * KM_SAM_MASK_HW)

static int has_prefix(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* Loads the ViT or TinyViT image encoder of sd into m. */
static km_status load_encoder(km_sam *m, const km_tdict *sd, const char *file, int with_encoder) {
    m->kind = km_tinyvit_detect(sd) ? KM_TEACHER_TINYVIT : KM_TEACHER_VIT;
    km_status s;
    if (m->kind == KM_TEACHER_TINYVIT) {
        km_tinyvit_config tc;
        if ((s = km_tinyvit_config_infer(sd, file, &tc))) return s;
        m->input = tc.img_size;
        if (!with_encoder) return KM_OK;
        return km_tinyvit_load(&m->tinyvit, sd, file);
    }
    km_sam_encoder_config vc;
    if (with_encoder || km_tdict_find(sd, "image_encoder.pos_embed")) {
        if ((s = km_sam_encoder_config_infer(sd, file, &vc))) return s;
        m->input = vc.img_size;
    } else {
        m->input = KM_SAM_INPUT;
    }
    return with_encoder ? km_sam_encoder_load(&m->encoder, sd, file) : KM_OK;
}

static int encoder_out_chans(const km_sam *m) {
    if (m->tinyvit) return km_tinyvit_config_of(m->tinyvit)->out_chans;
    if (m->encoder) return km_sam_encoder_config_of(m->encoder)->out_chans;
    return 0;
}

km_status km_sam_from_tdict(km_sam *m, km_tdict *sd, const char *file, int with_encoder) {
    memset(m, 0, sizeof *m);
    km_tdict_init(&m->weights);
    km_status s = load_encoder(m, sd, file, with_encoder);
    /* Keep only the prompt encoder / mask decoder tensors (the encoder copied
     * its own), moving their buffers instead of copying. */
    for (int i = 0; s == KM_OK && i < sd->n; i++) {
        km_tensor *t = &sd->items[i];
        if (!has_prefix(t->name, "prompt_encoder.") && !has_prefix(t->name, "mask_decoder.")) continue;
        km_tdict_add_owned(&m->weights, t->name, t->dtype, t->ndim, t->shape, t->data);
        t->data = NULL;
    }
    km_tdict_free(sd);
    if (s == KM_OK) s = km_sam_prompt_load(&m->pe, &m->weights, file, "prompt_encoder.");
    if (s == KM_OK) s = km_sam_decoder_load(&m->dec, &m->weights, file, "mask_decoder.");
    if (s == KM_OK && m->pe.D != m->dec.D)
        s = km_err(KM_ESHAPE, "%s: prompt encoder width %d differs from mask decoder width %d", file,
                   m->pe.D, m->dec.D);
    if (s == KM_OK && encoder_out_chans(m) && encoder_out_chans(m) != m->dec.D)
        s = km_err(KM_ESHAPE, "%s: image encoder outputs %d channels, mask decoder expects %d", file,
                   encoder_out_chans(m), m->dec.D);
    if (s == KM_OK && m->dec.n_mask_tokens < 2)
        s = km_err(KM_ESHAPE, "%s: mask decoder has %d mask tokens, expected at least 2", file,
                   m->dec.n_mask_tokens);
    if (s != KM_OK) {
        km_sam_free(m);
        return s;
    }
    m->file = km_strdup(file);
    return KM_OK;
}

km_status km_sam_load(km_sam *m, const char *path, int with_encoder) {
    km_tdict sd;
    km_tdict_init(&sd);
    memset(m, 0, sizeof *m);
    km_status s = km_load_checkpoint(path, &sd);
    if (s != KM_OK) {
        km_tdict_free(&sd);
        return s;
    }
    return km_sam_from_tdict(m, &sd, path, with_encoder);
}

void km_sam_free(km_sam *m) {
    if (m->encoder) km_sam_encoder_free(m->encoder);
    if (m->tinyvit) km_tinyvit_free(m->tinyvit);
    km_tdict_free(&m->weights);
    km_free(m->file);
    memset(m, 0, sizeof *m);
}

km_sam_profile km_sam_auto_profile(const km_sam *m) {
    if (m->kind == KM_TEACHER_VIT) return KM_SAM_PROFILE_SAM;
    return m->input == 256 ? KM_SAM_PROFILE_LITEMEDSAM : KM_SAM_PROFILE_MOBILESAM;
}

km_status km_sam_probe_profile(const char *path, km_sam_profile *profile) {
    km_sam m;
    km_status s = km_sam_load(&m, path, 0);
    if (s) return s;
    *profile = km_sam_auto_profile(&m);
    km_sam_free(&m);
    return KM_OK;
}

static const char *kind_name(const km_sam *m) {
    if (m->kind == KM_TEACHER_VIT) return "a ViT (SAM / MedSAM) checkpoint";
    return m->input == 256 ? "a TinyViT checkpoint with a 256 input (LiteMedSAM)"
                           : "a TinyViT checkpoint with a 1024 input (MobileSAM)";
}

km_status km_sam_check_profile(const km_sam *m, km_sam_profile profile) {
    const km_teacher_profile *tp = km_teacher_profile_of(profile);
    if (tp->encoder == m->kind && tp->input == m->input) return KM_OK;
    return km_err(KM_EARG, "%s is %s; teacher profile '%s' needs %s%s", m->file ? m->file : "teacher",
                  kind_name(m), tp->name,
                  tp->encoder == KM_TEACHER_VIT ? "a ViT (SAM / MedSAM) checkpoint"
                  : tp->input == 256 ? "a TinyViT checkpoint with a 256 input (LiteMedSAM)"
                                     : "a TinyViT checkpoint with a 1024 input (MobileSAM)",
                  " (leave --teacher-profile at auto to take the checkpoint's own)");
}

km_status km_sam_predictor_init(km_sam_predictor *p, const km_sam *m, km_sam_profile profile) {
    memset(p, 0, sizeof *p);
    km_status s = km_sam_check_profile(m, profile);
    if (s) return s;
    p->model = m;
    p->profile = profile;
    p->tp = km_teacher_profile_of(profile);
    p->pe = m->pe;
    p->pe.input_size = p->tp->input;
    int D = m->dec.D;
    p->embedding = km_malloc(sizeof(float) * D * EMB_HW);
    p->dense_pe = km_malloc(sizeof(float) * D * EMB_HW);
    p->dense = km_malloc(sizeof(float) * D * EMB_HW);
    p->masks_all = km_malloc(sizeof(float) * m->dec.n_mask_tokens * LOW_HW);
    km_sam_prompt_dense_pe(&p->pe, p->dense_pe);
    return KM_OK;
}

void km_sam_predictor_free(km_sam_predictor *p) {
    km_free(p->embedding);
    km_free(p->dense_pe);
    km_free(p->dense);
    km_free(p->masks_all);
    km_free(p->work);
    memset(p, 0, sizeof *p);
}

static void grow_work(km_sam_predictor *p, size_t n) {
    if (n <= p->work_n) return;
    km_free(p->work);
    p->work = km_malloc(sizeof(float) * n);
    p->work_n = n;
}

km_status km_sam_encode(const km_sam *m, km_sam_profile profile, const uint8_t *rgb, int w, int h,
                        int c, float *emb) {
    const km_teacher_profile *tp = km_teacher_profile_of(profile);
    if (!m->encoder && !m->tinyvit)
        return km_err(KM_EARG, "%s: the model was loaded without its image encoder; "
                      "use a cached embedding", m->file);
    if (w <= 0 || h <= 0 || (c != 1 && c != 3))
        return km_err(KM_EARG, "image is %dx%d with %d channels, expected a non-empty RGB or grey "
                      "image", w, h, c);
    km_status s = km_sam_check_profile(m, profile);
    if (s) return s;
    const int S = tp->input;
    int nh, nw;
    km_teacher_input_shape(tp, h, w, &nh, &nw);
    if (nh < 1 || nw < 1)
        return km_err(KM_EARG, "image %dx%d is too small for the %s teacher: its short side would be "
                      "%d px at the %d px input", w, h, tp->name, nh < nw ? nh : nw, S);
    float *img = km_malloc(sizeof(float) * 3 * S * S);
    tp->preprocess(img, S, rgb, w, h, c, &nh, &nw);
    if (m->tinyvit) s = km_tinyvit_forward(m->tinyvit, img, emb, NULL);
    else s = km_sam_encoder_forward(m->encoder, img, emb, NULL);
    km_free(img);
    return s;
}

km_status km_sam_set_image(km_sam_predictor *p, const uint8_t *rgb, int w, int h, int c) {
    p->has_image = 0;
    km_status s = km_sam_encode(p->model, p->profile, rgb, w, h, c, p->embedding);
    if (s) return s;
    p->orig_h = h;
    p->orig_w = w;
    km_teacher_input_shape(p->tp, h, w, &p->input_h, &p->input_w);
    p->has_image = 1;
    return KM_OK;
}

km_status km_sam_set_embedding(km_sam_predictor *p, const float *embedding, int orig_w, int orig_h) {
    if (orig_w <= 0 || orig_h <= 0)
        return km_err(KM_EARG, "set_embedding: original image size %dx%d is invalid", orig_w, orig_h);
    memcpy(p->embedding, embedding, sizeof(float) * p->model->dec.D * EMB_HW);
    p->orig_w = orig_w;
    p->orig_h = orig_h;
    km_teacher_input_shape(p->tp, orig_h, orig_w, &p->input_h, &p->input_w);
    p->has_image = 1;
    return KM_OK;
}

/* Points and box corners must lie in the image: 0 <= x <= w, 0 <= y <= h
 * (continuous pixel coordinates; the far edge is allowed for boxes). */
static km_status check_xy(const char *what, int idx, float x, float y, int w, int h) {
    if (!(x >= 0 && x <= (float)w && y >= 0 && y <= (float)h)) {
        const char *axis = !(x >= 0 && x <= (float)w) ? "x" : "y";
        return km_err(KM_EARG, "%s %d (x=%g, y=%g) is outside the %dx%d image (%s out of range "
                      "0..%d)", what, idx, x, y, w, h, axis, axis[0] == 'x' ? w : h);
    }
    return KM_OK;
}

km_status km_sam_validate_prompts(const km_sam_prompts *pr, km_sam_profile profile, int orig_w,
                                  int orig_h) {
    if (pr->n_points < 0) return km_err(KM_EARG, "predict: negative point count %d", pr->n_points);
    if (pr->n_points > 0 && (!pr->points || !pr->labels))
        return km_err(KM_EARG, "predict: %d points given without %s", pr->n_points,
                      !pr->points ? "coordinates" : "labels");
    if (pr->n_points == 0 && !pr->box && !pr->mask_input)
        return km_err(KM_EARG, "predict: no prompt given: need at least one point, a box or a "
                      "mask input");
    const km_teacher_profile *tp = km_teacher_profile_of(profile);
    if (tp->box_only && (!pr->box || pr->n_points || pr->mask_input))
        return km_err(KM_EARG, "predict: the %s profile takes exactly one box and no points or mask "
                      "input", tp->name);
    if (pr->multimask && !tp->multimask)
        return km_err(KM_EARG, "predict: the %s profile is single-mask (multimask off)", tp->name);
    for (int i = 0; i < pr->n_points; i++) {
        km_status s = check_xy("point", i, pr->points[2 * i], pr->points[2 * i + 1], orig_w, orig_h);
        if (s) return s;
        int l = pr->labels[i];
        if (l < -1 || l > 1)
            return km_err(KM_EARG, "point %d has label %d, expected 1 (foreground), 0 "
                          "(background) or -1 (ignored)", i, l);
    }
    if (pr->box) {
        const float *b = pr->box;
        km_status s;
        if ((s = check_xy("box corner", 0, b[0], b[1], orig_w, orig_h)) ||
            (s = check_xy("box corner", 1, b[2], b[3], orig_w, orig_h)))
            return s;
        if (b[2] < b[0] || b[3] < b[1])
            return km_err(KM_EARG, "box (%g, %g, %g, %g) has %s, expected (x0, y0, x1, y1) with "
                          "x0 <= x1 and y0 <= y1", b[0], b[1], b[2], b[3],
                          b[2] < b[0] ? "x1 < x0" : "y1 < y0");
    }
    if (pr->mask_input && (pr->mask_h != KM_SAM_MASK_HW || pr->mask_w != KM_SAM_MASK_HW))
        return km_err(KM_EARG, "mask input is %dx%d, expected %dx%d (low-res logits of a previous "
                      "prediction)", pr->mask_w, pr->mask_h, KM_SAM_MASK_HW, KM_SAM_MASK_HW);
    return KM_OK;
}

/* Original pixels -> the prompt encoder's frame (the profile's rule). */
static float to_input(const km_sam_predictor *p, float v, int is_x, int is_box) {
    return p->tp->coord(v, is_x, is_box, p->orig_w, p->orig_h, p->input_w, p->input_h);
}

km_status km_sam_predict(km_sam_predictor *p, const km_sam_prompts *pr, km_sam_result *out) {
    memset(out, 0, sizeof *out);
    if (!p->has_image) return km_err(KM_EARG, "predict: no image set (set_image / set_embedding first)");
    km_status s = km_sam_validate_prompts(pr, p->profile, p->orig_w, p->orig_h);
    if (s) return s;
    const km_sam *m = p->model;
    const int D = m->dec.D, n = pr->n_points;
    int ns = km_sam_prompt_num_sparse(n, pr->box != NULL);

    float *pts = km_malloc(sizeof(float) * 2 * (n + 1)), box[4];
    for (int i = 0; i < n; i++) {
        pts[2 * i] = to_input(p, pr->points[2 * i], 1, 0);
        pts[2 * i + 1] = to_input(p, pr->points[2 * i + 1], 0, 0);
    }
    for (int k = 0; pr->box && k < 4; k++) box[k] = to_input(p, pr->box[k], k % 2 == 0, 1);

    const int multi = pr->multimask;
    const int K = multi ? m->dec.n_mask_tokens - 1 : 1, first = multi ? 1 : 0;
    const int H = p->orig_h, W = p->orig_w;
    out->K = K;
    out->h = H;
    out->w = W;
    out->n_sparse = ns;
    out->sparse = km_malloc(sizeof(float) * D * (ns + 1));
    out->low_res = km_malloc(sizeof(float) * K * LOW_HW);
    out->scores = km_malloc(sizeof(float) * K * H * W);
    out->masks = km_malloc((size_t)K * H * W);

    size_t need = km_sam_decoder_work_floats(&m->dec, ns);
    size_t pw = km_sam_prompt_work_floats(&p->pe);
    size_t post = p->tp->post_work(p->input_h, p->input_w);
    grow_work(p, need > pw ? (need > post ? need : post) : (pw > post ? pw : post));

    km_sam_prompt_sparse(&p->pe, out->sparse, pts, pr->labels, n, pr->box ? box : NULL);
    km_free(pts);
    km_sam_prompt_dense(&p->pe, p->dense, pr->mask_input, p->work);
    km_sam_decoder_forward(&m->dec, p->masks_all, out->iou, p->embedding, p->dense_pe, out->sparse,
                           ns, p->dense, p->work);
    memmove(out->iou, out->iou + first, sizeof(float) * K);
    memcpy(out->low_res, p->masks_all + (size_t)first * LOW_HW, sizeof(float) * K * LOW_HW);

    p->tp->postprocess(out->scores, out->low_res, K, p->input_h, p->input_w, H, W, p->work);
    for (size_t i = 0; i < (size_t)K * H * W; i++) out->masks[i] = (uint8_t)p->tp->is_fg(out->scores[i]);
    return KM_OK;
}

void km_sam_result_free(km_sam_result *r) {
    km_free(r->scores);
    km_free(r->masks);
    km_free(r->low_res);
    km_free(r->sparse);
    memset(r, 0, sizeof *r);
}

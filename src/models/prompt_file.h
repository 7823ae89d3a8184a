/* prompt_file.h - SAM prompts in image pixels, from flags ("x,y[,label]",
 * "x0,y0,x1,y1") and from a prompts file keyed by image file name (what
 * `kmseg sam --images DIR --prompts FILE` reads).
 *
 *   CSV:  a header "image,kind,..." (optional) then one row per prompt:
 *           img1.png,point,120,95        (label 1)
 *           img1.png,point,40,150,0      (background)
 *           img1.png,box,10,20,200,160   (x0,y0,x1,y1; at most one per image)
 *         no quoting (file names with commas are not supported: a '"' is an
 *         error); '#' lines and blank lines are skipped; CRLF accepted.
 *   JSON: {"img1.png": {"points": [[120,95,1],[40,150,0]], "box": [10,20,200,160]}}
 *         (points' labels optional, default 1; no other keys; an image named
 *         twice is an error).
 * Every error names the file and the place, "FILE:LINE" (CSV) or
 * "FILE: \"img.png\".points[1]" (JSON): a malformed file or entry is
 * KM_EFORMAT; a wrong count of numbers, a bad label or a second box is
 * KM_EARG, with the message the --point / --box flags give. The numbers are
 * only parsed here: whether they fit the image is km_sam_validate_prompts'
 * business (sam.h). */
#ifndef KM_PROMPT_FILE_H
#define KM_PROMPT_FILE_H

#include "sam.h"

/* One image's prompts. */
typedef struct {
    char *name;   /* image file name (prompts file), or NULL */
    float *xy;    /* [n, 2] points */
    int *label;   /* [n] 1 foreground, 0 background */
    int n, cap;
    float box[4]; /* x0, y0, x1, y1 when has_box */
    int has_box;
} km_prompt_set;

typedef struct {
    km_prompt_set *items; /* in file order */
    int n, cap;
} km_prompt_list;

/* "x,y" or "x,y,label" (label 0 or 1) appended to p; `what` names the source
 * in messages (a flag, or FILE:LINE): KM_EARG "WHAT 'S': expected 2 or 3
 * comma-separated numbers" / "... label must be 1 (foreground) or 0 (background)". */
km_status km_prompt_parse_point(const char *what, const char *s, km_prompt_set *p);
/* "x0,y0,x1,y1" as p's box; a second box is KM_EARG. */
km_status km_prompt_parse_box(const char *what, const char *s, km_prompt_set *p);
void km_prompt_set_free(km_prompt_set *p);

/* Reads a .csv or .json prompts file (by its extension; another is KM_EARG
 * "--prompts PATH: expected a .csv or .json file"). On error *out is empty. */
km_status km_prompt_file_load(const char *path, km_prompt_list *out);
/* The entry for image `name`, NULL if none. */
const km_prompt_set *km_prompt_list_find(const km_prompt_list *l, const char *name);
void km_prompt_list_free(km_prompt_list *l);

/* The predictor's prompts for ps (its arrays are borrowed), with an optional
 * 256 x 256 mask input. */
km_sam_prompts km_prompt_set_sam(const km_prompt_set *ps, const float *mask, int multimask);

#endif

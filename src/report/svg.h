/* svg.h - inline SVG line / dot charts for the report, each followed by a
 * <details> data table with the numbers it draws.
 *
 * Accessibility: the <svg role="img"> starts with a <title> (its accessible
 * name) and a <desc>; series differ by colour (Okabe-Ito, colour-blind safe),
 * dash pattern and marker shape (redundant coding), and the legend shows all
 * three. Reference lines (best epoch, start of mining, a baseline) are dashed
 * and labelled in text.
 *
 * Missing values: a y that is not finite (an empty test_dice cell, NaN) is
 * skipped: the line breaks there and the data table shows a dash. A log axis
 * also skips y <= 0. No coordinate written is ever NaN or inf; a chart with no
 * finite point says "no data" instead of drawing axes. Coordinates are
 * printed with one decimal, tick labels with a fixed format: same inputs,
 * same bytes. */
#ifndef KM_REPORT_SVG_H
#define KM_REPORT_SVG_H

#include "html.h"

enum { KM_SERIES_LINE = 0, KM_SERIES_DOTS = 1 };

typedef struct {
    const char *name;
    int n;
    const double *x, *y;   /* [n] */
    const double *lo, *hi; /* [n] or NULL: error bars, or a band when band = 1 */
    int style;             /* KM_SERIES_LINE (line + markers) or KM_SERIES_DOTS (markers only) */
    int band;              /* lo/hi drawn as a shaded band (min-max) instead of bars */
    int pal;               /* palette slot: colour, dash and marker */
} km_series;

typedef struct {
    double v;
    const char *label;
} km_rule;

typedef struct {
    const char *id;                       /* unique in the page (element ids) */
    const char *title, *desc;             /* accessible name and description */
    const char *xlabel, *ylabel;
    int logy;                             /* logarithmic y axis */
    int w, h;                             /* pixels (0: 720 x 300); w grows when a series name
                                             needs more than the 230 px legend column */
    const km_series *s;
    int ns;
    const km_rule *vrules;                /* vertical reference lines at x = v */
    int nv;
    const km_rule *hrules;                /* horizontal reference lines at y = v */
    int nh;
    int xdigits, ydigits;                 /* decimals in the data table */
    int xint;                             /* x ticks at whole numbers only (epochs, ranks) */
} km_chart;

/* Number of palette slots before colours repeat (dash/marker still differ). */
#define KM_SVG_PALETTE 7
/* The colour of palette slot k ("#rrggbb"). */
const char *km_svg_colour(int k);

/* Writes the chart (<figure> with the svg and a caption) and its data table. */
void km_svg_chart(km_html *h, const km_chart *c);

/* "Nice" axis ticks covering [lo, hi] (lo < hi, both finite): step 1, 2 or 5
 * times a power of ten, about `target` intervals; *t0 / *t1 the first / last
 * tick (t0 <= lo, t1 >= hi), returns the step. */
double km_svg_nice_ticks(double lo, double hi, int target, double *t0, double *t1);

#endif

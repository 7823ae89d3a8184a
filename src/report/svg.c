/* svg.c - see svg.h. */
#include "svg.h"

#include <math.h>
#include <string.h>

/* Okabe & Ito; the first five keep >= 3:1 contrast on white. */
static const char *const k_colour[KM_SVG_PALETTE] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                     "#000000", "#E69F00", "#56B4E9"};
static const char *const k_dash[6] = {"", "7 4", "2 3", "9 3 2 3", "4 4", "1 3"};

const char *km_svg_colour(int k) { return k_colour[((k % KM_SVG_PALETTE) + KM_SVG_PALETTE) % KM_SVG_PALETTE]; }

double km_svg_nice_ticks(double lo, double hi, int target, double *t0, double *t1) {
    double raw = (hi - lo) / (target > 0 ? target : 5);
    double p = pow(10, floor(log10(raw))), f = raw / p;
    double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    *t0 = floor(lo / step + 1e-9) * step;
    *t1 = ceil(hi / step - 1e-9) * step;
    return step;
}

typedef struct {
    double x0, x1, y0, y1; /* data domain */
    double px0, px1, py0, py1; /* plot area in pixels (py0 bottom) */
    int logy, xint;
} frame;

/* x ticks: nice, at whole numbers for an integer axis */
static double xticks(double lo, double hi, int xint, double *t0, double *t1) {
    double st = km_svg_nice_ticks(lo, hi, 6, t0, t1);
    if (xint && st < 1) {
        st = 1;
        *t0 = floor(lo);
        *t1 = ceil(hi);
    }
    return st;
}

static int usable(const frame *f, double y) { return isfinite(y) && (!f->logy || y > 0); }
static double fy(const frame *f, double y) { return f->logy ? log10(y) : y; }
/* Data to pixels, 6 px inside the plot frame so that markers and error bars
 * at the ends of the axes stay whole. */
static double X(const frame *f, double x) {
    return f->px0 + 6 + (x - f->x0) / (f->x1 - f->x0) * (f->px1 - f->px0 - 12);
}
static double Y(const frame *f, double y) {
    return f->py0 - 6 - (fy(f, y) - f->y0) / (f->y1 - f->y0) * (f->py0 - f->py1 - 12);
}

static void extend(double v, double *lo, double *hi) {
    if (v < *lo) *lo = v;
    if (v > *hi) *hi = v;
}

/* Data domain over every usable point; 0 when there is none. */
static int domain(const km_chart *c, frame *f) {
    double xl = INFINITY, xh = -INFINITY, yl = INFINITY, yh = -INFINITY;
    f->logy = c->logy;
    for (int k = 0; k < c->ns; k++)
        for (int i = 0; i < c->s[k].n; i++) {
            const km_series *s = &c->s[k];
            if (!isfinite(s->x[i]) || !usable(f, s->y[i])) continue;
            extend(s->x[i], &xl, &xh);
            extend(fy(f, s->y[i]), &yl, &yh);
            if (s->lo && usable(f, s->lo[i])) extend(fy(f, s->lo[i]), &yl, &yh);
            if (s->hi && usable(f, s->hi[i])) extend(fy(f, s->hi[i]), &yl, &yh);
        }
    if (!isfinite(xl) || !isfinite(yl)) return 0;
    for (int i = 0; i < c->nh; i++)
        if (usable(f, c->hrules[i].v)) extend(fy(f, c->hrules[i].v), &yl, &yh);
    for (int i = 0; i < c->nv; i++)
        if (isfinite(c->vrules[i].v)) extend(c->vrules[i].v, &xl, &xh);
    if (xh - xl < 1e-12) { xl -= 0.5; xh += 0.5; }
    if (yh - yl < 1e-12) { yl -= f->logy ? 0.5 : (fabs(yl) > 0 ? 0.1 * fabs(yl) : 0.5); yh += f->logy ? 0.5 : (fabs(yh) > 0 ? 0.1 * fabs(yh) : 0.5); }
    double t0, t1;
    f->xint = c->xint;
    xticks(xl, xh, f->xint, &t0, &t1);
    f->x0 = t0;
    f->x1 = t1;
    if (f->logy) {
        f->y0 = floor(yl);
        f->y1 = ceil(yh);
        if (f->y1 <= f->y0) f->y1 = f->y0 + 1;
    } else {
        km_svg_nice_ticks(yl, yh, 5, &t0, &t1);
        f->y0 = t0;
        f->y1 = t1;
    }
    return 1;
}

static int decimals(double step) {
    int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 8 ? 8 : d;
}

static void axes(km_html *h, const km_chart *c, const frame *f) {
    km_html_printf(h, "<g class=\"axis\" font-size=\"12\" fill=\"#222\">\n");
    double t0, t1, st = xticks(f->x0, f->x1, f->xint, &t0, &t1);
    int dx = decimals(st);
    for (double t = t0; t <= t1 + st * 1e-6; t += st) {
        double px = X(f, t);
        km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.*f</text>\n",
                       px, f->py0, px, f->py1, px, f->py0 + 16, dx, fabs(t) < st * 1e-6 ? 0.0 : t);
    }
    if (f->logy) {
        for (double e = f->y0; e <= f->y1 + 1e-9; e += 1) {
            double py = Y(f, pow(10, e));
            km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                              "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n",
                           f->px0, py, f->px1, py, f->px0 - 6, py + 4, (int)e);
        }
    } else {
        st = km_svg_nice_ticks(f->y0, f->y1, 5, &t0, &t1);
        int dy = decimals(st);
        for (double t = t0; t <= t1 + st * 1e-6; t += st) {
            double py = Y(f, t);
            km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                              "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n",
                           f->px0, py, f->px1, py, f->px0 - 6, py + 4, dy, fabs(t) < st * 1e-6 ? 0.0 : t);
        }
    }
    km_html_printf(h, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#555\"/>\n",
                   f->px0, f->py1, f->px1 - f->px0, f->py0 - f->py1);
    km_html_printf(h, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", (f->px0 + f->px1) / 2, f->py0 + 34);
    km_html_text(h, c->xlabel);
    km_html_printf(h, "</text>\n<text transform=\"translate(14 %.1f) rotate(-90)\" text-anchor=\"middle\">",
                   (f->py0 + f->py1) / 2);
    km_html_text(h, c->ylabel);
    km_html_raw(h, c->logy ? " (log scale)</text>\n</g>\n" : "</text>\n</g>\n");
}

/* Marker k centred on (x, y), filled with the series colour. */
static void marker(km_html *h, int k, double x, double y) {
    const char *col = km_svg_colour(k);
    switch (k % 6) {
    case 0: km_html_printf(h, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>", x, y, col); break;
    case 1: km_html_printf(h, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>", x - 3.5, y - 3.5, col); break;
    case 2: km_html_printf(h, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>", x, y - 4.5, x + 4.5, y + 3.5, x - 4.5, y + 3.5, col); break;
    case 3: km_html_printf(h, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>", x, y - 5, x + 5, y, x, y + 5, x - 5, y, col); break;
    case 4: km_html_printf(h, "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke=\"%s\" stroke-width=\"2\"/>", x - 4, y - 4, x + 4, y + 4, x - 4, y + 4, x + 4, y - 4, col); break;
    default: km_html_printf(h, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#fff\" stroke=\"%s\" stroke-width=\"2\"/>", x, y, col);
    }
}

static void line_attrs(km_html *h, int k) {
    km_html_printf(h, " fill=\"none\" stroke=\"%s\" stroke-width=\"2\"", km_svg_colour(k));
    if (*k_dash[k % 6]) km_html_printf(h, " stroke-dasharray=\"%s\"", k_dash[k % 6]);
}

static void band(km_html *h, const frame *f, const km_series *s) {
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += isfinite(s->x[i]) && usable(f, s->lo[i]) && usable(f, s->hi[i]);
    if (n < 2) return;
    km_html_printf(h, "<polygon fill=\"%s\" fill-opacity=\"0.15\" stroke=\"none\" points=\"", km_svg_colour(s->pal));
    for (int i = 0; i < s->n; i++)
        if (isfinite(s->x[i]) && usable(f, s->lo[i]) && usable(f, s->hi[i]))
            km_html_printf(h, "%.1f,%.1f ", X(f, s->x[i]), Y(f, s->hi[i]));
    for (int i = s->n - 1; i >= 0; i--)
        if (isfinite(s->x[i]) && usable(f, s->lo[i]) && usable(f, s->hi[i]))
            km_html_printf(h, "%.1f,%.1f ", X(f, s->x[i]), Y(f, s->lo[i]));
    km_html_raw(h, "\"/>\n");
}

static void series(km_html *h, const frame *f, const km_series *s) {
    km_html_raw(h, "<g class=\"series\" aria-label=\"");
    km_html_text(h, s->name);
    km_html_raw(h, "\">\n");
    if (s->lo && s->hi && s->band) band(h, f, s);
    for (int i = 0; i < s->n && s->style == KM_SERIES_LINE;) { /* one polyline per run of usable points */
        while (i < s->n && !(isfinite(s->x[i]) && usable(f, s->y[i]))) i++;
        int j = i;
        while (j < s->n && isfinite(s->x[j]) && usable(f, s->y[j])) j++;
        if (j - i >= 2) {
            km_html_raw(h, "<polyline");
            line_attrs(h, s->pal);
            km_html_raw(h, " points=\"");
            for (int k = i; k < j; k++) km_html_printf(h, "%s%.1f,%.1f", k > i ? " " : "", X(f, s->x[k]), Y(f, s->y[k]));
            km_html_raw(h, "\"/>\n");
        }
        i = j;
    }
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !usable(f, s->y[i])) continue;
        double px = X(f, s->x[i]);
        if (s->lo && s->hi && !s->band && usable(f, s->lo[i]) && usable(f, s->hi[i]))
            km_html_printf(h, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>",
                           px, Y(f, s->lo[i]), Y(f, s->hi[i]), px - 4, Y(f, s->lo[i]), px + 4, px - 4, Y(f, s->hi[i]),
                           px + 4, km_svg_colour(s->pal));
        marker(h, s->pal, px, Y(f, s->y[i]));
    }
    km_html_raw(h, "\n</g>\n");
}

static void rules(km_html *h, const km_chart *c, const frame *f) {
    for (int i = 0; i < c->nv; i++) {
        if (!isfinite(c->vrules[i].v)) continue;
        double px = X(f, c->vrules[i].v);
        int right = px > (f->px0 + f->px1) / 2; /* label on the side with room */
        km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" stroke-dasharray=\"3 3\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#222\"%s>",
                       px, f->py0, px, f->py1, right ? px - 3 : px + 3, f->py1 + 12 + 12 * (i % 3),
                       right ? " text-anchor=\"end\"" : "");
        km_html_text(h, c->vrules[i].label);
        km_html_raw(h, "</text>\n");
    }
    for (int i = 0; i < c->nh; i++) {
        if (!usable(f, c->hrules[i].v)) continue;
        double py = Y(f, c->hrules[i].v);
        km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"8 4\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#222\" text-anchor=\"end\">",
                       f->px0, py, f->px1, py, f->px1 - 4, py - 4);
        km_html_text(h, c->hrules[i].label);
        km_html_raw(h, "</text>\n");
    }
}

static void legend(km_html *h, const km_chart *c, const frame *f) {
    double x = f->px1 + 10, y = f->py1 + 8;
    for (int k = 0; k < c->ns; k++, y += 18) {
        const km_series *s = &c->s[k];
        km_html_raw(h, "<g class=\"legend\">");
        if (s->style == KM_SERIES_LINE) {
            km_html_printf(h, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"", x, y, x + 28, y);
            line_attrs(h, s->pal);
            km_html_raw(h, "/>");
        }
        marker(h, s->pal, x + 14, y);
        km_html_printf(h, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#222\">", x + 34, y + 4);
        km_html_text(h, s->name);
        km_html_raw(h, "</text></g>\n");
    }
}

static void data_table(km_html *h, const km_chart *c) {
    int bars = 0;
    for (int k = 0; k < c->ns; k++) bars |= c->s[k].lo && c->s[k].hi;
    km_html_raw(h, "<details><summary>Data: ");
    km_html_text(h, c->title);
    km_html_raw(h, "</summary>\n<table class=\"data\"><caption>");
    km_html_text(h, c->title);
    km_html_raw(h, "</caption>\n<tr><th scope=\"col\">series</th><th scope=\"col\">");
    km_html_text(h, c->xlabel);
    km_html_raw(h, "</th><th scope=\"col\">");
    km_html_text(h, c->ylabel);
    km_html_raw(h, bars ? "</th><th scope=\"col\">low</th><th scope=\"col\">high</th></tr>\n" : "</th></tr>\n");
    for (int k = 0; k < c->ns; k++)
        for (int i = 0; i < c->s[k].n; i++) {
            const km_series *s = &c->s[k];
            km_html_raw(h, "<tr><td>");
            km_html_text(h, s->name);
            km_html_raw(h, "</td><td>");
            km_html_num(h, s->x[i], c->xdigits, "-");
            km_html_raw(h, "</td><td>");
            km_html_num(h, s->y[i], c->ydigits, "-");
            if (bars) {
                km_html_raw(h, "</td><td>");
                km_html_num(h, s->lo ? s->lo[i] : NAN, c->ydigits, "-");
                km_html_raw(h, "</td><td>");
                km_html_num(h, s->hi ? s->hi[i] : NAN, c->ydigits, "-");
            }
            km_html_raw(h, "</td></tr>\n");
        }
    for (int i = 0; i < c->nv; i++) {
        km_html_raw(h, "<tr><td>");
        km_html_text(h, c->vrules[i].label);
        km_html_raw(h, " (vertical rule)</td><td>");
        km_html_num(h, c->vrules[i].v, c->xdigits, "-");
        km_html_raw(h, bars ? "</td><td></td><td></td><td></td></tr>\n" : "</td><td></td></tr>\n");
    }
    for (int i = 0; i < c->nh; i++) {
        km_html_raw(h, "<tr><td>");
        km_html_text(h, c->hrules[i].label);
        km_html_raw(h, " (horizontal line)</td><td></td><td>");
        km_html_num(h, c->hrules[i].v, c->ydigits, "-");
        km_html_raw(h, bars ? "</td><td></td><td></td></tr>\n" : "</td></tr>\n");
    }
    km_html_raw(h, "</table></details>\n");
}

/* Width of the legend column: 230 px, wider when a series name needs it, so
 * that no name is cut at the SVG's edge: a 10 px gap, the 34 px swatch, then
 * 7 px per character (an estimate a little above the mean advance of a sans
 * serif at font size 12; the browser test's screenshot shows the result). */
static int legend_width(const km_chart *c) {
    int w = 230;
    for (int k = 0; k < c->ns; k++) {
        int chars = 0;
        for (const unsigned char *p = (const unsigned char *)(c->s[k].name ? c->s[k].name : ""); *p; p++)
            chars += (*p & 0xC0) != 0x80; /* UTF-8 characters, not bytes */
        if (44 + 7 * chars + 8 > w) w = 44 + 7 * chars + 8;
    }
    return w;
}

void km_svg_chart(km_html *h, const km_chart *c) {
    int lw = legend_width(c), W = (c->w ? c->w : 720) - 230 + lw, H = c->h ? c->h : 300;
    frame f;
    km_html_raw(h, "<figure class=\"chart\">\n");
    if (!domain(c, &f)) {
        km_html_raw(h, "<p class=\"nodata\">");
        km_html_text(h, c->title);
        km_html_raw(h, ": no data (no finite values were logged).</p>\n");
    } else {
        f.px0 = 64;
        f.px1 = W - lw;
        f.py1 = 12;
        f.py0 = H - 44;
        km_html_printf(h, "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"%d\" height=\"%d\" "
                          "viewBox=\"0 0 %d %d\" aria-labelledby=\"%s-t %s-d\">\n<title id=\"%s-t\">",
                       W, H, W, H, c->id, c->id, c->id);
        km_html_text(h, c->title);
        km_html_printf(h, "</title>\n<desc id=\"%s-d\">", c->id);
        km_html_text(h, c->desc);
        km_html_raw(h, "</desc>\n");
        axes(h, c, &f);
        rules(h, c, &f);
        for (int k = 0; k < c->ns; k++) series(h, &f, &c->s[k]);
        legend(h, c, &f);
        km_html_raw(h, "</svg>\n");
    }
    km_html_raw(h, "<figcaption>");
    km_html_text(h, c->title);
    km_html_raw(h, ". ");
    km_html_text(h, c->desc);
    km_html_raw(h, "</figcaption>\n");
    data_table(h, c);
    km_html_raw(h, "</figure>\n");
}

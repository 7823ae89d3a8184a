/* html.h - the report's HTML writer: a growing text buffer, escaping, fixed
 * number formatting and base64 (data: URIs).
 *
 * Everything the report writes goes through these functions so that
 *   - any text that comes from a file or a folder name (run names, image ids,
 *     config values) is escaped with km_html_text: & < > " ' become
 *     entities, so a name like `</script><b>` is shown, never interpreted;
 *   - numbers are printed with a fixed format in the C locale and a value
 *     that is not finite is written as the text given by the caller (a
 *     dash), never as "nan" or "inf";
 *   - the same inputs give the same bytes (no time, no addresses).
 * Out of memory aborts (km_malloc), as for the other internal buffers. */
#ifndef KM_REPORT_HTML_H
#define KM_REPORT_HTML_H

#include "../core/km.h"

typedef struct {
    char *buf; /* NUL-terminated text */
    size_t len, cap;
} km_html;

void km_html_init(km_html *h);
void km_html_free(km_html *h);
/* Appends s as is (markup written by the report itself). */
void km_html_raw(km_html *h, const char *s);
void km_html_rawn(km_html *h, const char *s, size_t n);
/* printf-style, as is: only for markup and numbers, never for names. */
void km_html_printf(km_html *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with & < > " ' escaped (text and attribute values alike). */
void km_html_text(km_html *h, const char *s);
/* Appends v with `digits` decimals ("%.*f"), or `missing` when v is not
 * finite. */
void km_html_num(km_html *h, double v, int digits, const char *missing);
/* "<img src="data:image/png;base64,..." width height alt>" with alt escaped. */
void km_html_img_png(km_html *h, const uint8_t *png, size_t n, int w, int h_px, const char *alt);

/* Standard base64 (RFC 4648, '=' padding, no line breaks): a km_malloc'ed
 * NUL-terminated string of *out_len characters. */
char *km_base64_encode(const uint8_t *data, size_t n, size_t *out_len);
/* Decodes standard base64 (padding required, no whitespace); returns the
 * bytes (km_malloc'ed) or NULL when the text is not valid base64. */
uint8_t *km_base64_decode(const char *text, size_t len, size_t *out_n);

#endif

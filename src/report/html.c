/* html.c - see html.h. */
#include "html.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

void km_html_init(km_html *h) {
    h->cap = 4096;
    h->len = 0;
    h->buf = km_malloc(h->cap);
    h->buf[0] = 0;
}

void km_html_free(km_html *h) {
    km_free(h->buf);
    memset(h, 0, sizeof *h);
}

static void reserve(km_html *h, size_t extra) {
    if (h->len + extra + 1 <= h->cap) return;
    size_t cap = h->cap * 2;
    while (cap < h->len + extra + 1) cap *= 2;
    char *b = km_malloc(cap);
    memcpy(b, h->buf, h->len + 1);
    km_free(h->buf);
    h->buf = b;
    h->cap = cap;
}

void km_html_rawn(km_html *h, const char *s, size_t n) {
    reserve(h, n);
    memcpy(h->buf + h->len, s, n);
    h->len += n;
    h->buf[h->len] = 0;
}

void km_html_raw(km_html *h, const char *s) { km_html_rawn(h, s, strlen(s)); }

void km_html_printf(km_html *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KM_ASSERT(n >= 0);
    reserve(h, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(h->buf + h->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    h->len += (size_t)n;
}

void km_html_text(km_html *h, const char *s) {
    if (!s) return;
    for (; *s; s++) {
        switch (*s) {
        case '&': km_html_raw(h, "&amp;"); break;
        case '<': km_html_raw(h, "&lt;"); break;
        case '>': km_html_raw(h, "&gt;"); break;
        case '"': km_html_raw(h, "&quot;"); break;
        case '\'': km_html_raw(h, "&#39;"); break;
        default: km_html_rawn(h, s, 1);
        }
    }
}

void km_html_num(km_html *h, double v, int digits, const char *missing) {
    if (!isfinite(v)) {
        km_html_raw(h, missing);
        return;
    }
    if (v == 0) v = 0; /* no "-0.0000" */
    char b[64];
    snprintf(b, sizeof b, "%.*f", digits, v);
    if (b[0] == '-' && strspn(b + 1, "0.") == strlen(b + 1)) memmove(b, b + 1, strlen(b)); /* -0.0000 */
    km_html_raw(h, b);
}

void km_html_img_png(km_html *h, const uint8_t *png, size_t n, int w, int h_px, const char *alt) {
    size_t blen;
    char *b64 = km_base64_encode(png, n, &blen);
    km_html_raw(h, "<img src=\"data:image/png;base64,");
    km_html_rawn(h, b64, blen);
    km_html_printf(h, "\" width=\"%d\" height=\"%d\" alt=\"", w, h_px);
    km_html_text(h, alt);
    km_html_raw(h, "\">");
    km_free(b64);
}

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *km_base64_encode(const uint8_t *d, size_t n, size_t *out_len) {
    size_t m = 4 * ((n + 2) / 3);
    char *o = km_malloc(m + 1), *p = o;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = k_b64[v >> 18];
        *p++ = k_b64[(v >> 12) & 63];
        *p++ = k_b64[(v >> 6) & 63];
        *p++ = k_b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        *p++ = k_b64[v >> 18];
        *p++ = k_b64[(v >> 12) & 63];
        *p++ = '=';
        *p++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        *p++ = k_b64[v >> 18];
        *p++ = k_b64[(v >> 12) & 63];
        *p++ = k_b64[(v >> 6) & 63];
        *p++ = '=';
    }
    *p = 0;
    if (out_len) *out_len = m;
    return o;
}

static int b64_val(char c) {
    const char *p = c ? strchr(k_b64, c) : NULL;
    return p ? (int)(p - k_b64) : -1;
}

uint8_t *km_base64_decode(const char *t, size_t len, size_t *out_n) {
    if (len % 4) return NULL;
    size_t pad = len && t[len - 1] == '=' ? (len > 1 && t[len - 2] == '=' ? 2 : 1) : 0;
    size_t n = len / 4 * 3 - pad;
    uint8_t *o = km_malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            int last = i + 4 == len;
            v[j] = (last && t[i + j] == '=' && j >= 4 - (int)pad) ? 0 : b64_val(t[i + j]);
            if (v[j] < 0) {
                km_free(o);
                return NULL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t b[3] = {(uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};
        for (int j = 0; j < 3 && k < n; j++) o[k++] = b[j];
    }
    *out_n = n;
    return o;
}

/* page.c - see page.h. */
#include "page.h"

#include "../io/json.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char k_css[] =
    "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;color:#1a1a1a;background:#fff;"
    "max-width:1180px;margin:0 auto;padding:16px 24px;line-height:1.4}\n"
    "h1{font-size:1.6em;margin:.3em 0}h2{font-size:1.3em;margin-top:1.6em;border-bottom:1px solid #bbb}"
    "h3{font-size:1.1em}\n"
    "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #999;padding:2px 8px;text-align:left;"
    "vertical-align:top}caption{text-align:left;font-weight:600;padding:2px 0}\n"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #777;border-radius:6px;padding:6px 12px;"
    "min-width:150px}.card .l{font-size:.85em;color:#444}.card .v{font-size:1.25em;font-weight:600}\n"
    "figure.chart{margin:1em 0}figcaption{font-size:.9em;color:#333;max-width:640px}\n"
    "details{margin:.3em 0}summary{cursor:pointer;color:#0b4f86}\n"
    "table.gallery td{text-align:center;font-size:.8em;max-width:120px}table.gallery img{display:block;margin:0 auto;"
    "image-rendering:pixelated}\n"
    ".best{font-weight:700}.note{color:#444;font-style:italic}a{color:#0b4f86}\n"
    ".key span{display:inline-block;width:14px;height:14px;border:1px solid #000;vertical-align:middle;margin:0 4px}\n";

void km_page_begin(km_html *h, const char *title) {
    km_html_raw(h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    km_html_text(h, title);
    km_html_raw(h, "</title>\n<style>\n");
    km_html_raw(h, k_css);
    km_html_raw(h, "</style>\n</head>\n<body>\n<main>\n<h1>");
    km_html_text(h, title);
    km_html_raw(h, "</h1>\n");
}

void km_page_end(km_html *h) {
    km_html_printf(h, "<hr>\n<p class=\"note\">Written by kmseg %s (kmseg report) from the run files; "
                      "static page, no scripts.</p>\n</main>\n</body>\n</html>\n",
                   KM_VERSION);
}

void km_page_card(km_html *h, const char *label, const char *value) {
    km_html_raw(h, "<div class=\"card\"><div class=\"l\">");
    km_html_text(h, label);
    km_html_raw(h, "</div><div class=\"v\">");
    km_html_text(h, value);
    km_html_raw(h, "</div></div>\n");
}

static void json_value(km_html *h, const km_json *v) {
    char b[64];
    switch (v->type) {
    case KM_JSON_NULL: km_html_raw(h, "null"); break;
    case KM_JSON_BOOL: km_html_raw(h, v->b ? "true" : "false"); break;
    case KM_JSON_NUM:
        if (v->is_int) snprintf(b, sizeof b, "%lld", (long long)v->i);
        else snprintf(b, sizeof b, "%.9g", v->num);
        km_html_raw(h, b);
        break;
    case KM_JSON_STR: km_html_text(h, v->str); break;
    default: km_html_raw(h, v->type == KM_JSON_ARR ? "[array]" : "{object}");
    }
}

void km_page_json_table(km_html *h, const km_json *obj, const char *caption) {
    km_html_raw(h, "<table><caption>");
    km_html_text(h, caption);
    km_html_raw(h, "</caption>\n<tr><th scope=\"col\">setting</th><th scope=\"col\">value</th></tr>\n");
    for (int i = 0; obj && obj->type == KM_JSON_OBJ && i < obj->n; i++) {
        km_html_raw(h, "<tr><td>");
        km_html_text(h, obj->keys[i].str);
        km_html_raw(h, "</td><td>");
        json_value(h, &obj->items[i]);
        km_html_raw(h, "</td></tr>\n");
    }
    km_html_raw(h, "</table>\n");
}

/* Absolute, lexically normalised path components of p. */
static int components(const char *p, char ***out) {
    char cwd[4096] = "";
    char *full;
    if (p[0] != '/' && getcwd(cwd, sizeof cwd)) full = km_path_join(cwd, p);
    else full = km_strdup(p);
    int n = 0, cap = 16;
    char **c = km_malloc(sizeof(char *) * (size_t)cap);
    for (char *save = NULL, *t = strtok_r(full, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (!strcmp(t, ".")) continue;
        if (!strcmp(t, "..")) {
            if (n) km_free(c[--n]);
            continue;
        }
        if (n == cap) {
            char **d = km_malloc(sizeof(char *) * (size_t)cap * 2);
            memcpy(d, c, sizeof(char *) * (size_t)n);
            km_free(c);
            c = d;
            cap *= 2;
        }
        c[n++] = km_strdup(t);
    }
    km_free(full);
    *out = c;
    return n;
}

char *km_page_relpath(const char *page, const char *target) {
    char **a, **b;
    int na = components(page, &a) - 1, nb = components(target, &b); /* a: the page's folder */
    int k = 0;
    while (k < na && k < nb && !strcmp(a[k], b[k])) k++;
    km_html r;
    km_html_init(&r);
    for (int i = k; i < na; i++) km_html_raw(&r, "../");
    for (int i = k; i < nb; i++) {
        km_html_raw(&r, b[i]);
        if (i + 1 < nb) km_html_raw(&r, "/");
    }
    if (!r.len) km_html_raw(&r, ".");
    for (int i = 0; i < na + 1; i++) km_free(a[i]);
    for (int i = 0; i < nb; i++) km_free(b[i]);
    km_free(a);
    km_free(b);
    return r.buf;
}

void km_page_href(km_html *h, const char *path) {
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("/._-~", *p))
            km_html_rawn(h, (const char *)p, 1);
        else
            km_html_printf(h, "%%%02X", *p);
    }
}

int km_page_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

km_status km_page_save(const km_html *h, const char *out, FILE *log) {
    km_status s = km_write_file_atomic(out, h->buf, h->len);
    if (!s && log) fprintf(log, "report: wrote %s (%zu bytes)\n", out, h->len);
    if (!s && h->len > (size_t)20 << 20 && log)
        fprintf(log, "report: warning: %s is larger than 20 MB\n", out);
    return s;
}

int km_page_derived_method(const char *method) {
    static const char *const suffix[] = {"+refined", "+start-competes"};
    size_t n = strlen(method);
    for (int k = 0; k < 2; k++) {
        size_t m = strlen(suffix[k]);
        if (n > m && !strcmp(method + n - m, suffix[k])) return 1;
    }
    return 0;
}

char *km_page_run_folder(const char *dir, const char *dataset, const char *fraction, const char *method,
                         const char *seed, const char *run_dir) {
    char rel[1024], folder[256];
    const char *slash = strrchr(run_dir, '/');
    const char *from = slash ? slash : run_dir;
    while (from > run_dir && from[-1] != '/') from--;
    size_t len = slash ? (size_t)(slash - from) : 0;
    if (len && len < sizeof folder) {
        memcpy(folder, from, len);
        folder[len] = 0;
        method = folder;
    }
    snprintf(rel, sizeof rel, "%s/%s/%s/seed%s", dataset, fraction, method, seed);
    char *p = km_path_join(dir, rel);
    if (km_page_exists(p) || !*run_dir) return p;
    km_free(p);
    return km_strdup(run_dir);
}

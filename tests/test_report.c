/* test_report.c - `kmseg report` (src/report): base64, escaping, CSV reading,
 * SVG charts with missing values, the overlay colours, and end to end the page
 * of a small training run on images with hostile names and of a small
 * experiments grid, each checked in C (escaping, numbers equal to the run
 * files, every embedded PNG decodes, same bytes twice) and in Debian's
 * headless Chromium (a screenshot that is not blank, and a probe copy of the
 * page whose script checks that every image decodes). The browser tests fail,
 * not skip, without chromium: tools/install-deps.sh installs it. */
#include "test.h"
#include "../src/io/image.h"
#include "../src/report/html.h"
#include "../src/report/overlay.h"
#include "../src/report/svg.h"
#include "../src/report/table.h"

#include <ctype.h>
#include <stdlib.h>
#include <sys/stat.h>

static const char *bin(void) { return getenv("KMSEG_BIN") ? getenv("KMSEG_BIN") : "./kmseg"; }

static char *slurp(const char *path, size_t *n_out) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (km_read_file(path, (size_t)256 << 20, &d, &n)) return NULL;
    char *s = km_malloc(n + 1);
    memcpy(s, d, n);
    s[n] = 0;
    km_free(d);
    if (n_out) *n_out = n;
    return s;
}

static int check_legends_fit(const char *html);

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

KM_TEST(report_base64_rfc4648_and_roundtrip) {
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        size_t n;
        char *e = km_base64_encode((const uint8_t *)in[i], strlen(in[i]), &n);
        CHECK_MSG(!strcmp(e, out[i]) && n == strlen(out[i]), "encode '%s' -> '%s'", in[i], e);
        size_t m;
        uint8_t *d = km_base64_decode(e, n, &m);
        CHECK(d && m == strlen(in[i]) && !memcmp(d, in[i], m));
        km_free(d);
        km_free(e);
    }
    uint8_t all[256 * 3 + 2];
    for (size_t i = 0; i < sizeof all; i++) all[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof all; len += 37) {
        size_t n, m;
        char *e = km_base64_encode(all, len, &n);
        uint8_t *d = km_base64_decode(e, n, &m);
        CHECK(d && m == len && !memcmp(d, all, len));
        km_free(d);
        km_free(e);
    }
    size_t m;
    CHECK(km_base64_decode("Zm9", 3, &m) == NULL);   /* not a multiple of 4 */
    CHECK(km_base64_decode("Zm9*", 4, &m) == NULL);  /* bad character */
    CHECK(km_base64_decode("Z=9v", 4, &m) == NULL);  /* padding in the middle */
}

KM_TEST(report_html_escape_and_numbers) {
    km_html h;
    km_html_init(&h);
    km_html_text(&h, "</script><b x=\"1\">&'");
    CHECK_MSG(!strcmp(h.buf, "&lt;/script&gt;&lt;b x=&quot;1&quot;&gt;&amp;&#39;"), "%s", h.buf);
    h.len = 0;
    km_html_num(&h, NAN, 4, "-");
    km_html_raw(&h, "|");
    km_html_num(&h, INFINITY, 4, "-");
    km_html_raw(&h, "|");
    km_html_num(&h, -0.00001, 4, "-");
    km_html_raw(&h, "|");
    km_html_num(&h, 0.123456, 4, "-");
    CHECK_MSG(!strcmp(h.buf, "-|-|0.0000|0.1235"), "%s", h.buf);
    km_html_free(&h);
}

KM_TEST(report_csv_reader_quotes_and_errors) {
    char p[1024];
    snprintf(p, sizeof p, "%s/t.csv", km_test_tmpdir());
    const char *txt = "a,b,c\n1,\"x, \"\"y\"\"\",nan\n2,,3.5\n";
    CHECK_OK(km_write_file_atomic(p, txt, strlen(txt)));
    km_table t;
    CHECK_OK(km_table_load(p, &t));
    CHECK(t.ncols == 3 && t.nrows == 2);
    CHECK(!strcmp(km_table_str(&t, 0, 1), "x, \"y\""));
    CHECK(isnan(km_table_num(&t, 0, 2)) && isnan(km_table_num(&t, 1, 1)));
    CHECK(km_table_num(&t, 1, 2) == 3.5 && km_table_col(&t, "c") == 2 && km_table_col(&t, "d") == -1);
    km_table_free(&t);
    const char *bad = "a,b\n1,2,3\n";
    CHECK_OK(km_write_file_atomic(p, bad, strlen(bad)));
    CHECK_ERR(km_table_load(p, &t), KM_EFORMAT, "line 2 has 3 fields, the header has 2");
    const char *bad2 = "a,b\n1,\"2\n";
    CHECK_OK(km_write_file_atomic(p, bad2, strlen(bad2)));
    CHECK_ERR(km_table_load(p, &t), KM_EFORMAT, "quote");
}

/* Text of the page with every data: URI removed (base64 may spell "NaN"). */
static char *strip_data_uris(const char *s) {
    char *o = km_malloc(strlen(s) + 1), *q = o;
    while (*s) {
        if (!strncmp(s, "data:image/png;base64,", 22)) {
            s += 22;
            while (*s && *s != '"') s++;
            continue;
        }
        *q++ = *s++;
    }
    *q = 0;
    return o;
}

static int has_nonfinite_text(const char *page) {
    char *t = strip_data_uris(page);
    for (char *p = t; *p; p++) *p = (char)tolower((unsigned char)*p);
    int bad = 0;
    for (const char *p = t; (p = strstr(p, "nan")); p++) /* "nan" not inside a word */
        bad |= (p == t || !isalpha((unsigned char)p[-1])) && !isalpha((unsigned char)p[3]);
    for (const char *p = t; (p = strstr(p, "inf")); p++)
        bad |= (p == t || !isalpha((unsigned char)p[-1])) && !isalpha((unsigned char)p[3]);
    km_free(t);
    return bad;
}

KM_TEST(report_svg_skips_missing_values) {
    double x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8] = {0.5, 0.6, NAN, 0.7, 0.8, 0.9, INFINITY, 0.4};
    double lr[8] = {1e-3, 1e-3, 5e-4, 0, 2.5e-4, NAN, 1e-4, 1e-4};
    km_series s[2] = {{"val <Dice>", 8, x, y, NULL, NULL, KM_SERIES_LINE, 0, 0},
                      {"lr", 8, x, lr, NULL, NULL, KM_SERIES_LINE, 0, 1}};
    km_rule v = {NAN, "never drawn"}, v2 = {4, "best & \"epoch\""};
    km_rule vr[2] = {v, v2};
    km_chart c = {"t1", "A <chart>", "desc", "epoch", "Dice", 0, 0, 0, s, 1, vr, 2, NULL, 0, 0, 4, 1};
    km_html h;
    km_html_init(&h);
    km_svg_chart(&h, &c);
    CHECK(!has_nonfinite_text(h.buf));
    CHECK_MSG(count(h.buf, "<polyline") == 2, "two runs of finite points -> 2 polylines, got %d", count(h.buf, "<polyline"));
    CHECK(count(h.buf, "<svg") == 1 && count(h.buf, "</svg>") == 1 && count(h.buf, "<g") == count(h.buf, "</g>"));
    CHECK(strstr(h.buf, "<title id=\"t1-t\">A &lt;chart&gt;</title>") != NULL);
    CHECK(strstr(h.buf, "best &amp; &quot;epoch&quot;") && !strstr(h.buf, "never drawn</text>"));
    CHECK(strstr(h.buf, "<td>val &lt;Dice&gt;</td><td>3</td><td>-</td>") != NULL); /* NaN row in the table */
    CHECK(count(h.buf, "<tr>") == 1 + 8 + 2);
    /* log axis: y <= 0 and NaN skipped -> polylines [1,3] and [5], [7,8]: 2 polylines */
    h.len = 0;
    km_chart c2 = {"t2", "lr", "d", "epoch", "lr", 1, 0, 0, &s[1], 1, NULL, 0, NULL, 0, 0, 6, 1};
    km_svg_chart(&h, &c2);
    CHECK(!has_nonfinite_text(h.buf));
    CHECK_MSG(count(h.buf, "<polyline") == 2, "log axis polylines %d", count(h.buf, "<polyline"));
    CHECK(strstr(h.buf, ">1e-4</text>") && strstr(h.buf, ">1e-3</text>"));
    /* nothing finite: no svg, a note, still the table */
    h.len = 0;
    double none[2] = {NAN, INFINITY};
    km_series s3 = {"empty", 2, x, none, NULL, NULL, KM_SERIES_LINE, 0, 0};
    km_chart c3 = {"t3", "test Dice", "d", "epoch", "Dice", 0, 0, 0, &s3, 1, NULL, 0, NULL, 0, 0, 4, 1};
    km_svg_chart(&h, &c3);
    CHECK(!strstr(h.buf, "<svg") && strstr(h.buf, "no data") && strstr(h.buf, "<table"));
    CHECK(!has_nonfinite_text(h.buf));
    km_html_free(&h);
    double t0, t1;
    CHECK_NEAR(km_svg_nice_ticks(0.0, 0.93, 5, &t0, &t1), 0.2, 1e-12);
    CHECK(t0 == 0 && fabs(t1 - 1.0) < 1e-12);
    CHECK_NEAR(km_svg_nice_ticks(1, 100, 6, &t0, &t1), 20, 1e-12);
}

KM_TEST(report_overlay_colours_by_hand) {
    /* 4x4 grey image 100; ref = left two columns, pred = top two rows */
    uint8_t img[4 * 4 * 3], pred[16], ref[16];
    for (int i = 0; i < 16; i++) {
        img[3 * i] = img[3 * i + 1] = img[3 * i + 2] = 100;
        pred[i] = i / 4 < 2;
        ref[i] = i % 4 < 2;
    }
    uint8_t e[48];
    memcpy(e, img, sizeof e);
    km_overlay_errors(e, 4, 4, pred, ref);
    /* (0,0) TP blue; (3,0) FP: (x+y)%4 == 3 -> orange; (1,2) FP? no: y=2 not in pred, x=1 in ref -> FN,
       x%4 != 0 and y%4 != 0 -> purple; (0,2) FN with x%4 == 0 -> black grid; (3,3) TN -> grey
       96 + 100*3/8 = 133 */
    CHECK(e[0] == 0 && e[1] == 114 && e[2] == 178);
    CHECK(e[3 * 3] == 230 && e[3 * 3 + 1] == 159 && e[3 * 3 + 2] == 0);
    CHECK(e[3 * 9] == 204 && e[3 * 9 + 1] == 121 && e[3 * 9 + 2] == 167);
    CHECK(e[3 * 8] == 0 && e[3 * 8 + 1] == 0 && e[3 * 8 + 2] == 0);
    CHECK(e[3 * 15] == 133 && e[3 * 15 + 1] == 133 && e[3 * 15 + 2] == 133);
    /* (1,1) FP? y=1 in pred, x=1 in ref -> TP. (2,1): FP, (2+1)%4 = 3 -> orange; (3,1): (3+1)%4 = 0 -> black */
    CHECK(e[3 * 6] == 230 && e[3 * 7] == 0 && e[3 * 7 + 1] == 0);
    /* standard overlay: fill 50 % blue: (100*50 + 0*50 + 50)/100 = 50, (100+114)/2 = 107, (100+178)/2 = 139;
       ref outline: column 1 pixels are inside with a right neighbour outside -> yellow; column 2 -> black ring */
    memcpy(e, img, sizeof e);
    km_overlay_mask(e, 4, 4, pred, ref);
    CHECK(e[3 * 6] == 0 && e[3 * 6 + 1] == 0 && e[3 * 6 + 2] == 0);       /* (2,1): ring, over the fill */
    CHECK(e[3 * 5] == 240 && e[3 * 5 + 1] == 228 && e[3 * 5 + 2] == 66); /* (1,1): contour */
    CHECK(e[3 * 7] == 50 && e[3 * 7 + 1] == 107 && e[3 * 7 + 2] == 139); /* (3,1): fill only */
    CHECK(e[3 * 15] == 100);                                             /* (3,3): untouched */
    /* resampling: 2x2 -> 1x1 box average (rounded) and nearest (centre pixel (1,1)) */
    uint8_t src[4] = {10, 20, 30, 41}, d1;
    km_overlay_resample(src, 2, 2, 1, &d1, 1, 1, 0);
    CHECK(d1 == 25); /* (101 + 2) / 4 = 25 */
    km_overlay_resample(src, 2, 2, 1, &d1, 1, 1, 1);
    CHECK(d1 == 41);
    uint8_t up[9];
    km_overlay_resample(src, 2, 2, 1, up, 3, 3, 0); /* enlarging: nearest */
    CHECK(up[0] == 10 && up[2] == 20 && up[8] == 41);
}

/* ---- end to end ---- */

/* Copies the first n Kvasir pairs (sorted by name) into <dst>/images and
 * masks, renamed "<script>x&\"'k<NN>" (names a page must escape). */
static int hostile_dataset(const char *dst, int n) {
    const char *kv = km_test_path("data/kvasir-seg");
    char list[1200];
    snprintf(list, sizeof list, "%s/kv.txt", km_test_tmpdir());
    if (km_test_sh("mkdir -p '%s/images' '%s/masks' && ls '%s/images' | sort | head -n %d > '%s'", dst, dst, kv, n,
                   list))
        return 0;
    char *names = slurp(list, NULL);
    int k = 0;
    for (char *save = NULL, *l = names ? strtok_r(names, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save), k++) {
        char src[2048], out[2048];
        uint8_t *d;
        size_t len;
        for (int m = 0; m < 2; m++) {
            snprintf(src, sizeof src, "%s/%s/%s", kv, m ? "masks" : "images", l);
            snprintf(out, sizeof out, "%s/%s/<script>x&\"'k%02d.jpg", dst, m ? "masks" : "images", k);
            if (km_read_file(src, (size_t)64 << 20, &d, &len)) return 0;
            km_status s = km_write_file_atomic(out, d, len);
            km_free(d);
            if (s) return 0;
        }
    }
    km_free(names);
    return k == n;
}

/* "file://" URL of an absolute path, percent-encoded. */
static void file_url(const char *path, char *url, size_t n) {
    size_t k = (size_t)snprintf(url, n, "file://");
    for (const unsigned char *p = (const unsigned char *)path; *p && k + 4 < n; p++)
        k += isalnum(*p) || strchr("/._-", *p) ? (size_t)snprintf(url + k, n - k, "%c", *p)
                                               : (size_t)snprintf(url + k, n - k, "%%%02X", *p);
}

/* Every <img> has a non-empty alt and a data:image/png URI that kmseg's PNG
 * decoder reads as a 112x112 RGB image; returns the number of images. */
static int check_images(const char *page) {
    int n = 0;
    for (const char *p = strstr(page, "<img "); p; p = strstr(p + 1, "<img ")) {
        n++;
        const char *src = strstr(p, "src=\"data:image/png;base64,"), *end = src ? strchr(src + 27, '"') : NULL;
        CHECK(src && end && src < strchr(p, '>'));
        if (!src || !end) continue;
        size_t m;
        uint8_t *png = km_base64_decode(src + 27, (size_t)(end - src - 27), &m);
        CHECK(png != NULL);
        km_image im;
        if (png && km_image_load_mem("page image", png, m, &im, 0) == KM_OK) {
            CHECK(im.w == 112 && im.h == 112 && im.c == 3);
            km_image_free(&im);
        } else {
            km_test_fail(__FILE__, __LINE__, "image %d does not decode: %s", n, km_errmsg());
        }
        km_free(png);
        const char *alt = strstr(end, " alt=\"");
        CHECK(alt && alt < strchr(end, '>') && alt[6] != '"');
    }
    return n;
}

static int chromium_ok(void) {
    int rc = km_test_sh("command -v chromium > /dev/null 2>&1");
    CHECK_MSG(rc == 0, "chromium is not installed: run tools/install-deps.sh (Debian package chromium)");
    return rc == 0;
}

static int chromium(const char *args, const char *log) {
    const char *t = km_test_tmpdir();
    return km_test_sh("mkdir -p '%s/home' && HOME='%s/home' timeout 60 chromium --headless --no-sandbox --disable-gpu "
                      "--no-first-run --user-data-dir='%s/chromium' %s > '%s' 2> '%s.err'",
                      t, t, t, args, log, log);
}

/* Screenshot of the page at 1200x3000: decodes at that size, is not blank
 * (over 100 distinct colours, over 2 % non-white pixels) and shows the charts' first palette
 * colour (#0072B2 markers). */
static void browser_screenshot(const char *page, const char *png) {
    char url[4096], args[8192], log[2048];
    file_url(page, url, sizeof url);
    snprintf(args, sizeof args, "--window-size=1200,3000 --screenshot='%s' '%s'", png, url);
    snprintf(log, sizeof log, "%s.log", png);
    remove(png);
    double t0 = km_now();
    int rc = chromium(args, log);
    printf("    chromium --screenshot: exit %d in %.1f s\n", rc, km_now() - t0);
    CHECK(rc == 0);
    km_image im;
    if (km_image_load(png, &im, 3)) {
        km_test_fail(__FILE__, __LINE__, "screenshot %s: %s", png, km_errmsg());
        return;
    }
    CHECK(im.w == 1200 && im.h == 3000);
    size_t P = (size_t)im.w * im.h, nonwhite = 0, blue = 0;
    static uint8_t seen[1 << 15]; /* colours quantised to 5 bits per channel */
    memset(seen, 0, sizeof seen);
    int distinct = 0;
    for (size_t i = 0; i < P; i++) {
        const uint8_t *p = im.data + 3 * i;
        nonwhite += p[0] < 240 || p[1] < 240 || p[2] < 240;
        blue += p[0] == 0 && p[1] == 114 && p[2] == 178;
        int q = (p[0] >> 3) << 10 | (p[1] >> 3) << 5 | p[2] >> 3;
        distinct += !seen[q];
        seen[q] = 1;
    }
    printf("    screenshot: %.1f %% non-white pixels, %d distinct colours, %zu pixels of #0072B2\n",
           100.0 * nonwhite / P, distinct, blue);
    CHECK(nonwhite > P / 50);
    CHECK(distinct > 100); /* antialiased text and lines alone give ~200 */
    CHECK(blue > 20);
    km_image_free(&im);
}

/* A copy of the page with a script that, on load, counts the images that
 * decoded (complete, naturalWidth > 0), the svgs and script errors into
 * <pre id=probe>, dumped by --dump-dom after the page's load. */
static void browser_probe(const char *page, int want_images, int want_svgs) {
    size_t n;
    char *html = slurp(page, &n);
    CHECK(html != NULL);
    if (!html) return;
    char *body = strstr(html, "</body>");
    CHECK(body != NULL);
    if (!body) { km_free(html); return; }
    /* on load every image has been fetched and its size decoded: a broken
     * one is complete with naturalWidth 0 */
    static const char script[] =
        "<script>var errs=0;window.onerror=function(){errs++};"
        "window.addEventListener('load',function(){var im=Array.from(document.images),ok=0,bad=0;"
        "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;else bad++;}"
        "var p=document.createElement('pre');p.id='probe';p.textContent='PROBE images='+im.length+"
        "' decoded='+ok+' failed='+bad+' svgs='+document.querySelectorAll('svg').length+' errors='+errs+' END';"
        "document.body.appendChild(p);});</script>\n";
    char probe[2048], dom[2048], url[4096], args[8192];
    snprintf(probe, sizeof probe, "%s.probe.html", page);
    FILE *f = fopen(probe, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(html, 1, (size_t)(body - html), f);
        fputs(script, f);
        fputs(body, f);
        fclose(f);
    }
    km_free(html);
    snprintf(dom, sizeof dom, "%s/dom.txt", km_test_tmpdir());
    file_url(probe, url, sizeof url);
    snprintf(args, sizeof args, "--virtual-time-budget=5000 --dump-dom '%s'", url);
    double t0 = km_now();
    int rc = chromium(args, dom);
    CHECK(rc == 0);
    char *d = slurp(dom, NULL), want[256];
    snprintf(want, sizeof want, "PROBE images=%d decoded=%d failed=0 svgs=%d errors=0 END", want_images, want_images,
             want_svgs);
    const char *got = d ? strstr(d, "<pre id=\"probe\">") : NULL;
    if (got) got += strlen("<pre id=\"probe\">");
    printf("    chromium --dump-dom probe (%.1f s): %.80s\n", km_now() - t0, got ? got : "(no probe output)");
    CHECK_MSG(got && !strncmp(got, want, strlen(want)), "expected '%s'", want);
    km_free(d);
    remove(probe);
}


/* Every --flag of the page's rebuilt command is a flag of `kmseg <cmd>`. */
static void check_command_flags(const char *html, const char *cmd) {
    const char *c = strstr(html, "<code>kmseg "), *e = c ? strstr(c, "</code>") : NULL;
    CHECK(c && e);
    if (!c || !e) return;
    char help[1200];
    snprintf(help, sizeof help, "%s/help.txt", km_test_tmpdir());
    CHECK(km_test_sh("'%s' %s --help > '%s' 2>&1", bin(), cmd, help) == 0);
    char *hs = slurp(help, NULL);
    int n = 0;
    for (const char *f = strstr(c, " --"); f && f < e; f = strstr(f + 1, " --")) {
        char flag[64], want[80];
        size_t L = strcspn(f + 1, " <");
        if (L >= sizeof flag) L = sizeof flag - 1;
        memcpy(flag, f + 1, L);
        flag[L] = 0;
        snprintf(want, sizeof want, "  %s ", flag);
        CHECK_MSG(hs && strstr(hs, want), "rebuilt command: %s is no flag of kmseg %s", flag, cmd);
        n++;
    }
    CHECK(n >= 10);
    km_free(hs);
}

static int kmseg_run(const char *args) {
    char log[1200];
    snprintf(log, sizeof log, "%s/kmseg.log", km_test_tmpdir());
    int rc = km_test_sh("'%s' %s > '%s' 2>&1", bin(), args, log);
    if (rc) {
        char *o = slurp(log, NULL);
        printf("    kmseg %s\n    exit %d: %s\n", args, rc, o ? o : "");
        km_free(o);
    }
    return rc;
}

static char *escaped(const char *s) {
    km_html h;
    km_html_init(&h);
    km_html_text(&h, s);
    return h.buf;
}

/* Every row of an eval per_image.csv (3 test images) is on the page: as a row of
 * the per-image Dice table, or (teacher_alt) as the Dice in the alt text of the
 * gallery's teacher thumbnail. */
static void check_per_image(const char *html, const char *csv, int teacher_alt) {
    km_table pi;
    CHECK_OK(km_table_load(csv, &pi));
    CHECK(pi.nrows == 3);
    for (int r = 0; r < pi.nrows; r++) {
        char *id = escaped(km_table_str(&pi, r, 0)), want[512];
        if (teacher_alt)
            snprintf(want, sizeof want, "case %s: teacher-refined mask (blue fill), ground-truth outline (yellow), Dice %.3f",
                     id, km_table_num(&pi, r, 1));
        else
            snprintf(want, sizeof want, "<tr><td>%s</td><td class=\"num\">%.4f</td></tr>", id, km_table_num(&pi, r, 1));
        CHECK_MSG(strstr(html, want) != NULL, "missing %s", want);
        km_free(id);
    }
    km_table_free(&pi);
}

/* kmseg report RUN --teacher SAM with cache_flag -> T/teacherK.html, read back. */
static char *teacher_page(const char *run, const char *sam, const char *cache_flag, const char *t, int k, size_t *n) {
    char args[8192], p[2048];
    snprintf(args, sizeof args, "report '%s' --quiet --threads 1 --teacher '%s' %s --out '%s/teacher%d.html'", run, sam,
             cache_flag, t, k);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/teacher%d.html", t, k);
    return slurp(p, n);
}

/* The gallery's teacher column. The first page fills the embedding cache (one
 * file per test image); a second page from the cache and one with --no-cache
 * have the same bytes; the Dice in each teacher thumbnail's alt text equals
 * kmseg eval's refined per_image.csv (same teacher, same cache). */
static void check_teacher_column(const char *run, const char *data, const char *sam, const char *t) {
    char args[8192], p[2048], cache[1200], flag[1400];
    snprintf(cache, sizeof cache, "%s/emb cache", t);
    snprintf(flag, sizeof flag, "--cache-dir '%s'", cache);
    size_t n[3] = {0};
    char *page[3] = {teacher_page(run, sam, flag, t, 0, &n[0]), NULL, NULL};
    snprintf(p, sizeof p, "%s/nc.txt", t);
    CHECK(km_test_sh("ls '%s' | grep -c '\\.safetensors$' > '%s'", cache, p) == 0);
    char *nc = slurp(p, NULL);
    CHECK_MSG(nc && atoi(nc) == 3, "cache files after the first page: %s", nc ? nc : "?");
    km_free(nc);
    page[1] = teacher_page(run, sam, flag, t, 1, &n[1]);
    page[2] = teacher_page(run, sam, "--no-cache", t, 2, &n[2]);
    for (int k = 1; k < 3; k++) CHECK_MSG(page[0] && page[k] && n[k] == n[0] && !memcmp(page[k], page[0], n[0]), "page %d", k);
    snprintf(args, sizeof args, "eval --weights '%s/best.safetensors' --data '%s' --split test --split-dir '%s/splits' "
             "--out '%s/evr' --threads 1 --teacher '%s' %s", run, data, run, t, sam, flag);
    CHECK(kmseg_run(args) == 0);
    if (page[0]) {
        CHECK(!strstr(page[0], "not computed (no --teacher)"));
        CHECK(count(page[0], "teacher-refined mask (blue fill)") == 3);
        snprintf(p, sizeof p, "%s/evr/per_image.csv", t);
        check_per_image(page[0], p, 1);
    }
    for (int k = 0; k < 3; k++) km_free(page[k]);
}

KM_TEST(report_mining_run_page_hostile_names_numbers_browser) {
    const char *t = km_test_tmpdir(), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char data[1024], run[1024], args[8192], page[2048], p[2048];
    snprintf(data, sizeof data, "%s/hostile data", t);
    snprintf(run, sizeof run, "%s/run<b>&\"x", t);
    CHECK(hostile_dataset(data, 12));
    /* one-time mining, 12 images: 6 train (3 labelled, 3 pseudo-labelled by the random-weight sam_tiny
       teacher: plumbing only), 3 val, 3 test */
    snprintf(args, sizeof args, "mine --data '%s' --out '%s' --teacher '%s' --schedule onetime --labelled-fraction 0.5 "
             "--size 32 --resnet 18 --epochs 2 --mine-epochs 2 --batch 3 --max-images 12 --val-fraction 0.25 "
             "--test-fraction 0.25 --threads 1 --no-cache --quiet", data, run, sam);
    double t0 = km_now();
    CHECK(kmseg_run(args) == 0);
    printf("    kmseg mine: %.1f s\n", km_now() - t0);
    snprintf(args, sizeof args, "report '%s' --quiet", run);
    t0 = km_now();
    CHECK(kmseg_run(args) == 0);
    printf("    kmseg report (mining run): %.1f s\n", km_now() - t0);
    snprintf(page, sizeof page, "%s/report.html", run);
    size_t n = 0;
    char *html = slurp(page, &n);
    CHECK(html != NULL);
    if (!html) return;
    printf("    run page: %zu bytes\n", n);
    /* escaping: no script anywhere, names shown escaped */
    CHECK(!strstr(html, "<script") && !strstr(html, "run<b>") && !strstr(html, "<b>&"));
    CHECK(strstr(html, "&lt;script&gt;x&amp;&quot;&#39;k") != NULL);
    CHECK(strstr(html, "run&lt;b&gt;&amp;&quot;x") != NULL);
    /* charts: no NaN/inf (test_dice is "nan" in every row of metrics.csv), one title per svg */
    CHECK(!has_nonfinite_text(html));
    int svgs = count(html, "<svg");
    CHECK_MSG(svgs == 7 && count(html, "<title id=") == svgs, "svgs %d", svgs); /* 6 per-epoch + per-image */
    /* 3 test images (best, median, worst) and one row per pseudo label, 4 thumbnails each */
    char pl[2048];
    snprintf(pl, sizeof pl, "%s/pl.txt", t);
    CHECK(km_test_sh("ls '%s/pseudo' | grep -c '\\.png$' > '%s'", run, pl) == 0);
    char *npl = slurp(pl, NULL);
    int npseudo = npl ? atoi(npl) : -1;
    km_free(npl);
    CHECK(npseudo >= 1 && npseudo <= 3);
    CHECK_MSG(check_images(html) == 12 + 4 * npseudo, "%d pseudo labels", npseudo);
    CHECK(strstr(html, "mining starts") && strstr(html, "not computed (no --teacher)"));
    CHECK(strstr(html, " --schedule onetime ") && strstr(html, " --labelled-fraction 0.5 "));
    check_command_flags(html, "mine");
    /* numbers equal the logs: supervised rows (epochs 1-2) then mining rows (3-4) in the data tables */
    const char *logs[2] = {"supervised/metrics.csv", "metrics.csv"};
    int K = 0;
    for (int l = 0; l < 2; l++) {
        snprintf(p, sizeof p, "%s/%s", run, logs[l]);
        km_table m;
        CHECK_OK(km_table_load(p, &m));
        for (int r = 0; r < m.nrows; r++) {
            char want[256];
            snprintf(want, sizeof want, "<tr><td>train loss (total)</td><td>%d</td><td>%.6f</td></tr>", K + r + 1,
                     km_table_num(&m, r, km_table_col(&m, "train_loss")));
            CHECK_MSG(strstr(html, want) != NULL, "missing %s", want);
            snprintf(want, sizeof want, "<tr><td>val Dice</td><td>%d</td><td>%.6f</td></tr>", K + r + 1,
                     km_table_num(&m, r, km_table_col(&m, "val_dice")));
            CHECK_MSG(strstr(html, want) != NULL, "missing %s", want);
            if (l == 1) {
                snprintf(want, sizeof want, "<tr><td>pseudo-label Dice</td><td>%d</td><td>%.6f</td></tr>", K + r + 1,
                         km_table_num(&m, r, km_table_col(&m, "pseudo_dice")));
                CHECK_MSG(strstr(html, want) != NULL, "missing %s", want);
            }
        }
        K += m.nrows;
        km_table_free(&m);
    }
    CHECK(K == 4);
    /* per-image Dice computed by the report = kmseg eval's per_image.csv */
    snprintf(args, sizeof args, "eval --weights '%s/best.safetensors' --data '%s' --split test --split-dir '%s/splits' "
             "--out '%s/ev' --threads 1", run, data, run, t);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/ev/per_image.csv", t);
    check_per_image(html, p, 0);
    /* same bytes again */
    snprintf(args, sizeof args, "report '%s' --quiet --out '%s/report2.html'", run, run);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/report2.html", run);
    size_t n2;
    char *again = slurp(p, &n2);
    CHECK(again && n2 == n && !memcmp(again, html, n));
    km_free(again);
    check_teacher_column(run, data, sam, t);
    if (chromium_ok()) {
        snprintf(p, sizeof p, "%s/run.png", t);
        browser_screenshot(page, p);
        browser_probe(page, 12 + 4 * npseudo, 7);
    }
    km_free(html);
}

/* Cells of the k-th <table class="scores">: mean and std (NaN when "(n=1)"). */
static int score_cells(const char *html, int k, double *mean, double *sd, int cap) {
    const char *t = html;
    for (int i = 0; i <= k && t; i++) t = strstr(i ? t + 1 : t, "<table class=\"scores\">");
    if (!t) return 0;
    const char *end = strstr(t, "</table>");
    int n = 0;
    for (const char *c = strstr(t, "<td class=\"num\">"); c && c < end && n < cap; c = strstr(c + 1, "<td class=\"num\">")) {
        const char *v = c + strlen("<td class=\"num\">");
        if (!strncmp(v, "<strong class=\"best\">", 21)) v += 21;
        mean[n] = strtod(v, NULL);
        const char *pm = strstr(v, " ± ");
        sd[n] = pm && pm < strstr(v, "</td>") ? strtod(pm + strlen(" ± "), NULL) : NAN;
        n++;
    }
    return n;
}

static void url_decode(const char *s, char *o, size_t n) {
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        if (*s == '%' && s[1] && s[2]) {
            char h[3] = {s[1], s[2], 0};
            o[k++] = (char)strtol(h, NULL, 16);
            s += 2;
        } else {
            o[k++] = *s;
        }
    }
    o[k] = 0;
}

/* A 2 x 1 x 2 grid (fractions 1 and 0.5, supervised, seeds 0 and 1) of
 * kmseg experiments; the mining page is tested above (the teacher is what
 * makes mining runs slow). */
KM_TEST(report_experiments_page_numbers_browser) {
    const char *t = km_test_tmpdir(), *kv = km_test_path("data/kvasir-seg"), *sam = km_test_path("fixtures/sam_tiny/sam_tiny.pth");
    char dir[1024], args[8192], page[2048], p[2048];
    snprintf(dir, sizeof dir, "%s/report-exp", t);
    snprintf(args, sizeof args, "experiments --out '%s' --data 'k_v=%s' --teacher '%s' --fractions 1,0.5 "
             "--methods supervised --seeds 0,1 --size 32 --resnet 18 --epochs 2 --max-images 12 "
             "--val-fraction 0.25 --test-fraction 0.25 --batch 3 --threads 1 --no-cache", dir, kv, sam);
    double t0 = km_now();
    CHECK(kmseg_run(args) == 0);
    printf("    experiments grid: %.1f s\n", km_now() - t0);
    snprintf(args, sizeof args, "report '%s' --quiet", dir);
    t0 = km_now();
    CHECK(kmseg_run(args) == 0);
    printf("    kmseg report (grid and its 4 runs): %.1f s\n", km_now() - t0);
    snprintf(page, sizeof page, "%s/report.html", dir);
    size_t n;
    char *html = slurp(page, &n);
    CHECK(html != NULL);
    if (!html) return;
    printf("    experiments page: %zu bytes\n", n);
    CHECK(!strstr(html, "<script"));
    CHECK(!has_nonfinite_text(html));
    CHECK(count(html, "<svg") == 3 && count(html, "<title id=") == 3); /* Dice vs fraction + 2 learning panels */
    CHECK(strstr(html, "supervised @100%") != NULL && strstr(html, "100 % labels.") != NULL);
    CHECK(check_legends_fit(html) > 0);
    /* the tables' numbers equal results.csv (rounded to 4 decimals) and the run rows are verbatim */
    snprintf(p, sizeof p, "%s/results.csv", dir);
    km_table r;
    CHECK_OK(km_table_load(p, &r));
    double dm[8], ds[8], im[8], is[8];
    CHECK(score_cells(html, 0, dm, ds, 8) == 2 && score_cells(html, 1, im, is, 8) == 2);
    const char *fr[2] = {"1", "0.5"};
    int nmean = 0, nrun = 0;
    for (int i = 0; i < r.nrows; i++) {
        const char *kind = km_table_str(&r, i, 0);
        if (!strcmp(kind, "run")) {
            char *dice = escaped(km_table_str(&r, i, 7)), *iou = escaped(km_table_str(&r, i, 9)), want[512];
            snprintf(want, sizeof want, "<td class=\"num\">%s</td><td class=\"num\">%s</td>", dice, iou);
            CHECK_MSG(strstr(html, want) != NULL, "run row %d: missing %s", i, want);
            km_free(dice);
            km_free(iou);
            nrun++;
            continue;
        }
        CHECK(!strcmp(km_table_str(&r, i, 3), "supervised"));
        int c = !strcmp(km_table_str(&r, i, 2), fr[0]) ? 0 : 1;
        CHECK_NEAR(dm[c], km_table_num(&r, i, 7), 5.01e-5);
        CHECK_NEAR(ds[c], km_table_num(&r, i, 8), 5.01e-5);
        CHECK_NEAR(im[c], km_table_num(&r, i, 9), 5.01e-5);
        CHECK_NEAR(is[c], km_table_num(&r, i, 10), 5.01e-5);
        nmean++;
    }
    CHECK(nmean == 2 && nrun == 4);
    km_table_free(&r);
    /* every run's report is linked and exists */
    int links = 0;
    for (const char *a = strstr(html, "<a href=\""); a; a = strstr(a + 1, "<a href=\"")) {
        char href[1024], dec[1024], full[3072];
        size_t L = strcspn(a + 9, "\"");
        if (L >= sizeof href) continue;
        memcpy(href, a + 9, L);
        href[L] = 0;
        url_decode(href, dec, sizeof dec);
        snprintf(full, sizeof full, "%s/%s", dir, dec);
        struct stat st;
        CHECK_MSG(stat(full, &st) == 0, "link %s: %s missing", href, full);
        links++;
    }
    CHECK(links == 4);
    /* a training run's page: 3 test rows of 4 thumbnails */
    char mp[2048];
    snprintf(mp, sizeof mp, "%s/k_v/0.5/supervised/seed1/report.html", dir);
    char *mh = slurp(mp, &n);
    CHECK(mh != NULL);
    if (mh) {
        printf("    training run page: %zu bytes\n", n);
        CHECK(check_images(mh) == 12);
        CHECK(!has_nonfinite_text(mh) && !strstr(mh, "<script"));
        CHECK(count(mh, "<svg") == 5); /* 4 per-epoch + per-image */
        CHECK(check_legends_fit(mh) > 0);
        CHECK(strstr(mh, "Source: eval/per_image.csv") && !strstr(mh, "mining starts"));
        check_command_flags(mh, "train");
    }
    /* same bytes again (the run pages too) */
    snprintf(args, sizeof args, "report '%s' --quiet", dir);
    CHECK(kmseg_run(args) == 0);
    size_t n2;
    char *again = slurp(page, &n2), *mh2 = slurp(mp, NULL);
    CHECK(again && !strcmp(again, html) && mh2 && mh && !strcmp(mh2, mh));
    km_free(again);
    km_free(mh2);
    if (chromium_ok()) {
        snprintf(p, sizeof p, "%s/grid.png", t);
        browser_screenshot(page, p);
        browser_probe(page, 0, 3);
        browser_probe(mp, 12, 5);
    }
    km_free(mh);
    km_free(html);
}

/* A hand-written results.csv with hostile names (kmseg experiments only
 * makes safe ones, but the page must not trust its input), a missing cell
 * and a one-seed cell; run folders absent. */
KM_TEST(report_experiments_page_hostile_results_csv) {
    char dir[1024], p[2048], args[4096];
    snprintf(dir, sizeof dir, "%s/fake-exp", km_test_tmpdir());
    CHECK(km_test_sh("mkdir -p '%s'", dir) == 0);
    const char *csv =
        "kind,dataset,fraction,method,seed,n_seeds,n_test,dice_mean,dice_std,iou_mean,iou_std,run_dir\n"
        "run,\"d<x>&\"\"q\",1,supervised,0,1,3,0.5,,0.4,,/nonexistent/a\n"
        "run,\"d<x>&\"\"q\",1,supervised,1,1,3,0.7,,0.6,,/nonexistent/b\n"
        "mean,\"d<x>&\"\"q\",1,supervised,,2,,0.6,0.141421356,0.5,0.141421356,\n"
        "run,\"d<x>&\"\"q\",0.5,m</script><script>,0,1,3,0.25,,0.2,,/nonexistent/c\n"
        "mean,\"d<x>&\"\"q\",0.5,m</script><script>,,1,,0.25,,0.2,,\n";
    snprintf(p, sizeof p, "%s/results.csv", dir);
    CHECK_OK(km_write_file_atomic(p, csv, strlen(csv)));
    snprintf(args, sizeof args, "report '%s' --quiet", dir);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/report.html", dir);
    char *html = slurp(p, NULL);
    CHECK(html != NULL);
    if (!html) return;
    CHECK(!strstr(html, "<script") && !strstr(html, "</script") && !strstr(html, "d<x>"));
    CHECK(strstr(html, "d&lt;x&gt;&amp;&quot;q") && strstr(html, "m&lt;/script&gt;&lt;script&gt;"));
    CHECK(!has_nonfinite_text(html));
    CHECK(strstr(html, "<strong class=\"best\">0.6000 ± 0.1414</strong> *") != NULL);
    CHECK(strstr(html, "0.2500 (n=1)") != NULL);
    CHECK(strstr(html, "- (no finished run)") != NULL); /* supervised at 50 %, m... at 100 % */
    CHECK(strstr(html, "supervised @100%") != NULL);
    CHECK(count(html, "<td>no eval/summary.json</td>") == 3);
    km_free(html);
}

/* Characters of an escaped SVG text (an entity counts as one). */
static int text_chars(const char *s, const char *end) {
    int n = 0;
    for (; s < end; s++, n++)
        if (*s == '&') s += strcspn(s, ";");
        else if (((unsigned char)*s & 0xC0) == 0x80) n--;
    return n;
}

/* Every legend label of every chart fits in its SVG at 7 px per character
 * (font size 12); returns the number of labels checked. */
static int check_legends_fit(const char *html) {
    int n = 0;
    for (const char *svg = strstr(html, "<svg "); svg; svg = strstr(svg + 1, "<svg ")) {
        const char *end = strstr(svg, "</svg>"), *w = strstr(svg, " width=\"");
        if (!end || !w) return -1;
        double W = strtod(w + 8, NULL);
        for (const char *g = strstr(svg, "<g class=\"legend\">"); g && g < end; g = strstr(g + 1, "<g class=\"legend\">")) {
            const char *t = strstr(g, "<text x=\"");
            double x = strtod(t + 9, NULL);
            const char *a = strchr(t, '>') + 1, *b = strstr(a, "</text>");
            CHECK_MSG(x + 7 * text_chars(a, b) <= W, "legend label at x %.0f, %d chars, svg width %.0f", x,
                      text_chars(a, b), W);
            n++;
        }
    }
    return n;
}

/* A grid with no 100 % run, a long "+start-competes" row over the same run
 * and a training method with a '+': the caption does not promise a 100 %
 * line, every legend label fits, and the learning curves draw the training
 * methods only. */
KM_TEST(report_experiments_page_legends_captions_curves) {
    char dir[1024], p[2048], args[4096], csv[8192];
    snprintf(dir, sizeof dir, "%s/legend-exp", km_test_tmpdir());
    CHECK(km_test_sh("mkdir -p '%s/r0' '%s/r1'", dir, dir) == 0);
    const char *metrics = "epoch,val_dice\n1,0.5\n2,0.6\n3,0.55\n";
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/r%d/metrics.csv", dir, k);
        CHECK_OK(km_write_file_atomic(p, metrics, strlen(metrics)));
    }
    const char *longm = "continuous@w0.25-and-a-long-tail-é+start-competes";
    snprintf(csv, sizeof csv,
             "kind,dataset,fraction,method,seed,n_seeds,n_test,dice_mean,dice_std,iou_mean,iou_std,run_dir\n"
             "run,ds,0.5,supervised,0,1,3,0.5,,0.4,,%s/r0\n"
             "run,ds,0.5,supervised,1,1,3,0.6,,0.5,,%s/r1\n"
             "mean,ds,0.5,supervised,,2,,0.55,0.0707,0.45,0.0707,\n"
             "run,ds,0.5,%s,0,1,3,0.7,,0.6,,%s/r0\n"
             "mean,ds,0.5,%s,,1,,0.7,,0.6,,\n"
             "run,ds,0.5,points+box,0,1,3,0.65,,0.55,,%s/r1\n"
             "mean,ds,0.5,points+box,,1,,0.65,,0.55,,\n",
             dir, dir, longm, dir, longm, dir);
    snprintf(p, sizeof p, "%s/results.csv", dir);
    CHECK_OK(km_write_file_atomic(p, csv, strlen(csv)));
    snprintf(args, sizeof args, "report '%s' --quiet --no-run-reports", dir);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/report.html", dir);
    char *html = slurp(p, NULL);
    CHECK(html != NULL);
    if (!html) return;
    CHECK(strstr(html, "(no supervised run at 100 % labels in this grid)") && !strstr(html, "100 % labels.") &&
          !strstr(html, "supervised @100%"));
    CHECK_MSG(check_legends_fit(html) == 6 + 2, "labels: 6 in the fraction chart, 2 learning curves");
    char *learn = strstr(html, "id=\"learn-0-0-t\""), *end = learn ? strstr(learn, "</svg>") : NULL;
    CHECK(learn && end);
    if (end) {
        *end = 0; /* the learning chart's SVG only */
        CHECK(strstr(learn, ">supervised</text>") && strstr(learn, ">points+box</text>") &&
              !strstr(learn, "long-tail"));
    }
    km_free(html);
}

/* Bad input: clear errors. A run folder with only config.json and a
 * metrics.csv full of gaps still gives a page, with the gallery's absence
 * explained and no NaN in it. */
KM_TEST(report_cli_errors_and_partial_run) {
    char d[1024], p[2048], args[4096], log[1200];
    snprintf(d, sizeof d, "%s/partial-run", km_test_tmpdir());
    snprintf(log, sizeof log, "%s/kmseg.log", km_test_tmpdir());
    CHECK(km_test_sh("'%s' report > '%s' 2>&1", bin(), log) == 2);
    char *o = slurp(log, NULL);
    CHECK(o && strstr(o, "missing the folder"));
    km_free(o);
    CHECK(km_test_sh("'%s' report '%s/none' > '%s' 2>&1", bin(), d, log) == 1);
    o = slurp(log, NULL);
    CHECK(o && strstr(o, "/none: no such folder"));
    km_free(o);
    CHECK(km_test_sh("mkdir -p '%s'", d) == 0);
    CHECK(km_test_sh("'%s' report '%s' > '%s' 2>&1", bin(), d, log) == 1);
    o = slurp(log, NULL);
    CHECK(o && strstr(o, "neither a run folder (config.json or mine_config.json) nor an experiments folder"));
    km_free(o);
    const char *cfg = "{\"kmseg_version\": \"0.1.0\", \"data\": \"/nonexistent\", \"size\": 32, \"epochs\": 5, "
                      "\"seed\": 3, \"threads\": 1, \"early_stop\": 10}";
    snprintf(p, sizeof p, "%s/config.json", d);
    CHECK_OK(km_write_file_atomic(p, cfg, strlen(cfg)));
    const char *bad = "epoch,train_loss,val_loss\n1,0.5\n";
    snprintf(p, sizeof p, "%s/metrics.csv", d);
    CHECK_OK(km_write_file_atomic(p, bad, strlen(bad)));
    CHECK(km_test_sh("'%s' report '%s' > '%s' 2>&1", bin(), d, log) == 1);
    o = slurp(log, NULL);
    CHECK(o && strstr(o, "metrics.csv: line 2 has 2 fields, the header has 3"));
    km_free(o);
    const char *met = "epoch,train_loss,val_loss,val_dice,test_dice,lr,seconds\n"
                      "1,0.7,0.69,0.1,nan,5e-05,1.5\n2,nan,0.68,,nan,5e-05,inf\n3,0.6,0.67,0.3,nan,2.5e-05,1.25\n";
    CHECK_OK(km_write_file_atomic(p, met, strlen(met)));
    snprintf(args, sizeof args, "report '%s' --quiet", d);
    CHECK(kmseg_run(args) == 0);
    snprintf(p, sizeof p, "%s/report.html", d);
    char *html = slurp(p, NULL);
    CHECK(html != NULL);
    if (!html) return;
    CHECK(!has_nonfinite_text(html));
    CHECK(strstr(html, "Gallery not computed: no best.safetensors in the run folder") != NULL);
    CHECK(strstr(html, "3 epoch(s) logged (no last.safetensors)") != NULL);
    CHECK(strstr(html, "test Dice: no data") != NULL || strstr(html, "<td>test Dice</td><td>1</td><td>-</td>") != NULL);
    CHECK(strstr(html, "<tr><td>val Dice</td><td>2</td><td>-</td></tr>") != NULL);
    CHECK(strstr(html, "<tr><td>seconds per epoch</td><td>2</td><td>-</td></tr>") != NULL);
    CHECK(strstr(html, "<tr><td>learning rate</td><td>3</td><td>0.000025</td></tr>") != NULL);
    CHECK(strstr(html, "best epoch (lowest val loss)") != NULL);
    km_free(html);
}

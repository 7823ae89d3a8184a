/* image.c - PNG (libpng, classic API) and JPEG (libjpeg-turbo) decoding from
 * memory to 8-bit grey/RGB, and atomic 8-bit PNG writing.
 *
 * Both libraries report errors through callbacks that must not return. Each
 * decoder keeps everything it allocates in a context struct reached through a
 * pointer, so after the callback longjmps back the cleanup code reads those
 * pointers from memory (no non-volatile automatic variable is modified between
 * setjmp and longjmp). Every libpng/libjpeg message becomes one km_err message
 * that starts with the file name.
 *
 * Pixel values follow PIL (Pillow 9.4, which uses the same libjpeg-turbo):
 * JPEGs are decoded with libjpeg's defaults (ISLOW IDCT, fancy upsampling),
 * alpha is dropped without compositing, 16-bit samples keep their high byte
 * (PIL's "RGB;16B" unpacking) and RGB -> grey is PIL's convert("L") luma.
 * Masks (km_mask_load) take the same PNG decoder in raw mode: palette indices
 * and grey values as stored, 16-bit grey kept (image.h). */
#include "image.h"

#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>

/* Limits for untrusted files: a side above KM_IMAGE_MAX_SIDE or more than
 * KM_IMAGE_MAX_PIXELS pixels is rejected before any pixel buffer exists. */
#define KM_IMAGE_MAX_SIDE 30000
#define KM_IMAGE_MAX_PIXELS ((int64_t)1 << 28)
/* Largest file km_image_load reads into memory. */
#define KM_IMAGE_MAX_FILE ((size_t)1 << 30)
/* A progressive JPEG may carry any number of scans; each one costs a pass
 * over the coefficient buffer, so a small hostile file can take minutes.
 * libjpeg-turbo's documentation suggests this cap. */
#define KM_JPEG_MAX_SCANS 500

static km_status check_dims(const char *name, const char *fmt, int64_t w, int64_t h,
                            int64_t max_pixels) {
    if (w <= 0 || h <= 0)
        return km_err(KM_EFORMAT, "%s: %s image has zero size (%lldx%lld)", name, fmt,
                      (long long)w, (long long)h);
    if (w > KM_IMAGE_MAX_SIDE || h > KM_IMAGE_MAX_SIDE || w * h > max_pixels)
        return km_err(KM_ENOMEM,
                      "%s: %s image is %lldx%lld, expected at most %d px per side and %lld "
                      "pixels",
                      name, fmt, (long long)w, (long long)h, KM_IMAGE_MAX_SIDE,
                      (long long)max_pixels);
    return KM_OK;
}

/* ---------------------------------------------------------------- PNG --- */

typedef struct {
    const char *name;
    const uint8_t *buf;
    size_t n, pos;
    int64_t max_pixels;
    int raw;          /* mask mode: grey and palette values as stored (see image.h) */
    png_structp png;
    png_infop info;
    uint8_t *data;    /* h * w * c * (depth / 8), the result */
    png_bytep *rows;  /* h row pointers into data */
    int w, h, c;
    int depth;        /* 8, or 16 (raw mode only, big-endian samples) */
    int stored_depth; /* bit depth in the file */
    int palette;      /* raw mode: the values are palette indices */
    int ct;           /* colour type in the file */
    char msg[200];
} png_ctx;

static void png_err_cb(png_structp png, png_const_charp msg) {
    png_ctx *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings are for recoverable, harmless problems (a bad CRC in an ancillary
 * chunk, an unknown sRGB profile): the chunk is dropped and decoding goes on. */
static void png_warn_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_cb(png_structp png, png_bytep out, size_t len) {
    png_ctx *x = png_get_io_ptr(png);
    if (len > x->n - x->pos) png_error(png, "file is truncated");
    memcpy(out, x->buf + x->pos, len);
    x->pos += len;
}

/* Walks the chunk list before libpng sees it: every chunk must fit in the
 * buffer and IEND must be present. Debian's libpng 1.6.39 allocates the
 * declared length of an ancillary chunk (tEXt) before reading it, so one
 * flipped length byte costs up to 2 GiB of memory; this check turns that,
 * and any truncation, into a clear error up front. */
static km_status png_check_chunks(const char *name, const uint8_t *buf, size_t n) {
    size_t pos = 8;
    while (n - pos >= 12) {
        const uint8_t *p = buf + pos;
        uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        char type[5];
        for (int i = 0; i < 4; i++) {
            int ch = p[4 + i];
            type[i] = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ? (char)ch : '?';
        }
        type[4] = 0;
        if (len > 0x7fffffffu || len > n - pos - 12)
            return km_err(KM_EFORMAT,
                          "%s: bad PNG: chunk '%s' at byte %zu declares %u data bytes, only %zu "
                          "remain (file truncated or corrupt)",
                          name, type, pos, len, n - pos - 12);
        if (!memcmp(p + 4, "IEND", 4)) return KM_OK;
        pos += 12 + (size_t)len;
    }
    return km_err(KM_EFORMAT, "%s: bad PNG: no IEND chunk in %zu bytes (file truncated)", name,
                  n);
}

/* The libpng transformations. Images: palette -> RGB, 1/2/4-bit grey -> 8
 * bits (scaled), 16 -> 8 bits by keeping the high byte, alpha dropped (tRNS
 * transparency is ignored like alpha). Raw mode (masks): palette indices and
 * grey values as stored (1/2/4-bit unpacked to one byte, not scaled; 16-bit
 * grey kept), alpha dropped; RGB as for images. */
static void png_set_tx(png_ctx *x, int ct) {
    int palette = ct == PNG_COLOR_TYPE_PALETTE, grey = !(ct & PNG_COLOR_MASK_COLOR);
    if (x->raw && (palette || grey)) {
        x->palette = palette;
        if (x->stored_depth < 8) png_set_packing(x->png);
        if (ct & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(x->png);
        return;
    }
    if (palette) png_set_palette_to_rgb(x->png);
    if (ct == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(x->png);
    png_set_strip_16(x->png);
    /* A palette with tRNS expands to RGBA; drop that alpha too. */
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(x->png, x->info, PNG_INFO_tRNS))
        png_set_strip_alpha(x->png);
}

static km_status png_decode(png_ctx *x) {
    km_status s = png_check_chunks(x->name, x->buf, x->n);
    if (s) return s;
    x->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, x, png_err_cb, png_warn_cb);
    if (!x->png) return km_err(KM_ENOMEM, "%s: cannot create a libpng reader", x->name);
    x->info = png_create_info_struct(x->png);
    if (!x->info) return km_err(KM_ENOMEM, "%s: cannot create a libpng info struct", x->name);
    if (setjmp(png_jmpbuf(x->png))) return km_err(KM_EFORMAT, "%s: bad PNG: %s", x->name, x->msg);

    png_set_read_fn(x->png, x, png_read_cb);
    /* libpng's own IHDR checks (sides up to 10^6, row size overflow) run in
     * png_read_info; check_dims then applies our tighter limits before any
     * pixel buffer is allocated. */
    png_read_info(x->png, x->info);

    png_uint_32 w = png_get_image_width(x->png, x->info);
    png_uint_32 h = png_get_image_height(x->png, x->info);
    s = check_dims(x->name, "PNG", w, h, x->max_pixels);
    if (s) return s;
    int ct = png_get_color_type(x->png, x->info);
    x->stored_depth = png_get_bit_depth(x->png, x->info);
    x->ct = ct;
    png_set_tx(x, ct);
    png_set_interlace_handling(x->png);
    png_read_update_info(x->png, x->info);

    int c = png_get_channels(x->png, x->info), depth = png_get_bit_depth(x->png, x->info);
    size_t rowbytes = png_get_rowbytes(x->png, x->info);
    if ((c != 1 && c != 3) || (depth != 8 && !(x->raw && depth == 16 && c == 1)) ||
        rowbytes != (size_t)w * (size_t)c * (size_t)(depth / 8))
        return km_err(KM_EFORMAT,
                      "%s: PNG colour type %d did not reduce to 8-bit grey or RGB (%d channels, "
                      "%zu bytes per row)",
                      x->name, ct, c, rowbytes);
    x->depth = depth;
    c *= depth / 8; /* bytes per pixel from here on */
    x->data = km_try_malloc((size_t)w * h * c);
    x->rows = km_try_malloc(sizeof(png_bytep) * h);
    if (!x->data || !x->rows)
        return km_err(KM_ENOMEM, "%s: cannot allocate %ux%ux%d pixels", x->name, w, h, c);
    for (png_uint_32 y = 0; y < h; y++) x->rows[y] = x->data + (size_t)y * rowbytes;
    png_read_image(x->png, x->rows);
    /* Reads up to IEND: a file cut after the last IDAT is still an error. */
    png_read_end(x->png, NULL);
    x->w = (int)w;
    x->h = (int)h;
    x->c = c / (depth / 8);
    return KM_OK;
}

static km_status load_png(const char *name, const uint8_t *buf, size_t n, int64_t max_pixels,
                          km_image *img) {
    png_ctx x = {.name = name, .buf = buf, .n = n, .max_pixels = max_pixels};
    km_status s = png_decode(&x);
    if (x.png) png_destroy_read_struct(&x.png, x.info ? &x.info : NULL, NULL);
    km_free(x.rows);
    if (s) {
        km_free(x.data);
        return s;
    }
    *img = (km_image){.w = x.w, .h = x.h, .c = x.c, .data = x.data};
    return KM_OK;
}

/* --------------------------------------------------------------- JPEG --- */

typedef struct {
    struct jpeg_error_mgr pub; /* first member: libjpeg casts err to this */
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

typedef struct {
    const char *name;
    const uint8_t *buf;
    size_t n;
    int64_t max_pixels;
    struct jpeg_decompress_struct d;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    int created;
    uint8_t *data;
    int w, h, c;
} jpeg_ctx;

static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* libjpeg only warns about corrupt entropy data and a premature end of file
 * (it pads with grey and goes on); for training data that is an error. Level
 * >= 0 messages are traces and are ignored. */
static void jpeg_emit_cb(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_error_exit_cb(cinfo);
}

static void jpeg_progress_cb(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > KM_JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", KM_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static km_status jpeg_decode(jpeg_ctx *x) {
    x->d.err = jpeg_std_error(&x->err.pub);
    x->err.pub.error_exit = jpeg_error_exit_cb;
    x->err.pub.emit_message = jpeg_emit_cb;
    if (setjmp(x->err.jb)) return km_err(KM_EFORMAT, "%s: bad JPEG: %s", x->name, x->err.msg);
    jpeg_create_decompress(&x->d);
    x->created = 1;
    x->progress.progress_monitor = jpeg_progress_cb;
    x->d.progress = &x->progress;
    /* Bounds the whole-image coefficient buffer of progressive and multi-scan
     * files: 3 components of 2-byte coefficients per pixel plus slack. Beyond
     * it libjpeg-turbo has no backing store and fails cleanly. */
    x->d.mem->max_memory_to_use = (long)(x->max_pixels * 6 + (64 << 20));
    jpeg_mem_src(&x->d, x->buf, (unsigned long)x->n);
    jpeg_read_header(&x->d, TRUE);

    km_status s = check_dims(x->name, "JPEG", x->d.image_width, x->d.image_height,
                             x->max_pixels);
    if (s) return s;
    switch (x->d.jpeg_color_space) {
    case JCS_GRAYSCALE: x->d.out_color_space = JCS_GRAYSCALE; break;
    case JCS_YCbCr:
    case JCS_RGB: x->d.out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK:
        return km_err(KM_EFORMAT,
                      "%s: CMYK JPEG is not supported, expected a grey or RGB/YCbCr JPEG "
                      "(convert it to RGB first)",
                      x->name);
    default:
        return km_err(KM_EFORMAT,
                      "%s: JPEG colour space %d with %d components is not supported, expected "
                      "grey or RGB/YCbCr",
                      x->name, (int)x->d.jpeg_color_space, x->d.num_components);
    }
    jpeg_start_decompress(&x->d);
    int w = (int)x->d.output_width, h = (int)x->d.output_height;
    int c = x->d.output_components;
    KM_ASSERT(w == (int)x->d.image_width && h == (int)x->d.image_height && (c == 1 || c == 3));
    size_t stride = (size_t)w * c;
    x->data = km_try_malloc(stride * h);
    if (!x->data) return km_err(KM_ENOMEM, "%s: cannot allocate %dx%dx%d pixels", x->name, w, h, c);
    while (x->d.output_scanline < x->d.output_height) {
        JSAMPROW row = x->data + stride * x->d.output_scanline;
        jpeg_read_scanlines(&x->d, &row, 1);
    }
    /* Reads up to EOI, so a file cut in its last scan is caught here. */
    jpeg_finish_decompress(&x->d);
    x->w = w;
    x->h = h;
    x->c = c;
    return KM_OK;
}

static km_status load_jpeg(const char *name, const uint8_t *buf, size_t n, int64_t max_pixels,
                           km_image *img) {
    jpeg_ctx *x = km_calloc(sizeof *x); /* jmp_buf + libjpeg state: keep it off the stack */
    x->name = name;
    x->buf = buf;
    x->n = n;
    x->max_pixels = max_pixels;
    km_status s = jpeg_decode(x);
    if (x->created) jpeg_destroy_decompress(&x->d);
    if (s) {
        km_free(x->data);
    } else {
        *img = (km_image){.w = x->w, .h = x->h, .c = x->c, .data = x->data};
    }
    km_free(x);
    return s;
}

/* ------------------------------------------------------------ channels --- */

/* In-place-safe conversion of img to `want_c` channels (1 or 3). Grey -> RGB
 * replicates. RGB -> grey is Pillow's convert("L") (ITU-R 601-2 luma in 16-bit
 * fixed point, Convert.c L24); its weights sum to 65536, so a pixel with
 * R == G == B keeps exactly that value. */
static km_status convert_channels(const char *name, km_image *img, int want_c) {
    if (want_c == 0 || want_c == img->c) return KM_OK;
    size_t np = (size_t)img->w * img->h;
    uint8_t *out = km_try_malloc(np * want_c);
    if (!out) return km_err(KM_ENOMEM, "%s: cannot allocate %zux%d bytes", name, np, want_c);
    const uint8_t *in = img->data;
    if (img->c == 1 && want_c == 3) {
        for (size_t i = 0; i < np; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
    } else {
        KM_ASSERT(img->c == 3 && want_c == 1);
        for (size_t i = 0; i < np; i++) {
            uint32_t l = in[3 * i] * 19595u + in[3 * i + 1] * 38470u + in[3 * i + 2] * 7471u;
            out[i] = (uint8_t)((l + 0x8000u) >> 16);
        }
    }
    km_free(img->data);
    img->data = out;
    img->c = want_c;
    return KM_OK;
}

/* ---------------------------------------------------------------- API --- */

km_status km_image_load_mem_max(const char *name, const uint8_t *buf, size_t n, km_image *img,
                                int want_c, int64_t max_pixels) {
    KM_ASSERT(want_c == 0 || want_c == 1 || want_c == 3);
    KM_ASSERT(max_pixels > 0 && max_pixels <= KM_IMAGE_MAX_PIXELS);
    memset(img, 0, sizeof *img);
    if (n == 0) return km_err(KM_EFORMAT, "%s: empty file, expected a PNG or JPEG image", name);
    km_status s;
    if (n >= 8 && png_sig_cmp(buf, 0, 8) == 0) {
        s = load_png(name, buf, n, max_pixels, img);
    } else if (n >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) {
        s = load_jpeg(name, buf, n, max_pixels, img);
    } else {
        uint8_t b[4] = {0};
        memcpy(b, buf, n < 4 ? n : 4);
        return km_err(KM_EFORMAT,
                      "%s: not a PNG or JPEG file (%zu bytes starting %02x %02x %02x %02x), "
                      "expected the signature 89 50 4e 47 (PNG) or ff d8 ff (JPEG)",
                      name, n, b[0], b[1], b[2], b[3]);
    }
    if (!s) s = convert_channels(name, img, want_c);
    if (s) km_image_free(img);
    return s;
}

km_status km_image_load_mem(const char *name, const uint8_t *buf, size_t n, km_image *img,
                            int want_c) {
    return km_image_load_mem_max(name, buf, n, img, want_c, KM_IMAGE_MAX_PIXELS);
}

km_status km_image_load(const char *path, km_image *img, int want_c) {
    memset(img, 0, sizeof *img);
    uint8_t *buf;
    size_t n;
    km_status s = km_read_file(path, KM_IMAGE_MAX_FILE, &buf, &n);
    if (s) return s;
    s = km_image_load_mem(path, buf, n, img, want_c);
    km_free(buf);
    return s;
}

/* ----------------------------------------------------------------- masks --- */

km_status km_mask_load_mem_max(const char *name, const uint8_t *buf, size_t n, km_mask *m, int64_t max_pixels) {
    KM_ASSERT(max_pixels > 0 && max_pixels <= KM_IMAGE_MAX_PIXELS);
    memset(m, 0, sizeof *m);
    if (!(n >= 8 && png_sig_cmp(buf, 0, 8) == 0)) {
        /* JPEG (or an error naming both signatures): 8-bit grey as images */
        km_image g;
        km_status s = km_image_load_mem_max(name, buf, n, &g, 1, max_pixels);
        if (s) return s;
        m->w = g.w;
        m->h = g.h;
        m->depth = 8;
        m->kind = KM_MASK_JPEG;
        m->data = km_malloc(sizeof(uint16_t) * (size_t)g.w * g.h);
        for (size_t i = 0; i < (size_t)g.w * g.h; i++) m->data[i] = g.data[i];
        km_image_free(&g);
        return KM_OK;
    }
    png_ctx x = {.name = name, .buf = buf, .n = n, .max_pixels = max_pixels, .raw = 1};
    km_status s = png_decode(&x);
    if (x.png) png_destroy_read_struct(&x.png, x.info ? &x.info : NULL, NULL);
    km_free(x.rows);
    if (!s && x.c == 3) {
        km_image g = {.w = x.w, .h = x.h, .c = 3, .data = x.data};
        s = convert_channels(name, &g, 1);
        x.data = g.data;
        x.c = 1;
    }
    if (s) {
        km_free(x.data);
        return s;
    }
    size_t np = (size_t)x.w * x.h;
    m->w = x.w;
    m->h = x.h;
    m->depth = x.depth == 16 ? 16 : x.stored_depth < 8 && (x.palette || !(x.ct & PNG_COLOR_MASK_COLOR)) ? x.stored_depth : 8;
    m->kind = x.palette ? KM_MASK_PALETTE : (x.ct & PNG_COLOR_MASK_COLOR) ? KM_MASK_RGB : KM_MASK_GREY;
    m->data = km_try_malloc(sizeof(uint16_t) * np);
    if (!m->data) {
        km_free(x.data);
        return km_err(KM_ENOMEM, "%s: cannot allocate %dx%d mask values", name, x.w, x.h);
    }
    for (size_t i = 0; i < np; i++)
        m->data[i] = x.depth == 16 ? (uint16_t)(x.data[2 * i] << 8 | x.data[2 * i + 1]) : x.data[i];
    km_free(x.data);
    return KM_OK;
}

km_status km_mask_load_mem(const char *name, const uint8_t *buf, size_t n, km_mask *m) {
    return km_mask_load_mem_max(name, buf, n, m, KM_IMAGE_MAX_PIXELS);
}

km_status km_mask_load(const char *path, km_mask *m) {
    memset(m, 0, sizeof *m);
    uint8_t *buf;
    size_t n;
    km_status s = km_read_file(path, KM_IMAGE_MAX_FILE, &buf, &n);
    if (s) return s;
    s = km_mask_load_mem(path, buf, n, m);
    km_free(buf);
    return s;
}

void km_mask_free(km_mask *m) {
    if (!m) return;
    km_free(m->data);
    memset(m, 0, sizeof *m);
}

typedef struct {
    const char *path;
    const km_image *img;   /* 8-bit grey/RGB, or NULL with mask16 */
    const km_mask *mask16; /* 16-bit grey */
    uint8_t *row;          /* big-endian row for mask16 */
    FILE *f;
    png_structp png;
    png_infop info;
    char msg[200];
} png_wctx;

static void png_werr_cb(png_structp png, png_const_charp msg) {
    png_wctx *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

static km_status png_encode(png_wctx *x) {
    x->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, x, png_werr_cb, png_warn_cb);
    if (!x->png) return km_err(KM_ENOMEM, "%s: cannot create a libpng writer", x->path);
    x->info = png_create_info_struct(x->png);
    if (!x->info) return km_err(KM_ENOMEM, "%s: cannot create a libpng info struct", x->path);
    if (setjmp(png_jmpbuf(x->png)))
        return km_err(KM_EIO, "%s: writing PNG failed: %s", x->path, x->msg);
    const km_image *im = x->img;
    const km_mask *mk = x->mask16;
    int w = im ? im->w : mk->w, h = im ? im->h : mk->h;
    png_init_io(x->png, x->f);
    png_set_IHDR(x->png, x->info, (png_uint_32)w, (png_uint_32)h, im ? 8 : 16,
                 !im || im->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(x->png, x->info);
    for (int y = 0; y < h; y++) {
        if (im) {
            png_write_row(x->png, im->data + (size_t)y * im->w * im->c);
            continue;
        }
        for (int i = 0; i < w; i++) {
            uint16_t v = mk->data[(size_t)y * w + i];
            x->row[2 * i] = (uint8_t)(v >> 8);
            x->row[2 * i + 1] = (uint8_t)v;
        }
        png_write_row(x->png, x->row);
    }
    png_write_end(x->png, NULL);
    return KM_OK;
}

static km_status save_png(const char *path, const km_image *img, const km_mask *mask16) {
    km_atomic_file af;
    km_status s = km_atomic_open(&af, path);
    if (s) return s;
    png_wctx x = {.path = path, .img = img, .mask16 = mask16, .f = af.f};
    if (mask16) x.row = km_malloc(2 * (size_t)mask16->w);
    s = png_encode(&x);
    if (x.png) png_destroy_write_struct(&x.png, x.info ? &x.info : NULL);
    km_free(x.row);
    if (s) {
        km_atomic_abort(&af);
        return s;
    }
    return km_atomic_commit(&af);
}

km_status km_image_encode_png(const char *name, const km_image *img, uint8_t **buf, size_t *n) {
    KM_ASSERT(img->data && img->w > 0 && img->h > 0);
    *buf = NULL;
    *n = 0;
    if (img->c != 1 && img->c != 3)
        return km_err(KM_EARG, "%s: cannot encode a %d-channel PNG, expected 1 (grey) or 3 (RGB)", name,
                      img->c);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (!f) return km_err(KM_ENOMEM, "%s: cannot open a memory stream for the PNG", name);
    png_wctx x = {.path = name, .img = img, .f = f};
    km_status s = png_encode(&x);
    if (x.png) png_destroy_write_struct(&x.png, x.info ? &x.info : NULL);
    if (fclose(f) && !s) s = km_err(KM_ENOMEM, "%s: cannot finish the PNG in memory", name);
    if (s) {
        free(mem);
        return s;
    }
    *buf = km_malloc(len ? len : 1);
    memcpy(*buf, mem, len);
    free(mem); /* open_memstream buffer: plain malloc */
    *n = len;
    return KM_OK;
}

km_status km_image_save_png(const char *path, const km_image *img) {
    KM_ASSERT(img->data && img->w > 0 && img->h > 0);
    if (img->c != 1 && img->c != 3)
        return km_err(KM_EARG, "%s: cannot write a %d-channel PNG, expected 1 (grey) or 3 (RGB)",
                      path, img->c);
    return save_png(path, img, NULL);
}

km_status km_mask_save_png(const char *path, const km_mask *m) {
    KM_ASSERT(m->data && m->w > 0 && m->h > 0);
    size_t np = (size_t)m->w * m->h;
    uint16_t mx = 0;
    for (size_t i = 0; i < np; i++) mx = m->data[i] > mx ? m->data[i] : mx;
    if (mx > 255) return save_png(path, NULL, m);
    km_image g = {m->w, m->h, 1, km_malloc(np)};
    for (size_t i = 0; i < np; i++) g.data[i] = (uint8_t)m->data[i];
    km_status s = save_png(path, &g, NULL);
    km_image_free(&g);
    return s;
}

void km_image_free(km_image *img) {
    if (!img) return;
    km_free(img->data);
    memset(img, 0, sizeof *img);
}

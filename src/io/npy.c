/* npy.c - NumPy .npy files (numpy/lib/format.py, format versions 1.0-3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32 LE
 * for v2/v3), a Python dict literal {'descr': '<f4', 'fortran_order': False,
 * 'shape': (3, 4), } padded with spaces and ending in '\n', then the raw data. */
#include "npy.h"

#include "mapfile.h"

#include <string.h>

static const struct {
    const char *descr;
    km_dtype dt;
} k_descr[] = {
    {"<f4", KM_F32}, {"<f8", KM_F64}, {"<f2", KM_F16}, {"<i8", KM_I64}, {"<i4", KM_I32},
    {"<i2", KM_I16}, {"|i1", KM_I8},  {"|u1", KM_U8},  {"|b1", KM_BOOL},
};

void km_tensor_free(km_tensor *t) {
    km_free(t->name);
    km_free(t->data);
    memset(t, 0, sizeof *t);
}

/* ---- header dict literal -------------------------------------------------- */

typedef struct {
    const char *name;
    const char *p;
    size_t n, pos;
} lit;

static void lws(lit *l) {
    while (l->pos < l->n && (l->p[l->pos] == ' ' || l->p[l->pos] == '\t' || l->p[l->pos] == '\n'))
        l->pos++;
}

static km_status lerr(lit *l, const char *what) {
    return km_err(KM_EFORMAT, "%s: bad .npy header at character %zu: %s", l->name, l->pos, what);
}

static int lchar(lit *l, char c) {
    lws(l);
    if (l->pos < l->n && l->p[l->pos] == c) {
        l->pos++;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes (numpy never writes any) into buf. */
static km_status lstring(lit *l, char *buf, size_t cap) {
    lws(l);
    if (l->pos >= l->n || (l->p[l->pos] != '\'' && l->p[l->pos] != '"'))
        return lerr(l, "expected a quoted string");
    char q = l->p[l->pos++];
    size_t k = 0;
    while (l->pos < l->n && l->p[l->pos] != q) {
        if (l->p[l->pos] == '\\' || k + 1 >= cap) return lerr(l, "unexpected string");
        buf[k++] = l->p[l->pos++];
    }
    if (l->pos >= l->n) return lerr(l, "unterminated string");
    l->pos++;
    buf[k] = 0;
    return KM_OK;
}

static km_status lint(lit *l, int64_t *v) {
    lws(l);
    size_t s = l->pos;
    int64_t x = 0;
    while (l->pos < l->n && l->p[l->pos] >= '0' && l->p[l->pos] <= '9') {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, l->p[l->pos] - '0', &x))
            return lerr(l, "dimension too large");
        l->pos++;
    }
    if (l->pos == s) return lerr(l, "expected a non-negative integer");
    if (l->pos < l->n && l->p[l->pos] == 'L') l->pos++; /* Python 2 long */
    *v = x;
    return KM_OK;
}

static km_status parse_header(lit *l, km_dtype *dt, int *ndim, int64_t *shape) {
    int have_d = 0, have_f = 0, have_s = 0;
    km_status s;
    if (!lchar(l, '{')) return lerr(l, "expected '{'");
    while (!lchar(l, '}')) {
        char key[32], val[32];
        if ((s = lstring(l, key, sizeof key))) return s;
        if (!lchar(l, ':')) return lerr(l, "expected ':'");
        if (!strcmp(key, "descr") && !have_d) {
            if ((s = lstring(l, val, sizeof val))) return s;
            int found = 0;
            for (size_t i = 0; i < sizeof k_descr / sizeof k_descr[0] && !found; i++)
                if (!strcmp(val, k_descr[i].descr)) {
                    *dt = k_descr[i].dt;
                    found = 1;
                }
            if (!found && val[0] == '>')
                return km_err(KM_EFORMAT, "%s: big-endian .npy data ('%s') is not supported; save it "
                                          "little-endian (arr.astype('<%s'))", l->name, val, val + 1);
            if (!found)
                return km_err(KM_EFORMAT, "%s: unsupported .npy dtype '%s' (supported: <f4 <f8 <f2 "
                                          "<i8 <i4 <i2 |i1 |u1 |b1)", l->name, val);
            have_d = 1;
        } else if (!strcmp(key, "fortran_order") && !have_f) {
            lws(l);
            if (l->n - l->pos >= 5 && !memcmp(l->p + l->pos, "False", 5)) {
                l->pos += 5;
            } else if (l->n - l->pos >= 4 && !memcmp(l->p + l->pos, "True", 4)) {
                return km_err(KM_EFORMAT, "%s: Fortran-order .npy arrays are not supported; save a "
                                          "C-contiguous array (np.ascontiguousarray)", l->name);
            } else {
                return lerr(l, "fortran_order must be True or False");
            }
            have_f = 1;
        } else if (!strcmp(key, "shape") && !have_s) {
            if (!lchar(l, '(')) return lerr(l, "shape must be a tuple");
            *ndim = 0;
            while (!lchar(l, ')')) {
                if (*ndim == KM_MAXDIM) return lerr(l, "more than 8 dimensions");
                if ((s = lint(l, &shape[(*ndim)++]))) return s;
                if (!lchar(l, ',')) {
                    if (!lchar(l, ')')) return lerr(l, "expected ',' or ')' in shape");
                    break;
                }
            }
            have_s = 1;
        } else {
            return lerr(l, "unexpected or repeated key");
        }
        if (!lchar(l, ',')) {
            if (!lchar(l, '}')) return lerr(l, "expected ',' or '}'");
            break;
        }
    }
    lws(l);
    if (l->pos != l->n) return lerr(l, "trailing characters after the dict");
    if (!have_d || !have_f || !have_s)
        return lerr(l, "the header must have 'descr', 'fortran_order' and 'shape'");
    return KM_OK;
}

km_status km_npy_load_mem(const char *name, const uint8_t *buf, size_t n, km_tensor *out) {
    memset(out, 0, sizeof *out);
    if (n < 10 || memcmp(buf, "\x93NUMPY", 6))
        return km_err(KM_EFORMAT, "%s: not a .npy file (missing \\x93NUMPY magic)", name);
    int major = buf[6];
    size_t hl, hs;
    if (major == 1) {
        hl = (size_t)buf[8] | (size_t)buf[9] << 8;
        hs = 10;
    } else if (major == 2 || major == 3) {
        if (n < 12) return km_err(KM_EFORMAT, "%s: truncated .npy header", name);
        hl = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        hs = 12;
    } else {
        return km_err(KM_EFORMAT, "%s: unsupported .npy format version %d.%d", name, major, buf[7]);
    }
    if (hl > n - hs)
        return km_err(KM_EFORMAT, "%s: .npy header of %zu bytes runs past the %zu-byte file", name,
                      hl, n);
    lit l = {name, (const char *)buf + hs, hl, 0};
    km_dtype dt = KM_F32;
    int ndim = 0;
    int64_t shape[KM_MAXDIM];
    km_status s = parse_header(&l, &dt, &ndim, shape);
    if (s) return s;
    int64_t numel = 1, nb;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(numel, shape[d], &numel))
            return km_err(KM_EFORMAT, "%s: .npy shape overflows", name);
    if (__builtin_mul_overflow(numel, (int64_t)km_dtype_size(dt), &nb))
        return km_err(KM_EFORMAT, "%s: .npy shape overflows", name);
    size_t have = n - hs - hl;
    char sb[160];
    if ((uint64_t)nb != have)
        return km_err(KM_EFORMAT, "%s: .npy data is %zu bytes, but %s %s needs %lld (%s)", name,
                      have, km_dtype_name(dt), km_shape_str(sb, sizeof sb, ndim, shape),
                      (long long)nb, (uint64_t)nb > have ? "truncated" : "trailing bytes");
    out->data = km_try_malloc((size_t)nb);
    if (!out->data) return km_err(KM_ENOMEM, "%s: cannot allocate %lld bytes", name, (long long)nb);
    memcpy(out->data, buf + hs + hl, (size_t)nb);
    out->name = km_strdup(name);
    out->dtype = dt;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->shape[d] = shape[d];
    out->nbytes = (size_t)nb;
    return KM_OK;
}

km_status km_npy_load(const char *path, km_tensor *out) {
    km_mapped m;
    memset(out, 0, sizeof *out);
    km_status s = km_map_file(path, &m);
    if (s) return s;
    s = km_npy_load_mem(path, m.data, m.n, out);
    km_unmap_file(&m);
    return s;
}

km_status km_npy_load_f32(const char *path, int expect_ndim, const int64_t *expect_shape,
                          km_tensor *out) {
    km_status s = km_npy_load(path, out);
    if (s) return s;
    if (expect_ndim >= 0) {
        int ok = out->ndim == expect_ndim;
        for (int d = 0; ok && d < expect_ndim; d++)
            ok = expect_shape[d] < 0 || expect_shape[d] == out->shape[d];
        if (!ok) {
            char a[160], b[160];
            s = km_err(KM_ESHAPE, "%s: array has shape %s, expected %s (-1 = any)", path,
                       km_shape_str(a, sizeof a, out->ndim, out->shape),
                       km_shape_str(b, sizeof b, expect_ndim, expect_shape));
            km_tensor_free(out);
            return s;
        }
    }
    if (out->dtype == KM_F32) return KM_OK;
    int64_t n = km_numel(out->ndim, out->shape);
    float *f = km_malloc((size_t)n * 4);
    const void *p = out->data;
    for (int64_t i = 0; i < n; i++) {
        switch (out->dtype) {
        case KM_F16: f[i] = km_f16_to_f32(((const uint16_t *)p)[i]); break;
        case KM_BF16: f[i] = km_bf16_to_f32(((const uint16_t *)p)[i]); break;
        case KM_F64: f[i] = (float)((const double *)p)[i]; break;
        case KM_I64: f[i] = (float)((const int64_t *)p)[i]; break;
        case KM_I32: f[i] = (float)((const int32_t *)p)[i]; break;
        case KM_I16: f[i] = (float)((const int16_t *)p)[i]; break;
        case KM_I8: f[i] = (float)((const int8_t *)p)[i]; break;
        case KM_U8: f[i] = (float)((const uint8_t *)p)[i]; break;
        case KM_BOOL: f[i] = ((const uint8_t *)p)[i] ? 1.0f : 0.0f; break;
        case KM_F32: break;
        }
    }
    km_free(out->data);
    out->data = f;
    out->dtype = KM_F32;
    out->nbytes = (size_t)n * 4;
    return KM_OK;
}

km_status km_npy_save(const char *path, km_dtype dt, int ndim, const int64_t *shape,
                      const void *data) {
    KM_ASSERT(ndim >= 0 && ndim <= KM_MAXDIM);
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof k_descr / sizeof k_descr[0]; i++)
        if (k_descr[i].dt == dt) descr = k_descr[i].descr;
    if (!descr)
        return km_err(KM_EARG, "%s: dtype %s has no .npy equivalent", path, km_dtype_name(dt));
    /* Same text as numpy's _write_array_header: repr of the dict, padded with
     * spaces so that magic + length + header is a multiple of 64, then '\n'. */
    char h[512];
    int k = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int d = 0; d < ndim; d++)
        k += snprintf(h + k, sizeof h - (size_t)k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    k += snprintf(h + k, sizeof h - (size_t)k, "%s), }", ndim == 1 ? "," : "");
    while ((10 + k + 1) % 64) h[k++] = ' ';
    h[k++] = '\n';
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(k & 0xff), (uint8_t)(k >> 8)};
    size_t nb = (size_t)km_numel(ndim, shape) * km_dtype_size(dt);
    km_atomic_file af;
    km_status s = km_atomic_open(&af, path);
    if (s) return s;
    if (fwrite(pre, 1, 10, af.f) != 10 || fwrite(h, 1, (size_t)k, af.f) != (size_t)k ||
        (nb && fwrite(data, 1, nb, af.f) != nb)) {
        km_atomic_abort(&af);
        return km_err(KM_EIO, "%s: write failed", path);
    }
    return km_atomic_commit(&af);
}

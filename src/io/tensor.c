/* tensor.c - km_tensor / km_tdict helpers. */
#include "tensor.h"

#include <math.h>
#include <string.h>

size_t km_dtype_size(km_dtype t) {
    switch (t) {
    case KM_F64: case KM_I64: return 8;
    case KM_F32: case KM_I32: return 4;
    case KM_F16: case KM_BF16: case KM_I16: return 2;
    case KM_I8: case KM_U8: case KM_BOOL: return 1;
    }
    return 0;
}

const char *km_dtype_name(km_dtype t) {
    static const char *n[] = {"float32", "float16", "bfloat16", "float64", "int64",
                              "int32",   "int16",   "int8",     "uint8",   "bool"};
    return (unsigned)t < sizeof n / sizeof n[0] ? n[t] : "?";
}

int64_t km_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

const char *km_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

void km_tdict_init(km_tdict *d) { memset(d, 0, sizeof *d); }

void km_tdict_free(km_tdict *d) {
    for (int i = 0; i < d->n; i++) {
        km_free(d->items[i].name);
        km_free(d->items[i].data);
    }
    for (int i = 0; i < d->nmeta; i++) {
        km_free(d->meta[i].key);
        km_free(d->meta[i].value);
    }
    km_free(d->items);
    km_free(d->meta);
    memset(d, 0, sizeof *d);
}

km_tensor *km_tdict_find(const km_tdict *d, const char *name) {
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->items[i].name, name) == 0) return &d->items[i];
    return NULL;
}

km_tensor *km_tdict_add_owned(km_tdict *d, const char *name, km_dtype dt, int ndim,
                              const int64_t *shape, void *data) {
    KM_ASSERT(ndim >= 0 && ndim <= KM_MAXDIM);
    if (km_tdict_find(d, name)) return NULL;
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 64;
        km_tensor *it = km_malloc(sizeof *it * cap);
        if (d->n) memcpy(it, d->items, sizeof *it * d->n);
        km_free(d->items);
        d->items = it;
        d->cap = cap;
    }
    km_tensor *t = &d->items[d->n++];
    memset(t, 0, sizeof *t);
    t->name = km_strdup(name);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (size_t)km_numel(ndim, shape) * km_dtype_size(dt);
    t->data = data;
    return t;
}

km_tensor *km_tdict_add(km_tdict *d, const char *name, km_dtype dt, int ndim,
                        const int64_t *shape, const void *data) {
    if (km_tdict_find(d, name)) return NULL;
    size_t nb = (size_t)km_numel(ndim, shape) * km_dtype_size(dt);
    void *buf = km_malloc(nb);
    if (data) memcpy(buf, data, nb);
    else memset(buf, 0, nb);
    return km_tdict_add_owned(d, name, dt, ndim, shape, buf);
}

void km_tdict_set_meta(km_tdict *d, const char *key, const char *value) {
    for (int i = 0; i < d->nmeta; i++)
        if (strcmp(d->meta[i].key, key) == 0) {
            km_free(d->meta[i].value);
            d->meta[i].value = km_strdup(value);
            return;
        }
    if (d->nmeta == d->capmeta) {
        int cap = d->capmeta ? d->capmeta * 2 : 16;
        km_meta *m = km_malloc(sizeof *m * cap);
        if (d->nmeta) memcpy(m, d->meta, sizeof *m * d->nmeta);
        km_free(d->meta);
        d->meta = m;
        d->capmeta = cap;
    }
    d->meta[d->nmeta].key = km_strdup(key);
    d->meta[d->nmeta].value = km_strdup(value);
    d->nmeta++;
}

const char *km_tdict_get_meta(const km_tdict *d, const char *key) {
    for (int i = 0; i < d->nmeta; i++)
        if (strcmp(d->meta[i].key, key) == 0) return d->meta[i].value;
    return NULL;
}

km_status km_tdict_get_f32(const km_tdict *d, const char *file, const char *name, int ndim,
                           const int64_t *shape, const float **out) {
    char a[128], b[128];
    km_tensor *t = km_tdict_find(d, name);
    if (!t) return km_err(KM_EMISSING, "%s: missing tensor '%s' (expected shape %s)", file, name,
                          km_shape_str(a, sizeof a, ndim, shape));
    if (t->dtype != KM_F32)
        return km_err(KM_EFORMAT, "%s: tensor '%s' has dtype %s, expected float32", file, name,
                      km_dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok)
        return km_err(KM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", file, name,
                      km_shape_str(a, sizeof a, t->ndim, t->shape),
                      km_shape_str(b, sizeof b, ndim, shape));
    *out = t->data;
    return KM_OK;
}

float km_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float km_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void km_tdict_to_f32(km_tdict *d) {
    for (int i = 0; i < d->n; i++) {
        km_tensor *t = &d->items[i];
        if (t->dtype != KM_F16 && t->dtype != KM_BF16 && t->dtype != KM_F64) continue;
        int64_t n = km_numel(t->ndim, t->shape);
        float *f = km_malloc((size_t)n * 4);
        for (int64_t j = 0; j < n; j++) {
            if (t->dtype == KM_F16) f[j] = km_f16_to_f32(((uint16_t *)t->data)[j]);
            else if (t->dtype == KM_BF16) f[j] = km_bf16_to_f32(((uint16_t *)t->data)[j]);
            else f[j] = (float)((double *)t->data)[j];
        }
        km_free(t->data);
        t->data = f;
        t->dtype = KM_F32;
        t->nbytes = (size_t)n * 4;
    }
}

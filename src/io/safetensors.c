/* safetensors.c - reader/writer for the safetensors format
 * (https://github.com/huggingface/safetensors, "Format" in its README).
 *
 * Validation follows the reference implementation's Metadata::validate:
 * tensors sorted by data_offsets must tile [0, buffer length) exactly, back to
 * back, and each byte range must equal numel * dtype size. */
#include "safetensors.h"

#include "json.h"

#include "mapfile.h"

#include <string.h>

/* The reference implementation's limit on the JSON header. */
#define MAX_HEADER ((uint64_t)100000000)

static const struct {
    const char *name;
    km_dtype dt;
} k_dtypes[] = {
    {"F32", KM_F32}, {"F16", KM_F16}, {"BF16", KM_BF16}, {"F64", KM_F64}, {"I64", KM_I64},
    {"I32", KM_I32}, {"I16", KM_I16}, {"I8", KM_I8},     {"U8", KM_U8},   {"BOOL", KM_BOOL},
};

static const char *st_dtype_name(km_dtype dt) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (k_dtypes[i].dt == dt) return k_dtypes[i].name;
    return NULL;
}

typedef struct {
    const char *name; /* points into the JSON tree */
    km_dtype dt;
    int ndim;
    int64_t shape[KM_MAXDIM];
    uint64_t begin, end;
    int index; /* header order, for a stable sort */
} entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

static km_status parse_entry(const char *file, const km_json *key, const km_json *v, entry *e) {
    const char *nm = key->str;
    if (v->type != KM_JSON_OBJ)
        return km_err(KM_EFORMAT, "%s: tensor '%s': header entry is a %s, expected an object", file,
                      nm, km_json_type_name(v->type));
    for (int i = 0; i < v->n; i++) {
        const char *k = v->keys[i].str;
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return km_err(KM_EFORMAT, "%s: tensor '%s': unknown header field '%s'", file, nm, k);
    }
    const km_json *dt = km_json_get(v, "dtype"), *sh = km_json_get(v, "shape"),
                  *off = km_json_get(v, "data_offsets");
    if (!dt || dt->type != KM_JSON_STR)
        return km_err(KM_EFORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", file, nm);
    int found = 0;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0] && !found; i++)
        if (!strcmp(dt->str, k_dtypes[i].name)) {
            e->dt = k_dtypes[i].dt;
            found = 1;
        }
    if (!found)
        return km_err(KM_EFORMAT, "%s: tensor '%s': unsupported dtype \"%.16s\" (kmseg reads F32, F16, "
                                  "BF16, F64, I64, I32, I16, I8, U8, BOOL)", file, nm, dt->str);
    if (!sh || sh->type != KM_JSON_ARR)
        return km_err(KM_EFORMAT, "%s: tensor '%s': missing or non-array \"shape\"", file, nm);
    if (sh->n > KM_MAXDIM)
        return km_err(KM_EFORMAT, "%s: tensor '%s': %d dimensions, at most %d supported", file, nm,
                      sh->n, KM_MAXDIM);
    e->ndim = sh->n;
    int64_t numel = 1;
    for (int d = 0; d < sh->n; d++) {
        const km_json *x = &sh->items[d];
        if (x->type != KM_JSON_NUM || !x->is_int || x->i < 0)
            return km_err(KM_EFORMAT, "%s: tensor '%s': shape entries must be non-negative integers",
                          file, nm);
        e->shape[d] = x->i;
        if (__builtin_mul_overflow(numel, x->i, &numel))
            return km_err(KM_EFORMAT, "%s: tensor '%s': shape overflows", file, nm);
    }
    if (!off || off->type != KM_JSON_ARR || off->n != 2)
        return km_err(KM_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", file, nm);
    for (int k = 0; k < 2; k++)
        if (off->items[k].type != KM_JSON_NUM || !off->items[k].is_int || off->items[k].i < 0)
            return km_err(KM_EFORMAT, "%s: tensor '%s': data_offsets must be non-negative integers",
                          file, nm);
    e->begin = (uint64_t)off->items[0].i;
    e->end = (uint64_t)off->items[1].i;
    int64_t nb;
    if (__builtin_mul_overflow(numel, (int64_t)km_dtype_size(e->dt), &nb))
        return km_err(KM_EFORMAT, "%s: tensor '%s': shape overflows", file, nm);
    char sb[160];
    if (e->end < e->begin || e->end - e->begin != (uint64_t)nb)
        return km_err(KM_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold %lld bytes, but "
                                  "%s %s needs %lld", file, nm, (unsigned long long)e->begin,
                      (unsigned long long)e->end,
                      (long long)(e->end >= e->begin ? (int64_t)(e->end - e->begin) : -1),
                      dt->str, km_shape_str(sb, sizeof sb, e->ndim, e->shape), (long long)nb);
    return KM_OK;
}

km_status km_safetensors_load_mem(const char *name, const uint8_t *buf, size_t n, km_tdict *out) {
    km_tdict_init(out);
    if (n < 8) return km_err(KM_EFORMAT, "%s: truncated safetensors file (%zu bytes)", name, n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    if (hl > n - 8)
        return km_err(KM_EFORMAT, "%s: safetensors header length %llu exceeds the %zu-byte file "
                                  "(truncated, or not a safetensors file)", name,
                      (unsigned long long)hl, n);
    if (hl > MAX_HEADER)
        return km_err(KM_EFORMAT, "%s: safetensors header length %llu exceeds the 100 MB limit",
                      name, (unsigned long long)hl);
    if (hl < 2 || buf[8] != '{')
        return km_err(KM_EFORMAT, "%s: safetensors header does not start with '{'", name);
    km_json j;
    km_status s = km_json_parse(name, (const char *)buf + 8, (size_t)hl, &j);
    if (s) return s;
    const uint8_t *data = buf + 8 + hl;
    uint64_t dlen = n - 8 - hl;
    entry *es = NULL;
    int ne = 0;
    if (j.type != KM_JSON_OBJ) {
        s = km_err(KM_EFORMAT, "%s: safetensors header is a JSON %s, expected an object", name,
                   km_json_type_name(j.type));
        goto done;
    }
    es = km_malloc(sizeof *es * (size_t)(j.n ? j.n : 1));
    for (int i = 0; i < j.n; i++) {
        const km_json *k = &j.keys[i], *v = &j.items[i];
        if (strlen(k->str) != k->len) {
            s = km_err(KM_EFORMAT, "%s: header key contains a NUL character", name);
            goto done;
        }
        for (int p = 0; p < i; p++)
            if (!strcmp(j.keys[p].str, k->str)) {
                s = km_err(KM_EFORMAT, "%s: header key '%s' appears twice", name, k->str);
                goto done;
            }
        if (!strcmp(k->str, "__metadata__")) {
            if (v->type != KM_JSON_OBJ) {
                s = km_err(KM_EFORMAT, "%s: __metadata__ is a %s, expected an object of strings",
                           name, km_json_type_name(v->type));
                goto done;
            }
            for (int m = 0; m < v->n; m++) {
                const km_json *mk = &v->keys[m], *mv = &v->items[m];
                if (mv->type != KM_JSON_STR || strlen(mv->str) != mv->len ||
                    strlen(mk->str) != mk->len) {
                    s = km_err(KM_EFORMAT, "%s: __metadata__ entry '%s' is not a string", name,
                               mk->str);
                    goto done;
                }
                km_tdict_set_meta(out, mk->str, mv->str);
            }
            continue;
        }
        entry *e = &es[ne];
        memset(e, 0, sizeof *e);
        e->name = k->str;
        e->index = ne;
        if ((s = parse_entry(name, k, v, e))) goto done;
        ne++;
    }
    qsort(es, (size_t)ne, sizeof *es, cmp_entry);
    uint64_t pos = 0;
    for (int i = 0; i < ne; i++) {
        if (es[i].begin != pos) {
            s = km_err(KM_EFORMAT, "%s: tensor '%s': data starts at byte %llu, expected %llu (the "
                                   "tensors must tile the data buffer without gaps or overlap)",
                       name, es[i].name, (unsigned long long)es[i].begin, (unsigned long long)pos);
            goto done;
        }
        pos = es[i].end;
        if (pos > dlen) {
            s = km_err(KM_EFORMAT, "%s: tensor '%s': data ends at byte %llu, past the %llu-byte data "
                                   "buffer (truncated?)", name, es[i].name,
                       (unsigned long long)pos, (unsigned long long)dlen);
            goto done;
        }
    }
    if (pos != dlen) {
        s = km_err(KM_EFORMAT, "%s: the tensors cover %llu bytes of the %llu-byte data buffer", name,
                   (unsigned long long)pos, (unsigned long long)dlen);
        goto done;
    }
    for (int i = 0; i < ne; i++) {
        size_t nb = (size_t)(es[i].end - es[i].begin);
        void *p = km_try_malloc(nb);
        if (!p) {
            s = km_err(KM_ENOMEM, "%s: tensor '%s': cannot allocate %zu bytes", name, es[i].name, nb);
            goto done;
        }
        memcpy(p, data + es[i].begin, nb);
        km_tdict_add_owned(out, es[i].name, es[i].dt, es[i].ndim, es[i].shape, p);
    }
done:
    km_free(es);
    km_json_free(&j);
    if (s) km_tdict_free(out);
    return s;
}

km_status km_safetensors_load(const char *path, km_tdict *out) {
    km_mapped m;
    km_tdict_init(out);
    km_status s = km_map_file(path, &m);
    if (s) return s;
    s = km_safetensors_load_mem(path, m.data, m.n, out);
    km_unmap_file(&m);
    return s;
}

km_status km_safetensors_save(const char *path, const km_tdict *d) {
    for (int i = 0; i < d->n; i++) {
        if (!st_dtype_name(d->items[i].dtype))
            return km_err(KM_EARG, "%s: tensor '%s' has dtype %s, which safetensors cannot hold",
                          path, d->items[i].name, km_dtype_name(d->items[i].dtype));
        if (!strcmp(d->items[i].name, "__metadata__"))
            return km_err(KM_EARG, "%s: a tensor may not be called __metadata__", path);
    }
    /* Header JSON, then space padding so that the data starts 8-byte aligned
     * (as the reference writer does); tensors follow back to back in dict
     * order. */
    char *hdr = NULL;
    size_t hn = 0;
    FILE *m = open_memstream(&hdr, &hn);
    if (!m) return km_err(KM_ENOMEM, "%s: cannot build the header", path);
    fputc('{', m);
    int first = 1;
    if (d->nmeta) {
        fputs("\"__metadata__\":{", m);
        for (int i = 0; i < d->nmeta; i++) {
            if (i) fputc(',', m);
            km_json_fput_str(m, d->meta[i].key);
            fputc(':', m);
            km_json_fput_str(m, d->meta[i].value);
        }
        fputc('}', m);
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < d->n; i++) {
        const km_tensor *t = &d->items[i];
        size_t nb = (size_t)km_numel(t->ndim, t->shape) * km_dtype_size(t->dtype);
        KM_ASSERT(nb == t->nbytes);
        if (!first) fputc(',', m);
        first = 0;
        km_json_fput_str(m, t->name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) fprintf(m, "%s%lld", k ? "," : "", (long long)t->shape[k]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                (unsigned long long)(off + nb));
        off += nb;
    }
    fputc('}', m);
    while ((8 + ftell(m)) % 8) fputc(' ', m);
    if (fclose(m) != 0) {
        free(hdr);
        return km_err(KM_ENOMEM, "%s: cannot build the header", path);
    }
    km_atomic_file af;
    km_status s = km_atomic_open(&af, path);
    if (s) {
        free(hdr);
        return s;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    int ok = fwrite(len8, 1, 8, af.f) == 8 && fwrite(hdr, 1, hn, af.f) == hn;
    for (int i = 0; ok && i < d->n; i++)
        ok = d->items[i].nbytes == 0 ||
             fwrite(d->items[i].data, 1, d->items[i].nbytes, af.f) == d->items[i].nbytes;
    free(hdr);
    if (!ok) {
        km_atomic_abort(&af);
        return km_err(KM_EIO, "%s: write failed", path);
    }
    return km_atomic_commit(&af);
}

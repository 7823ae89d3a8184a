/* pth.c - torch.save checkpoints: zip (torch >= 1.6) and legacy pickle stream.
 *
 * Both containers hold the same pickled object (see pickle.h); they differ in
 * where storage bytes live: zip entry <root>/data/<key>, or, in the legacy
 * stream, after the pickles, one (int64 numel, raw bytes) record per key in the
 * order of the pickled key list (torch/serialization.py _legacy_save). */
#include "pth.h"

#include "pickle.h"
#include "zip.h"

#include "mapfile.h"

#include <string.h>

/* The legacy stream's first pickle is this magic number (LONG1, 10 bytes),
 * then protocol version 1001. */
static const uint8_t k_legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                           0x20, 0x6a, 0xa8, 0x50, 0x19};
#define LEGACY_PROTOCOL 1001
#define MAX_NEST 32

typedef struct {
    char *name;
    const km_pk_tensor *t;
} named_tensor;

typedef struct {
    const char *file;
    named_tensor *v;
    int n, cap;
} tensor_list;

/* A storage key resolved to its bytes. */
typedef struct {
    const char *key;
    km_dtype dtype;
    int64_t numel;
    const uint8_t *data;
    size_t nbytes;
} storage_bytes;

static void list_free(tensor_list *l) {
    for (int i = 0; i < l->n; i++) km_free(l->v[i].name);
    km_free(l->v);
    memset(l, 0, sizeof *l);
}

static void list_add(tensor_list *l, char *name, const km_pk_tensor *t) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        named_tensor *v = km_malloc(sizeof *v * cap);
        if (l->n) memcpy(v, l->v, sizeof *v * l->n);
        km_free(l->v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].name = name;
    l->v[l->n].t = t;
    l->n++;
}

static char *join(const char *prefix, const char *key) {
    size_t a = strlen(prefix), b = strlen(key);
    char *s = km_malloc(a + b + 2);
    memcpy(s, prefix, a);
    if (a) s[a++] = '.';
    memcpy(s + a, key, b + 1);
    return s;
}

/* Collects the tensors of a (nested) dict; non-tensor leaves (epoch numbers,
 * hyper-parameters, lists) are skipped. */
static km_status collect(tensor_list *l, const km_pk *d, const char *prefix, int depth) {
    if (depth > MAX_NEST)
        return km_err(KM_EFORMAT, "%s: dicts nested more than %d deep at '%s'", l->file, MAX_NEST,
                      prefix);
    for (size_t i = 0; i + 1 < d->n; i += 2) {
        const km_pk *k = d->items[i], *val = d->items[i + 1];
        if (val->type != KM_PK_TENSOR && val->type != KM_PK_DICT) continue;
        if (k->type != KM_PK_STR)
            return km_err(KM_EFORMAT, "%s: dict key of type %s where a tensor name was expected "
                                      "(under '%s')", l->file, km_pk_type_name(k->type), prefix);
        if (strlen(k->s) != k->n)
            return km_err(KM_EFORMAT, "%s: tensor name contains a NUL byte (under '%s')", l->file,
                          prefix);
        char *name = join(prefix, k->s);
        if (val->type == KM_PK_TENSOR) {
            list_add(l, name, val->t);
        } else {
            km_status s = collect(l, val, name, depth + 1);
            km_free(name);
            if (s) return s;
        }
    }
    return KM_OK;
}

static km_status collect_top(tensor_list *l, const km_pk *obj) {
    if (obj->type != KM_PK_DICT)
        return km_err(KM_EFORMAT, "%s: the pickled object is a %s, expected a dict of tensors (a "
                                  "state_dict)", l->file, km_pk_type_name(obj->type));
    if (obj->n == 2 && obj->items[0]->type == KM_PK_STR && obj->items[1]->type == KM_PK_DICT &&
        (!strcmp(obj->items[0]->s, "state_dict") || !strcmp(obj->items[0]->s, "model")))
        obj = obj->items[1];
    return collect(l, obj, "", 0);
}

static int mul_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static int add_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* Copies one tensor out of its storage bytes into a new contiguous buffer. */
static km_status materialise(const char *file, size_t file_bytes, const char *name,
                             const km_pk_tensor *t, const storage_bytes *sb, km_tdict *out) {
    const km_pk_storage *st = t->storage->st;
    size_t es = km_dtype_size(st->dtype);
    char sh[160];
    km_shape_str(sh, sizeof sh, t->ndim, t->shape);
    int64_t numel = 1, last = 0, tmp;
    for (int d = 0; d < t->ndim; d++)
        if (!mul_ok(numel, t->shape[d], &numel))
            return km_err(KM_EFORMAT, "%s: tensor '%s': shape %s overflows", file, name, sh);
    if (numel > 0) {
        /* Highest element index touched: offset + sum (size_d - 1) * stride_d. */
        last = t->offset;
        for (int d = 0; d < t->ndim; d++)
            if (!mul_ok(t->shape[d] - 1, t->stride[d], &tmp) || !add_ok(last, tmp, &last))
                return km_err(KM_EFORMAT, "%s: tensor '%s': strides overflow", file, name);
        if (last >= st->view_numel)
            return km_err(KM_EFORMAT, "%s: tensor '%s' (shape %s, storage offset %lld) reaches "
                                      "element %lld of a storage of %lld elements", file, name, sh,
                          (long long)t->offset, (long long)last, (long long)st->view_numel);
    }
    int64_t nbytes64;
    if (!mul_ok(numel, (int64_t)es, &nbytes64))
        return km_err(KM_EFORMAT, "%s: tensor '%s': shape %s overflows", file, name, sh);
    /* A stride-0 (expanded) tensor can be far larger than the file; cap how
     * much a file may make us allocate. */
    if ((uint64_t)nbytes64 > 64 * (uint64_t)file_bytes + (1u << 20))
        return km_err(KM_ENOMEM, "%s: tensor '%s' (shape %s) would take %lld bytes from a %zu-byte "
                                 "file", file, name, sh, (long long)nbytes64, file_bytes);
    size_t nb = (size_t)nbytes64;
    uint8_t *dst = km_try_malloc(nb);
    if (!dst)
        return km_err(KM_ENOMEM, "%s: tensor '%s': cannot allocate %zu bytes", file, name, nb);
    const uint8_t *src = sb->data + (size_t)(st->view_offset + t->offset) * es;
    int contiguous = 1;
    int64_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != want) contiguous = 0;
        want *= t->shape[d];
    }
    if (numel == 0) {
    } else if (contiguous) {
        memcpy(dst, src, nb);
    } else {
        /* Odometer over all but the innermost dimension. */
        int nd = t->ndim;
        int64_t idx[KM_MAXDIM] = {0}, inner = t->shape[nd - 1], is = t->stride[nd - 1];
        uint8_t *o = dst;
        for (;;) {
            int64_t base = 0;
            for (int d = 0; d < nd - 1; d++) base += idx[d] * t->stride[d];
            const uint8_t *s = src + (size_t)base * es;
            if (es == 4)
                for (int64_t i = 0; i < inner; i++, o += 4) memcpy(o, s + (size_t)(i * is) * 4, 4);
            else
                for (int64_t i = 0; i < inner; i++, o += es) memcpy(o, s + (size_t)(i * is) * es, es);
            int d = nd - 2;
            while (d >= 0 && ++idx[d] == t->shape[d]) idx[d--] = 0;
            if (d < 0) break;
        }
    }
    if (!km_tdict_add_owned(out, name, st->dtype, t->ndim, t->shape, dst)) {
        km_free(dst);
        return km_err(KM_EFORMAT, "%s: tensor '%s' appears twice", file, name);
    }
    return KM_OK;
}

/* Checks the storage's declared size against its bytes. */
static km_status check_storage(const char *file, const char *name, const km_pk_storage *st,
                               size_t nbytes) {
    int64_t need;
    if (!mul_ok(st->numel, (int64_t)km_dtype_size(st->dtype), &need) || (uint64_t)need != nbytes)
        return km_err(KM_EFORMAT, "%s: tensor '%s': storage '%s' has %zu bytes, expected %lld "
                                  "elements of %s", file, name, st->key, nbytes,
                      (long long)st->numel, km_dtype_name(st->dtype));
    return KM_OK;
}

/* ---- zip container -------------------------------------------------------- */

static km_status load_zip(const char *file, const uint8_t *buf, size_t n, km_tdict *out) {
    km_zip z;
    km_status s = km_zip_open(&z, file, buf, n);
    if (s) return s;
    /* Torch names every entry "<root>/..."; <root> varies (file stem,
     * "archive"), so find data.pkl by suffix and take its folder. */
    const km_zip_entry *pk = NULL;
    for (int i = 0; i < z.n && !pk; i++) {
        size_t len = strlen(z.entries[i].name);
        const char *nm = z.entries[i].name;
        if ((len == 8 && !strcmp(nm, "data.pkl")) ||
            (len > 9 && !strcmp(nm + len - 9, "/data.pkl") && !memchr(nm, '/', len - 9)))
            pk = &z.entries[i];
    }
    if (!pk) {
        km_zip_close(&z);
        return km_err(KM_EFORMAT, "%s: zip archive has no <root>/data.pkl entry - not a torch.save "
                                  "checkpoint", file);
    }
    size_t rootlen = strlen(pk->name) - 8;
    char *root = km_malloc(rootlen + 1);
    memcpy(root, pk->name, rootlen);
    root[rootlen] = 0;
    uint8_t *verified = km_calloc((size_t)z.n);
    char *pname = NULL, *ename = NULL;
    km_pk_arena arena = {0};
    tensor_list l = {file, NULL, 0, 0};
    const uint8_t *pbuf;
    size_t pn;
    km_pk *obj;

    /* byteorder (torch >= 1.10): storages are in this order. */
    size_t enlen = rootlen + 64;
    ename = km_malloc(enlen);
    snprintf(ename, enlen, "%sbyteorder", root);
    const km_zip_entry *bo = km_zip_find(&z, ename);
    if (bo) {
        const uint8_t *bd;
        size_t bn;
        if ((s = km_zip_data(&z, bo, &bd, &bn))) goto done;
        if (!(bn == 6 && !memcmp(bd, "little", 6))) {
            s = km_err(KM_EFORMAT, "%s: storages are not little-endian (%s)", file, ename);
            goto done;
        }
    }
    if ((s = km_zip_data(&z, pk, &pbuf, &pn))) goto done;
    size_t pnl = strlen(file) + strlen(pk->name) + 4;
    pname = km_malloc(pnl);
    snprintf(pname, pnl, "%s: %s", file, pk->name);
    if ((s = km_pickle_load(pname, pbuf, pn, &arena, &obj, NULL))) goto done;
    if ((s = collect_top(&l, obj))) goto done;
    for (int i = 0; i < l.n; i++) {
        const km_pk_storage *st = l.v[i].t->storage->st;
        size_t need = rootlen + 6 + strlen(st->key) + 1;
        if (need > enlen) {
            km_free(ename);
            enlen = need;
            ename = km_malloc(enlen);
        }
        snprintf(ename, enlen, "%sdata/%s", root, st->key);
        const km_zip_entry *e = km_zip_find(&z, ename);
        if (!e) {
            s = km_err(KM_EFORMAT, "%s: tensor '%s': storage entry '%s' is missing from the archive",
                       file, l.v[i].name, ename);
            goto done;
        }
        storage_bytes sb = {st->key, st->dtype, st->numel, e->data, (size_t)e->size};
        size_t ei = (size_t)(e - z.entries);
        if (!verified[ei]) {
            if ((s = km_zip_data(&z, e, &sb.data, &sb.nbytes))) goto done;
            verified[ei] = 1;
        } else if (e->method != 0) {
            s = km_zip_data(&z, e, &sb.data, &sb.nbytes);
            goto done;
        }
        if ((s = check_storage(file, l.v[i].name, st, sb.nbytes))) goto done;
        if ((s = materialise(file, n, l.v[i].name, l.v[i].t, &sb, out))) goto done;
    }
done:
    list_free(&l);
    km_pk_arena_free(&arena);
    km_free(verified);
    km_free(root);
    km_free(pname);
    km_free(ename);
    km_zip_close(&z);
    return s;
}

/* ---- legacy pickle stream ---------------------------------------------- */

static int is_legacy(const uint8_t *buf, size_t n) {
    return n >= 14 && buf[0] == 0x80 && buf[1] == 0x02 && buf[2] == 0x8a && buf[3] == 10 &&
           !memcmp(buf + 4, k_legacy_magic, 10);
}

static km_status load_legacy(const char *file, const uint8_t *buf, size_t n, km_tdict *out) {
    km_pk_arena arena = {0};
    tensor_list l = {file, NULL, 0, 0};
    storage_bytes *tab = NULL;
    int ntab = 0;
    size_t pos = 0, used;
    km_pk *magic, *proto, *info, *obj, *keys;
    km_status s;
    if ((s = km_pickle_load(file, buf, n, &arena, &magic, &used))) goto done;
    pos += used;
    if (magic->type != KM_PK_BIGINT || magic->n != 10 || memcmp(magic->s, k_legacy_magic, 10)) {
        s = km_err(KM_EFORMAT, "%s: legacy checkpoint: bad magic number", file);
        goto done;
    }
    if ((s = km_pickle_load(file, buf + pos, n - pos, &arena, &proto, &used))) goto done;
    pos += used;
    if (proto->type != KM_PK_INT || proto->i != LEGACY_PROTOCOL) {
        s = km_err(KM_EFORMAT, "%s: legacy checkpoint: protocol version is not %d", file,
                   LEGACY_PROTOCOL);
        goto done;
    }
    if ((s = km_pickle_load(file, buf + pos, n - pos, &arena, &info, &used))) goto done;
    pos += used;
    if (info->type != KM_PK_DICT) {
        s = km_err(KM_EFORMAT, "%s: legacy checkpoint: sys_info is not a dict", file);
        goto done;
    }
    for (size_t i = 0; i + 1 < info->n; i += 2)
        if (info->items[i]->type == KM_PK_STR && !strcmp(info->items[i]->s, "little_endian") &&
            !(info->items[i + 1]->type == KM_PK_BOOL && info->items[i + 1]->i == 1)) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint was written on a big-endian machine", file);
            goto done;
        }
    if ((s = km_pickle_load(file, buf + pos, n - pos, &arena, &obj, &used))) goto done;
    pos += used;
    if ((s = km_pickle_load(file, buf + pos, n - pos, &arena, &keys, &used))) goto done;
    pos += used;
    if (keys->type != KM_PK_LIST) {
        s = km_err(KM_EFORMAT, "%s: legacy checkpoint: storage key list is a %s, expected a list",
                   file, km_pk_type_name(keys->type));
        goto done;
    }
    if ((s = collect_top(&l, obj))) goto done;

    /* One table entry per distinct storage key used by a tensor. */
    tab = km_malloc(sizeof *tab * (size_t)(l.n ? l.n : 1));
    for (int i = 0; i < l.n; i++) {
        const km_pk_storage *st = l.v[i].t->storage->st;
        int j = 0;
        while (j < ntab && strcmp(tab[j].key, st->key)) j++;
        if (j == ntab) {
            tab[ntab++] = (storage_bytes){st->key, st->dtype, st->numel, NULL, 0};
        } else if (tab[j].dtype != st->dtype || tab[j].numel != st->numel) {
            s = km_err(KM_EFORMAT, "%s: tensor '%s': storage '%s' declared with two different "
                                   "types or sizes", file, l.v[i].name, st->key);
            goto done;
        }
    }
    /* Raw storages follow in key-list order: int64 numel, then the bytes. */
    for (size_t k = 0; k < keys->n; k++) {
        const km_pk *key = keys->items[k];
        if (key->type != KM_PK_STR) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint: storage key %zu is not a string", file, k);
            goto done;
        }
        int j = 0;
        while (j < ntab && strcmp(tab[j].key, key->s)) j++;
        if (j == ntab) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint: storage '%s' is not used by any tensor, "
                                   "so its element size is unknown", file, key->s);
            goto done;
        }
        if (tab[j].data) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint: storage '%s' listed twice", file, key->s);
            goto done;
        }
        if (n - pos < 8) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint truncated at storage '%s' (offset %zu)",
                       file, key->s, pos);
            goto done;
        }
        int64_t cnt = 0;
        for (int b = 7; b >= 0; b--) cnt = (int64_t)((uint64_t)cnt << 8 | buf[pos + b]);
        pos += 8;
        if (cnt != tab[j].numel) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint: storage '%s' has %lld elements on disk, "
                                   "the pickle says %lld", file, key->s, (long long)cnt,
                       (long long)tab[j].numel);
            goto done;
        }
        size_t es = km_dtype_size(tab[j].dtype);
        if ((uint64_t)cnt > (n - pos) / es) {
            s = km_err(KM_EFORMAT, "%s: legacy checkpoint truncated inside storage '%s' (%lld "
                                   "elements of %s at offset %zu, file %zu bytes)", file, key->s,
                       (long long)cnt, km_dtype_name(tab[j].dtype), pos, n);
            goto done;
        }
        tab[j].data = buf + pos;
        tab[j].nbytes = (size_t)cnt * es;
        pos += tab[j].nbytes;
    }
    for (int i = 0; i < l.n; i++) {
        const km_pk_storage *st = l.v[i].t->storage->st;
        int j = 0;
        while (strcmp(tab[j].key, st->key)) j++;
        if (!tab[j].data) {
            s = km_err(KM_EFORMAT, "%s: tensor '%s': storage '%s' is not in the key list", file,
                       l.v[i].name, st->key);
            goto done;
        }
        if ((s = materialise(file, n, l.v[i].name, l.v[i].t, &tab[j], out))) goto done;
    }
done:
    km_free(tab);
    list_free(&l);
    km_pk_arena_free(&arena);
    return s;
}

km_status km_pth_load_mem_raw(const char *name, const uint8_t *buf, size_t n, km_tdict *out) {
    km_tdict_init(out);
    km_status s;
    if (km_zip_sniff(buf, n)) s = load_zip(name, buf, n, out);
    else if (is_legacy(buf, n)) s = load_legacy(name, buf, n, out);
    else if (n >= 262 && !memcmp(buf + 257, "ustar", 5))
        return km_err(KM_EFORMAT, "%s: tar-format checkpoint (torch < 0.4 era) is not supported; "
                                  "re-save it with a current torch.save", name);
    else
        return km_err(KM_EFORMAT, "%s: not a PyTorch checkpoint: expected a zip archive (PK\\3\\4) "
                                  "or a legacy pickle stream (80 02 8a 0a ...), found %zu bytes "
                                  "starting %02x %02x %02x %02x", name, n, n > 0 ? buf[0] : 0,
                      n > 1 ? buf[1] : 0, n > 2 ? buf[2] : 0, n > 3 ? buf[3] : 0);
    if (s) km_tdict_free(out);
    return s;
}

km_status km_pth_load_mem(const char *name, const uint8_t *buf, size_t n, km_tdict *out) {
    km_status s = km_pth_load_mem_raw(name, buf, n, out);
    if (!s) km_tdict_to_f32(out);
    return s;
}

km_status km_pth_load_raw(const char *path, km_tdict *out) {
    km_mapped m;
    km_tdict_init(out);
    km_status s = km_map_file(path, &m);
    if (s) return s;
    s = km_pth_load_mem_raw(path, m.data, m.n, out);
    km_unmap_file(&m);
    return s;
}

km_status km_pth_load(const char *path, km_tdict *out) {
    km_status s = km_pth_load_raw(path, out);
    if (!s) km_tdict_to_f32(out);
    return s;
}

/* embcache.c - SAM image-embedding cache (see embcache.h). */
#include "embcache.h"
#include "../io/mapfile.h"
#include "../io/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EMB_FORMAT "kmseg-embedding-1"

/* Odd 64-bit constants with well-mixed bits (the usual golden-ratio family). */
static const uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full,
                      P3 = 0x165667B19E3779F9ull, P4 = 0x85EBCA77C2B2AE63ull;

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* A little-endian 64-bit word on any host (one load where the host is
 * little-endian; the byte loop is not folded into one by gcc -O2). */
static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&v, p, 8);
#else
    v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
#endif
    return v;
}

static uint64_t lane(uint64_t acc, uint64_t w) { return rotl(acc + w * P2, 31) * P1; }

static uint64_t avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* Four independent lanes over 32-byte stripes keep four multiplies in flight
 * (a byte-at-a-time FNV-1a is a ~1 GB/s dependency chain); the lanes are then
 * folded, the tail mixed in word by word and byte by byte, and the length
 * added so that inputs differing only by trailing zeros differ. */
uint64_t km_hash64(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = data;
    size_t i = 0;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        for (; i + 32 <= n; i += 32) {
            v1 = lane(v1, rd64(p + i));
            v2 = lane(v2, rd64(p + i + 8));
            v3 = lane(v3, rd64(p + i + 16));
            v4 = lane(v4, rd64(p + i + 24));
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = (h ^ lane(0, v1)) * P1 + P4;
        h = (h ^ lane(0, v2)) * P1 + P4;
        h = (h ^ lane(0, v3)) * P1 + P4;
        h = (h ^ lane(0, v4)) * P1 + P4;
    } else {
        h = seed + P3;
    }
    h += (uint64_t)n;
    for (; i + 8 <= n; i += 8) h = rotl(h ^ lane(0, rd64(p + i)), 27) * P1 + P4;
    for (; i < n; i++) h = rotl(h ^ (p[i] * P3), 11) * P1;
    return avalanche(h);
}

uint64_t km_hash_image(const uint8_t *px, int w, int h, int c) {
    KM_ASSERT(w > 0 && h > 0 && c > 0);
    uint64_t dims[3] = {(uint64_t)w, (uint64_t)h, (uint64_t)c};
    uint64_t seed = km_hash64(dims, sizeof dims, 0x696d616765ull /* "image" */);
    return km_hash64(px, (size_t)w * h * c, seed);
}

km_status km_checkpoint_fingerprint(const char *path, uint64_t *fp) {
    km_mapped m;
    km_status s = km_map_file(path, &m);
    if (s) return s;
    *fp = km_hash64(m.data, m.n, 0x636b7074ull /* "ckpt" */);
    km_unmap_file(&m);
    return KM_OK;
}

void km_embkey_make(km_embkey *k, uint64_t image_hash, uint64_t checkpoint_fp, const char *profile,
                    int image_w, int image_h) {
    KM_ASSERT(strlen(profile) < sizeof k->profile);
    memset(k, 0, sizeof *k);
    k->image = image_hash;
    k->checkpoint = checkpoint_fp;
    snprintf(k->profile, sizeof k->profile, "%s", profile);
    k->image_w = image_w;
    k->image_h = image_h;
    /* The format tag is part of the key: a change to what an entry means
     * (e.g. another input size) bumps EMB_FORMAT and orphans old entries. */
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s|%016" PRIx64 "|%016" PRIx64 "|%s|%dx%d", EMB_FORMAT,
                     image_hash, checkpoint_fp, profile, image_w, image_h);
    k->key = km_hash64(buf, (size_t)n, 0);
}

/* mkdir -p */
static km_status make_dirs(const char *dir) {
    char *p = km_strdup(dir);
    km_status s = KM_OK;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q) continue;
        char save = *q;
        *q = 0;
        if (mkdir(p, 0777) && errno != EEXIST)
            s = km_err(KM_EIO, "%s: cannot create the cache folder: %s", p, strerror(errno));
        *q = save;
        if (s || !save) break;
    }
    struct stat st;
    if (!s && (stat(dir, &st) || !S_ISDIR(st.st_mode)))
        s = km_err(KM_EIO, "%s: the cache path is not a folder", dir);
    km_free(p);
    return s;
}

km_status km_embcache_init(km_embcache *c, const char *dir, int D, int mem_capacity) {
    KM_ASSERT(D > 0 && mem_capacity >= 0);
    memset(c, 0, sizeof *c);
    if (dir) {
        km_status s = make_dirs(dir);
        if (s) return s;
        c->dir = km_strdup(dir);
    }
    c->D = D;
    c->capacity = mem_capacity;
    c->slots = km_calloc(sizeof(km_embcache_slot) * (size_t)(mem_capacity + 1));
    return KM_OK;
}

void km_embcache_free(km_embcache *c) {
    for (int i = 0; c->slots && i < c->capacity; i++) km_free(c->slots[i].emb);
    km_free(c->slots);
    km_free(c->dir);
    memset(c, 0, sizeof *c);
}

const char *km_embcache_path(const km_embcache *c, const km_embkey *k, char *buf, size_t n) {
    snprintf(buf, n, "%s/%016" PRIx64 ".safetensors", c->dir ? c->dir : ".", k->key);
    return buf;
}

const char *km_embcache_default_dir(char *buf, size_t n) {
    const char *e = getenv("KMSEG_CACHE");
    if (e && *e) snprintf(buf, n, "%s", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e) snprintf(buf, n, "%s/kmseg", e);
    else if ((e = getenv("HOME")) && *e) snprintf(buf, n, "%s/.cache/kmseg", e);
    else return NULL;
    return buf;
}

static size_t emb_numel(const km_embcache *c) { return (size_t)c->D * KM_EMB_HW * KM_EMB_HW; }

/* Puts emb into the memory front: the key's slot if present, else an empty
 * slot, else the least recently used one. */
static void mem_put(km_embcache *c, uint64_t key, const float *emb) {
    if (c->capacity == 0) return;
    int slot = -1;
    for (int i = 0; i < c->capacity && slot < 0; i++)
        if (c->slots[i].stamp && c->slots[i].key == key) slot = i;
    for (int i = 0; i < c->capacity && slot < 0; i++)
        if (!c->slots[i].stamp) slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < c->capacity; i++)
            if (c->slots[i].stamp < c->slots[slot].stamp) slot = i;
    }
    km_embcache_slot *e = &c->slots[slot];
    if (!e->emb) e->emb = km_malloc(sizeof(float) * emb_numel(c));
    memcpy(e->emb, emb, sizeof(float) * emb_numel(c));
    e->key = key;
    e->stamp = ++c->clock;
}

static char *hex64(char *b, uint64_t v) {
    snprintf(b, 17, "%016" PRIx64, v);
    return b;
}

/* Loads and checks one cache file; KM_OK only when everything matches. */
static km_status disk_load(km_embcache *c, const km_embkey *k, const char *path, float *out) {
    km_tdict d;
    km_tdict_init(&d);
    km_status s = km_safetensors_load(path, &d);
    char want[17], b[128];
    const char *fmt = s ? NULL : km_tdict_get_meta(&d, "format");
    const char *key = s ? NULL : km_tdict_get_meta(&d, "key");
    const km_tensor *t = s ? NULL : km_tdict_find(&d, "image_embedding");
    int64_t shape[4] = {1, c->D, KM_EMB_HW, KM_EMB_HW};
    if (s) {
        /* keep the reader's message */
    } else if (!fmt || strcmp(fmt, EMB_FORMAT)) {
        s = km_err(KM_EFORMAT, "%s: metadata format is '%s', expected '%s'", path,
                   fmt ? fmt : "(none)", EMB_FORMAT);
    } else if (!key || strcmp(key, hex64(want, k->key))) {
        s = km_err(KM_EFORMAT, "%s: metadata key is '%s', expected '%s'", path, key ? key : "(none)",
                   want);
    } else if (!t) {
        s = km_err(KM_EMISSING, "%s: no tensor 'image_embedding'", path);
    } else if (t->dtype != KM_F32 || t->ndim != 4 || memcmp(t->shape, shape, sizeof shape)) {
        char b2[128];
        s = km_err(KM_ESHAPE, "%s: image_embedding is %s %s, expected float32 %s", path,
                   km_dtype_name(t->dtype), km_shape_str(b, sizeof b, t->ndim, t->shape),
                   km_shape_str(b2, sizeof b2, 4, shape));
    } else {
        const float *v = t->data;
        size_t n = emb_numel(c), i = 0;
        while (i < n && isfinite(v[i])) i++;
        if (i < n)
            s = km_err(KM_EFORMAT, "%s: image_embedding holds a non-finite value at index %zu",
                       path, i);
        else memcpy(out, v, sizeof(float) * n);
    }
    km_tdict_free(&d);
    return s;
}

int km_embcache_lookup(km_embcache *c, const km_embkey *k, float *out) {
    for (int i = 0; i < c->capacity; i++) {
        km_embcache_slot *e = &c->slots[i];
        if (e->stamp && e->key == k->key) {
            memcpy(out, e->emb, sizeof(float) * emb_numel(c));
            e->stamp = ++c->clock;
            c->hits_mem++;
            return 1;
        }
    }
    if (c->dir) {
        char path[4096];
        km_embcache_path(c, k, path, sizeof path);
        if (access(path, F_OK) == 0) {
            if (disk_load(c, k, path, out) == KM_OK) {
                mem_put(c, k->key, out);
                c->hits_disk++;
                return 1;
            }
            /* Corrupt or foreign: never trusted, removed so that the insert
             * after the recomputation replaces it. */
            snprintf(c->last_problem, sizeof c->last_problem, "%s", km_errmsg());
            c->corrupt++;
            unlink(path);
        }
    }
    c->misses++;
    return 0;
}

km_status km_embcache_insert(km_embcache *c, const km_embkey *k, const float *emb) {
    mem_put(c, k->key, emb);
    if (!c->dir) return KM_OK;
    km_tdict d;
    km_tdict_init(&d);
    int64_t shape[4] = {1, c->D, KM_EMB_HW, KM_EMB_HW};
    km_tdict_add(&d, "image_embedding", KM_F32, 4, shape, emb);
    char b[32], path[4096];
    km_tdict_set_meta(&d, "format", EMB_FORMAT);
    km_tdict_set_meta(&d, "key", hex64(b, k->key));
    km_tdict_set_meta(&d, "image_hash", hex64(b, k->image));
    km_tdict_set_meta(&d, "checkpoint_fp", hex64(b, k->checkpoint));
    km_tdict_set_meta(&d, "profile", k->profile);
    snprintf(b, sizeof b, "%d", k->image_w);
    km_tdict_set_meta(&d, "image_w", b);
    snprintf(b, sizeof b, "%d", k->image_h);
    km_tdict_set_meta(&d, "image_h", b);
    km_status s = km_safetensors_save(km_embcache_path(c, k, path, sizeof path), &d);
    km_tdict_free(&d);
    if (s) {
        c->write_errors++;
        snprintf(c->last_problem, sizeof c->last_problem, "%s", km_errmsg());
    } else {
        c->writes++;
    }
    return s;
}

/* embcache.h - SAM image-embedding cache: the image encoder runs once per
 * (image, checkpoint, pre-processing profile), across commands and runs.
 *
 *   km_embkey k;
 *   km_checkpoint_fingerprint("sam_vit_b.pth", &fp);              // once per run
 *   km_embkey_make(&k, km_hash_image(px, w, h, c), fp, "sam", w, h);
 *   km_embcache c;  km_embcache_init(&c, "/home/u/.cache/kmseg", 256, 8);
 *   if (!km_embcache_lookup(&c, &k, emb)) {                        // emb [256, 64, 64]
 *       ... run the encoder into emb ...;
 *       km_embcache_insert(&c, &k, emb);
 *   }
 *   km_embcache_free(&c);
 *
 * Key (64 bits) = hash of a version tag, the image, the checkpoint and the
 * profile:
 *   image       km_hash_image: the DECODED pixels plus (w, h, c), so a PNG
 *               re-saved with other compression still hits, and a resized or
 *               edited image misses;
 *   checkpoint  km_checkpoint_fingerprint: the hash of EVERY byte of the file.
 *               Chosen over (size, mtime, first/last MB): a fine-tuned
 *               checkpoint has the same size and zip layout, and weights in the
 *               middle blocks can change with head and tail unchanged; a copied
 *               or renamed file keeps its content and still hits. The cost is
 *               one read of a file the loader reads anyway (page cache), at
 *               ~7 GB/s with the 4-lane hash below (measured here: 400 MB in
 *               0.06 s, so ~0.05 s for ViT-B's 375 MB, ~0.4 s for ViT-H);
 *   profile     the pre-processing name ("sam", "medsam"): MedSAM's min-max
 *               normalised 1024x1024 resize gives another encoder input.
 * The hash is a 4-lane multiply-rotate hash in the style of xxHash64 (own
 * implementation, not bit-compatible with it); collisions are further guarded
 * against by storing the full key in the file and checking it on load.
 *
 * Disk layout: <dir>/<16 hex digits of the key>.safetensors, written
 * atomically (temp file + rename; concurrent writers of the same key write the
 * same bytes), holding tensor "image_embedding" float32 (1, D, 64, 64) (the
 * reference's shape) and __metadata__ {format "kmseg-embedding-1", key,
 * image_hash, checkpoint_fp, profile, image_w, image_h}. A file whose header,
 * shape, dtype, key or values (non-finite) do not check out is counted as
 * corrupt, deleted and reported as a miss, so the caller recomputes it: a
 * cache file is never trusted blindly.
 *
 * In front of the disk sits an in-memory LRU of mem_capacity embeddings (4 MB
 * each) for the mining loop, which revisits the same images every round.
 * Not thread-safe: one cache per thread, or a lock around it. */
#ifndef KM_EMBCACHE_H
#define KM_EMBCACHE_H

#include "../core/km.h"

#define KM_EMB_HW 64 /* the embedding grid: [D, 64, 64] */

/* 64-bit hash of n bytes (any alignment), seeded. */
uint64_t km_hash64(const void *data, size_t n, uint64_t seed);
/* Hash of h x w x c interleaved uint8 pixels and the dimensions. */
uint64_t km_hash_image(const uint8_t *px, int w, int h, int c);
/* Hash of the whole content of a checkpoint file (mmap'ed); KM_EIO if it
 * cannot be read. */
km_status km_checkpoint_fingerprint(const char *path, uint64_t *fp);

typedef struct {
    uint64_t key;        /* combined: what the cache is indexed by */
    uint64_t image;      /* km_hash_image */
    uint64_t checkpoint; /* km_checkpoint_fingerprint */
    char profile[16];    /* "sam", "medsam" */
    int image_w, image_h;
} km_embkey;

void km_embkey_make(km_embkey *k, uint64_t image_hash, uint64_t checkpoint_fp, const char *profile,
                    int image_w, int image_h);

typedef struct {
    uint64_t key;
    uint64_t stamp; /* last use (LRU clock); 0 = empty slot */
    float *emb;     /* [D, 64, 64] */
} km_embcache_slot;

typedef struct {
    char *dir; /* NULL: memory only */
    int D;     /* embedding channels (256) */
    int capacity;
    km_embcache_slot *slots;
    uint64_t clock;
    /* counters since init */
    long hits_mem, hits_disk, misses, corrupt, writes, write_errors;
    char last_problem[512]; /* why the last corrupt file / failed write was rejected */
} km_embcache;

/* dir: cache folder (created, with parents, if missing), or NULL for a
 * memory-only cache. mem_capacity >= 0 embeddings kept in memory. */
km_status km_embcache_init(km_embcache *c, const char *dir, int D, int mem_capacity);
void km_embcache_free(km_embcache *c);

/* 1 and the embedding copied to out[D * 64 * 64] on a hit (memory, else
 * disk; a disk hit enters the memory front), 0 on a miss. A corrupt disk
 * entry is a miss (counted in `corrupt`, file deleted, reason in
 * last_problem). */
int km_embcache_lookup(km_embcache *c, const km_embkey *k, float *out);

/* Stores emb[D * 64 * 64] in memory and (if dir) on disk. A failed disk write
 * returns KM_EIO with a message but leaves the memory entry: callers may treat
 * it as a warning. */
km_status km_embcache_insert(km_embcache *c, const km_embkey *k, const float *emb);

/* Path of the cache file for key k in buf. */
const char *km_embcache_path(const km_embcache *c, const km_embkey *k, char *buf, size_t n);

/* The default cache folder: $KMSEG_CACHE, else $XDG_CACHE_HOME/kmseg, else
 * $HOME/.cache/kmseg; NULL when none of these is set. */
const char *km_embcache_default_dir(char *buf, size_t n);

#endif

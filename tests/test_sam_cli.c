/* test_sam_cli.c - the SAM embedding cache (mine/embcache.h) and `kmseg sam`
 * beyond the single-image fixture run of test_sam_decoder.c: cache hits and
 * misses across runs, corrupt cache files, --overlay, --profile medsam, batch
 * mode from CSV and JSON prompts, and every bad-input case of issue 4 through
 * the command line (non-zero exit plus a message naming the problem).
 *
 * Uses the sam_tiny fixture (tiny encoder, ~1.2 s per image on 2 threads);
 * the file encodes 7 images in all. */
#include "cli.h"
#include "test.h"
#include "../src/io/image.h"
#include "../src/io/npy.h"
#include "../src/mine/embcache.h"

#include <sys/stat.h>
#include <unistd.h>

#define FIX "fixtures/sam_tiny/"

/* A fresh subfolder of the runner's scratch folder. */
static const char *subdir(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", km_test_tmpdir(), name);
    mkdir(buf, 0777);
    return buf;
}

static void slurp(const char *path, char *buf, size_t n) {
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = 0;
    fclose(f);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    KM_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

/* Runs `kmseg sam ARGS`, stdout+stderr into log (NUL-terminated); returns the
 * exit status. */
static int run_sam(char *log, size_t n, const char *dir, const char *args) {
    char lp[1024];
    snprintf(lp, sizeof lp, "%s/log.txt", dir);
    int rc = km_test_sh("'%s' sam %s > '%s' 2>&1", km_test_bin(), args, lp);
    slurp(lp, log, n);
    return rc;
}

/* Whole-file byte equality. */
static int same_file(const char *a, const char *b) {
    uint8_t *x, *y;
    size_t nx, ny;
    if (km_read_file(a, 1 << 26, &x, &nx)) return 0;
    if (km_read_file(b, 1 << 26, &y, &ny)) {
        km_free(x);
        return 0;
    }
    int same = nx == ny && !memcmp(x, y, nx);
    km_free(x);
    km_free(y);
    return same;
}

KM_TEST(embcache_hash_and_key) {
    uint8_t a[100];
    for (int i = 0; i < 100; i++) a[i] = (uint8_t)(i * 7);
    uint64_t h = km_hash64(a, 100, 0);
    CHECK(h == km_hash64(a, 100, 0));
    CHECK(h != km_hash64(a, 100, 1));
    CHECK(h != km_hash64(a, 99, 0));
    /* every single-bit flip, in the 32-byte stripes and in the tail, changes it */
    int same = 0;
    for (int i = 0; i < 100 * 8; i++) {
        a[i / 8] ^= (uint8_t)(1 << (i % 8));
        same += km_hash64(a, 100, 0) == h;
        a[i / 8] ^= (uint8_t)(1 << (i % 8));
    }
    CHECK_MSG(same == 0, "%d of 800 bit flips kept the hash", same);
    /* the same bytes as another shape are another image */
    CHECK(km_hash_image(a, 10, 10, 1) != km_hash_image(a, 5, 20, 1));
    CHECK(km_hash_image(a, 10, 10, 1) != km_hash_image(a, 10, 5, 2));
    km_embkey k1, k2, k3, k4;
    km_embkey_make(&k1, 1, 2, "sam", 10, 10);
    km_embkey_make(&k2, 1, 2, "medsam", 10, 10);
    km_embkey_make(&k3, 1, 3, "sam", 10, 10);
    km_embkey_make(&k4, 1, 2, "sam", 10, 10);
    CHECK(k1.key != k2.key && k1.key != k3.key && k1.key == k4.key);
    /* the checkpoint fingerprint is of the content, not the name */
    char d[1024], p1[1100], p2[1100];
    subdir("hash", d, sizeof d);
    snprintf(p1, sizeof p1, "%s/a.bin", d);
    snprintf(p2, sizeof p2, "%s/b.bin", d);
    write_text(p1, "checkpoint bytes 0123456789012345678901234567890123456789");
    write_text(p2, "checkpoint bytes 0123456789012345678901234567890123456789");
    uint64_t f1 = 0, f2 = 1;
    CHECK_OK(km_checkpoint_fingerprint(p1, &f1));
    CHECK_OK(km_checkpoint_fingerprint(p2, &f2));
    CHECK(f1 == f2);
    write_text(p2, "checkpoint bytes 0123456789012345678901234567890123456788");
    CHECK_OK(km_checkpoint_fingerprint(p2, &f2));
    CHECK(f1 != f2);
    CHECK_ERR(km_checkpoint_fingerprint("/nonexistent/x.pth", &f1), KM_EIO, "/nonexistent/x.pth");
}

KM_TEST(embcache_lru_disk_and_corrupt_files) {
    const int D = 2;
    const size_t n = (size_t)D * KM_EMB_HW * KM_EMB_HW;
    float *e[3], *got = km_malloc(sizeof(float) * n);
    km_embkey k[3];
    for (int j = 0; j < 3; j++) {
        e[j] = km_malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) e[j][i] = (float)(j * 1000 + (int)(i % 977)) * 0.25f;
        km_embkey_make(&k[j], 100 + j, 7, "sam", 32, 16);
    }
    /* memory only, 2 slots: the least recently used one goes */
    km_embcache c;
    CHECK_OK(km_embcache_init(&c, NULL, D, 2));
    CHECK(km_embcache_lookup(&c, &k[0], got) == 0);
    km_embcache_insert(&c, &k[0], e[0]);
    km_embcache_insert(&c, &k[1], e[1]);
    CHECK(km_embcache_lookup(&c, &k[0], got) == 1); /* k0 now more recent than k1 */
    CHECK(!memcmp(got, e[0], sizeof(float) * n));
    km_embcache_insert(&c, &k[2], e[2]); /* evicts k1 */
    CHECK(km_embcache_lookup(&c, &k[1], got) == 0);
    CHECK(km_embcache_lookup(&c, &k[2], got) == 1 && !memcmp(got, e[2], sizeof(float) * n));
    CHECK(km_embcache_lookup(&c, &k[0], got) == 1);
    CHECK(c.hits_mem == 3 && c.hits_disk == 0 && c.misses == 2 && c.writes == 0);
    km_embcache_free(&c);

    /* disk: a second cache (a later run) reads what the first wrote */
    char d[1024], dir[1100], path[4096], path1[4096];
    subdir("embcache", d, sizeof d);
    snprintf(dir, sizeof dir, "%s/a/b", d); /* created with its parents */
    CHECK_OK(km_embcache_init(&c, dir, D, 0));
    CHECK_OK(km_embcache_insert(&c, &k[0], e[0]));
    CHECK_OK(km_embcache_insert(&c, &k[1], e[1]));
    CHECK(c.writes == 2);
    km_embcache_free(&c);
    CHECK_OK(km_embcache_init(&c, dir, D, 1));
    CHECK(km_embcache_lookup(&c, &k[0], got) == 1 && !memcmp(got, e[0], sizeof(float) * n));
    CHECK(km_embcache_lookup(&c, &k[0], got) == 1); /* now from memory */
    CHECK(km_embcache_lookup(&c, &k[2], got) == 0);
    CHECK(c.hits_disk == 1 && c.hits_mem == 1 && c.misses == 1 && c.corrupt == 0);
    km_embcache_free(&c);

    /* corrupt entries are misses, deleted, never returned */
    km_embcache_init(&c, dir, D, 0);
    km_embcache_path(&c, &k[0], path, sizeof path);
    km_embcache_path(&c, &k[1], path1, sizeof path1);
    /* (a) truncated */
    CHECK(truncate(path, 1000) == 0);
    CHECK(km_embcache_lookup(&c, &k[0], got) == 0);
    CHECK(c.corrupt == 1 && access(path, F_OK) != 0);
    /* (b) another key's file under this key's name */
    CHECK(rename(path1, path) == 0);
    CHECK(km_embcache_lookup(&c, &k[0], got) == 0);
    CHECK_MSG(c.corrupt == 2 && strstr(c.last_problem, "metadata key"), "%s", c.last_problem);
    km_embcache_free(&c);
    /* (c) the right key but another channel count: the shape check */
    km_embcache c3;
    km_embcache_init(&c3, dir, 3, 0);
    float *e3 = km_calloc(sizeof(float) * 3 * KM_EMB_HW * KM_EMB_HW);
    CHECK_OK(km_embcache_insert(&c3, &k[0], e3));
    km_embcache_free(&c3);
    km_embcache_init(&c, dir, D, 0);
    CHECK(km_embcache_lookup(&c, &k[0], got) == 0);
    CHECK_MSG(c.corrupt == 1 && strstr(c.last_problem, "expected float32 [1, 2, 64, 64]"), "%s",
              c.last_problem);
    /* (d) a NaN inside */
    e[0][1234] = NAN;
    CHECK_OK(km_embcache_insert(&c, &k[0], e[0]));
    CHECK(km_embcache_lookup(&c, &k[0], got) == 0);
    CHECK_MSG(c.corrupt == 2 && strstr(c.last_problem, "non-finite value at index 1234"), "%s",
              c.last_problem);
    km_embcache_free(&c);
    km_free(e3);
    for (int j = 0; j < 3; j++) km_free(e[j]);
    km_free(got);
}

/* Counters from the command's "embedding cache: ..." line. */
static int cache_counts(const char *log, long *hits, long *misses, long *corrupt) {
    const char *p = strstr(log, "embedding cache: ");
    long mem, disk, written;
    return p && sscanf(p, "embedding cache: %ld hit(s) (%ld memory, %ld disk), %ld miss(es), %ld "
                       "corrupt, %ld written", hits, &mem, &disk, misses, corrupt, &written) == 6;
}

KM_TEST(sam_cli_cache_across_runs_overlay_medsam) {
    char d[1024], ck[1024], im[1024], args[6144], log[8192], a[1200], b[1200];
    subdir("cli_cache", d, sizeof d);
    snprintf(ck, sizeof ck, "%s", km_test_path(FIX "sam_tiny.pth"));
    snprintf(im, sizeof im, "%s", km_test_path(FIX "image.png"));
    long hits = -1, misses = -1, corrupt = -1;
    const char *prompts = "--point 120,95 --point 40,150,0 --multimask";

    /* 1: miss, encoded, written */
    snprintf(args, sizeof args, "--checkpoint '%s' --image '%s' %s --out '%s/m1.png' --lowres-out "
             "'%s/l1.npy' --embedding-out '%s/e1.npy' --cache-dir '%s/cache'", ck, im, prompts, d,
             d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 0 && misses == 1, "%s", log);
    CHECK(strstr(log, "1 image(s) encoded"));
    /* the embedding equals the fixture's (encoder really ran) */
    km_tensor t, ref;
    snprintf(a, sizeof a, "%s/e1.npy", d);
    if (km_npy_load(a, &t) == KM_OK && km_npy_load(km_test_path(FIX "image_embedding.npy"), &ref) == KM_OK) {
        km_cmp cmp = km_compare("e1 vs fixture", t.data, ref.data, 256 * 64 * 64);
        CHECK(cmp.max_abs < 1e-4);
        km_tensor_free(&t);
        km_tensor_free(&ref);
    } else CHECK(0);

    /* 2: the same image and prompts in a new process: a disk hit, no encoder,
     * identical outputs; plus the overlay */
    snprintf(args, sizeof args, "--checkpoint '%s' --image '%s' %s --out '%s/m2.png' --lowres-out "
             "'%s/l2.npy' --embedding-out '%s/e2.npy' --cache-dir '%s/cache' --overlay '%s/ov.png'",
             ck, im, prompts, d, d, d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 1 && misses == 0, "%s", log);
    CHECK(strstr(log, "0 image(s) encoded"));
    const char *pairs[3][2] = {{"m1.png", "m2.png"}, {"l1.npy", "l2.npy"}, {"e1.npy", "e2.npy"}};
    for (int k = 0; k < 3; k++) {
        snprintf(a, sizeof a, "%s/%s", d, pairs[k][0]);
        snprintf(b, sizeof b, "%s/%s", d, pairs[k][1]);
        CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
    }
    /* overlay: the image, tinted halfway to (0,114,178) under the mask (the
     * blue of every kmseg overlay, report/overlay.h), a green disc on the
     * foreground point and a red one on the background point */
    km_image src, ov, mask;
    snprintf(a, sizeof a, "%s/ov.png", d);
    snprintf(b, sizeof b, "%s/m2.png", d);
    if (km_image_load(im, &src, 3) == KM_OK && km_image_load(a, &ov, 0) == KM_OK &&
        km_image_load(b, &mask, 1) == KM_OK) {
        CHECK(ov.w == src.w && ov.h == src.h && ov.c == 3);
        const uint8_t tint[3] = {0, 114, 178};
        long bad = 0, inside = 0;
        for (int y = 0; y < src.h; y++)
            for (int x = 0; x < src.w; x++) {
                if ((abs(x - 120) < 6 && abs(y - 95) < 6) || (abs(x - 40) < 6 && abs(y - 150) < 6))
                    continue;
                size_t i = (size_t)y * src.w + x;
                inside += mask.data[i] != 0;
                for (int k = 0; k < 3; k++) {
                    int v = src.data[3 * i + k];
                    int want = mask.data[i] ? (v + tint[k] + 1) / 2 : v;
                    bad += ov.data[3 * i + k] != want;
                }
            }
        CHECK_MSG(bad == 0 && inside > 0, "%ld overlay values differ; %ld mask pixels", bad, inside);
        const uint8_t *g = ov.data + ((size_t)95 * ov.w + 120) * 3, *r = ov.data + ((size_t)150 * ov.w + 40) * 3;
        CHECK(g[0] == 0 && g[1] == 200 && g[2] == 0);
        CHECK(r[0] == 230 && r[1] == 0 && r[2] == 0);
        km_image_free(&src);
        km_image_free(&ov);
        km_image_free(&mask);
    } else CHECK(0);

    /* 3: one pixel changed: another image, a miss */
    km_image img;
    if (km_image_load(im, &img, 3) == KM_OK) {
        img.data[3 * (50 * img.w + 60)] ^= 1;
        snprintf(a, sizeof a, "%s/changed.png", d);
        CHECK_OK(km_image_save_png(a, &img));
        km_image_free(&img);
    }
    snprintf(args, sizeof args, "--checkpoint '%s' --image '%s' %s --out '%s/m3.png' --cache-dir "
             "'%s/cache'", ck, a, prompts, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 0 && misses == 1, "%s", log);

    /* 4: the same image under the MedSAM profile: a miss (other pre-processing);
     * the mask is written; a repeat hits */
    for (int rep = 0; rep < 2; rep++) {
        snprintf(args, sizeof args, "--checkpoint '%s' --image '%s' --profile medsam --box "
                 "20,30,200,160 --out '%s/med.png' --iou-out '%s/med_iou.npy' --cache-dir '%s/cache'",
                 ck, im, d, d, d);
        CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
        CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == rep && misses == 1 - rep,
                  "rep %d: %s", rep, log);
    }
    int64_t one[2] = {1, 1};
    snprintf(a, sizeof a, "%s/med_iou.npy", d);
    CHECK_OK(km_npy_load_f32(a, 2, one, &t));
    km_tensor_free(&t);

    /* 5: corrupt the original image's SAM entry (truncate it): detected,
     * recomputed, rewritten, and the embedding is the fixture's again */
    km_embkey k;
    km_embcache c = {.dir = b};
    uint64_t fp;
    CHECK_OK(km_checkpoint_fingerprint(ck, &fp));
    snprintf(b, sizeof b, "%s/cache", d);
    if (km_image_load(im, &img, 3) == KM_OK) {
        km_embkey_make(&k, km_hash_image(img.data, img.w, img.h, img.c), fp, "sam", img.w, img.h);
        km_image_free(&img);
    }
    char path[4096];
    km_embcache_path(&c, &k, path, sizeof path);
    CHECK_MSG(access(path, F_OK) == 0, "%s missing", path);
    CHECK(truncate(path, 4096) == 0);
    snprintf(args, sizeof args, "--checkpoint '%s' --image '%s' %s --out '%s/m5.png' "
             "--embedding-out '%s/e5.npy' --cache-dir '%s/cache'", ck, im, prompts, d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 0 && misses == 1 && corrupt == 1,
              "%s", log);
    CHECK(strstr(log, "rejected a corrupt entry"));
    snprintf(a, sizeof a, "%s/e1.npy", d);
    snprintf(b, sizeof b, "%s/e5.npy", d);
    CHECK(same_file(a, b));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size > 4 * 256 * 64 * 64);
}

KM_TEST(sam_cli_batch_csv_and_json) {
    char d[1024], ck[1024], im[1024], args[6144], log[8192], a[1200], b[1200];
    subdir("cli_batch", d, sizeof d);
    snprintf(ck, sizeof ck, "%s", km_test_path(FIX "sam_tiny.pth"));
    snprintf(im, sizeof im, "%s", km_test_path(FIX "image.png"));
    snprintf(a, sizeof a, "%s/imgs", d);
    mkdir(a, 0777);
    km_image img;
    if (km_image_load(im, &img, 3) != KM_OK) {
        CHECK(0);
        return;
    }
    /* two images: the fixture (as PNG) and its left-right mirror (as .npy) */
    snprintf(b, sizeof b, "%s/imgs/first.png", d);
    CHECK_OK(km_image_save_png(b, &img));
    uint8_t *mir = km_malloc((size_t)img.w * img.h * 3);
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++)
            memcpy(mir + ((size_t)y * img.w + x) * 3, img.data + ((size_t)y * img.w + img.w - 1 - x) * 3, 3);
    int64_t sh[3] = {img.h, img.w, 3};
    snprintf(b, sizeof b, "%s/imgs/second.npy", d);
    CHECK_OK(km_npy_save(b, KM_U8, 3, sh, mir));
    km_free(mir);
    km_image_free(&img);
    snprintf(b, sizeof b, "%s/p.csv", d);
    write_text(b, "image,kind,x,y,label\n"
                  "first.png,point,120,95\r\n"
                  "# a comment\n"
                  "first.png,point,40,150,0\n"
                  "\n"
                  "second.npy,box,20,30,200,160\n"
                  "second.npy,point,126,95,1\n");
    snprintf(b, sizeof b, "%s/p.json", d);
    write_text(b, "{\"first.png\": {\"points\": [[120, 95], [40, 150, 0]]},\n"
                  " \"second.npy\": {\"box\": [20, 30, 200, 160], \"points\": [[126, 95, 1]]}}");
    long hits = -1, misses = -1, corrupt = -1;
    /* CSV run: both encoded */
    snprintf(args, sizeof args, "--checkpoint '%s' --images '%s/imgs' --prompts '%s/p.csv' "
             "--out-dir '%s/out_csv' --overlay '%s/ov' --cache-dir '%s/cache' --multimask",
             ck, d, d, d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 0 && misses == 2, "%s", log);
    char res[4096];
    snprintf(a, sizeof a, "%s/out_csv/results.csv", d);
    slurp(a, res, sizeof res);
    CHECK_MSG(!strncmp(res, "image,mask,K,best,iou,cache\nfirst.png,first.png,3,", 50) &&
              strstr(res, "\nsecond.npy,second.png,3,") && strstr(res, ",miss\n"), "%s", res);
    for (int k = 0; k < 2; k++) {
        km_image m;
        snprintf(a, sizeof a, "%s/%s/%s.png", d, k ? "ov" : "out_csv", "second");
        CHECK_OK(km_image_load(a, &m, 0));
        CHECK(m.w == 247 && m.h == 183 && m.c == (k ? 3 : 1));
        km_image_free(&m);
    }
    /* JSON run with the same prompts: both from the cache, identical masks */
    snprintf(args, sizeof args, "--checkpoint '%s' --images '%s/imgs' --prompts '%s/p.json' "
             "--out-dir '%s/out_json' --cache-dir '%s/cache' --multimask", ck, d, d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK_MSG(cache_counts(log, &hits, &misses, &corrupt) && hits == 2 && misses == 0, "%s", log);
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s/out_csv/%s.png", d, k ? "second" : "first");
        snprintf(b, sizeof b, "%s/out_json/%s.png", d, k ? "second" : "first");
        CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
    }
    /* batch = single-image mode on the same prompts */
    snprintf(args, sizeof args, "--checkpoint '%s' --image '%s/imgs/second.npy' --box 20,30,200,160 "
             "--point 126,95,1 --multimask --out '%s/single.png' --cache-dir '%s/cache'", ck, d, d, d);
    CHECK_MSG(run_sam(log, sizeof log, d, args) == 0, "%s", log);
    CHECK(cache_counts(log, &hits, &misses, &corrupt) && hits == 1);
    snprintf(a, sizeof a, "%s/single.png", d);
    snprintf(b, sizeof b, "%s/out_csv/second.png", d);
    CHECK(same_file(a, b));
}

KM_TEST(sam_cli_bad_input) {
    char d[1024], ck[1024], im[1024], args[6144], log[8192], p[1200];
    subdir("cli_bad", d, sizeof d);
    snprintf(ck, sizeof ck, "%s", km_test_path(FIX "sam_tiny.pth"));
    snprintf(im, sizeof im, "%s", km_test_path(FIX "image.png"));
    /* malformed checkpoints: a truncated copy and a text file */
    snprintf(p, sizeof p, "%s/trunc.pth", d);
    CHECK(km_test_sh("head -c 100000 '%s' > '%s'", ck, p) == 0);
    snprintf(p, sizeof p, "%s/text.pth", d);
    write_text(p, "not a checkpoint\n");
    /* a 128x128 mask input */
    float *m128 = km_calloc(sizeof(float) * 128 * 128);
    int64_t sh[2] = {128, 128};
    snprintf(p, sizeof p, "%s/m128.npy", d);
    CHECK_OK(km_npy_save(p, KM_F32, 2, sh, m128));
    km_free(m128);
    /* batch folder with two images, prompt files with problems */
    snprintf(p, sizeof p, "%s/imgs", d);
    mkdir(p, 0777);
    CHECK(km_test_sh("cp '%s' '%s/imgs/a.png' && cp '%s' '%s/imgs/b.png'", im, d, im, d) == 0);
    struct {
        const char *name, *text;
    } files[] = {{"only_a.csv", "image,kind,x,y,label\na.png,point,10,10\n"},
                 {"extra.csv", "a.png,point,10,10\nb.png,point,10,10\nc.png,point,1,1\n"},
                 {"kind.csv", "a.png,point,10,10\nb.png,circle,10,10\n"},
                 {"outside.csv", "a.png,point,10,10\nb.png,point,10,500\n"},
                 {"flipped.json", "{\"a.png\": {\"box\": [9, 9, 20, 20]}, \"b.png\": {\"box\": [30, 9, 20, 20]}}"},
                 {"key.json", "{\"a.png\": {\"points\": [[1, 1]]}, \"b.png\": {\"boxes\": [1, 2, 3, 4]}}"},
                 {"empty.json", "{\"a.png\": {\"points\": [[1, 1]]}, \"b.png\": {}}"},
                 {"bad.json", "{\"a.png\": {\"points\": [[1, 1]],}}"}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", d, files[i].name);
        write_text(p, files[i].text);
    }
    struct {
        const char *args, *needle;
        int code;
    } bad[] = {
        {"--checkpoint '{D}/trunc.pth' --image '{I}' --point 10,10 --out '{D}/x.png'", "trunc.pth", 1},
        {"--checkpoint '{D}/text.pth' --image '{I}' --point 10,10 --out '{D}/x.png'", "text.pth", 1},
        {"--checkpoint '{D}/none.pth' --image '{I}' --point 10,10 --out '{D}/x.png'", "none.pth", 1},
        {"--checkpoint '{C}' --image '{I}' --point 900,10 --out '{D}/x.png'", "point 0 (x=900, y=10) is outside", 2},
        {"--checkpoint '{C}' --image '{I}' --point 10,-1 --out '{D}/x.png'", "y out of range", 2},
        {"--checkpoint '{C}' --image '{I}' --box 10,10,300,20 --out '{D}/x.png'", "box corner 1", 2},
        {"--checkpoint '{C}' --image '{I}' --out '{D}/x.png'", "no prompt", 2},
        {"--checkpoint '{C}' --image '{I}' --box 200,20,100,160 --out '{D}/x.png'", "x1 < x0", 2},
        {"--checkpoint '{C}' --image '{I}' --box 20,160,100,20 --out '{D}/x.png'", "y1 < y0", 2},
        {"--checkpoint '{C}' --image '{I}' --point 10,10 --mask-input '{D}/m128.npy' --out '{D}/x.png'", "mask input has shape [128, 128]", 1},
        {"--checkpoint '{C}' --image '{I}' --point 10,10 --out '{D}/x.png' --bogus", "--bogus", 2},
        {"--checkpoint '{C}' --image '{I}' --point 10,10,2 --out '{D}/x.png'", "label must be 1", 2},
        {"--checkpoint '{C}' --image '{I}' --point 10,10", "--out", 2},
        {"--checkpoint '{C}' --image '{I}' --point 10,10 --out '{D}/x.png' --profile medsam", "medsam profile takes exactly one box", 2},
        {"--checkpoint '{C}' --image '{I}' --box 1,2,30,40 --multimask --out '{D}/x.png' --profile medsam", "single-mask", 2},
        {"--checkpoint '{C}' --image '{I}' --box 1,2,30,40 --out '{D}/x.png' --profile hq", "--profile: teacher profile 'hq'", 2},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/only_a.csv' --out-dir '{D}/o'", "no entry for image 'b.png'", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/extra.csv' --out-dir '{D}/o'", "entry 'c.png' names no image", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/missing.csv' --out-dir '{D}/o'", "missing.csv", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/kind.csv' --out-dir '{D}/o'", "kind.csv:2: prompt kind 'circle'", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/outside.csv' --out-dir '{D}/o'", "b.png: point 0 (x=10, y=500) is outside", 2},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/flipped.json' --out-dir '{D}/o'", "b.png: box (30, 9, 20, 20) has x1 < x0", 2},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/key.json' --out-dir '{D}/o'", "unknown key \"boxes\"", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/empty.json' --out-dir '{D}/o'", "b.png: predict: no prompt", 2},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/bad.json' --out-dir '{D}/o'", "bad.json", 1},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/only_a.csv'", "--out-dir", 2},
        {"--checkpoint '{C}' --images '{D}/imgs' --prompts '{D}/only_a.csv' --out-dir '{D}/o' --point 1,1", "for one --image", 2},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        /* expand {C} checkpoint, {I} image, {D} scratch folder */
        char *o = args;
        for (const char *s = bad[k].args; *s;) {
            const char *rep = !strncmp(s, "{C}", 3) ? ck : !strncmp(s, "{I}", 3) ? im : !strncmp(s, "{D}", 3) ? d : NULL;
            if (rep) {
                o += sprintf(o, "%s", rep);
                s += 3;
            } else *o++ = *s++;
        }
        snprintf(o, sizeof args - (size_t)(o - args), " --cache-dir '%s/cache'", d);
        int rc = run_sam(log, sizeof log, d, args);
        CHECK_MSG(rc == bad[k].code, "case %zu: exit %d, expected %d (%s)",
                  k, rc, bad[k].code, log);
        CHECK_MSG(strstr(log, bad[k].needle) != NULL, "case %zu: message '%s' lacks '%s'", k, log,
                  bad[k].needle);
        CHECK_MSG(strstr(log, "kmseg sam: error: ") != NULL, "case %zu: %s", k, log);
    }
    /* nothing was encoded or cached by any failing run */
    CHECK(km_test_sh("test -z \"$(ls '%s/cache' 2>/dev/null)\"", d) == 0);
}

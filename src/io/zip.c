/* zip.c - read-only zip index for PyTorch checkpoints (see zip.h).
 *
 * Layout (PKWARE APPNOTE 4.3): local headers + data ... central directory ...
 * [zip64 end record, zip64 locator] end-of-central-directory record. The
 * central directory is authoritative for sizes and CRCs (torch's writer sets
 * the data-descriptor flag, so local headers carry zeros); the local header is
 * only read to find where an entry's data starts (its extra field is used by
 * torch to 64-byte-align tensor data). */
#include "zip.h"

#include <pthread.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), slice-by-8 so that
 * checking a multi-GB checkpoint costs well under its read time. */
static uint32_t g_crc[8][256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        g_crc[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            g_crc[t][i] = (g_crc[t - 1][i] >> 8) ^ g_crc[0][g_crc[t - 1][i] & 0xff];
}

uint32_t km_crc32(const uint8_t *p, size_t n) {
    pthread_once(&g_crc_once, crc_init);
    uint32_t c = 0xffffffffu;
    while (n >= 8) {
        uint32_t a = c ^ rd32(p), b = rd32(p + 4);
        c = g_crc[7][a & 0xff] ^ g_crc[6][(a >> 8) & 0xff] ^ g_crc[5][(a >> 16) & 0xff] ^
            g_crc[4][a >> 24] ^ g_crc[3][b & 0xff] ^ g_crc[2][(b >> 8) & 0xff] ^
            g_crc[1][(b >> 16) & 0xff] ^ g_crc[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = g_crc[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

int km_zip_sniff(const uint8_t *buf, size_t n) {
    return n >= 4 && rd32(buf) == SIG_LOCAL;
}

void km_zip_close(km_zip *z) {
    for (int i = 0; i < z->n; i++) km_free(z->entries[i].name);
    km_free(z->entries);
    memset(z, 0, sizeof *z);
}

/* Reads the zip64 extended-information extra field (id 0x0001): it holds, in
 * this order, only those of usize / csize / local offset whose 32-bit central
 * directory field is 0xFFFFFFFF. */
static km_status zip64_extra(const km_zip *z, const char *ename, const uint8_t *ex, size_t exlen,
                             uint64_t *usize, uint64_t *csize, uint64_t *off) {
    size_t i = 0;
    while (i + 4 <= exlen) {
        uint16_t id = rd16(ex + i), len = rd16(ex + i + 2);
        if (i + 4 + len > exlen)
            return km_err(KM_EFORMAT, "%s: zip entry '%s': extra field overruns its record", z->name,
                          ename);
        if (id == 1) {
            const uint8_t *p = ex + i + 4;
            size_t left = len;
            uint64_t *want[3] = {usize, csize, off};
            for (int k = 0; k < 3; k++) {
                if (*want[k] != 0xffffffffu) continue;
                if (left < 8)
                    return km_err(KM_EFORMAT, "%s: zip entry '%s': zip64 extra field too short",
                                  z->name, ename);
                *want[k] = rd64(p);
                p += 8;
                left -= 8;
            }
            return KM_OK;
        }
        i += 4 + (size_t)len;
    }
    if (*usize == 0xffffffffu || *csize == 0xffffffffu || *off == 0xffffffffu)
        return km_err(KM_EFORMAT, "%s: zip entry '%s': 32-bit size/offset is 0xFFFFFFFF but no zip64 "
                                  "extra field was found", z->name, ename);
    return KM_OK;
}

km_status km_zip_open(km_zip *z, const char *name, const uint8_t *buf, size_t n) {
    memset(z, 0, sizeof *z);
    z->name = name;
    if (n < 22) return km_err(KM_EFORMAT, "%s: truncated zip archive (%zu bytes)", name, n);
    /* The end-of-central-directory record is the last 22 bytes plus a comment
     * of at most 65535 bytes; scan backwards for its signature. */
    size_t lo = n > 22 + 65535 ? n - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t i = n - 22 + 1; i-- > lo;)
        if (rd32(buf + i) == SIG_EOCD && i + 22 + rd16(buf + i + 20) <= n) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX)
        return km_err(KM_EFORMAT, "%s: not a complete zip archive: end of central directory record "
                                  "not found (truncated download?)", name);
    const uint8_t *e = buf + eocd;
    uint64_t count = rd16(e + 10), cdsize = rd32(e + 12), cdoff = rd32(e + 16);
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0)
        return km_err(KM_EFORMAT, "%s: multi-disk zip archives are not supported", name);
    if (count == 0xffff || cdsize == 0xffffffffu || cdoff == 0xffffffffu) {
        if (eocd < 20 || rd32(buf + eocd - 20) != SIG_LOC64)
            return km_err(KM_EFORMAT, "%s: zip64 archive without a zip64 locator", name);
        uint64_t off64 = rd64(buf + eocd - 20 + 8);
        if (off64 > n || n - off64 < 56 || rd32(buf + off64) != SIG_EOCD64)
            return km_err(KM_EFORMAT, "%s: zip64 end of central directory record missing or out of "
                                      "bounds (offset %llu, file %zu bytes)", name,
                          (unsigned long long)off64, n);
        const uint8_t *e64 = buf + off64;
        count = rd64(e64 + 32);
        cdsize = rd64(e64 + 40);
        cdoff = rd64(e64 + 48);
    }
    if (cdoff > n || cdsize > n - cdoff)
        return km_err(KM_EFORMAT, "%s: zip central directory (offset %llu, %llu bytes) lies outside "
                                  "the %zu-byte file (truncated?)", name, (unsigned long long)cdoff,
                      (unsigned long long)cdsize, n);
    if (count > cdsize / 46)
        return km_err(KM_EFORMAT, "%s: zip central directory claims %llu entries but has room for "
                                  "%llu", name, (unsigned long long)count,
                      (unsigned long long)(cdsize / 46));
    z->entries = km_calloc(sizeof *z->entries * (count ? count : 1));
    const uint8_t *p = buf + cdoff, *end = buf + cdoff + cdsize;
    for (uint64_t k = 0; k < count; k++) {
        if (end - p < 46 || rd32(p) != SIG_CENTRAL) {
            km_zip_close(z);
            return km_err(KM_EFORMAT, "%s: bad zip central directory record %llu", name,
                          (unsigned long long)k);
        }
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint32_t crc = rd32(p + 16);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24), loff = rd32(p + 42);
        size_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
        if ((size_t)(end - p) - 46 < nlen + xlen + clen) {
            km_zip_close(z);
            return km_err(KM_EFORMAT, "%s: zip central directory record %llu overruns the directory",
                          name, (unsigned long long)k);
        }
        km_zip_entry *en = &z->entries[z->n++];
        en->name = km_malloc(nlen + 1);
        memcpy(en->name, p + 46, nlen);
        en->name[nlen] = 0;
        if (memchr(en->name, 0, nlen)) {
            km_zip_close(z);
            return km_err(KM_EFORMAT, "%s: zip entry name contains a NUL byte", name);
        }
        km_status s = zip64_extra(z, en->name, p + 46 + nlen, xlen, &usize, &csize, &loff);
        if (s) {
            km_zip_close(z);
            return s;
        }
        p += 46 + nlen + xlen + clen;
        en->size = usize;
        en->csize = csize;
        en->crc32 = crc;
        en->method = method;
        if (flags & 1) {
            km_status s2 = km_err(KM_EFORMAT, "%s: zip entry '%s' is encrypted", name, en->name);
            km_zip_close(z);
            return s2;
        }
        /* Local header: 30 bytes + its own name and extra field, then data. */
        if (loff > n || n - loff < 30 || rd32(buf + loff) != SIG_LOCAL) {
            km_status s2 = km_err(KM_EFORMAT, "%s: zip entry '%s': local header at offset %llu "
                                              "missing or out of bounds", name, en->name,
                                  (unsigned long long)loff);
            km_zip_close(z);
            return s2;
        }
        uint64_t dstart = loff + 30 + (uint64_t)rd16(buf + loff + 26) + rd16(buf + loff + 28);
        if (dstart > n || csize > n - dstart) {
            km_status s2 = km_err(KM_EFORMAT, "%s: zip entry '%s': %llu bytes of data at offset "
                                              "%llu run past the end of the %zu-byte file "
                                              "(truncated?)", name, en->name,
                                  (unsigned long long)csize, (unsigned long long)dstart, n);
            km_zip_close(z);
            return s2;
        }
        if (method == 0 && csize != usize) {
            km_status s2 = km_err(KM_EFORMAT, "%s: zip entry '%s' is stored but its sizes differ "
                                              "(%llu vs %llu)", name, en->name,
                                  (unsigned long long)csize, (unsigned long long)usize);
            km_zip_close(z);
            return s2;
        }
        en->data = buf + dstart;
    }
    return KM_OK;
}

const km_zip_entry *km_zip_find(const km_zip *z, const char *name) {
    for (int i = 0; i < z->n; i++)
        if (!strcmp(z->entries[i].name, name)) return &z->entries[i];
    return NULL;
}

km_status km_zip_data(const km_zip *z, const km_zip_entry *e, const uint8_t **data, size_t *n) {
    if (e->method != 0)
        return km_err(KM_EFORMAT, "%s: zip entry '%s' is compressed (method %d%s); kmseg reads only "
                                  "stored entries as torch.save writes them - re-save the archive "
                                  "without compression (zip -0)", z->name, e->name, e->method,
                      e->method == 8 ? ", deflate" : "");
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    uint32_t c = km_crc32(e->data, (size_t)e->size);
    if (c != e->crc32)
        return km_err(KM_EFORMAT, "%s: zip entry '%s' is corrupt: CRC-32 %08x, expected %08x",
                      z->name, e->name, (unsigned)c, (unsigned)e->crc32);
#endif
    *data = e->data;
    *n = (size_t)e->size;
    return KM_OK;
}

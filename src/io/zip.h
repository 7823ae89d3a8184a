/* zip.h - minimal read-only zip archive index over an in-memory buffer, enough
 * for PyTorch's zip checkpoints (torch >= 1.6, written by miniz): central
 * directory + zip64 records, stored (uncompressed) entries only. Nothing is
 * copied: entries point into the caller's buffer, which must outlive the index.
 * Every offset and size is bounds-checked against the buffer; messages name the
 * archive (`name`) and the entry. */
#ifndef KM_ZIP_H
#define KM_ZIP_H

#include "../core/km.h"

typedef struct {
    char *name;          /* NUL-terminated entry name (owned) */
    const uint8_t *data; /* start of the stored bytes inside the buffer, NULL if compressed */
    uint64_t size;       /* uncompressed size */
    uint64_t csize;      /* compressed size (== size when stored) */
    uint32_t crc32;      /* from the central directory */
    int method;          /* 0 = stored, 8 = deflate, ... */
} km_zip_entry;

typedef struct {
    const char *name; /* archive name for messages (not owned) */
    km_zip_entry *entries;
    int n;
} km_zip;

/* True if buf starts with a local file header signature "PK\3\4". */
int km_zip_sniff(const uint8_t *buf, size_t n);
km_status km_zip_open(km_zip *z, const char *name, const uint8_t *buf, size_t n);
void km_zip_close(km_zip *z);
/* Finds the entry whose name is exactly `name`, or NULL. */
const km_zip_entry *km_zip_find(const km_zip *z, const char *name);
/* Returns the entry's bytes (stored entries only; KM_EFORMAT naming the entry
 * and its method otherwise). The CRC-32 is verified unless the library was
 * built for fuzzing (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION), where it would
 * only stop the fuzzer from reaching the parsers behind it. */
km_status km_zip_data(const km_zip *z, const km_zip_entry *e, const uint8_t **data, size_t *n);
uint32_t km_crc32(const uint8_t *p, size_t n);

#endif

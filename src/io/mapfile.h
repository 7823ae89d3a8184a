/* mapfile.h - read-only view of a whole file for the checkpoint readers.
 * Regular files are mmap'ed, so loading a multi-GB checkpoint costs the page
 * cache plus the tensors copied out of it, not a second full copy; anything
 * else (pipes, /proc) is read into memory with km_read_file. */
#ifndef KM_MAPFILE_H
#define KM_MAPFILE_H

#include "../core/km.h"

typedef struct {
    const uint8_t *data;
    size_t n;
    void *map;   /* mmap'ed region, or NULL */
    uint8_t *buf; /* km_read_file buffer, or NULL */
} km_mapped;

km_status km_map_file(const char *path, km_mapped *m);
void km_unmap_file(km_mapped *m);

#endif

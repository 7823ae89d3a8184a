/* mapfile.c - see mapfile.h. */
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

km_status km_map_file(const char *path, km_mapped *m) {
    static const uint8_t empty[1] = {0};
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return km_err(KM_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if (st.st_size == 0) {
            close(fd);
            m->data = empty;
            return KM_OK;
        }
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (p != MAP_FAILED) {
            m->map = p;
            m->data = p;
            m->n = (size_t)st.st_size;
            return KM_OK;
        }
    } else {
        close(fd);
    }
    km_status s = km_read_file(path, (size_t)1 << 40, &m->buf, &m->n);
    m->data = m->buf;
    return s;
}

void km_unmap_file(km_mapped *m) {
    if (m->map) munmap(m->map, m->n);
    km_free(m->buf);
    memset(m, 0, sizeof *m);
}

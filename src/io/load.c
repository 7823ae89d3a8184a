/* load.c - checkpoint loading by content sniffing (see load.h). */
#include "load.h"

#include "mapfile.h"
#include "pth.h"
#include "safetensors.h"

#include <string.h>

km_status km_load_checkpoint(const char *path, km_tdict *out) {
    km_mapped m;
    km_tdict_init(out);
    km_status s = km_map_file(path, &m);
    if (s) return s;
    const uint8_t *buf = m.data;
    size_t n = m.n;
    /* zip "PK\3\4" and the legacy stream (pickle PROTO 2 + LONG1 magic) are
     * told apart inside km_pth_load_mem; safetensors starts with an 8-byte
     * little-endian header length followed by the JSON's '{'. */
    if ((n >= 4 && !memcmp(buf, "PK\3\4", 4)) || (n >= 2 && buf[0] == 0x80 && buf[1] == 0x02))
        s = km_pth_load_mem_raw(path, buf, n, out);
    else if (n >= 9 && buf[8] == '{')
        s = km_safetensors_load_mem(path, buf, n, out);
    else
        s = km_err(KM_EFORMAT, "%s: unknown checkpoint format: expected a torch.save file (zip or "
                               "legacy pickle) or safetensors; first bytes %02x %02x %02x %02x",
                   path, n > 0 ? buf[0] : 0, n > 1 ? buf[1] : 0, n > 2 ? buf[2] : 0,
                   n > 3 ? buf[3] : 0);
    km_unmap_file(&m);
    if (!s) km_tdict_to_f32(out);
    return s;
}

/* info.c - `kmseg info FILE`: list the tensors of a checkpoint (.pth zip or
 * legacy, .safetensors) or of an .npy array, with dtype, shape and element
 * count, in file order, then totals. Dtypes are shown as stored (no float32
 * conversion). */
#include "cmd.h"

#include "../io/npy.h"
#include "../io/pth.h"
#include "../io/safetensors.h"

#include <string.h>

static void usage(void) {
    printf("usage: kmseg info FILE\n\n"
           "Lists name, dtype, shape and element count of every tensor in FILE (a torch.save\n"
           ".pth in zip or legacy format, a .safetensors file, or a NumPy .npy array), then\n"
           "the totals and any safetensors metadata.\n");
}

static void print_row(const km_tensor *t, int namew) {
    char sh[160];
    printf("%-*s  %-8s  %-20s  %lld\n", namew, t->name, km_dtype_name(t->dtype),
           km_shape_str(sh, sizeof sh, t->ndim, t->shape), (long long)km_numel(t->ndim, t->shape));
}

km_status km_cmd_info(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return KM_OK;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return km_err(KM_EARG, "unknown flag '%s' (see kmseg info --help)", argv[i]);
        if (path) return km_err(KM_EARG, "info takes one FILE, got '%s' and '%s'", path, argv[i]);
        path = argv[i];
    }
    if (!path) return km_err(KM_EARG, "missing FILE (usage: kmseg info FILE)");

    uint8_t head[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return km_err(KM_EIO, "%s: cannot open", path);
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);

    if (got >= 6 && !memcmp(head, "\x93NUMPY", 6)) {
        km_tensor t;
        km_status s = km_npy_load(path, &t);
        if (s) return s;
        printf("%s: NumPy array\n", path);
        print_row(&t, (int)strlen(t.name));
        km_tensor_free(&t);
        return KM_OK;
    }
    km_tdict d;
    const char *kind;
    km_status s;
    if (got >= 9 && head[8] == '{' && memcmp(head, "PK\3\4", 4)) {
        kind = "safetensors";
        s = km_safetensors_load(path, &d);
    } else {
        kind = head[0] == 'P' ? "torch.save zip" : "torch.save legacy";
        s = km_pth_load_raw(path, &d);
    }
    if (s) return s;
    int w = 4;
    for (int i = 0; i < d.n; i++) {
        int l = (int)strlen(d.items[i].name);
        if (l > w) w = l < 72 ? l : 72;
    }
    printf("%s: %s checkpoint\n", path, kind);
    printf("%-*s  %-8s  %-20s  %s\n", w, "name", "dtype", "shape", "numel");
    int64_t total = 0, floats = 0;
    size_t bytes = 0;
    for (int i = 0; i < d.n; i++) {
        const km_tensor *t = &d.items[i];
        int64_t n = km_numel(t->ndim, t->shape);
        print_row(t, w);
        total += n;
        bytes += t->nbytes;
        if (t->dtype == KM_F32 || t->dtype == KM_F16 || t->dtype == KM_BF16 || t->dtype == KM_F64)
            floats += n;
    }
    printf("%d tensors, %lld elements (%lld floating-point, %lld other), %zu bytes of data\n", d.n,
           (long long)total, (long long)floats, (long long)(total - floats), bytes);
    for (int i = 0; i < d.nmeta; i++) printf("metadata %s = %s\n", d.meta[i].key, d.meta[i].value);
    km_tdict_free(&d);
    return KM_OK;
}

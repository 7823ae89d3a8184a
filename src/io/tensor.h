/* tensor.h - named tensors as read from / written to checkpoint files.
 *
 * A km_tensor owns a contiguous row-major buffer. A km_tdict is an ordered list
 * of them (insertion order = file order, which for PyTorch state dicts is the
 * module registration order) plus optional string metadata (safetensors
 * "__metadata__"). Loaders (pth.c, safetensors.c, npy.c) fill these; models copy
 * what they need out of them with km_tdict_get_f32, whose errors name the file,
 * the tensor, the expected and the found shape. */
#ifndef KM_TENSOR_H
#define KM_TENSOR_H

#include "../core/km.h"

typedef enum {
    KM_F32 = 0,
    KM_F16,
    KM_BF16,
    KM_F64,
    KM_I64,
    KM_I32,
    KM_I16,
    KM_I8,
    KM_U8,
    KM_BOOL
} km_dtype;

#define KM_MAXDIM 8

typedef struct {
    char *name;
    km_dtype dtype;
    int ndim;
    int64_t shape[KM_MAXDIM];
    void *data; /* owned; contiguous row-major; nbytes = numel * dtype size */
    size_t nbytes;
} km_tensor;

typedef struct {
    char *key, *value;
} km_meta;

typedef struct {
    km_tensor *items;
    int n, cap;
    km_meta *meta; /* string metadata (safetensors __metadata__) */
    int nmeta, capmeta;
} km_tdict;

size_t km_dtype_size(km_dtype t);
const char *km_dtype_name(km_dtype t); /* "float32", "int64", ... */
int64_t km_numel(int ndim, const int64_t *shape);
/* Formats a shape like "[64, 3, 7, 7]" into buf. */
const char *km_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

void km_tdict_init(km_tdict *d);
void km_tdict_free(km_tdict *d);
km_tensor *km_tdict_find(const km_tdict *d, const char *name);
/* Adds a tensor (data copied; NULL data -> zeros). Returns the new entry, or
 * NULL if the name already exists (caller bug) . */
km_tensor *km_tdict_add(km_tdict *d, const char *name, km_dtype dt, int ndim,
                        const int64_t *shape, const void *data);
/* Adds a tensor taking ownership of `data` (allocated with km_malloc). */
km_tensor *km_tdict_add_owned(km_tdict *d, const char *name, km_dtype dt, int ndim,
                              const int64_t *shape, void *data);
void km_tdict_set_meta(km_tdict *d, const char *key, const char *value);
const char *km_tdict_get_meta(const km_tdict *d, const char *key);

/* Looks up a float32 tensor `name` that must have exactly the given shape.
 * file is only used in error messages. */
km_status km_tdict_get_f32(const km_tdict *d, const char *file, const char *name, int ndim,
                           const int64_t *shape, const float **out);

/* Converts every F16/BF16/F64 tensor to F32 in place (integer tensors untouched). */
void km_tdict_to_f32(km_tdict *d);
float km_f16_to_f32(uint16_t h);
float km_bf16_to_f32(uint16_t h);

#endif

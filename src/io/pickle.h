/* pickle.h - a restricted, non-executing pickle virtual machine for PyTorch
 * state-dict pickles (the opcodes of protocols 2-5 that torch.save emits).
 *
 * It builds a plain object tree: None, bool, int, float, str/bytes, tuple,
 * list, dict (insertion-ordered; OrderedDict is a dict), and two torch leaf
 * kinds that stand for the only callables it knows:
 *   - a storage, from a BINPERSID id ('storage', torch.<T>Storage, key,
 *     location, numel[, view_metadata]);
 *   - a tensor, from REDUCE of torch._utils._rebuild_tensor_v2 / _rebuild_tensor
 *     (storage, offset, size, stride, ...) or _rebuild_parameter(tensor, ...).
 * GLOBAL/STACK_GLOBAL of anything else (os.system, builtins.eval, ...) fails
 * with "refusing to load: pickle references 'module.name'". Nothing is ever
 * called, imported or executed. All objects live in an arena released at once;
 * memo indices, stack depth, string lengths and nesting are bounds-checked. */
#ifndef KM_PICKLE_H
#define KM_PICKLE_H

#include "tensor.h"

typedef enum {
    KM_PK_NONE,
    KM_PK_BOOL,
    KM_PK_INT,    /* fits in int64 */
    KM_PK_BIGINT, /* LONG1/LONG4 wider than 64 bits: raw little-endian bytes in s/n */
    KM_PK_FLOAT,
    KM_PK_STR,    /* str or bytes: s (NUL-terminated copy), n bytes */
    KM_PK_TUPLE,
    KM_PK_LIST,
    KM_PK_DICT,   /* items = k0, v0, k1, v1, ...; n = 2 * pairs */
    KM_PK_GLOBAL, /* i = km_pk_global id */
    KM_PK_STORAGE,
    KM_PK_TENSOR
} km_pk_type;

/* The globals a state-dict pickle may reference. */
typedef enum {
    KM_G_ORDEREDDICT,
    KM_G_REBUILD_TENSOR_V2,
    KM_G_REBUILD_TENSOR,
    KM_G_REBUILD_PARAMETER,
    KM_G_REBUILD_PARAMETER_WITH_STATE,
    KM_G_STORAGE /* torch.<T>Storage; the dtype is in km_pk.dtype */
} km_pk_global;

typedef struct km_pk km_pk;

typedef struct {
    km_dtype dtype;
    const char *key;      /* storage key: zip entry data/<key>, legacy key */
    int64_t numel;        /* elements in the storage (of the root storage for views) */
    int64_t view_offset;  /* legacy storage views: element offset into the root, else 0 */
    int64_t view_numel;   /* legacy storage views: size of the view, else numel */
} km_pk_storage;

typedef struct {
    const km_pk *storage; /* a KM_PK_STORAGE */
    int64_t offset;       /* storage_offset, in elements */
    int ndim;
    int64_t shape[KM_MAXDIM], stride[KM_MAXDIM];
} km_pk_tensor;

struct km_pk {
    km_pk_type type;
    km_dtype dtype; /* KM_G_STORAGE globals */
    int64_t i;      /* BOOL, INT, GLOBAL id */
    double f;
    char *s;        /* STR / BIGINT bytes */
    size_t n;       /* string length, or number of items */
    size_t cap;
    km_pk **items;  /* TUPLE, LIST, DICT */
    km_pk_storage *st;
    km_pk_tensor *t;
};

typedef struct km_pk_block km_pk_block;
typedef struct {
    km_pk_block *head;
    size_t total; /* bytes allocated so far, capped */
} km_pk_arena;

/* Runs one pickle (up to and including STOP) from buf[0..n). On success *out is
 * the unpickled object and *consumed the number of bytes read. `name` is used in
 * messages ("<file>: data.pkl: ..."). Objects are allocated in `a`, which the
 * caller zero-initialises and frees with km_pk_arena_free. */
km_status km_pickle_load(const char *name, const uint8_t *buf, size_t n, km_pk_arena *a,
                         km_pk **out, size_t *consumed);
void km_pk_arena_free(km_pk_arena *a);
const char *km_pk_type_name(km_pk_type t);

#endif

/* npy.h - NumPy .npy v1/v2/v3 reader and v1 writer. Reads float32/float64/
 * float16/int64/int32/uint8/bool little-endian, C order (fortran_order True is
 * rejected). Writing is atomic. */
#ifndef KM_NPY_H
#define KM_NPY_H

#include "tensor.h"

/* Loads into `out` (name set to the path). */
km_status km_npy_load(const char *path, km_tensor *out);
km_status km_npy_load_mem(const char *name, const uint8_t *buf, size_t n, km_tensor *out);
/* Loads and converts to float32, checking ndim/shape if expect_ndim >= 0
 * (a -1 entry in expect_shape matches any size). */
km_status km_npy_load_f32(const char *path, int expect_ndim, const int64_t *expect_shape,
                          km_tensor *out);
km_status km_npy_save(const char *path, km_dtype dt, int ndim, const int64_t *shape,
                      const void *data);
void km_tensor_free(km_tensor *t);

#endif

/* safetensors.h - read/write the safetensors format (8-byte LE header length,
 * JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
 * raw little-endian data). Writing is atomic (temp + rename); tensors are
 * written in dict order with 8-byte aligned offsets so that
 * safetensors.torch.load_file() in PyTorch reads them back. */
#ifndef KM_SAFETENSORS_H
#define KM_SAFETENSORS_H

#include "tensor.h"

km_status km_safetensors_load(const char *path, km_tdict *out);
km_status km_safetensors_load_mem(const char *name, const uint8_t *buf, size_t n, km_tdict *out);
km_status km_safetensors_save(const char *path, const km_tdict *d);

#endif

/* safetensors.h - read/write the safetensors format (8-byte LE header length,
 * JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
 * raw little-endian data). Tensors keep their stored dtype and are returned
 * in data-offset order (for files written here: dict order). Writing is atomic
 * (temp + rename); the header is space-padded so the data starts 8-byte
 * aligned, and tensors follow back to back in dict order (the format allows no
 * gaps), which safetensors.torch.load_file() reads back bit-exactly. */
#ifndef KM_SAFETENSORS_H
#define KM_SAFETENSORS_H

#include "tensor.h"

km_status km_safetensors_load(const char *path, km_tdict *out);
km_status km_safetensors_load_mem(const char *name, const uint8_t *buf, size_t n, km_tdict *out);
km_status km_safetensors_save(const char *path, const km_tdict *d);

#endif

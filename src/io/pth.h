/* pth.h - PyTorch checkpoint reader (torch.save), never executes anything.
 *
 * Supports the zip format (torch >= 1.6: <stem>/data.pkl + <stem>/data/<key>)
 * and the legacy pickle-stream format (magic 0x1950a86a20f9469cfc6c, protocol
 * 1001, sys-info, the pickled object, storage keys, raw storages), as used by
 * torchvision's resnet34-333f7ec4.pth. The pickle is interpreted by a restricted
 * virtual machine that only understands what state-dict pickles contain
 * (dicts / OrderedDict, tuples, lists, strings, ints, floats, bools, None,
 * torch._utils._rebuild_tensor_v2 / _rebuild_parameter, storage persistent
 * ids). Any other global (os.system, builtins.eval, ...) is rejected with an
 * error naming it. Nested dicts such as {"state_dict": {...}} or
 * {"model": {...}} are flattened with '.'-joined prefixes unless the top level
 * has a single "state_dict"/"model" entry, in which case that entry is used.
 *
 * Tensors are materialised contiguous (storage offset and strides honoured,
 * bounds-checked against the storage). float16/bfloat16/float64 storages are
 * converted to float32; int64 (BatchNorm num_batches_tracked) is kept. */
#ifndef KM_PTH_H
#define KM_PTH_H

#include "tensor.h"

km_status km_pth_load(const char *path, km_tdict *out);
/* Same, from memory (used by the fuzzer); `name` is used in messages. */
km_status km_pth_load_mem(const char *name, const uint8_t *buf, size_t n, km_tdict *out);
/* As above but every tensor keeps its stored dtype (float16, bfloat16,
 * float64, ...), for `kmseg info` and converters. */
km_status km_pth_load_raw(const char *path, km_tdict *out);
km_status km_pth_load_mem_raw(const char *name, const uint8_t *buf, size_t n, km_tdict *out);

#endif

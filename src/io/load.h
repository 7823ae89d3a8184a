/* load.h - load any supported checkpoint by content sniffing: zip or legacy
 * .pth, or safetensors. Result is converted to float32 where floating. */
#ifndef KM_LOAD_H
#define KM_LOAD_H

#include "tensor.h"

km_status km_load_checkpoint(const char *path, km_tdict *out);

#endif

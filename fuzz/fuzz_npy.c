/* fuzz_npy.c - libFuzzer target for the .npy reader. Seed corpus:
 * tests/data/io/npy_*.npy.
 *   make fuzz && build/fuzz/fuzz_npy -max_total_time=180 tests/data/io/ */
#include "../src/io/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    km_tensor t;
    if (km_npy_load_mem("fuzz.npy", data, size, &t) == KM_OK) km_tensor_free(&t);
    return 0;
}

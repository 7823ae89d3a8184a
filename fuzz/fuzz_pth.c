/* fuzz_pth.c - libFuzzer target for the .pth reader (zip + legacy pickle
 * stream, restricted pickle VM). Seed corpus: tests/data/io/*.pth.
 *   make fuzz && build/fuzz/fuzz_pth -max_total_time=180 tests/data/io/ */
#include "../src/io/pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    km_tdict d;
    /* km_pth_load_mem also runs the float16/bfloat16/float64 conversion. */
    if (km_pth_load_mem("fuzz.pth", data, size, &d) == KM_OK) km_tdict_free(&d);
    return 0;
}

/* fuzz_safetensors.c - libFuzzer target for the safetensors reader and the
 * JSON parser behind it. Seed corpus: tests/data/io/ref.safetensors.
 *   make fuzz && build/fuzz/fuzz_safetensors -max_total_time=180 tests/data/io/ */
#include "../src/io/json.h"
#include "../src/io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    km_tdict d;
    if (km_safetensors_load_mem("fuzz.safetensors", data, size, &d) == KM_OK) {
        km_tdict_to_f32(&d);
        km_tdict_free(&d);
    }
    /* The raw bytes as a JSON document too (the header path only sees inputs
     * whose first 8 bytes give a plausible length). */
    km_json j;
    if (km_json_parse("fuzz.json", (const char *)data, size, &j) == KM_OK) km_json_free(&j);
    return 0;
}

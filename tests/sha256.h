/* sha256.h - SHA-256 (FIPS 180-4) for the tests: checks decoded images and
 * files against the sha256 values recorded in fixture manifests. */
#ifndef KM_TEST_SHA256_H
#define KM_TEST_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* hex: 65 bytes (64 lowercase hex digits and NUL). */
void km_sha256_hex(const void *data, size_t n, char hex[65]);

#endif

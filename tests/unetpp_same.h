/* unetpp_same.h - a test helper: two students hold the same weights. */
#ifndef KM_TEST_UNETPP_SAME_H
#define KM_TEST_UNETPP_SAME_H

#include "../src/models/unetpp.h"

/* CHECKs (test.h) that b has a's encoder depth, decoder channels, parameter
 * count, and bit-identical parameters and BatchNorm running statistics
 * (a save/load round trip); the first buffer that differs is named. */
void km_test_unetpp_same(km_unetpp *a, km_unetpp *b);

#endif

/* rng.h - deterministic random numbers (splitmix64 seeding + xoshiro256**).
 * Every consumer owns its own km_rng, seeded explicitly: no hidden global. */
#ifndef KM_RNG_H
#define KM_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} km_rng;

void km_rng_seed(km_rng *r, uint64_t seed);
uint64_t km_rng_u64(km_rng *r);
/* Uniform in [0, n) without modulo bias. */
uint64_t km_rng_below(km_rng *r, uint64_t n);
/* Uniform float in [0, 1). */
double km_rng_uniform(km_rng *r);
/* Standard normal (Box-Muller). */
double km_rng_normal(km_rng *r);
/* Fisher-Yates shuffle of an int array. */
void km_rng_shuffle(km_rng *r, int *a, int n);

#endif

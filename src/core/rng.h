/*
 * rng.h - small deterministic random numbers (xoshiro256** seeded by
 * splitmix64). State is a plain struct so it can be checkpointed.
 */
#ifndef DS_RNG_H
#define DS_RNG_H

#include <stdint.h>

typedef struct ds_rng { uint64_t s[4]; } ds_rng;

void ds_rng_seed(ds_rng *r, uint64_t seed);
uint64_t ds_rng_u64(ds_rng *r);
double ds_rng_uniform(ds_rng *r);   /* [0, 1) with 53 random bits */
float ds_rng_normal(ds_rng *r);     /* standard normal (Box-Muller) */

#endif

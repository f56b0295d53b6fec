/*
 * vmath.h - whole-vocabulary vector passes for the sampler: max, divide by
 * the temperature, exp(x - max) with its sum, argmax.
 *
 * Each has a plain `_ref` twin and a test (tests/test_sampler.c). The AVX2
 * versions do exactly the twins' operations lane by lane (the same exp
 * polynomial with fused multiply-adds, the same 8 double accumulators
 * combined in the same order), so the fast result equals the reference bit
 * for bit; machines without AVX2 + FMA run the twins.
 */
#ifndef DS_VMATH_H
#define DS_VMATH_H

#include <stdint.h>

/* Largest element, NaNs skipped; -inf for n == 0 or all NaN. */
float ds_vmax(const float *x, int64_t n);
float ds_vmax_ref(const float *x, int64_t n);

/* x[i] /= t in place (IEEE division), returns the new max (as ds_vmax). */
float ds_vdiv_max(float *x, int64_t n, float t);
float ds_vdiv_max_ref(float *x, int64_t n, float t);

/* y[i] = exp(x[i] - mx) (0 where x[i] - mx < -87 or is NaN; exp within
 * ~2e-7 relative of expf). Sums in double, per block of DS_VBLOCK elements:
 * element i goes to accumulator i % 8, the 8 are added in order into
 * bsum[block] (bsum: ceil(n / DS_VBLOCK) entries, or NULL); returns the sum
 * of the block sums in order. y may alias x. */
#define DS_VBLOCK 256
double ds_vexp_sum(float *y, const float *x, float mx, int64_t n, double *bsum);
double ds_vexp_sum_ref(float *y, const float *x, float mx, int64_t n, double *bsum);

/* ds_vexp_sum (no block sums) and ds_vmass_above of the y it writes, in
 * one pass: returns the same sum, mass[] the same as ds_vmass_above(y). */
double ds_vexp_sum_mass(float *y, const float *x, float mx, int64_t n, const float *thr, int nt, double *mass);
double ds_vexp_sum_mass_ref(float *y, const float *x, float mx, int64_t n, const float *thr, int nt, double *mass);

/* mass[j] = Σ x[i] over the i with x[i] >= thr[j], for nt <= 8
 * thresholds: float sums per (threshold, lane i % 8), the 8 lanes added in
 * order in double. One pass; for choosing a threshold, not for exact sums. */
void ds_vmass_above(const float *x, int64_t n, const float *thr, int nt, double *mass);
void ds_vmass_above_ref(const float *x, int64_t n, const float *thr, int nt, double *mass);

/* bin[i] = min(nbins - 1, (int)((mx - l[i]) · scale)) where e[i] >= thr,
 * else DS_VBIN_NONE (the float ops and the truncation exactly so). For
 * logits <= mx, nbins <= 65535. Returns how many are not DS_VBIN_NONE. */
#define DS_VBIN_NONE 0xFFFF
int64_t ds_vbin16(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr, int nbins);
int64_t ds_vbin16_ref(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr,
                   int nbins);

/* ids[0, m) = the indices i with bin[i] != v, ascending; returns m. */
int64_t ds_vgather_ne16(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);
int64_t ds_vgather_ne16_ref(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);

/* ids[0, m) = the indices i with bin[i] == v, ascending; returns m. */
int64_t ds_vgather_eq16(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);
int64_t ds_vgather_eq16_ref(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);

/* ids[0, m) = the indices i with x[i] >= thr, ascending; returns m. */
int64_t ds_vgather_ge(int32_t *ids, const float *x, int64_t n, float thr);
int64_t ds_vgather_ge_ref(int32_t *ids, const float *x, int64_t n, float thr);

/* Lowest index of the largest element (NaNs never win); 0 if none. */
int64_t ds_vargmax(const float *x, int64_t n);

/* The scalar exp the twins use: the AVX2 polynomial (simd_exp.h) step by
 * step with fmaf. x must be in [-87, 88]. */
float ds_exp_poly(float x);

#endif

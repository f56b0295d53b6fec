/*
 * vmath_isa.h - private: the AVX2 entry points that vmath.c dispatches to
 * (vmath_avx2.c, compiled with -mavx2 -mfma -mf16c).
 */
#ifndef DS_VMATH_ISA_H
#define DS_VMATH_ISA_H

#include <stdint.h>

float ds_vmax_avx2(const float *x, int64_t n);
float ds_vdiv_max_avx2(float *x, int64_t n, float t);
double ds_vexp_sum_avx2(float *y, const float *x, float mx, int64_t n, double *bsum);
double ds_vexp_sum_mass_avx2(float *y, const float *x, float mx, int64_t n, const float *thr, int nt,
                             double *mass);
void ds_vmass_above_avx2(const float *x, int64_t n, const float *thr, int nt, double *mass);
int64_t ds_vbin16_avx2(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr,
                    int nbins);
int64_t ds_vgather_ne16_avx2(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);
int64_t ds_vgather_eq16_avx2(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v);
int64_t ds_vgather_ge_avx2(int32_t *ids, const float *x, int64_t n, float thr);

#endif

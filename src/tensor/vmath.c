/*
 * vmath.c - see vmath.h: the reference twins and the run-time dispatch.
 */
#include "vmath.h"
#include "vmath_isa.h"
#include "../core/base.h"

#include <math.h>

static bool use_avx2(void) { return ds_cpu_avx2_fma(); }

float ds_vmax_ref(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

float ds_vdiv_max_ref(float *x, int64_t n, float t) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        x[i] /= t;
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

float ds_exp_poly(float x) {
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    union { uint32_t u; float f; } e = { (uint32_t)((int32_t)n + 127) << 23 };
    return p * e.f;
}

double ds_vexp_sum_ref(float *y, const float *x, float mx, int64_t n, double *bsum) {
    double total = 0;
    for (int64_t b0 = 0; b0 < n; b0 += DS_VBLOCK) {
        double acc[8] = { 0 };
        int64_t b1 = b0 + DS_VBLOCK < n ? b0 + DS_VBLOCK : n;
        for (int64_t i = b0; i < b1; i++) {
            float d = x[i] - mx;
            float v = d >= -87.0f ? ds_exp_poly(d < 88.0f ? d : 88.0f) : 0.0f;
            y[i] = v;
            acc[i % 8] += v;
        }
        double s = 0;
        for (int k = 0; k < 8; k++) s += acc[k];
        if (bsum) bsum[b0 / DS_VBLOCK] = s;
        total += s;
    }
    return total;
}

double ds_vexp_sum_mass_ref(float *y, const float *x, float mx, int64_t n, const float *thr, int nt, double *mass) {
    double total = ds_vexp_sum_ref(y, x, mx, n, NULL);
    ds_vmass_above_ref(y, n, thr, nt, mass);
    return total;
}

void ds_vmass_above_ref(const float *x, int64_t n, const float *thr, int nt, double *mass) {
    float acc[8][8] = { { 0 } };
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < nt; j++)
            if (x[i] >= thr[j]) acc[j][i % 8] += x[i];
    for (int j = 0; j < nt; j++) {
        mass[j] = 0;
        for (int k = 0; k < 8; k++) mass[j] += acc[j][k];
    }
}

int64_t ds_vbin16_ref(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr,
                      int nbins) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        bin[i] = DS_VBIN_NONE;
        if (!(e[i] >= thr)) continue;
        int b = (int)((mx - l[i]) * scale);
        bin[i] = (uint16_t)(b < nbins - 1 ? b : nbins - 1);
        m++;
    }
    return m;
}

int64_t ds_vgather_ne16_ref(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (bin[i] != v) ids[m++] = (int32_t)i;
    return m;
}

int64_t ds_vgather_eq16_ref(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (bin[i] == v) ids[m++] = (int32_t)i;
    return m;
}

int64_t ds_vgather_ge_ref(int32_t *ids, const float *x, int64_t n, float thr) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (x[i] >= thr) ids[m++] = (int32_t)i;
    return m;
}

float ds_vmax(const float *x, int64_t n) { return use_avx2() ? ds_vmax_avx2(x, n) : ds_vmax_ref(x, n); }

float ds_vdiv_max(float *x, int64_t n, float t) {
    return use_avx2() ? ds_vdiv_max_avx2(x, n, t) : ds_vdiv_max_ref(x, n, t);
}

double ds_vexp_sum(float *y, const float *x, float mx, int64_t n, double *bsum) {
    return use_avx2() ? ds_vexp_sum_avx2(y, x, mx, n, bsum) : ds_vexp_sum_ref(y, x, mx, n, bsum);
}

double ds_vexp_sum_mass(float *y, const float *x, float mx, int64_t n, const float *thr, int nt, double *mass) {
    return use_avx2() ? ds_vexp_sum_mass_avx2(y, x, mx, n, thr, nt, mass) : ds_vexp_sum_mass_ref(y, x, mx, n, thr, nt, mass);
}

void ds_vmass_above(const float *x, int64_t n, const float *thr, int nt, double *mass) {
    if (use_avx2()) ds_vmass_above_avx2(x, n, thr, nt, mass);
    else ds_vmass_above_ref(x, n, thr, nt, mass);
}

int64_t ds_vbin16(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr, int nbins) {
    return use_avx2() ? ds_vbin16_avx2(bin, l, e, n, mx, scale, thr, nbins) : ds_vbin16_ref(bin, l, e, n, mx, scale, thr, nbins);
}

int64_t ds_vgather_ne16(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    return use_avx2() ? ds_vgather_ne16_avx2(ids, bin, n, v) : ds_vgather_ne16_ref(ids, bin, n, v);
}

int64_t ds_vgather_eq16(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    return use_avx2() ? ds_vgather_eq16_avx2(ids, bin, n, v) : ds_vgather_eq16_ref(ids, bin, n, v);
}

int64_t ds_vgather_ge(int32_t *ids, const float *x, int64_t n, float thr) {
    return use_avx2() ? ds_vgather_ge_avx2(ids, x, n, thr) : ds_vgather_ge_ref(ids, x, n, thr);
}

int64_t ds_vargmax(const float *x, int64_t n) {
    float m = ds_vmax(x, n);
    for (int64_t i = 0; i < n; i++)
        if (x[i] == m) return i;
    return 0;
}

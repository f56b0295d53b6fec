/*
 * vmath_avx2.c - AVX2 + FMA versions of the vmath.h passes; each does the
 * twin's operations lane by lane (see vmath.h).
 */
#include "vmath.h"
#include "vmath_isa.h"
#include "simd_exp.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>



/* max over 8 lanes; lanes hold -inf where nothing was seen */
static inline float hmax256(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

/* max_ps(a, b) returns b when either is NaN: with the data as the second
 * operand a NaN would win, so the data goes first (a NaN lane keeps m). */
float ds_vmax_avx2(const float *x, int64_t n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
    }
    float m = hmax256(_mm256_max_ps(m0, m1));
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

float ds_vdiv_max_avx2(float *x, int64_t n, float t) {
    const __m256 tv = _mm256_set1_ps(t);
    __m256 m0 = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), tv);
        _mm256_storeu_ps(x + i, v);
        m0 = _mm256_max_ps(v, m0);
    }
    float m = hmax256(m0);
    for (; i < n; i++) {
        x[i] /= t;
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

/* exp(x - mx) into y in blocks of DS_VBLOCK with the twin's double lane
 * sums (block sums into bsum when given); with nt > 0 also ds_vmass_above's
 * float lane sums of y over the thresholds, in the same order, so the same
 * bits as the separate pass */
static double exp_blocks(float *y, const float *x, float mx, int64_t n, double *bsum, const float *thr, int nt,
                         double *mass) {
    const __m256 mb = _mm256_set1_ps(mx), lo = _mm256_set1_ps(-87.0f);
    __m256 macc[8], t[8];
    for (int j = 0; j < nt; j++) macc[j] = _mm256_setzero_ps(), t[j] = _mm256_set1_ps(thr[j]);
    double total = 0;
    for (int64_t b0 = 0; b0 < n; b0 += DS_VBLOCK) {
        int64_t b1 = b0 + DS_VBLOCK < n ? b0 + DS_VBLOCK : n, i = b0;
        __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
        for (; i + 8 <= b1; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mb);
            __m256 e = _mm256_and_ps(ds_exp256(d), _mm256_cmp_ps(d, lo, _CMP_GE_OQ));
            _mm256_storeu_ps(y + i, e);
            a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
            for (int j = 0; j < nt; j++) macc[j] = _mm256_add_ps(macc[j], _mm256_and_ps(e, _mm256_cmp_ps(e, t[j], _CMP_GE_OQ)));
        }
        double acc[8];
        _mm256_storeu_pd(acc, a0);
        _mm256_storeu_pd(acc + 4, a1);
        if (i < b1) {   /* the tail (only in the last block: blocks are multiples of 8) */
            float d[8] = { 0 }, e[8];
            int64_t r = b1 - i;
            for (int64_t k = 0; k < r; k++) d[k] = x[i + k] - mx;
            __m256 dv = _mm256_loadu_ps(d);
            _mm256_storeu_ps(e, _mm256_and_ps(ds_exp256(dv), _mm256_cmp_ps(dv, lo, _CMP_GE_OQ)));
            for (int64_t k = 0; k < r; k++) { y[i + k] = e[k]; acc[k] += e[k]; }
        }
        double sum = 0;
        for (int k = 0; k < 8; k++) sum += acc[k];
        if (bsum) bsum[b0 / DS_VBLOCK] = sum;
        total += sum;
    }
    if (nt > 0) {   /* the tail's masses as ds_vmass_above's scalar tail adds them */
        float a[8][8];
        for (int j = 0; j < nt; j++) _mm256_storeu_ps(a[j], macc[j]);
        for (int64_t k = n - n % 8; k < n; k++)
            for (int j = 0; j < nt; j++)
                if (y[k] >= thr[j]) a[j][k % 8] += y[k];
        for (int j = 0; j < nt; j++) {
            mass[j] = 0;
            for (int k = 0; k < 8; k++) mass[j] += a[j][k];
        }
    }
    return total;
}

double ds_vexp_sum_avx2(float *y, const float *x, float mx, int64_t n, double *bsum) {
    return exp_blocks(y, x, mx, n, bsum, NULL, 0, NULL);
}

double ds_vexp_sum_mass_avx2(float *y, const float *x, float mx, int64_t n, const float *thr, int nt,
                             double *mass) {
    return exp_blocks(y, x, mx, n, NULL, thr, nt, mass);
}

void ds_vmass_above_avx2(const float *x, int64_t n, const float *thr, int nt, double *mass) {
    __m256 acc[8], t[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps(), t[j] = _mm256_set1_ps(j < nt ? thr[j] : INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        for (int j = 0; j < 8; j++) acc[j] = _mm256_add_ps(acc[j], _mm256_and_ps(v, _mm256_cmp_ps(v, t[j], _CMP_GE_OQ)));
    }
    float a[8][8];
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(a[j], acc[j]);
    for (; i < n; i++)
        for (int j = 0; j < nt; j++)
            if (x[i] >= thr[j]) a[j][i % 8] += x[i];
    for (int j = 0; j < nt; j++) {
        mass[j] = 0;
        for (int k = 0; k < 8; k++) mass[j] += a[j][k];
    }
}

int64_t ds_vbin16_avx2(uint16_t *bin, const float *l, const float *e, int64_t n, float mx, float scale, float thr,
                       int nbins) {
    int64_t cnt = 0;
    const __m256 m = _mm256_set1_ps(mx), sc = _mm256_set1_ps(scale), t = _mm256_set1_ps(thr);
    const __m256i top = _mm256_set1_epi32(nbins - 1), none = _mm256_set1_epi32(DS_VBIN_NONE);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i b[2];
        for (int h = 0; h < 2; h++) {
            __m256 lv = _mm256_loadu_ps(l + i + 8 * h), ev = _mm256_loadu_ps(e + i + 8 * h);
            __m256i bi = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(_mm256_sub_ps(m, lv), sc)), top);
            __m256 keepf = _mm256_cmp_ps(ev, t, _CMP_GE_OQ);
            cnt += __builtin_popcount((unsigned)_mm256_movemask_ps(keepf));
            b[h] = _mm256_blendv_epi8(none, bi, _mm256_castps_si256(keepf));
        }
        /* 16 x int32 -> 16 x uint16 in order (packus works per 128-bit lane) */
        __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(b[0], b[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(bin + i), pk);
    }
    for (; i < n; i++) {
        bin[i] = DS_VBIN_NONE;
        if (!(e[i] >= thr)) continue;
        int bi = (int)((mx - l[i]) * scale);
        bin[i] = (uint16_t)(bi < nbins - 1 ? bi : nbins - 1);
        cnt++;
    }
    return cnt;
}

/* indices where bin[i] == v (eq) or != v (!eq), 16 at a time */
static int64_t gather16(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v, bool eq) {
    const __m256i t = _mm256_set1_epi16((short)v);
    const unsigned flip = eq ? 0u : 0xFFFFFFFFu;
    int64_t m = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i e = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(bin + i)), t);
        unsigned mask = (unsigned)_mm256_movemask_epi8(e) ^ flip;   /* 2 bits per element */
        while (mask) {
            ids[m++] = (int32_t)(i + (__builtin_ctz(mask) >> 1));
            mask &= mask - 1;
            mask &= mask - 1;
        }
    }
    for (; i < n; i++)
        if ((bin[i] == v) == eq) ids[m++] = (int32_t)i;
    return m;
}

int64_t ds_vgather_ne16_avx2(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    return gather16(ids, bin, n, v, false);
}

int64_t ds_vgather_eq16_avx2(int32_t *ids, const uint16_t *bin, int64_t n, uint16_t v) {
    return gather16(ids, bin, n, v, true);
}

int64_t ds_vgather_ge_avx2(int32_t *ids, const float *x, int64_t n, float thr) {
    const __m256 t = _mm256_set1_ps(thr);
    int64_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GE_OQ));
        while (mask) {
            ids[m++] = (int32_t)(i + __builtin_ctz(mask));
            mask &= mask - 1;
        }
    }
    for (; i < n; i++)
        if (x[i] >= thr) ids[m++] = (int32_t)i;
    return m;
}

/*
 * tgemm_ref.c - the reference twin of the training GEMMs' bf16 mode
 * (tgemm_avx512.c's bf16 worker), plain C, for tests and for CPUs without
 * AVX512-BF16 (tr_gemm_bf16_ref, tgemm.h).
 *
 * It follows the instructions' definitions (Intel SDM):
 *   VCVTNE2PS2BF16: round to nearest even; NaN stays NaN (quieted); a
 *     denormal input becomes a zero of its sign.
 *   VDPBF16PS: per fp32 lane, s += a[odd]·b[odd], then s += a[even]·b[even]
 *     (k odd of the pair first), bf16 denormals read as zero, each sum
 *     rounded to nearest even and a denormal result flushed to zero.
 * The products of two bf16 numbers are exact in fp32 (8 + 8 significant
 * bits), so each step is one fmaf. Sums over k pairs ascending within
 * each TG_DKC block, C = alpha · s + C as the kernels do; an odd K pairs
 * its last k with zero.
 */
#include "tgemm_impl.h"
#include "tgemm.h"

#include <math.h>
#include <string.h>

float tr_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) u = (u | 0x00400000u) & 0xFFFF0000u;   /* NaN */
    else if ((u & 0x7F800000u) == 0) u &= 0x80000000u;                                                 /* zero, denormal */
    else u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;   /* nearest even (may round up to inf) */
    memcpy(&x, &u, 4);
    return x;
}

static float ftz(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }

void tg_bf16_ref(const gemm_job *g) {
    for (int64_t i = 0; i < g->M; i++)
        for (int64_t j = 0; j < g->N; j++) {
            float *c = g->C + i * g->ldc + j;
            if (g->causal == CAUSAL_NT && j > i) continue;   /* unspecified above the diagonal */
            for (int64_t kb = 0; kb < g->K || (kb == 0 && g->K == 0); kb += TG_DKC) {
                int64_t kc = DS_MIN(TG_DKC, g->K - kb);
                float s = 0.0f;
                for (int64_t k = kb; k < kb + kc; k += 2) {
                    float a[2] = { 0, 0 }, b[2] = { 0, 0 };
                    for (int h = 0; h < 2 && k + h < kb + kc; h++) {
                        int64_t kk = k + h;
                        float av = g->mode == MODE_TN ? g->A[kk * g->lda + i] : g->A[i * g->lda + kk];
                        float bv = g->mode == MODE_NT ? g->B[j * g->ldb + kk] : g->B[kk * g->ldb + j];
                        /* causal operands: the zeros the kernels skip */
                        if ((g->causal == CAUSAL_NN && kk > i) || (g->causal == CAUSAL_TN && kk < i)) av = 0.0f;
                        a[h] = tr_bf16_round(av);
                        b[h] = tr_bf16_round(bv);
                    }
                    s = ftz(fmaf(a[1], b[1], s));
                    s = ftz(fmaf(a[0], b[0], s));
                }
                float v = s * g->alpha;
                if (g->acc || kb > 0) v += *c;
                *c = v;
                if (g->K == 0) break;
            }
        }
}

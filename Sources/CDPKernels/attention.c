// Fused multi-head attention, flash style, for a block of query columns of one head: scores, an online softmax
// and the product with the values, the keys taken a chunk of DP_ATT_KEY_CHUNK at a time, so no score row ever
// leaves L1/L2 and each chunk of keys is read once per block of queries.
//
// The block is computed transposed, queries along the vector lanes (W = NQV vectors of VW floats = 64 queries
// on AVX-512, 16 on AVX2 and the portable build):
//   Q^T [d][W]   the block's query rows, times the scale, transposed once per call
//   S^T [KC][W]  S^T[j][i] = sum_k K[j][k] Q^T[k][i]     KR keys x NQV vectors in registers, K[j][k] broadcast
//   online softmax per query lane: m = max(m, max_j S^T[j]), alpha = exp(m_old - m), l = alpha l + sum_j P^T[j],
//                P^T[j] = exp(S^T[j] - m)  (vertical maxima and sums: no horizontal reduction anywhere)
//   O^T [d][W]   O^T[c][i] = alpha O^T[c][i] + sum_j V[j][c] P^T[j][i]   DR value columns x NQV vectors in
//                registers, V[j][c] broadcast
//   o[i][c] = O^T[c][i] / l[i], written back transposed.
// Both products are exact multiples of the vectors for any head size d (no padded value columns), and the
// keys are rows (a key count off the register blocks only pads K with zero rows, which the softmax skips).
//
// Per head the keys and values are packed once by dp_attention_pack_head: K [nkp][d] (zero rows nk..nkp),
// V [nk][d], both dense (the projections' rows are C floats apart).
// Written over GCC vector types of 16 (AVX-512) or 8 (AVX2, portable) floats, picked at run time.

#include "dp_kernels.h"
#include "dp_math.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#endif

#define DP_ATT_KR 6            // keys per score register block (every build)
#define DP_ATT_KEY_PAD 6       // nkp is a multiple of this: whole score register blocks
#define DP_ATT_KEY_CHUNK 96    // keys per chunk (a multiple of DP_ATT_KR): S^T of a chunk is 24 KB at W = 64
#define DP_ATT_DR 5            // value columns per register block of the value product
#define DP_ATT_MAX_W 64        // the widest query block of any build

typedef float dp_att8 __attribute__((vector_size(32), aligned(4)));
typedef float dp_att16 __attribute__((vector_size(64), aligned(4)));
typedef int dp_att8i __attribute__((vector_size(32), aligned(4)));
typedef int dp_att16i __attribute__((vector_size(64), aligned(4)));

void dp_attention_pack_head(const float *key, const float *value, size_t nk, size_t c, size_t d, float *kp,
                            size_t nkp, float *vp) {
    for (size_t j = 0; j < nk; j++) {
        memcpy(kp + j * d, key + j * c, d * sizeof(float));
        memcpy(vp + j * d, value + j * c, d * sizeof(float));
    }
    memset(kp + nk * d, 0, (nkp - nk) * d * sizeof(float));
}

size_t dp_attention_key_padding(void) { return DP_ATT_KEY_PAD; }

// Query columns per call of each build: NQV * VW.
static size_t dp_att_width(void) {
    switch (dp_simd_level()) {
    case 2: return 64;
    default: return 16;
    }
}

size_t dp_attention_rows_per_call(void) { return dp_att_width(); }

size_t dp_attention_scratch_floats(size_t d) {
    // Q^T [d][W], S^T [KC][W], O^T [d][W] at the widest W (every build fits).
    return DP_ATT_MAX_W * (2 * d + DP_ATT_KEY_CHUNK);
}

// A vector of x in every lane, written as a vector literal: clang turns it into a broadcast load folded into
// the FMA ({1to16}); `(VT){} + x` would add 0 first (for -0.0) and broadcast through the shuffle port.
#define DP_SPLAT_8(x) ((dp_att8){(x), (x), (x), (x), (x), (x), (x), (x)})
#define DP_SPLAT_16(x) ((dp_att16){(x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x)})
#define DP_SPLAT(VT, x) DP_SPLAT_##VT(x)
#define DP_SPLAT_dp_att8(x) DP_SPLAT_8(x)
#define DP_SPLAT_dp_att16(x) DP_SPLAT_16(x)
#define DP_INT_dp_att8 dp_att8i
#define DP_INT_dp_att16 dp_att16i
#define DP_INT(VT) DP_INT_##VT

// max(a, b) lane by lane, b where either is NaN: one vmaxps (__builtin_elementwise_max adds a NaN fix-up of
// two more instructions). The portable build selects through a comparison mask.
#define DP_ATT_MAX_avx512(a, b) ((dp_att16)_mm512_max_ps((__m512)(a), (__m512)(b)))
#define DP_ATT_MAX_avx2(a, b) ((dp_att8)_mm256_max_ps((__m256)(a), (__m256)(b)))
#define DP_ATT_MAX_base(a, b)                                                                       \
    ({                                                                                             \
        dp_att8 a_ = (a), b_ = (b), r_;                                                            \
        dp_att8i gt_ = a_ > b_, ai_, bi_;                                                          \
        memcpy(&ai_, &a_, sizeof a_);                                                              \
        memcpy(&bi_, &b_, sizeof b_);                                                              \
        ai_ = (gt_ & ai_) | (~gt_ & bi_);                                                          \
        memcpy(&r_, &ai_, sizeof r_);                                                              \
        r_;                                                                                        \
    })

// exp(x) of a vector for x <= 0 (softmax arguments after the maximum is subtracted): x = n ln2 + r with n
// rounded by the 1.5 * 2^23 trick (n read back from the low bits, no conversion), e^r by a degree-6 polynomial
// (relative error ~1e-7, as dp_expf), 2^n built in the exponent bits. x is clamped below at -87.33 (exp of it
// is the smallest normal float; the terms below it are < 1e-38 of the row's largest and vanish in the sum as
// they do in the reference). NaN stays NaN (MAX returns its second argument when either is NaN).
#define DP_ATT_EXP(VT, MAX, out, xin)                                                               \
    do {                                                                                           \
        VT x_ = MAX(DP_SPLAT(VT, -87.33654f), (xin));                                              \
        VT t_ = x_ * DP_SPLAT(VT, 1.44269504088896341f) + DP_SPLAT(VT, 12582912.0f);               \
        VT n_ = t_ - DP_SPLAT(VT, 12582912.0f);                                                    \
        VT r_ = x_ - n_ * DP_SPLAT(VT, 0.693359375f);                                              \
        r_ = r_ - n_ * DP_SPLAT(VT, -2.12194440e-4f);                                              \
        VT p_ = DP_SPLAT(VT, 1.0f / 720);                                                          \
        p_ = p_ * r_ + DP_SPLAT(VT, 1.0f / 120);                                                   \
        p_ = p_ * r_ + DP_SPLAT(VT, 1.0f / 24);                                                    \
        p_ = p_ * r_ + DP_SPLAT(VT, 1.0f / 6);                                                     \
        p_ = p_ * r_ + DP_SPLAT(VT, 0.5f);                                                         \
        p_ = p_ * r_ + DP_SPLAT(VT, 1.0f);                                                         \
        p_ = p_ * r_ + DP_SPLAT(VT, 1.0f);                                                         \
        DP_INT(VT) e_;                                                                             \
        memcpy(&e_, &t_, sizeof e_);                                                               \
        e_ = (e_ + (127 - 0x4B400000)) << 23;   /* t's bits - magic's bits = n */                  \
        VT s_;                                                                                     \
        memcpy(&s_, &e_, sizeof s_);                                                               \
        (out) = p_ * s_;                                                                           \
    } while (0)

// acc rows [c0, c0 + R) of O^T: alpha * O^T + V[j0..j1)[c0..c0+R) x P^T[j0..j1), written back.
#define DP_ATT_PV(VT, VW, NQV, R)                                                                   \
    do {                                                                                           \
        VT acc[R][NQV];                                                                            \
        for (int r = 0; r < R; r++)                                                                \
            for (int v = 0; v < NQV; v++) acc[r][v] = *(const VT *)(ot + (c0 + r) * W + v * VW) * alpha[v]; \
        const float *pj = st;                                                                      \
        const float *vj = vp + j0 * d + c0;                                                        \
        for (size_t j = j0; j < j1; j++, pj += W, vj += d) {                                       \
            VT pv[NQV];                                                                            \
            for (int v = 0; v < NQV; v++) pv[v] = *(const VT *)(pj + v * VW);                     \
            for (int r = 0; r < R; r++) {                                                          \
                VT vb = DP_SPLAT(VT, vj[r]);                                                       \
                for (int v = 0; v < NQV; v++) acc[r][v] += vb * pv[v];                             \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < R; r++)                                                                \
            for (int v = 0; v < NQV; v++) *(VT *)(ot + (c0 + r) * W + v * VW) = acc[r][v];         \
    } while (0)

#define DP_ATT_KERNEL(SUFFIX, ATTR, VT, VW, NQV)                                                       \
    ATTR static void attention_rows_##SUFFIX(const float *q, size_t ldq, size_t rows, const float *kp,   \
                                             const float *vp, size_t nk, size_t d, float scale,    \
                                             float *scratch, float *o, size_t ldo) {               \
        enum { W = NQV * VW };                                                                     \
        float *qt = scratch, *st = qt + d * W, *ot = st + DP_ATT_KEY_CHUNK * W;                    \
        /* Q^T [d][W] = scale * q^T, zero columns past the rows; O^T = 0 */                        \
        for (size_t i = 0; i < W; i++)                                                             \
            for (size_t k = 0; k < d; k++) qt[k * W + i] = i < rows ? q[i * ldq + k] * scale : 0.0f; \
        memset(ot, 0, d * W * sizeof(float));                                                      \
        VT m[NQV], l[NQV];                                                                         \
        for (int v = 0; v < NQV; v++) { m[v] = DP_SPLAT(VT, -INFINITY); l[v] = (VT){}; }           \
        for (size_t j0 = 0; j0 < nk; j0 += DP_ATT_KEY_CHUNK) {                                     \
            const size_t j1 = j0 + DP_ATT_KEY_CHUNK < nk ? j0 + DP_ATT_KEY_CHUNK : nk;             \
            /* S^T [j1 - j0][W], KR keys at a time (the last block may read zero rows of K); */    \
            /* the chunk's maxima per lane over the real keys */                                   \
            VT cm[NQV];                                                                            \
            for (int v = 0; v < NQV; v++) cm[v] = DP_SPLAT(VT, -INFINITY);                         \
            for (size_t jb = j0; jb < j1; jb += DP_ATT_KR) {                                       \
                VT acc[DP_ATT_KR][NQV];                                                            \
                for (int r = 0; r < DP_ATT_KR; r++)                                                \
                    for (int v = 0; v < NQV; v++) acc[r][v] = (VT){};                              \
                const float *kr = kp + jb * d;                                                     \
                const float *qk = qt;                                                              \
                for (size_t k = 0; k < d; k++, qk += W) {                                          \
                    VT qv[NQV];                                                                    \
                    for (int v = 0; v < NQV; v++) qv[v] = *(const VT *)(qk + v * VW);              \
                    for (int r = 0; r < DP_ATT_KR; r++) {                                          \
                        VT kb = DP_SPLAT(VT, kr[r * d + k]);                                       \
                        for (int v = 0; v < NQV; v++) acc[r][v] += kb * qv[v];                     \
                    }                                                                              \
                }                                                                                  \
                const size_t real = j1 - jb < DP_ATT_KR ? j1 - jb : DP_ATT_KR;                     \
                for (int r = 0; r < DP_ATT_KR; r++)                                                \
                    for (int v = 0; v < NQV; v++) {                                                \
                        *(VT *)(st + (jb - j0 + r) * W + v * VW) = acc[r][v];                      \
                        if ((size_t)r < real) cm[v] = DP_ATT_MAX_##SUFFIX(acc[r][v], cm[v]);         \
                    }                                                                              \
            }                                                                                      \
            /* new maxima, the old terms' factor, P^T = exp(S^T - m) and the sums */               \
            VT alpha[NQV];                                                                         \
            for (int v = 0; v < NQV; v++) {                                                        \
                VT mn = DP_ATT_MAX_##SUFFIX(cm[v], m[v]);                                            \
                DP_ATT_EXP(VT, DP_ATT_MAX_##SUFFIX, alpha[v], m[v] - mn);                                               \
                m[v] = mn;                                                                         \
                l[v] *= alpha[v];                                                                  \
            }                                                                                      \
            for (size_t j = 0; j < j1 - j0; j++)                                                   \
                for (int v = 0; v < NQV; v++) {                                                    \
                    VT *pp = (VT *)(st + j * W + v * VW);                                          \
                    VT e;                                                                          \
                    DP_ATT_EXP(VT, DP_ATT_MAX_##SUFFIX, e, *pp - m[v]);                                                 \
                    *pp = e;                                                                       \
                    l[v] += e;                                                                     \
                }                                                                                  \
            /* O^T = alpha O^T + V^T P^T, DR value columns at a time */                            \
            size_t c0 = 0;                                                                         \
            for (; c0 + DP_ATT_DR <= d; c0 += DP_ATT_DR) DP_ATT_PV(VT, VW, NQV, DP_ATT_DR);        \
            for (; c0 < d; c0++) DP_ATT_PV(VT, VW, NQV, 1);                                        \
        }                                                                                          \
        /* o[i][c] = O^T[c][i] / l[i] for the block's real rows */                                 \
        float inv[W];                                                                              \
        for (int v = 0; v < NQV; v++) {                                                            \
            VT iv = DP_SPLAT(VT, 1.0f) / l[v];                                                     \
            memcpy(inv + v * VW, &iv, sizeof iv);                                                  \
        }                                                                                          \
        for (size_t i = 0; i < rows; i++) {                                                        \
            float *oi = o + i * ldo;                                                               \
            for (size_t c = 0; c < d; c++) oi[c] = ot[c * W + i] * inv[i];                         \
        }                                                                                          \
    }

#if defined(__x86_64__) && defined(__clang__)
DP_ATT_KERNEL(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma"), min_vector_width(512))),
              dp_att16, 16, 4)
DP_ATT_KERNEL(avx2, __attribute__((target("avx2,fma"))), dp_att8, 8, 2)
DP_ATT_KERNEL(base, , dp_att8, 8, 2)
#else
DP_ATT_KERNEL(base, , dp_att8, 8, 2)
#endif

void dp_attention_rows(const float *q, size_t ldq, size_t rows, const float *kp, const float *vp, size_t nk,
                       size_t d, float scale, float *scratch, float *o, size_t ldo) {
    DP_DISPATCH(attention_rows, q, ldq, rows, kp, vp, nk, d, scale, scratch, o, ldo);
}

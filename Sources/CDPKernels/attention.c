// Fused multi-head attention for a block of up to 48 query rows of one head: scores, softmax and the product
// with the values, the keys taken a chunk of 256 at a time so each chunk of K^T and V is read from L1/L2 by
// all 8 register blocks of 6 rows (no [T, Nk] tile through BLAS, no packing per tile).
//
// Per head the keys are packed once as K^T [d][nkp] (nkp = Nk rounded up to 96, zero columns) and the values
// as V [Nk][dp] (dp = d rounded up to 16, zero columns), by dp_attention_pack_head. Then per call of rows:
//   scores   S[r][k] = scale * sum_j q[r][j] K^T[j][k]     6 rows x 3 (AVX2: 2) vectors of keys in registers,
//            and the row maxima
//   softmax  S[r][k] = exp(S[r][k] - max_k), inv[r] = 1 / sum_k   (dp_exp_shifted_row: one pass)
//   values   O[r][:] = inv[r] * sum_k S[r][k] V[k][:]       6 rows x up to 3 (AVX2: 2) vectors of V in registers
// Written over GCC vector types of 16 (AVX-512) or 8 (AVX2, portable) floats, picked at run time.

#include "dp_kernels.h"
#include "dp_math.h"
#include <math.h>
#include <string.h>

#define DP_ATT_ROWS 6            // query rows held in registers at once
#define DP_ATT_BLOCKS 8          // register blocks per call: up to 48 query rows share each pass over the keys
#define DP_ATT_CALL_ROWS (DP_ATT_ROWS * DP_ATT_BLOCKS)
#define DP_ATT_KEY_CHUNK 288     // keys per chunk: K^T and V of a chunk (d <= 48: < 120 KB) stay in L1/L2
#define DP_ATT_KEY_PAD 96        // nkp is a multiple of this: whole 6 x KV-vector blocks (KV * VW = 48 or 16)

typedef float dp_att8 __attribute__((vector_size(32), aligned(4)));
typedef float dp_att16 __attribute__((vector_size(64), aligned(4)));

void dp_attention_pack_head(const float *key, const float *value, size_t nk, size_t c, size_t d, float *kt,
                            size_t nkp, float *vp, size_t dp) {
    dp_transpose(key, c, nk, d, kt, nkp);                      // [Nk][d] (row stride C) -> [d][nkp]
    for (size_t j = 0; j < d; j++) memset(kt + j * nkp + nk, 0, (nkp - nk) * sizeof(float));
    for (size_t k = 0; k < nk; k++) {
        memcpy(vp + k * dp, value + k * c, d * sizeof(float));
        memset(vp + k * dp + d, 0, (dp - d) * sizeof(float));
    }
}

size_t dp_attention_rows_per_call(void) { return DP_ATT_CALL_ROWS; }

size_t dp_attention_key_padding(void) { return DP_ATT_KEY_PAD; }

// Score rows are nkp + 16 floats apart: with nkp a multiple of 1024 floats (4 KiB), rows a multiple of 4 KiB
// apart alias in L1 and in the store-to-load checks (measured: scores 20% slower at 5120 keys).
static inline size_t dp_att_score_stride(size_t nkp) { return nkp + 16; }

size_t dp_attention_scratch_floats(size_t nkp, size_t d) {
    size_t dp = (d + 15) / 16 * 16;
    return DP_ATT_CALL_ROWS * (dp_att_score_stride(nkp) + d + dp);   // scores, query rows, output accumulators
}

// A vector of x in every lane, written as a vector literal: clang turns it into a broadcast load folded into
// the FMA ({1to16}); `(VT){} + x` would add 0 first (for -0.0) and broadcast through the shuffle port.
#define DP_SPLAT_8(x) ((dp_att8){(x), (x), (x), (x), (x), (x), (x), (x)})
#define DP_SPLAT_16(x) ((dp_att16){(x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x), (x)})
#define DP_SPLAT(VT, x) DP_SPLAT_##VT(x)
#define DP_SPLAT_dp_att8(x) DP_SPLAT_8(x)
#define DP_SPLAT_dp_att16(x) DP_SPLAT_16(x)

// ob rows [r0, r0 + 6) += P[rows, keys k0..k1) x V[k0..k1, v0 .. v0 + N*VW).
#define DP_ATT_PV(VT, VW, N)                                                                        \
    do {                                                                                           \
        VT acc[DP_ATT_ROWS][N];                                                                    \
        for (int r = 0; r < DP_ATT_ROWS; r++)                                                      \
            for (int v = 0; v < N; v++) acc[r][v] = *(const VT *)(ob + (r0 + r) * dp + v0 + v * VW); \
        const float *vk = vp + k0 * dp + v0;                                                       \
        for (size_t k = k0; k < k1; k++, vk += dp) {                                               \
            VT vv[N];                                                                              \
            for (int v = 0; v < N; v++) vv[v] = *(const VT *)(vk + v * VW);                        \
            for (int r = 0; r < DP_ATT_ROWS; r++) {                                                \
                VT pb = DP_SPLAT(VT, s[(r0 + r) * sld + k]);                                       \
                for (int v = 0; v < N; v++) acc[r][v] += pb * vv[v];                               \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < DP_ATT_ROWS; r++)                                                      \
            for (int v = 0; v < N; v++) *(VT *)(ob + (r0 + r) * dp + v0 + v * VW) = acc[r][v];     \
    } while (0)

#define DP_ATT_KERNEL(SUFFIX, ATTR, VT, VW, KV, NVMAX)                                              \
    ATTR static void attention_rows_##SUFFIX(const float *q, size_t ldq, size_t rows, const float *kt,   \
                                             size_t nkp, const float *vp, size_t dp, size_t nk, size_t d, \
                                             float scale, float *scratch, float *o, size_t ldo) {  \
        const size_t padded = (rows + DP_ATT_ROWS - 1) / DP_ATT_ROWS * DP_ATT_ROWS;                \
        const size_t sld = dp_att_score_stride(nkp);                                               \
        float *s = scratch, *qb = s + DP_ATT_CALL_ROWS * sld, *ob = qb + DP_ATT_CALL_ROWS * d;     \
        float inv[DP_ATT_CALL_ROWS], mx[DP_ATT_CALL_ROWS];                                         \
        for (size_t r = 0; r < padded; r++) {                                                      \
            if (r < rows) memcpy(qb + r * d, q + r * ldq, d * sizeof(float));                      \
            else memset(qb + r * d, 0, d * sizeof(float));                                         \
            mx[r] = -INFINITY;                                                                     \
        }                                                                                          \
        memset(ob, 0, padded * dp * sizeof(float));                                                \
        const VT sc = DP_SPLAT(VT, scale);                                                         \
        /* scores, a chunk of keys at a time for every block of 6 rows: 6 rows x KV vectors of keys; */ \
        /* the row maxima over the real keys (< nk) on the way */                                  \
        for (size_t c0 = 0; c0 < nkp; c0 += DP_ATT_KEY_CHUNK) {                                    \
            size_t c1 = c0 + DP_ATT_KEY_CHUNK < nkp ? c0 + DP_ATT_KEY_CHUNK : nkp;                 \
            for (size_t r0 = 0; r0 < padded; r0 += DP_ATT_ROWS) {                                  \
                VT vmax[DP_ATT_ROWS];                                                              \
                for (int r = 0; r < DP_ATT_ROWS; r++) vmax[r] = DP_SPLAT(VT, -INFINITY);           \
                for (size_t k0 = c0; k0 < c1; k0 += KV * VW) {                                     \
                    VT acc[DP_ATT_ROWS][KV];                                                       \
                    for (int r = 0; r < DP_ATT_ROWS; r++)                                          \
                        for (int v = 0; v < KV; v++) acc[r][v] = (VT){};                           \
                    const float *kj = kt + k0;                                                     \
                    const float *qr = qb + r0 * d;                                                 \
                    for (size_t j = 0; j < d; j++, kj += nkp) {                                    \
                        VT kv[KV];                                                                 \
                        for (int v = 0; v < KV; v++) kv[v] = *(const VT *)(kj + v * VW);           \
                        for (int r = 0; r < DP_ATT_ROWS; r++) {                                    \
                            VT qv = DP_SPLAT(VT, qr[r * d + j]);                                   \
                            for (int v = 0; v < KV; v++) acc[r][v] += qv * kv[v];                  \
                        }                                                                          \
                    }                                                                              \
                    if (k0 + KV * VW <= nk) {                                                      \
                        for (int r = 0; r < DP_ATT_ROWS; r++)                                      \
                            for (int v = 0; v < KV; v++) {                                         \
                                VT y = acc[r][v] * sc;                                             \
                                vmax[r] = __builtin_elementwise_max(y, vmax[r]);                   \
                                *(VT *)(s + (r0 + r) * sld + k0 + v * VW) = y;                     \
                            }                                                                      \
                    } else {   /* the block with padding keys: they stay out of the maxima */      \
                        for (int r = 0; r < DP_ATT_ROWS; r++)                                      \
                            for (int v = 0; v < KV; v++) {                                         \
                                VT y = acc[r][v] * sc;                                             \
                                *(VT *)(s + (r0 + r) * sld + k0 + v * VW) = y;                     \
                                for (int l = 0; l < VW; l++)                                       \
                                    if (k0 + v * VW + l < nk && y[l] > mx[r0 + r]) mx[r0 + r] = y[l]; \
                            }                                                                      \
                    }                                                                              \
                }                                                                                  \
                for (int r = 0; r < DP_ATT_ROWS; r++)                                              \
                    for (int l = 0; l < VW; l++)                                                   \
                        if (vmax[r][l] > mx[r0 + r]) mx[r0 + r] = vmax[r][l];                      \
            }                                                                                      \
        }                                                                                          \
        for (size_t r = 0; r < rows; r++) inv[r] = dp_exp_shifted_row(s + r * sld, nk, mx[r]);    \
        /* values, a chunk of keys at a time: up to NVMAX vectors of V per block of 6 rows */      \
        for (size_t k0 = 0; k0 < nk; k0 += DP_ATT_KEY_CHUNK) {                                     \
            size_t k1 = k0 + DP_ATT_KEY_CHUNK < nk ? k0 + DP_ATT_KEY_CHUNK : nk;                   \
            for (size_t r0 = 0; r0 < padded; r0 += DP_ATT_ROWS) {                                  \
                for (size_t v0 = 0; v0 < dp; v0 += NVMAX * VW) {                                   \
                    size_t left = (dp - v0) / VW;                                                  \
                    if (left >= NVMAX) DP_ATT_PV(VT, VW, NVMAX);                                   \
                    else if (left == 2) DP_ATT_PV(VT, VW, 2);                                      \
                    else DP_ATT_PV(VT, VW, 1);                                                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        /* o = ob / sum, the d valid columns */                                                    \
        for (size_t r = 0; r < rows; r++) {                                                        \
            const float *src = ob + r * dp;                                                        \
            float *dst = o + r * ldo;                                                              \
            for (size_t j = 0; j < d; j++) dst[j] = src[j] * inv[r];                               \
        }                                                                                          \
    }

#if defined(__x86_64__) && defined(__clang__)
DP_ATT_KERNEL(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma"), min_vector_width(512))),
              dp_att16, 16, 3, 3)
DP_ATT_KERNEL(avx2, __attribute__((target("avx2,fma"))), dp_att8, 8, 2, 2)
DP_ATT_KERNEL(base, , dp_att8, 8, 2, 2)
#else
DP_ATT_KERNEL(base, , dp_att8, 8, 2, 2)
#endif

void dp_attention_rows(const float *q, size_t ldq, size_t rows, const float *kt, size_t nkp, const float *vp,
                       size_t dp, size_t nk, size_t d, float scale, float *scratch, float *o, size_t ldo) {
    DP_DISPATCH(attention_rows, q, ldq, rows, kt, nkp, vp, dp, nk, d, scale, scratch, o, ldo);
}

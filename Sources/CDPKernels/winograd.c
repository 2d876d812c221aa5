// Winograd F(4x4, 3x3) and F(2x2, 3x3) convolution transforms (Lavin & Gray 2016; F(4x4): points 0, +-1, +-2, inf), vectorised
// across channels: activations are in NHWC bands here, so each of a tile's 36 taps is a run of channels.
//
//   weights  U = G g G^T      g [3, 3] -> U [6, 6]   per (Cin, Cout) pair
//   input    V = B^T d B      d [6, 6] (a 6x6 input patch, stride 4) -> V [6, 6]   per tile and channel
//   product  M[p] = V[p] U[p] for each of the 36 positions p (36 GEMMs over channels, in DPTensor)
//   output   Y = A^T M A      M [6, 6] -> Y [4, 4]   per tile and output channel
//
//   G = [ 1/4     0     0  ]   B^T = [ 4  0 -5  0  1  0 ]   A^T = [ 1  1  1  1  1  0 ]
//       [-1/6  -1/6  -1/6  ]         [ 0 -4 -4  1  1  0 ]         [ 0  1 -1  2 -2  0 ]
//       [-1/6   1/6  -1/6  ]         [ 0  4 -4 -1  1  0 ]         [ 0  1  1  4  4  0 ]
//       [1/24  1/12   1/6  ]         [ 0 -2 -1  2  1  0 ]         [ 0  1 -1  8 -8  1 ]
//       [1/24 -1/12   1/6  ]         [ 0  2 -1 -2  1  0 ]
//       [ 0     0      1   ]         [ 0  4  0 -5  0  1 ]
//
// Each transform is written once over a type T that is either float (channel tails) or a GCC vector of
// 8 / 16 floats (AVX2 / AVX-512 builds, picked at run time like kernels.c).

#include "dp_kernels.h"
#include "dp_math.h"
#include <string.h>

typedef float dp_v8 __attribute__((vector_size(32), aligned(4)));
typedef float dp_v16 __attribute__((vector_size(64), aligned(4)));

// g: 9 values (row-major 3x3) -> u: 36 values (row-major 6x6).
#define DP_WINO_WEIGHT(T, g, u)                                                                     \
    do {                                                                                           \
        T t_[6][3];                                                                                \
        for (int b_ = 0; b_ < 3; b_++) {                                                           \
            T g0 = g[b_], g1 = g[3 + b_], g2 = g[6 + b_];                                          \
            t_[0][b_] = g0 * (1.0f / 4);                                                           \
            t_[1][b_] = (g0 + g1 + g2) * (-1.0f / 6);                                              \
            t_[2][b_] = (g0 - g1 + g2) * (-1.0f / 6);                                              \
            t_[3][b_] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);                     \
            t_[4][b_] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);                     \
            t_[5][b_] = g2;                                                                        \
        }                                                                                          \
        for (int a_ = 0; a_ < 6; a_++) {                                                           \
            T g0 = t_[a_][0], g1 = t_[a_][1], g2 = t_[a_][2];                                      \
            u[a_ * 6 + 0] = g0 * (1.0f / 4);                                                       \
            u[a_ * 6 + 1] = (g0 + g1 + g2) * (-1.0f / 6);                                          \
            u[a_ * 6 + 2] = (g0 - g1 + g2) * (-1.0f / 6);                                          \
            u[a_ * 6 + 3] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);                 \
            u[a_ * 6 + 4] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);                 \
            u[a_ * 6 + 5] = g2;                                                                    \
        }                                                                                          \
    } while (0)

// B^T applied to 6 values d0..d5 (one column or row of a patch).
#define DP_WINO_BT(T, d, r)                                                                         \
    do {                                                                                           \
        r[0] = d[0] * 4.0f - d[2] * 5.0f + d[4];                                                   \
        r[1] = d[3] + d[4] - (d[1] + d[2]) * 4.0f;                                                 \
        r[2] = (d[1] - d[2]) * 4.0f - d[3] + d[4];                                                 \
        r[3] = (d[3] - d[1]) * 2.0f - d[2] + d[4];                                                 \
        r[4] = (d[1] - d[3]) * 2.0f - d[2] + d[4];                                                 \
        r[5] = d[1] * 4.0f - d[3] * 5.0f + d[5];                                                   \
    } while (0)

// A^T applied to 6 values m0..m5.
#define DP_WINO_AT(T, m, o)                                                                         \
    do {                                                                                           \
        T s12_ = m[1] + m[2], d12_ = m[1] - m[2], s34_ = m[3] + m[4], d34_ = m[3] - m[4];           \
        o[0] = m[0] + s12_ + s34_;                                                                 \
        o[1] = d12_ + d34_ * 2.0f;                                                                 \
        o[2] = s12_ + s34_ * 4.0f;                                                                 \
        o[3] = d12_ + d34_ * 8.0f + m[5];                                                          \
    } while (0)

// F(2x2, 3x3) (points 0, +-1, inf): 16 multiplications per 2x2 output tile instead of 36.
//   G = [ 1    0    0  ]   B^T = [ 1  0 -1  0 ]   A^T = [ 1  1  1  0 ]
//       [1/2  1/2  1/2 ]         [ 0  1  1  0 ]         [ 0  1 -1 -1 ]
//       [1/2 -1/2  1/2 ]         [ 0 -1  1  0 ]
//       [ 0    0    1  ]         [ 0  1  0 -1 ]
#define DP_WINO23_WEIGHT(T, g, u)                                                                   \
    do {                                                                                           \
        T t_[4][3];                                                                                \
        for (int b_ = 0; b_ < 3; b_++) {                                                           \
            T g0 = g[b_], g1 = g[3 + b_], g2 = g[6 + b_];                                          \
            t_[0][b_] = g0;                                                                        \
            t_[1][b_] = (g0 + g1 + g2) * 0.5f;                                                     \
            t_[2][b_] = (g0 - g1 + g2) * 0.5f;                                                     \
            t_[3][b_] = g2;                                                                        \
        }                                                                                          \
        for (int a_ = 0; a_ < 4; a_++) {                                                           \
            T g0 = t_[a_][0], g1 = t_[a_][1], g2 = t_[a_][2];                                      \
            u[a_ * 4 + 0] = g0;                                                                    \
            u[a_ * 4 + 1] = (g0 + g1 + g2) * 0.5f;                                                 \
            u[a_ * 4 + 2] = (g0 - g1 + g2) * 0.5f;                                                 \
            u[a_ * 4 + 3] = g2;                                                                    \
        }                                                                                          \
    } while (0)
#define DP_WINO23_BT(T, d, r)                                                                       \
    do {                                                                                           \
        r[0] = d[0] - d[2];                                                                        \
        r[1] = d[1] + d[2];                                                                        \
        r[2] = d[2] - d[1];                                                                        \
        r[3] = d[1] - d[3];                                                                        \
    } while (0)
#define DP_WINO23_AT(T, m, o)                                                                       \
    do {                                                                                           \
        o[0] = m[0] + m[1] + m[2];                                                                 \
        o[1] = m[1] - m[2] - m[3];                                                                 \
    } while (0)

#define DP_LOAD(T, p) (*(const T *)(p))
#define DP_STORE(T, p, v) (*(T *)(p) = (v))

// One F(MT x MT, 3x3) kernel set (MT = output tile side, AL = MT + 2 = transformed tile side) named
// wino<NAME>_{weights,input,output}_SUFFIX, over vectors VT of VW floats with float tails.
#define DP_WINO_KERNELS(NAME, MT, AL, WEIGHT, BT, AT, SUFFIX, ATTR, VT, VW)                          \
    /* u[p * plane + (ci - ci0) * (co1 - co0) + (co - co0)] for input channels [ci0, ci1) and output */ \
    /* channels [co0, co1) from wt [cin][9][cout]. */                                              \
    ATTR static void wino##NAME##_weights_##SUFFIX(const float *wt, size_t cout, size_t ci0, size_t ci1, \
                                                   size_t co0, size_t co1, float *u, size_t plane) {   \
        const size_t cb = co1 - co0;                                                               \
        for (size_t ci = ci0; ci < ci1; ci++) {                                                    \
            const float *w = wt + ci * 9 * cout + co0;                                             \
            float *uo = u + (ci - ci0) * cb;                                                       \
            size_t co = 0;                                                                         \
            for (; co + VW <= cb; co += VW) {                                                      \
                VT g[9], r[AL * AL];                                                               \
                for (int k = 0; k < 9; k++) g[k] = DP_LOAD(VT, w + k * cout + co);                 \
                WEIGHT(VT, g, r);                                                                  \
                for (int p = 0; p < AL * AL; p++) DP_STORE(VT, uo + p * plane + co, r[p]);         \
            }                                                                                      \
            for (; co < cb; co++) {                                                                \
                float g[9], r[AL * AL];                                                            \
                for (int k = 0; k < 9; k++) g[k] = w[k * cout + co];                               \
                WEIGHT(float, g, r);                                                               \
                for (int p = 0; p < AL * AL; p++) uo[p * plane + co] = r[p];                       \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* Tiles [t0, t1) of a padded NHWC band xb [rows][wp][c] (tile (ty, tx) = t / tw, t % tw reads */ \
    /* rows MT ty .. MT ty + AL - 1, the same columns) -> v[p * vplane + t * c + ch]. */           \
    ATTR static void wino##NAME##_input_##SUFFIX(const float *xb, size_t wp, size_t c, size_t tw,     \
                                                 size_t t0, size_t t1, float *v, size_t vplane) {  \
        for (size_t t = t0; t < t1; t++) {                                                         \
            const float *base = xb + ((t / tw) * MT * wp + (t % tw) * MT) * c;                     \
            float *vo = v + t * c;                                                                 \
            size_t ch = 0;                                                                         \
            for (; ch + VW <= c; ch += VW) {                                                       \
                VT tmp[AL][AL];                                                                    \
                for (int s = 0; s < AL; s++) {                                                     \
                    VT d[AL], r[AL];                                                               \
                    for (int q = 0; q < AL; q++) d[q] = DP_LOAD(VT, base + (q * wp + s) * c + ch); \
                    BT(VT, d, r);                                                                  \
                    for (int q = 0; q < AL; q++) tmp[q][s] = r[q];                                 \
                }                                                                                  \
                for (int q = 0; q < AL; q++) {                                                     \
                    VT r[AL];                                                                      \
                    BT(VT, tmp[q], r);                                                             \
                    for (int s = 0; s < AL; s++) DP_STORE(VT, vo + (q * AL + s) * vplane + ch, r[s]); \
                }                                                                                  \
            }                                                                                      \
            for (; ch < c; ch++) {                                                                 \
                float tmp[AL][AL];                                                                 \
                for (int s = 0; s < AL; s++) {                                                     \
                    float d[AL], r[AL];                                                            \
                    for (int q = 0; q < AL; q++) d[q] = base[(q * wp + s) * c + ch];               \
                    BT(float, d, r);                                                               \
                    for (int q = 0; q < AL; q++) tmp[q][s] = r[q];                                 \
                }                                                                                  \
                for (int q = 0; q < AL; q++) {                                                     \
                    float r[AL];                                                                   \
                    BT(float, tmp[q], r);                                                          \
                    for (int s = 0; s < AL; s++) vo[(q * AL + s) * vplane + ch] = r[s];            \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* m[p * mplane + t * c + ch] for tiles [t0, t1) -> yb [MT rows][MT tw][c] (NHWC band), + bias. */ \
    ATTR static void wino##NAME##_output_##SUFFIX(const float *m, size_t mplane, size_t c, size_t tw,  \
                                                  size_t t0, size_t t1, const float *bias, float *yb) { \
        const size_t wo = MT * tw;                                                                 \
        for (size_t t = t0; t < t1; t++) {                                                         \
            const float *mi = m + t * c;                                                           \
            float *base = yb + ((t / tw) * MT * wo + (t % tw) * MT) * c;                           \
            size_t ch = 0;                                                                         \
            for (; ch + VW <= c; ch += VW) {                                                       \
                VT tmp[MT][AL];                                                                    \
                for (int s = 0; s < AL; s++) {                                                     \
                    VT d[AL], o[MT];                                                               \
                    for (int q = 0; q < AL; q++) d[q] = DP_LOAD(VT, mi + (q * AL + s) * mplane + ch); \
                    AT(VT, d, o);                                                                  \
                    for (int q = 0; q < MT; q++) tmp[q][s] = o[q];                                 \
                }                                                                                  \
                VT bv = bias ? DP_LOAD(VT, bias + ch) : (VT){0};                                   \
                for (int q = 0; q < MT; q++) {                                                     \
                    VT o[MT];                                                                      \
                    AT(VT, tmp[q], o);                                                             \
                    for (int s = 0; s < MT; s++) DP_STORE(VT, base + (q * wo + s) * c + ch, o[s] + bv); \
                }                                                                                  \
            }                                                                                      \
            for (; ch < c; ch++) {                                                                 \
                float tmp[MT][AL];                                                                 \
                for (int s = 0; s < AL; s++) {                                                     \
                    float d[AL], o[MT];                                                            \
                    for (int q = 0; q < AL; q++) d[q] = mi[(q * AL + s) * mplane + ch];            \
                    AT(float, d, o);                                                               \
                    for (int q = 0; q < MT; q++) tmp[q][s] = o[q];                                 \
                }                                                                                  \
                float bv = bias ? bias[ch] : 0.0f;                                                 \
                for (int q = 0; q < MT; q++) {                                                     \
                    float o[MT];                                                                   \
                    AT(float, tmp[q], o);                                                          \
                    for (int s = 0; s < MT; s++) base[(q * wo + s) * c + ch] = o[s] + bv;          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

#define DP_WINO_BOTH(SUFFIX, ATTR, VT, VW)                                                          \
    DP_WINO_KERNELS(43, 4, 6, DP_WINO_WEIGHT, DP_WINO_BT, DP_WINO_AT, SUFFIX, ATTR, VT, VW)          \
    DP_WINO_KERNELS(23, 2, 4, DP_WINO23_WEIGHT, DP_WINO23_BT, DP_WINO23_AT, SUFFIX, ATTR, VT, VW)

#if defined(__x86_64__) && defined(__clang__)
DP_WINO_BOTH(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma"), min_vector_width(512))),
             dp_v16, 16)
DP_WINO_BOTH(avx2, __attribute__((target("avx2,fma"))), dp_v8, 8)
DP_WINO_BOTH(base, , dp_v8, 8)
#else
DP_WINO_BOTH(base, , dp_v8, 8)
#endif

void dp_wino43_weights(const float *wt, size_t cout, size_t ci0, size_t ci1, size_t co0, size_t co1, float *u,
                       size_t plane) {
    DP_DISPATCH(wino43_weights, wt, cout, ci0, ci1, co0, co1, u, plane);
}
void dp_wino43_input(const float *xb, size_t wp, size_t c, size_t tw, size_t t0, size_t t1, float *v,
                     size_t vplane) {
    DP_DISPATCH(wino43_input, xb, wp, c, tw, t0, t1, v, vplane);
}
void dp_wino43_output(const float *m, size_t mplane, size_t c, size_t tw, size_t t0, size_t t1,
                      const float *bias, float *yb) {
    DP_DISPATCH(wino43_output, m, mplane, c, tw, t0, t1, bias, yb);
}
void dp_wino23_weights(const float *wt, size_t cout, size_t ci0, size_t ci1, size_t co0, size_t co1, float *u,
                       size_t plane) {
    DP_DISPATCH(wino23_weights, wt, cout, ci0, ci1, co0, co1, u, plane);
}
void dp_wino23_input(const float *xb, size_t wp, size_t c, size_t tw, size_t t0, size_t t1, float *v,
                     size_t vplane) {
    DP_DISPATCH(wino23_input, xb, wp, c, tw, t0, t1, v, vplane);
}
void dp_wino23_output(const float *m, size_t mplane, size_t c, size_t tw, size_t t0, size_t t1,
                      const float *bias, float *yb) {
    DP_DISPATCH(wino23_output, m, mplane, c, tw, t0, t1, bias, yb);
}

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: 8 x 8 blocks transposed in AVX registers
// (AVX2 build), edges element by element.
#define DP_TRANSPOSE_SCALAR(src, lds, i0, i1, j0, j1, dst, ldd)                                     \
    for (size_t i_ = (i0); i_ < (i1); i_++)                                                        \
        for (size_t j_ = (j0); j_ < (j1); j_++) (dst)[j_ * (ldd) + i_] = (src)[i_ * (lds) + j_]

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void transpose_avx2(const float *src, size_t lds, size_t rows,
                                                               size_t cols, float *dst, size_t ldd) {
    size_t rb = rows & ~(size_t)7, cb = cols & ~(size_t)7;
    for (size_t i = 0; i < rb; i += 8) {
        for (size_t j = 0; j < cb; j += 8) {
            const float *s = src + i * lds + j;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds), r2 = _mm256_loadu_ps(s + 2 * lds),
                   r3 = _mm256_loadu_ps(s + 3 * lds), r4 = _mm256_loadu_ps(s + 4 * lds),
                   r5 = _mm256_loadu_ps(s + 5 * lds), r6 = _mm256_loadu_ps(s + 6 * lds),
                   r7 = _mm256_loadu_ps(s + 7 * lds);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + j * ldd + i;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        DP_TRANSPOSE_SCALAR(src, lds, i, i + 8, cb, cols, dst, ldd);
    }
    DP_TRANSPOSE_SCALAR(src, lds, rb, rows, 0, cols, dst, ldd);
}
#endif

void dp_transpose(const float *src, size_t lds, size_t rows, size_t cols, float *dst, size_t ldd) {
#if defined(__x86_64__) && defined(__clang__)
    if (dp_simd_level() >= 1) {
        transpose_avx2(src, lds, rows, cols, dst, ldd);
        return;
    }
#endif
    for (size_t i0 = 0; i0 < rows; i0 += 16) {
        size_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
        for (size_t j0 = 0; j0 < cols; j0 += 16) {
            size_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
            DP_TRANSPOSE_SCALAR(src, lds, i0, i1, j0, j1, dst, ldd);
        }
    }
}

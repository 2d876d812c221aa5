// Pointwise kernels written as plain loops that clang vectorises, compiled three times: for AVX-512, for
// AVX2+FMA (selected at run time with __builtin_cpu_supports) and for the baseline x86-64 / other targets.

#include "dp_kernels.h"
#include "dp_math.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

// erf(x): |x| >= 0.5: sign(x) (1 - t P(t) exp(-x^2)), t = 1 / (1 + 0.3275911 |x|) (Abramowitz & Stegun
// 7.1.26, absolute error <= 1.5e-7); |x| < 0.5: the Maclaurin series to x^11 (absolute error < 2e-8).
static inline __attribute__((always_inline)) float dp_erff(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float q = 1.061405429f;
    q = q * t - 1.453152027f;
    q = q * t + 1.421413741f;
    q = q * t - 0.284496736f;
    q = q * t + 0.254829592f;
    float large = 1.0f - q * t * dp_expf(-ax * ax);
    large = x < 0 ? -large : large;
    float x2 = x * x;
    float s = -1.0f / 1320;
    s = s * x2 + 1.0f / 216;
    s = s * x2 - 1.0f / 42;
    s = s * x2 + 1.0f / 10;
    s = s * x2 - 1.0f / 3;
    s = s * x2 + 1.0f;
    float small = 1.1283791670955126f * x * s;
    return ax < 0.5f ? small : large;
}

#define DP_KERNELS(SUFFIX, ATTR)                                                                     \
    ATTR static void affine_##SUFFIX(const float *src, float *dst, size_t n, float a, float b,      \
                                     int silu) {                                                     \
        if (silu) {                                                                                  \
            for (size_t i = 0; i < n; i++) {                                                         \
                float v = src[i] * a + b;                                                            \
                dst[i] = v / (1.0f + dp_expf(-v));                                                   \
            }                                                                                        \
        } else {                                                                                     \
            for (size_t i = 0; i < n; i++) dst[i] = src[i] * a + b;                                  \
        }                                                                                            \
    }                                                                                                \
    ATTR static void silu_scaled_##SUFFIX(const float *src, float *dst, size_t n, float k) {        \
        for (size_t i = 0; i < n; i++) {                                                             \
            float v = src[i];                                                                        \
            dst[i] = v / (1.0f + dp_expf(-k * v));                                                   \
        }                                                                                            \
    }                                                                                                \
    ATTR static void gelu_##SUFFIX(const float *gate, const float *value, float *dst, size_t n) {   \
        const float invSqrt2 = 0.70710678118654752440f;                                              \
        if (value) {                                                                                 \
            for (size_t i = 0; i < n; i++) {                                                         \
                float g = gate[i];                                                                   \
                dst[i] = value[i] * (0.5f * g * (1.0f + dp_erff(g * invSqrt2)));                     \
            }                                                                                        \
        } else {                                                                                     \
            for (size_t i = 0; i < n; i++) {                                                         \
                float g = gate[i];                                                                   \
                dst[i] = 0.5f * g * (1.0f + dp_erff(g * invSqrt2));                                  \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    /* exp(p - m) in place for a known row maximum m; returns 1 / sum. 16 independent lanes so the */ \
    /* reductions vectorise without reassociation flags. */                                        \
    ATTR static float exp_shifted_row_##SUFFIX(float *p, size_t n, float m) {                       \
        float acc[16];                                                                               \
        for (int j = 0; j < 16; j++) acc[j] = 0;                                                     \
        size_t body = n & ~(size_t)15;                                                               \
        for (size_t i = 0; i < body; i += 16)                                                        \
            for (int j = 0; j < 16; j++) {                                                           \
                float e = dp_expf(p[i + j] - m);                                                     \
                p[i + j] = e;                                                                        \
                acc[j] += e;                                                                         \
            }                                                                                        \
        float sum = 0;                                                                               \
        for (int j = 0; j < 16; j++) sum += acc[j];                                                  \
        for (size_t i = body; i < n; i++) {                                                          \
            float e = dp_expf(p[i] - m);                                                             \
            p[i] = e;                                                                                \
            sum += e;                                                                                \
        }                                                                                            \
        return 1.0f / sum;                                                                           \
    }                                                                                                \
    /* exp(p - max) in place; returns 1 / sum (the caller scales what it computes from the row). */ \
    ATTR static float softmax_row_unnormalized_##SUFFIX(float *p, size_t n) {                       \
        if (n == 0) return 0.0f;                                                                     \
        float mx[16];                                                                                \
        for (int j = 0; j < 16; j++) mx[j] = p[0];                                                   \
        size_t body = n & ~(size_t)15;                                                               \
        for (size_t i = 0; i < body; i += 16)                                                        \
            for (int j = 0; j < 16; j++) mx[j] = p[i + j] > mx[j] ? p[i + j] : mx[j];                \
        float m = mx[0];                                                                             \
        for (int j = 1; j < 16; j++) m = mx[j] > m ? mx[j] : m;                                      \
        for (size_t i = body; i < n; i++) m = p[i] > m ? p[i] : m;                                   \
        return exp_shifted_row_##SUFFIX(p, n, m);                                                    \
    }                                                                                                \
    ATTR static void softmax_row_##SUFFIX(float *p, size_t n) {                                     \
        if (n == 0) return;                                                                          \
        float inv = softmax_row_unnormalized_##SUFFIX(p, n);                                         \
        for (size_t i = 0; i < n; i++) p[i] *= inv;                                                  \
    }                                                                                                \
    ATTR static void exp_array_##SUFFIX(const float *src, float *dst, size_t n) {                   \
        for (size_t i = 0; i < n; i++) dst[i] = dp_expf(src[i]);                                     \
    }                                                                                                \
    ATTR static void erf_array_##SUFFIX(const float *src, float *dst, size_t n) {                   \
        for (size_t i = 0; i < n; i++) dst[i] = dp_erff(src[i]);                                     \
    }

// DP_SIMD=avx2|portable caps the level for the whole process (A/B runs of the other builds on one machine);
// dp_simd_cap does the same for tests.
static _Atomic int dp_simd_level_cap = -1;

static int dp_simd_env_cap(void) {
    const char *v = getenv("DP_SIMD");
    if (v != NULL && strcmp(v, "avx2") == 0) return 1;
    if (v != NULL && strcmp(v, "portable") == 0) return 0;
    return 2;
}

int dp_simd_cap(int level) {
    dp_simd_level_cap = level < 0 ? 0 : level;
    return dp_simd_level();
}

static int dp_simd_level_of_cpu(void) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    static _Atomic int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("fma"))
            cached = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            cached = 1;
        else
            cached = 0;
    }
    return cached;
#else
    return 0;
#endif
}

int dp_simd_level(void) {
    int cpu = dp_simd_level_of_cpu(), cap = dp_simd_level_cap;
    if (cap < 0) {
        cap = dp_simd_env_cap();
        dp_simd_level_cap = cap;
    }
    return cpu < cap ? cpu : cap;
}

#if defined(__x86_64__) && defined(__clang__)
DP_KERNELS(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma"), min_vector_width(512))))
DP_KERNELS(avx2, __attribute__((target("avx2,fma"))))
DP_KERNELS(base, )
#else
DP_KERNELS(base, )
#endif

void dp_affine(const float *src, float *dst, size_t n, float a, float b, int silu) {
    DP_DISPATCH(affine, src, dst, n, a, b, silu);
}
void dp_silu_scaled(const float *src, float *dst, size_t n, float k) { DP_DISPATCH(silu_scaled, src, dst, n, k); }
void dp_gelu(const float *gate, const float *value, float *dst, size_t n) {
    DP_DISPATCH(gelu, gate, value, dst, n);
}
void dp_softmax_row(float *p, size_t n) { DP_DISPATCH(softmax_row, p, n); }
void dp_exp_array(const float *src, float *dst, size_t n) { DP_DISPATCH(exp_array, src, dst, n); }
void dp_erf_array(const float *src, float *dst, size_t n) { DP_DISPATCH(erf_array, src, dst, n); }

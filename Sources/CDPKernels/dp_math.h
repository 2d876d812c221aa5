// Scalar math the kernels inline (kernels.c, attention.c): clang vectorises loops that call it.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

/// The vector level the kernels run at, read once from the CPU (kernels.c): 2 = AVX-512 (F, VL, DQ, BW) + FMA,
/// 1 = AVX2 + FMA, 0 = baseline. Every kernel file dispatches on it.
int dp_simd_level(void);

// Calls name_avx512 / name_avx2 / name_base (the builds every kernel file makes of its kernels) by the level.
#if defined(__x86_64__) && defined(__clang__)
#define DP_DISPATCH(name, ...)                                                                       \
    do {                                                                                             \
        switch (dp_simd_level()) {                                                                   \
        case 2: name##_avx512(__VA_ARGS__); break;                                                   \
        case 1: name##_avx2(__VA_ARGS__); break;                                                     \
        default: name##_base(__VA_ARGS__); break;                                                    \
        }                                                                                            \
    } while (0)
#define DP_DISPATCH_RETURN(name, ...)                                                                \
    switch (dp_simd_level()) {                                                                       \
    case 2: return name##_avx512(__VA_ARGS__);                                                       \
    case 1: return name##_avx2(__VA_ARGS__);                                                         \
    default: return name##_base(__VA_ARGS__);                                                        \
    }
#else
#define DP_DISPATCH(name, ...) name##_base(__VA_ARGS__)
#define DP_DISPATCH_RETURN(name, ...) return name##_base(__VA_ARGS__)
#endif

// exp(x): Cody-Waite reduction x = n ln2 + r, degree-6 polynomial for e^r, 2^n built in the exponent
// bits. Relative error < 1e-7 for -87.3 < x < 88.7; below that 0, above +inf; NaN stays NaN.
static inline __attribute__((always_inline)) float dp_expf(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    float xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    const float magic = 12582912.0f;   // 1.5 * 2^23: adding it rounds to an integer in the low bits
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * (r * r) + r + 1.0f;
    int32_t tb, mb;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    int32_t ni = tb - mb;              // n in [-126, 128]
    int32_t h = ni >> 1;
    int32_t b1 = (h + 127) << 23, b2 = (ni - h + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float v = p * s1 * s2;
    v = x < lo ? 0.0f : v;
    v = x > hi ? INFINITY : v;
    return x != x ? x : v;
}


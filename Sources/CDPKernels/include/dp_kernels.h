// Vectorised pointwise kernels for DPTensor (exp-, erf- and sigmoid-based loops).
// Each entry point picks an AVX2+FMA build at run time when the CPU has it, else a portable build.
#pragma once
#include <stddef.h>

/// dst[i] = a * src[i] + b, then SiLU (v * sigmoid(v)) when silu != 0. dst may equal src.
void dp_affine(const float *src, float *dst, size_t n, float a, float b, int silu);
/// dst[i] = src[i] * sigmoid(k * src[i]) (SiLU: k = 1; QuickGELU: k = 1.702). dst may equal src.
void dp_silu_scaled(const float *src, float *dst, size_t n, float k);
/// dst[i] = 0.5 x (1 + erf(x / sqrt 2)), x = gate[i]; times value[i] when value != NULL.
void dp_gelu(const float *gate, const float *value, float *dst, size_t n);
/// In-place softmax of one row (max-subtracted).
void dp_softmax_row(float *p, size_t n);
/// Scalar helpers used by the tests: vector exp and erf applied to an array.
void dp_exp_array(const float *src, float *dst, size_t n);
void dp_erf_array(const float *src, float *dst, size_t n);

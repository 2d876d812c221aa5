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
/// Row-major sgemm through OpenBLAS (blas.c): C = alpha op(A) op(B) + beta C; loads OpenBLAS at the first call.
void dp_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);
/// openblas_set_num_threads.
void dp_blas_set_threads(int n);
/// OpenBLAS's name for the kernel set it runs (e.g. "SkylakeX").
const char *dp_blas_corename(void);
/// The OPENBLAS_CORETYPE dp-farm set before loading OpenBLAS, or NULL when it left the choice to OpenBLAS
/// (the user set OPENBLAS_CORETYPE, DP_OPENBLAS_CORETYPE=none, or the CPU has no AVX-512).
const char *dp_blas_forced_core(void);

// Vectorised pointwise kernels for DPTensor (exp-, erf- and sigmoid-based loops).
// Each entry point picks an AVX-512 or AVX2+FMA build at run time when the CPU has it, else a portable build.
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
/// Winograd F(4x4, 3x3) weight transform (winograd.c): u[p * plane + (ci - ci0) * (co1 - co0) + co - co0],
/// p = 0..35, for input channels [ci0, ci1) and output channels [co0, co1) from wt [cin][9][cout] (the
/// filter g[co][ci][ky][kx] at wt[ci][ky*3+kx][co]).
void dp_wino43_weights(const float *wt, size_t cout, size_t ci0, size_t ci1, size_t co0, size_t co1, float *u,
                       size_t plane);
/// Input transform of tiles [t0, t1) of a zero-padded NHWC band xb [rows][wp][c]: tile t = (t / tw, t % tw)
/// reads rows 4ty..4ty+5 and columns 4tx..4tx+5 and writes v[p * vplane + t * c + ch], p = 0..35.
void dp_wino43_input(const float *xb, size_t wp, size_t c, size_t tw, size_t t0, size_t t1, float *v,
                     size_t vplane);
/// Output transform of tiles [t0, t1): m[p * mplane + t * c + ch] -> yb [4 rows][4 tw][c] (NHWC), + bias[ch]
/// (bias may be NULL).
void dp_wino43_output(const float *m, size_t mplane, size_t c, size_t tw, size_t t0, size_t t1,
                      const float *bias, float *yb);
/// The same three for Winograd F(2x2, 3x3): 16 positions p, 2x2 output tiles read from 4x4 input patches
/// (rows 2ty..2ty+3), output band [2 rows][2 tw][c].
void dp_wino23_weights(const float *wt, size_t cout, size_t ci0, size_t ci1, size_t co0, size_t co1, float *u,
                       size_t plane);
void dp_wino23_input(const float *xb, size_t wp, size_t c, size_t tw, size_t t0, size_t t1, float *v,
                     size_t vplane);
void dp_wino23_output(const float *m, size_t mplane, size_t c, size_t tw, size_t t0, size_t t1,
                      const float *bias, float *yb);
/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols.
void dp_transpose(const float *src, size_t lds, size_t rows, size_t cols, float *dst, size_t ldd);
/// Fused attention (attention.c). Packs one head: kp [nkp][d] = K (zero rows nk..nkp), vp [nk][d] = V; key/value
/// rows have stride c. nkp must be a multiple of dp_attention_key_padding().
void dp_attention_pack_head(const float *key, const float *value, size_t nk, size_t c, size_t d, float *kp,
                            size_t nkp, float *vp);
/// What nkp must be a multiple of.
size_t dp_attention_key_padding(void);
/// Query rows one dp_attention_rows call takes at most (the build's block of query lanes: 64 on AVX-512, 16 else).
size_t dp_attention_rows_per_call(void);
/// Floats of scratch one dp_attention_rows call needs for head size d.
size_t dp_attention_scratch_floats(size_t d);
/// For rows <= dp_attention_rows_per_call() query rows q (row stride ldq) of one head packed as kp, vp:
/// o[r][0..d) = softmax(scale q[r] K^T) V, written at row stride ldo.
void dp_attention_rows(const float *q, size_t ldq, size_t rows, const float *kp, const float *vp, size_t nk,
                       size_t d, float scale, float *scratch, float *o, size_t ldo);
/// The allocator mode of the engine's denoising loop (memory.c): between _begin and _end freed memory is kept
/// for reuse (no mmap per large tensor, no trimming); the last _end gives the free pages back. Scopes nest and
/// may overlap across threads.
void dp_malloc_retain_begin(void);
void dp_malloc_retain_end(void);
/// Whether retain scopes take effect (not with DP_MALLOC=system or the user's own malloc settings).
const char *dp_malloc_description(void);
/// Caps the vector level every kernel dispatches on (2 AVX-512, 1 AVX2, 0 portable) at `level`, so tests run
/// each build on one machine; returns the level now in use. dp_simd_cap(2) lifts the cap. The environment's
/// DP_SIMD=avx2|portable sets the starting cap of a process.
int dp_simd_cap(int level);
/// The vector level the kernels dispatch on now (the CPU's, under the cap).
int dp_simd_level(void);

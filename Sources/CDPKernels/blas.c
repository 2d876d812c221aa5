// The engine's one path into BLAS: OpenBLAS, loaded at the first product with the kernel set chosen here.
//
// Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels from the CPU model number, once, in its
// library constructor. On CPUs newer than it (e.g. Xeon "Emerald Rapids", family 6 model 207) it falls
// back to "Prescott", the SSE3 kernels: on such a 2-core machine sgemm 2048^3 on one thread ran at
// 17.8 GFLOP/s with the detected Prescott kernels and 86.8 with SkylakeX's. The only way to choose is the
// OPENBLAS_CORETYPE environment variable, read by that constructor, so OpenBLAS cannot be linked (its
// constructor would run before main, and glibc resets an environment set earlier, in .preinit_array).
// It is opened with dlopen at the first call instead, after setting OPENBLAS_CORETYPE when the user has
// not:
//   AVX-512 F/CD/BW/DQ/VL  -> SkylakeX (OpenBLAS's AVX-512 sgemm kernels)
//   otherwise               -> nothing: OpenBLAS's own detection knows the AVX2 CPUs of its time
//                              (Haswell ... Zen 3) and picks Haswell's kernels for them.
// DP_OPENBLAS_CORETYPE=auto (default) | none (leave it to OpenBLAS) | NAME (force NAME).
//
// Its worker threads' idle time is set here too. After a product OpenBLAS's workers spin (sched_yield in a
// loop) for 2^28 cycles, ~0.1 s, before they sleep; the engine's own kernels (attention, GEGLU, the
// Winograd transforms, the bias/residual seeding) run right after a product on both cores, so a spinning
// OpenBLAS worker took a core from them. OPENBLAS_THREAD_TIMEOUT (read by OpenBLAS at load, a power of two
// of cycles) is set to 8 (256 cycles) unless the user set it: the workers sleep at once and are woken by the
// next product (a futex wake, microseconds). Measured, UNet forward batch 3 at 80 x 64, interleaved, load ~2:
// 12.2-14.1 s with the default, 11.4-11.6 s with 8 (attention 2.7-3.1 -> 2.5 s, 3x3 convs 5.2-5.6 -> 4.6 s).
// DP_OPENBLAS_THREAD_TIMEOUT=none leaves OpenBLAS's default.

#include "dp_kernels.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The CBLAS / OpenBLAS entry points used, as OpenBLAS's cblas.h declares them (enums are ints).
enum { DP_CBLAS_ROW_MAJOR = 101, DP_CBLAS_NO_TRANS = 111, DP_CBLAS_TRANS = 112 };
typedef void (*dp_sgemm_fn)(int order, int transA, int transB, int m, int n, int k, float alpha,
                            const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*dp_set_threads_fn)(int n);
typedef char *(*dp_corename_fn)(void);

static pthread_once_t dp_blas_once = PTHREAD_ONCE_INIT;
static dp_sgemm_fn dp_blas_sgemm_ptr;
static dp_set_threads_fn dp_blas_set_threads_ptr;
static dp_corename_fn dp_blas_corename_ptr;
static const char *dp_forced_core = NULL;

static const char *dp_pick_core(void) {
    if (getenv("OPENBLAS_CORETYPE") != NULL) return NULL;              // the user's choice stands
    const char *mode = getenv("DP_OPENBLAS_CORETYPE");
    if (mode != NULL && strcmp(mode, "none") == 0) return NULL;
    if (mode != NULL && mode[0] != '\0' && strcmp(mode, "auto") != 0) return mode;
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
#endif
    return NULL;
}

static void dp_blas_load(void) {
    const char *core = dp_pick_core();
    if (core != NULL && setenv("OPENBLAS_CORETYPE", core, 0) == 0) dp_forced_core = core;
    const char *timeout = getenv("DP_OPENBLAS_THREAD_TIMEOUT");
    if ((timeout == NULL || strcmp(timeout, "none") != 0) && getenv("OPENBLAS_THREAD_TIMEOUT") == NULL &&
        getenv("GOTO_THREAD_TIMEOUT") == NULL)
        setenv("OPENBLAS_THREAD_TIMEOUT", "8", 0);
    static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && lib == NULL; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "dp-farm: cannot load OpenBLAS (libopenblas.so.0): %s\n"
                        "dp-farm: install it (Debian: apt-get install libopenblas0-pthread, or libopenblas-dev)\n",
                dlerror());
        abort();
    }
    dp_blas_sgemm_ptr = (dp_sgemm_fn)dlsym(lib, "cblas_sgemm");
    dp_blas_set_threads_ptr = (dp_set_threads_fn)dlsym(lib, "openblas_set_num_threads");
    dp_blas_corename_ptr = (dp_corename_fn)dlsym(lib, "openblas_get_corename");
    if (dp_blas_sgemm_ptr == NULL || dp_blas_set_threads_ptr == NULL) {
        fprintf(stderr, "dp-farm: %s lacks cblas_sgemm or openblas_set_num_threads (not OpenBLAS?)\n",
                "libopenblas.so.0");
        abort();
    }
}

static inline void dp_blas_ready(void) { pthread_once(&dp_blas_once, dp_blas_load); }

void dp_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    dp_blas_ready();
    dp_blas_sgemm_ptr(DP_CBLAS_ROW_MAJOR, transA ? DP_CBLAS_TRANS : DP_CBLAS_NO_TRANS,
                      transB ? DP_CBLAS_TRANS : DP_CBLAS_NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void dp_blas_set_threads(int n) {
    dp_blas_ready();
    dp_blas_set_threads_ptr(n);
}

const char *dp_blas_corename(void) {
    dp_blas_ready();
    return dp_blas_corename_ptr != NULL ? dp_blas_corename_ptr() : "unknown";
}

const char *dp_blas_forced_core(void) {
    dp_blas_ready();
    return dp_forced_core;
}

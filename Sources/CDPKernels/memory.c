// How the engine's denoising loop allocates: freed memory kept for reuse while UNet forwards run.
//
// A UNet forward allocates and frees ~3 GB of activations (each layer's output is a fresh tensor). glibc's
// defaults serve blocks above its mmap threshold (128 KB, raised dynamically up to 32 MB) with mmap and give
// them back with munmap, and trim freed memory at the top of the heap, so nearly every large output was
// faulted in again, page by page, zero-filled by the kernel: ~700,000 minor faults per forward of an SD-1.5
// UNet at batch 3, 80 x 64 (~1.8 s of system time per forward on the 2-core machine, /usr/bin/time).
// Between dp_malloc_retain_begin and _end (the denoising loop; dp-bench unet's forwards) blocks come from the
// heap only (M_MMAP_MAX 0) and freed memory stays (M_TRIM_THRESHOLD at its maximum), so each forward reuses
// the pages the one before it had. At the end the free pages are given back (malloc_trim) and mmap is allowed
// again, so the VAE decode that follows, which allocates other sizes, does not stack its blocks on top of the
// loop's free ones (measured: a frame's peak RSS 5.07 GB with the heap kept through the decode, over the 5 GB
// bound). Nested and concurrent scopes (frames rendered on several threads) keep the mode until the last ends.
//
// DP_MALLOC=system, or any MALLOC_* / GLIBC_TUNABLES setting of the user's, leaves glibc's settings alone.

#include "dp_kernels.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

extern char **environ;

static pthread_mutex_t dp_malloc_lock = PTHREAD_MUTEX_INITIALIZER;
static int dp_malloc_depth = 0;      // open retain scopes (under the lock)
static int dp_malloc_enabled = -1;   // decided at the first scope (under the lock)

static int dp_malloc_decide(void) {
#if defined(__GLIBC__)
    const char *mode = getenv("DP_MALLOC");
    if (mode != NULL && strcmp(mode, "system") == 0) return 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        if (strncmp(*e, "MALLOC_", 7) == 0 || strncmp(*e, "GLIBC_TUNABLES=", 15) == 0) return 0;
    return 1;
#else
    return 0;
#endif
}

void dp_malloc_retain_begin(void) {
    pthread_mutex_lock(&dp_malloc_lock);
    if (dp_malloc_enabled < 0) dp_malloc_enabled = dp_malloc_decide();
#if defined(__GLIBC__)
    if (dp_malloc_enabled && dp_malloc_depth == 0) {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, -1);   // SIZE_MAX
    }
#endif
    dp_malloc_depth++;
    pthread_mutex_unlock(&dp_malloc_lock);
}

void dp_malloc_retain_end(void) {
    pthread_mutex_lock(&dp_malloc_lock);
    if (dp_malloc_depth > 0) dp_malloc_depth--;
#if defined(__GLIBC__)
    if (dp_malloc_enabled == 1 && dp_malloc_depth == 0) {
        mallopt(M_MMAP_MAX, 65536);              // glibc's default count
        mallopt(M_TRIM_THRESHOLD, 128 * 1024);   // glibc's default threshold
        malloc_trim(0);
    }
#endif
    pthread_mutex_unlock(&dp_malloc_lock);
}

const char *dp_malloc_description(void) {
    pthread_mutex_lock(&dp_malloc_lock);
    if (dp_malloc_enabled < 0) dp_malloc_enabled = dp_malloc_decide();
    int enabled = dp_malloc_enabled;
    pthread_mutex_unlock(&dp_malloc_lock);
    return enabled ? "freed memory kept for reuse through UNet forwards (DP_MALLOC=system: glibc defaults)"
                   : "glibc defaults (DP_MALLOC=system, or the user's MALLOC_* / GLIBC_TUNABLES)";
}

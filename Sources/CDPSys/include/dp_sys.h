// Linux calls Swift cannot make directly (variadic C functions are not imported).
#ifndef DP_SYS_H
#define DP_SYS_H

#include <stddef.h>

/// prctl(PR_SET_TIMERSLACK, ns) for the calling thread: how late the kernel may wake its sleeps
/// (default 50 us). Returns 0, or -1 with errno set.
int dp_set_timer_slack_ns(unsigned long ns);

/// setpriority(PRIO_PROCESS, gettid(), nice): the calling thread's nice value (-20...19; lowering it
/// below the current value needs CAP_SYS_NICE). Threads it creates afterwards inherit it. Returns 0,
/// or -1 with errno set.
int dp_set_thread_nice(int nice);

/// prctl(PR_SET_NAME, name): the calling thread's name as `top -H`, `ps -L` and /proc show it (Linux
/// keeps the first 15 bytes). Returns 0, or -1 with errno set.
int dp_set_thread_name(const char *name);

/// Writes `length` bytes to a new file `path` in `folder` without a temp name: an unnamed file
/// (open(folder, O_TMPFILE)) linked into place when complete (linkat through /proc/self/fd), which
/// refuses an existing file (EEXIST). A crash leaves nothing behind. Returns 0; 1 when this kernel,
/// file system or /proc cannot do it (use a temp file + link instead); -1 (open), -2 (write) or
/// -3 (link) with errno set.
int dp_write_new_file_tmpfile(const char *folder, const char *path, const void *data, size_t length);

#endif

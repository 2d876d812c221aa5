#define _GNU_SOURCE
#include "dp_sys.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int dp_set_timer_slack_ns(unsigned long ns) {
    return prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0);
}

int dp_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

int dp_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int dp_write_new_file_tmpfile(const char *folder, const char *path, const void *data, size_t length) {
    int fd = open(folder, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
        // No O_TMPFILE on this kernel (EISDIR) or file system (EOPNOTSUPP): the caller falls back.
        if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return 1;
        return -1;
    }
    const char *bytes = data;
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(fd, bytes + done, length - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int saved = errno;
            close(fd);
            errno = saved;
            return -2;
        }
        done += (size_t)n;
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        // No /proc to name the file by: the caller falls back.
        return saved == ENOENT ? 1 : -3;
    }
    close(fd);
    return 0;
}

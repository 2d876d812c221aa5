// Linux calls Swift cannot make directly (variadic C functions are not imported).
#ifndef DP_SYS_H
#define DP_SYS_H

/// prctl(PR_SET_TIMERSLACK, ns) for the calling thread: how late the kernel may wake its sleeps
/// (default 50 us). Returns 0, or -1 with errno set.
int dp_set_timer_slack_ns(unsigned long ns);

/// setpriority(PRIO_PROCESS, gettid(), nice): the calling thread's nice value (-20...19; lowering it
/// below the current value needs CAP_SYS_NICE). Threads it creates afterwards inherit it. Returns 0,
/// or -1 with errno set.
int dp_set_thread_nice(int nice);

#endif

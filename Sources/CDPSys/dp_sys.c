#include "dp_sys.h"
#include <sys/prctl.h>

int dp_set_timer_slack_ns(unsigned long ns) {
    return prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0);
}

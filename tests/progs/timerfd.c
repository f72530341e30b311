/* Issue 3: an open timerfd survives. A periodic CLOCK_MONOTONIC timerfd (20 ms) is read in a
 * blocking loop; a non-blocking one-shot armed for an hour must keep (nearly) all its time;
 * both keep their flags. One deterministic line per step. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(void) {
    int tick = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    int hour = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec p = {{0, 20000000}, {0, 20000000}}, h = {{0, 0}, {3600, 0}};
    timerfd_settime(tick, 0, &p, 0);
    timerfd_settime(hour, 0, &h, 0);
    for (int i = 0; i < 250; i++) {
        uint64_t n = 0;
        ssize_t r = read(tick, &n, sizeof n);
        struct itimerspec left;
        timerfd_gettime(hour, &left);
        uint64_t dummy;
        int hour_empty = read(hour, &dummy, sizeof dummy) < 0;
        int flags_ok = (fcntl(tick, F_GETFD) & FD_CLOEXEC) && !(fcntl(hour, F_GETFD) & FD_CLOEXEC) &&
                       (fcntl(hour, F_GETFL) & O_NONBLOCK) && !(fcntl(tick, F_GETFL) & O_NONBLOCK);
        printf("step %d tick %s hour %s flags %s\n", i, r == 8 && n >= 1 ? "ok" : "FAIL",
               left.it_value.tv_sec > 3000 && hour_empty ? "ok" : "FAIL", flags_ok ? "ok" : "FAIL");
        fflush(stdout);
    }
    return 0;
}

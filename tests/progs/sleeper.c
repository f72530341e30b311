/* sleeper.c — checks that sleeps survive checkpoint and restart unharmed.
 *
 * Usage: sleeper [STEPS]   (default 30)
 *
 * Each step calls nanosleep(150 ms), then sleep(1) on every 5th step, then
 * usleep(50 ms), measuring CLOCK_MONOTONIC around each call. A call that returns
 * early (-1/EINTR, a nonzero remainder from sleep(), or less time elapsed than
 * requested) is reported as "step N SHORT <call> <elapsed>", otherwise the step
 * prints "step N ok". The checkpoint signal and the restart must stay invisible
 * to the program, so the expected output is all "ok" lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int check(long step, const char *call, int early, double t0, double want_ms) {
    double el = now_ms() - t0;
    if (early || el < want_ms) {
        printf("step %ld SHORT %s %.3fms\n", step, call, el);
        fflush(stdout);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 30;
    for (long step = 1; step <= steps; step++) {
        int bad = 0;
        double t0 = now_ms();
        struct timespec req = {0, 150 * 1000000L};
        int r = nanosleep(&req, NULL);
        bad |= check(step, "nanosleep", r != 0, t0, 150.0);
        if (step % 5 == 0) {
            t0 = now_ms();
            unsigned left = sleep(1);
            bad |= check(step, "sleep", left != 0, t0, 1000.0);
        }
        t0 = now_ms();
        r = usleep(50 * 1000);
        bad |= check(step, "usleep", r != 0, t0, 50.0);
        if (!bad) {
            printf("step %ld ok\n", step);
            fflush(stdout);
        }
    }
    return 0;
}

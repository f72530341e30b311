/* Clocks test program: does the time the computation was down show in CLOCK_MONOTONIC and
 * CLOCK_BOOTTIME after a restart?
 *
 * Usage: clock_gap [STEPS]   (default 40). Every 100 ms (a sleep) it reads both clocks and
 * prints "step N ok" when each advanced by less than 1.5 s since the previous step (and did not
 * go back), else "step N gap MONO_MS BOOT_MS". ~4 s. Natively every line is "ok". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ms(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 40;
    setvbuf(stdout, NULL, _IOLBF, 0);
    long long m = now_ms(CLOCK_MONOTONIC), b = now_ms(CLOCK_BOOTTIME);
    for (int i = 0; i < steps; i++) {
        struct timespec d = {0, 100 * 1000000L};
        while (nanosleep(&d, &d) != 0 && errno == EINTR) {
        }
        long long m2 = now_ms(CLOCK_MONOTONIC), b2 = now_ms(CLOCK_BOOTTIME);
        long long dm = m2 - m, db = b2 - b;
        if (dm >= 0 && dm < 1500 && db >= 0 && db < 1500)
            printf("step %d ok\n", i);
        else
            printf("step %d gap %lld %lld\n", i, dm, db);
        m = m2;
        b = b2;
    }
    return 0;
}

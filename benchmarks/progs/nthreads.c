/* Suspend-latency subject: N threads (argv[1]) each alternating a short computation and a
 * 1 ms sleep, so a checkpoint finds them running, sleeping and in between. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static void *spin(void *a) {
    volatile unsigned long x = (unsigned long)a;
    for (;;) {
        for (int i = 0; i < 100000; i++) x = x * 6364136223846793005UL + 1;
        struct timespec t = {0, 1000000};
        nanosleep(&t, 0);
    }
    return 0;
}
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 8;
    pthread_t t;
    for (long i = 1; i < n; i++) pthread_create(&t, 0, spin, (void *)i);
    printf("ready\n");
    fflush(stdout);
    spin(0);
}

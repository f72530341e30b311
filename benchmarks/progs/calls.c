/* Wrapper-overhead subject: N iterations each of getpid(), open()/close() and
 * pthread_mutex_lock()/unlock(); prints ns per call for each. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    volatile long sink = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) sink += getpid();
    double t1 = now();
    for (long i = 0; i < n / 10; i++) { int fd = open("/dev/null", O_RDONLY); close(fd); }
    double t2 = now();
    for (long i = 0; i < n; i++) { pthread_mutex_lock(&m); sink++; pthread_mutex_unlock(&m); }
    double t3 = now();
    printf("getpid %.1f\nopen+close %.1f\nmutex lock+unlock %.1f\n", (t1 - t0) / n, (t2 - t1) / (n / 10), (t3 - t2) / n);
    return 0;
}

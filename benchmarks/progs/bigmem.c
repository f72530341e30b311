/* Benchmark subject: touches SIZE MiB, the first half random bytes, the second half zero
 * (written, so resident), then writes a heartbeat line to stdout every 2 ms forever. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1024;
    size_t sz = mib << 20;
    unsigned char *p = malloc(sz);
    unsigned long long x = 88172645463325252ULL;
    unsigned long long *w = (unsigned long long *)p;
    for (size_t i = 0; i < sz / 16; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; w[i] = x; }
    memset(p + sz / 2, 0, sz / 2);
    printf("ready\n");
    fflush(stdout);
    struct timespec t = {0, 2000000};
    for (unsigned long n = 0;; n++) {
        printf("beat %lu %u\n", n, p[n % sz]);
        fflush(stdout);
        nanosleep(&t, 0);
    }
}

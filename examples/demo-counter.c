/* The demo's subject: counts to 40, five ticks a second, keeping a running checksum over a
 * 32 MiB buffer it keeps changing — state that must survive checkpoint, kill and restart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    size_t sz = 32 << 20;
    unsigned char *buf = malloc(sz);
    memset(buf, 7, sz);
    unsigned long sum = 0;
    for (int i = 1; i <= 40; i++) {
        for (size_t k = 0; k < sz; k += 4096) buf[k] += (unsigned char)i;
        for (size_t k = 0; k < sz; k += 4096) sum = sum * 31 + buf[k];
        printf("tick %2d  pid %-7d checksum %016lx\n", i, getpid(), sum);
        fflush(stdout);
        struct timespec t = {0, 200000000};
        nanosleep(&t, 0);
    }
    printf("counted to 40: done\n");
    return 0;
}

/* mkproj main: `prog N` prints 6 lines "run N line K value V", 100 ms apart. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "proj.h"

int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 0;
    unsigned v = n * 2654435761u;
    for (unsigned k = 1; k <= 6; k++) {
        v = epsilon(delta(gamma_(beta(alpha(v + k)))));
        printf("run %u line %u value %08x\n", n, k, v);
        fflush(stdout);
        struct timespec t = {0, 100000000L};
        nanosleep(&t, 0);
    }
    return 0;
}

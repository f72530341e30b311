/* Issue 3, test 7: an OpenMP parallel loop over many rounds (libgomp's thread pool stays
 * alive between rounds, so the checkpoint catches its threads parked or spinning). */
#include <omp.h>
#include <stdio.h>
#include <time.h>

#define N 200000
static double a[N];

int main(void) {
    for (int i = 0; i < N; i++) a[i] = i * 0.5;
    double total = 0;
    for (int r = 0; r < 300; r++) {
        double sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(4) schedule(static)
        for (int i = 0; i < N; i++) {
            a[i] = a[i] * 1.0000001 + (i % 7);
            sum += a[i];
        }
        total += sum / N;
        printf("round %d mean %.6f\n", r, sum / N);
        fflush(stdout);
        struct timespec t = {0, 10000000};
        nanosleep(&t, 0);
    }
    printf("done %.3f\n", total);
    return 0;
}

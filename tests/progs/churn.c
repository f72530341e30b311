/* Threads are created and exit all the time: every round starts 4 short-lived threads (one
 * detached) and joins 3, so checkpoints land while threads are being born and dying. Each
 * thread adds to a shared sum under a mutex; one line per round, deterministic. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static unsigned long sum;
static int detached_done;

static void *work(void *a) {
    unsigned long v = (unsigned long)a, x = v;
    for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    pthread_mutex_lock(&m);
    sum += x >> 40; /* commutative: the order threads finish in does not matter */
    if (v % 4 == 3) detached_done++;
    pthread_mutex_unlock(&m);
    return 0;
}

int main(void) {
    for (int r = 0; r < 300; r++) {
        pthread_t t[3], d;
        unsigned long before;
        for (int k = 0; k < 3; k++) pthread_create(&t[k], 0, work, (void *)(unsigned long)(r * 4 + k));
        for (int k = 0; k < 3; k++) pthread_join(t[k], 0);
        before = sum;
        pthread_create(&d, 0, work, (void *)(unsigned long)(r * 4 + 3));
        pthread_detach(d);
        for (;;) {
            pthread_mutex_lock(&m);
            int done = detached_done == r + 1;
            pthread_mutex_unlock(&m);
            if (done) break;
            struct timespec t1 = {0, 100000};
            nanosleep(&t1, 0);
        }
        printf("round %d sum %lu (joined part %lu)\n", r, sum, before);
        fflush(stdout);
        struct timespec ts = {0, 8000000};
        nanosleep(&ts, 0);
    }
    return 0;
}

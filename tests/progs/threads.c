/* Issue 3, test 1 (+4): 8 pthreads pass a token round-robin under a mutex and condition
 * variable, each with a __thread counter, meeting at a pthread_barrier every round; a reader
 * thread blocked in read() on a pipe that a feeder thread writes; every thread checks
 * sched_getcpu() (rseq) each round. Main joins them all. Deterministic output: one line per
 * round from worker 0, then the totals. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NT 8
#define ROUNDS 300
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar;
static int token, bad_cpu, ncpu;
static __thread unsigned long mine;
static unsigned long totals[NT];
static int pipefd[2];
static unsigned long piped_sum;

static void check_cpu(void) {
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= ncpu) __atomic_fetch_add(&bad_cpu, 1, __ATOMIC_RELAXED);
}

static void *worker(void *a) {
    long id = (long)a;
    char name[16];
    snprintf(name, sizeof name, "worker-%ld", id);
    pthread_setname_np(pthread_self(), name);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_mutex_lock(&m);
        while (token % NT != id) pthread_cond_wait(&c, &m);
        mine = mine * 31 + (unsigned long)(id + r);
        token++;
        pthread_cond_broadcast(&c);
        pthread_mutex_unlock(&m);
        check_cpu();
        if (id == 0) {
            struct timespec t = {0, 12000000};
            nanosleep(&t, 0);
        }
        pthread_barrier_wait(&bar);
        if (id == 0) {
            char got[16];
            pthread_getname_np(pthread_self(), got, sizeof got);
            printf("round %3d token %5d name %s cpu %s\n", r, token, got, bad_cpu ? "BAD" : "ok");
            fflush(stdout);
        }
    }
    totals[id] = mine;
    return 0;
}

static void *feeder(void *a) {
    (void)a;
    for (unsigned long i = 1; i <= ROUNDS; i++) {
        if (write(pipefd[1], &i, sizeof i) != sizeof i) abort();
        struct timespec t = {0, 10000000};
        nanosleep(&t, 0);
    }
    close(pipefd[1]);
    return 0;
}

static void *reader(void *a) {
    (void)a;
    unsigned long v;
    while (read(pipefd[0], &v, sizeof v) == sizeof v) piped_sum = piped_sum * 7 + v;
    return 0;
}

int main(void) {
    ncpu = (int)sysconf(_SC_NPROCESSORS_CONF);
    if (pipe(pipefd)) return 1;
    pthread_barrier_init(&bar, 0, NT);
    pthread_t t[NT], f, rd;
    for (long i = 0; i < NT; i++) pthread_create(&t[i], 0, worker, (void *)i);
    pthread_create(&f, 0, feeder, 0);
    pthread_create(&rd, 0, reader, 0);
    unsigned long s = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(t[i], 0);
        s = s * 131 + totals[i];
    }
    pthread_join(f, 0);
    pthread_join(rd, 0);
    check_cpu();
    printf("done totals %lu piped %lu cpu %s\n", s, piped_sum, bad_cpu ? "BAD" : "ok");
    return 0;
}

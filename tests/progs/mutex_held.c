/* Issue 3, test 2: a thread holds an error-checking mutex and a recursive mutex (locked
 * twice) across the checkpoints and restarts and unlocks them at the end; every step also
 * checks that getpid() and gettid() are what they were at start (restart keeps ids when user
 * namespaces are available). Deterministic output. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t em, rm;
static int start_pid, start_tid;

static void *holder(void *a) {
    (void)a;
    start_tid = gettid();
    int e1 = pthread_mutex_lock(&em), r1 = pthread_mutex_lock(&rm), r2 = pthread_mutex_lock(&rm);
    printf("locked: %d %d %d\n", e1, r1, r2);
    for (int i = 0; i < 250; i++) {
        printf("step %d holding; pid %s tid %s\n", i, getpid() == start_pid ? "same" : "CHANGED",
               gettid() == start_tid ? "same" : "CHANGED");
        fflush(stdout);
        struct timespec t = {0, 16000000};
        nanosleep(&t, 0);
    }
    int u1 = pthread_mutex_unlock(&rm), u2 = pthread_mutex_unlock(&rm), u3 = pthread_mutex_unlock(&em);
    printf("unlocked recursive twice: %s %s, errorcheck: %s\n", strerror(u1), strerror(u2), strerror(u3));
    printf("relock errorcheck: %s\n", strerror(pthread_mutex_trylock(&em)));
    return 0;
}

int main(void) {
    start_pid = getpid();
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&em, &a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rm, &a);
    pthread_t t;
    pthread_create(&t, 0, holder, 0);
    pthread_join(t, 0);
    printf("main: other thread's lock while it is released: %s\n", strerror(pthread_mutex_trylock(&em)));
    return 0;
}

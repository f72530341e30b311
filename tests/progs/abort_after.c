/* Issue 3, test 8: after the checkpoints and restarts, raise() and pthread_kill() reach the
 * right threads (glibc's cached tid is the kernel's) and abort() kills the process with
 * SIGABRT. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t main_hits, other_hits;
static pthread_t main_thread, other;
static volatile int stop;

static void on_usr1(int s) {
    (void)s;
    if (pthread_equal(pthread_self(), main_thread)) main_hits++;
    else if (pthread_equal(pthread_self(), other)) other_hits++;
}

static void *idle(void *a) {
    (void)a;
    while (!stop) {
        struct timespec t = {0, 5000000};
        nanosleep(&t, 0);
    }
    return 0;
}

int main(void) {
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
    pthread_create(&other, 0, idle, 0);
    for (int i = 0; i < 200; i++) {
        printf("step %d\n", i);
        fflush(stdout);
        struct timespec t = {0, 20000000};
        nanosleep(&t, 0);
    }
    raise(SIGUSR1);
    pthread_kill(other, SIGUSR1);
    for (int i = 0; i < 200 && other_hits == 0; i++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, 0);
    }
    printf("raise reached main: %d, pthread_kill reached the other thread: %d\n", main_hits, other_hits);
    printf("calling abort\n");
    fflush(stdout);
    stop = 1;
    abort();
}

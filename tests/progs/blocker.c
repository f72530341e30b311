/* A thread that blocks every signal with the raw system call (behind every wrapper), as some
 * runtimes' helper threads do: a checkpoint must fail quickly with a message naming it, and
 * the program must run on unharmed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;

static void *blocker(void *a) {
    (void)a;
    unsigned long all = ~0UL;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, 8);
    while (!stop) {
        struct timespec t = {0, 5000000};
        syscall(SYS_nanosleep, &t, NULL);
    }
    return 0;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, 0, blocker, 0);
    for (int i = 0; i < 250; i++) {
        printf("step %d\n", i);
        fflush(stdout);
        struct timespec ts = {0, 16000000};
        nanosleep(&ts, 0);
    }
    stop = 1;
    pthread_join(t, 0);
    printf("done\n");
    return 0;
}

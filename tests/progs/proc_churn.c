/* Process-tree test program 6 (docs/design-process-trees.md §11.2, test 6): processes born,
 * exec'ing and dying all the time, for checkpoints in a loop.
 *
 * Usage: proc_churn [ROUNDS]   (default 400). Round i (every ~10 ms) forks child i, which
 * by i % 4:
 *   0: _exit(i % 7) at once;
 *   1: execv("/bin/true") (exit 0);
 *   2: sleeps 50 ms, then _exit(i % 7);
 *   3: forks an orphan grandchild that sleeps 30 ms and exits, then _exit(i % 7) at once.
 * After sleeping 10 ms the parent reaps child i-5 (waitpid on its pid, blocking) and prints
 * "round i reaped j status S sum T". At the end it reaps the last five and prints
 * "done rounds N reaped N sum T". Output: ROUNDS + 1 lines, identical on every run; ~4.5 s
 * for 400 rounds. Exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LAG 5

static void die(const char *what) {
    fprintf(stderr, "proc_churn[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Exit code, or 1000 + signal number. */
static int code(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 1000 + WTERMSIG(st);
    return 2000;
}

static int reap(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) != pid)
        if (errno != EINTR) die("waitpid");
    return code(st);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rounds = argc > 1 ? atoi(argv[1]) : 400;
    if (rounds < LAG) rounds = LAG;
    pid_t *pids = calloc((size_t)rounds, sizeof *pids);
    if (!pids) die("calloc");
    long sum = 0;
    int reaped = 0;
    for (int i = 0; i < rounds; i++) {
        fflush(stdout);
        pid_t p = fork();
        if (p < 0) die("fork");
        if (p == 0) {
            switch (i % 4) {
            case 0:
                _exit(i % 7);
            case 1: {
                char *av[] = {"true", NULL};
                execv("/bin/true", av);
                _exit(127);
            }
            case 2:
                sleep_ms(50);
                _exit(i % 7);
            default: {
                pid_t g = fork();
                if (g < 0) _exit(126);
                if (g == 0) {
                    sleep_ms(30);
                    _exit(0);
                }
                _exit(i % 7);
            }
            }
        }
        pids[i] = p;
        sleep_ms(10);
        if (i >= LAG) {
            int c = reap(pids[i - LAG]);
            sum += c;
            reaped++;
            printf("round %d reaped %d status %d sum %ld\n", i, i - LAG, c, sum);
        } else {
            printf("round %d reaped none sum %ld\n", i, sum);
        }
        fflush(stdout);
    }
    for (int j = rounds - LAG; j < rounds; j++) {
        sum += reap(pids[j]);
        reaped++;
    }
    printf("done rounds %d reaped %d sum %ld\n", rounds, reaped, sum);
    fflush(stdout);
    return 0;
}

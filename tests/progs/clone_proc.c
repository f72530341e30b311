/* Process-tree test program: a child made with glibc's raw clone() (no CLONE_VM: its own
 * memory, like fork) instead of fork.
 *
 * Usage: clone_proc [N]   (default 150). The child (clone with SIGCHLD, on a 1 MiB stack of
 * its own) writes N lines "tick I PID-check" into a pipe, 25 ms apart, where PID-check says
 * whether getpid() still equals what it was at its start and getppid() is the parent; then
 * exits with 5. The parent prints each line it reads, then the child's status from waitpid.
 * Output: N + 1 lines, identical on every run. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static int steps;

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int child(void *arg) {
    pid_t parent = *(pid_t *)arg;
    pid_t me = getpid();
    close(fds[0]);
    FILE *out = fdopen(fds[1], "w");
    for (int i = 0; i < steps; i++) {
        fprintf(out, "tick %d %s\n", i,
                getpid() == me && getppid() == parent ? "ids ok" : "ids CHANGED");
        fflush(out);
        sleep_ms(25);
    }
    fclose(out);
    return 5;
}

int main(int argc, char **argv) {
    steps = argc > 1 ? atoi(argv[1]) : 150;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(fds) != 0) return 99;
    size_t sz = 1 << 20;
    char *stack = malloc(sz);
    pid_t me = getpid();
    pid_t pid = clone(child, stack + sz, SIGCHLD, &me);
    if (pid < 0) {
        perror("clone");
        return 99;
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char line[128];
    while (fgets(line, sizeof line, in)) fputs(line, stdout);
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            perror("waitpid");
            return 99;
        }
    }
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

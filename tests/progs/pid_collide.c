/* A child forked after a restart without namespaces whose kernel pid is some live process's
 * vpid (no_namespaces.rs arranges that with ns_last_pid). Usage: pid_collide DIR.
 *
 * The parent P forks A (which waits for SIGTERM, then exits 3) and prints "A <pid>". Then it
 * polls for DIR/go (up to 120 s). Once it is there, P forks B: B sends its getpid() and its
 * kernel pid (field 1 of /proc/self/stat) through a pipe and waits for SIGTERM (exit 4). P
 * prints "B kernel <pid>" and "B fork==getpid <0|1>", kill(B, SIGTERM)s and waitpid(B)s:
 * "B waited <0|1> status <n>" (1 = waitpid returned fork's value); then the same for A:
 * "A waited <0|1> status <n>". Exit 0. With a wrong translation the signal meant for B reaches
 * A. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int s) {
    (void)s;
    term = 1;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int wait_term(int code) {
    while (!term) sleep_ms(5);
    return code;
}

static void reap(const char *name, pid_t p) {
    int st = 0;
    pid_t w;
    while ((w = waitpid(p, &st, 0)) < 0 && errno == EINTR) {
    }
    printf("%s waited %d status %d\n", name, w == p, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, on_term);
    pid_t a = fork();
    if (a < 0) return 90;
    if (a == 0) _exit(wait_term(3));
    printf("A %d\n", (int)a);
    char go[4096];
    snprintf(go, sizeof go, "%s/go", argv[1]);
    struct stat st;
    for (int i = 0; stat(go, &st) != 0; i++) {
        if (i > 12000) return 91;
        sleep_ms(10);
    }
    int pp[2];
    if (pipe(pp) != 0) return 92;
    pid_t b = fork();
    if (b < 0) return 93;
    if (b == 0) {
        int v[2] = {(int)getpid(), 0};
        FILE *f = fopen("/proc/self/stat", "r");
        if (!f || fscanf(f, "%d", &v[1]) != 1) v[1] = -1;
        if (f) fclose(f);
        if (write(pp[1], v, sizeof v) != (ssize_t)sizeof v) _exit(95);
        _exit(wait_term(4));
    }
    int v[2];
    ssize_t n;
    while ((n = read(pp[0], v, sizeof v)) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof v) return 94;
    printf("B kernel %d\n", v[1]);
    printf("B fork==getpid %d\n", v[0] == (int)b);
    kill(b, SIGTERM);
    reap("B", b);
    kill(a, SIGTERM);
    reap("A", a);
    return 0;
}

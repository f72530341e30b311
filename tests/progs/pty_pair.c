/* Pty test program (docs/terminals.md, tests/tests/terminals.rs): a parent talking to its
 * child through a pty pair it made, like `script` running a shell.
 *
 * Usage: pty_pair N [shared]   (default 400). With "shared" the child keeps its copy of the
 * master open (two processes hold it). The parent opens /dev/ptmx (posix_openpt), turns echo
 * off, and forks a child that starts a session, makes the slave its controlling terminal
 * (TIOCSCTTY) and its stdin/stdout. The child answers each line it reads with
 *   "answer to <line> ctty=<1 if the pty is its ctty> fg=<1 if its group is the pty's
 *   foreground group> icanon=<flag>"
 * and sleeps 10 ms. The parent writes 4 lines at a time, sleeps 30 ms and then reads the 4
 * answers, printing "parent: <answer>" on its stdout: most of the time lines are queued for the
 * child and answers for the parent at once. At the end it writes "quit", reaps the child and prints "child exit <status>",
 * "done". Output: N + 2 lines, identical on every run; ~4 s. Exit 0. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void put(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) { perror("write"); exit(3); }
        s += w;
        n -= (size_t)w;
    }
}

/* One line from fd (without \r and \n); 0 at end of file. */
static int get_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0) { buf[n] = 0; return n > 0; }
        if (c == '\r') continue;
        if (c == '\n') break;
        if (n + 1 < cap) buf[n++] = c;
    }
    buf[n] = 0;
    return 1;
}

static void child(const char *slave_name) {
    setsid();
    int s = open(slave_name, O_RDWR);
    if (s < 0) { perror("open slave"); _exit(4); }
    ioctl(s, TIOCSCTTY, 0);
    dup2(s, 0);
    dup2(s, 1);
    if (s > 1) close(s);
    char line[256], out[512];
    while (get_line(0, line, sizeof line)) {
        if (strcmp(line, "quit") == 0) _exit(0);
        struct termios t;
        tcgetattr(0, &t);
        snprintf(out, sizeof out, "answer to %s ctty=%d fg=%d icanon=%d\n", line,
                 tcgetsid(0) == getsid(0), tcgetpgrp(0) == getpgrp(), !!(t.c_lflag & ICANON));
        put(1, out);
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        while (nanosleep(&ts, &ts) != 0) {}
    }
    _exit(5);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 400;
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) { perror("posix_openpt"); return 2; }
    struct termios t;
    tcgetattr(m, &t);
    t.c_lflag &= ~(ECHO | ECHONL);
    tcsetattr(m, TCSANOW, &t);
    char name[128];
    snprintf(name, sizeof name, "%s", ptsname(m));
    int shared = argc > 2 && strcmp(argv[2], "shared") == 0;
    pid_t pid = fork();
    if (pid == 0) {
        if (!shared) close(m);
        child(name);
    }
    char line[256];
    for (int i = 0; i < n; i += 4) {
        int k = n - i < 4 ? n - i : 4;
        for (int j = 0; j < k; j++) {
            snprintf(line, sizeof line, "line %d\n", i + j);
            put(m, line);
        }
        struct timespec ts = { 0, 30 * 1000 * 1000 };
        while (nanosleep(&ts, &ts) != 0) {}
        for (int j = 0; j < k; j++) {
            if (!get_line(m, line, sizeof line)) {
                printf("parent: pty closed at %d\n", i + j);
                return 6;
            }
            printf("parent: %s\n", line);
            fflush(stdout);
        }
    }
    put(m, "quit\n");
    int st = 0;
    waitpid(pid, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    printf("done\n");
    return 0;
}

/* Terminal test program (docs/terminals.md, tests/tests/terminals.rs): job control, like a
 * shell running a foreground job. Run on a terminal.
 *
 * Usage: fg_job N   (default 600). The parent forks a child that makes its own process group;
 * the parent gives the terminal to it (tcsetpgrp with SIGTTOU ignored) and waits. The child
 * prints N paced lines (50 ms apart) "job step K fg=<1 if its group is the terminal's
 * foreground> ttou=<1 if SIGTTOU is not ignored>" and on SIGINT prints "job got SIGINT" and
 * exits 3. The parent ignores SIGINT (it is in the background); when the child is done it
 * prints "parent: job exit <status> parent-fg-before=<1 if the child's group was foreground
 * when it ended>", takes the terminal back like a shell (tcsetpgrp(0, getpgrp())), prints
 * "parent: took the terminal back=<1 if that worked> (pgrp <getpgrp()>)" and exits 0. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_int;
static void on_int(int sig) { (void)sig; got_int = 1; }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 600;
    signal(SIGTTOU, SIG_IGN);
    pid_t c = fork();
    if (c == 0) {
        setpgid(0, 0);
        tcsetpgrp(0, getpgrp());
        signal(SIGTTOU, SIG_DFL);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_int;
        sigaction(SIGINT, &sa, NULL);
        for (int i = 0; i < n; i++) {
            if (got_int) {
                printf("job got SIGINT\n");
                fflush(stdout);
                _exit(3);
            }
            struct sigaction cur;
            sigaction(SIGTTOU, NULL, &cur);
            printf("job step %d fg=%d ttou=%d\n", i, tcgetpgrp(0) == getpgrp(),
                   cur.sa_handler != SIG_IGN);
            fflush(stdout);
            struct timespec ts = { 0, 50 * 1000 * 1000 };
            while (nanosleep(&ts, &ts) != 0 && !got_int) {}
        }
        _exit(0);
    }
    signal(SIGINT, SIG_IGN);
    setpgid(c, c);
    tcsetpgrp(0, c);
    int st = 0;
    while (waitpid(c, &st, 0) < 0) {}
    int fg = tcgetpgrp(0) == c;
    int back = tcsetpgrp(0, getpgrp()) == 0 && tcgetpgrp(0) == getpgrp();
    printf("parent: job exit %d parent-fg-before=%d\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), fg);
    printf("parent: took the terminal back=%d (pgrp %d)\n", back, (int)getpgrp());
    fflush(stdout);
    return 0;
}

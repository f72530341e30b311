/* Terminal test program (docs/terminals.md, tests/tests/terminals.rs): run on a terminal.
 *
 * Usage: term_raw N [tty|keep]   (default 600). With "tty" it opens /dev/tty and uses only
 * that fd (as less and vim do), else fd 0 for the terminal and fd 1 for its lines. With "keep"
 * it changes neither the attributes nor the window size (it only prints them). Puts its terminal in non-canonical no-echo mode
 * (ISIG kept, so ^C still means SIGINT), sets the window size to 33x77, then prints N paced
 * lines (50 ms apart), each with the step, the terminal's ICANON/ECHO/ISIG flags, its window
 * size and whether its process group is the terminal's foreground group:
 *   "step 12 icanon=0 echo=0 isig=1 winsize=33x77 fg=1"
 * After a SIGWINCH it prints "got SIGWINCH" before its next step. On SIGINT it prints "got SIGINT at step K" and exits 0; at the end "done". Exit 0. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_int;

static volatile sig_atomic_t winch;
static void on_int(int sig) { (void)sig; got_int = 1; }
static void on_winch(int sig) { (void)sig; winch++; }

static int out_fd = 1;

static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(out_fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 600;
    int tty = 0;
    int keep = argc > 2 && strcmp(argv[2], "keep") == 0;
    if (argc > 2 && strcmp(argv[2], "tty") == 0) {
        tty = open("/dev/tty", O_RDWR);
        if (tty < 0) { perror("/dev/tty"); return 2; }
        out_fd = tty;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_int;
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    int seen_winch = 0;
    struct termios t;
    if (tcgetattr(tty, &t) != 0) { perror("tcgetattr"); return 2; }
    if (!keep) {
    t.c_lflag &= ~(ICANON | ECHO);
    t.c_lflag |= ISIG;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(tty, TCSANOW, &t) != 0) { perror("tcsetattr"); return 2; }
    struct winsize ws = { .ws_row = 33, .ws_col = 77 };
    if (ioctl(tty, TIOCSWINSZ, &ws) != 0) { perror("TIOCSWINSZ"); return 2; }
    }
    char line[256];
    for (int i = 0; i < n; i++) {
        if (got_int) {
            snprintf(line, sizeof line, "got SIGINT at step %d\n", i);
            say(line);
            return 0;
        }
        if (winch != seen_winch) {
            seen_winch = winch;
            say("got SIGWINCH\n");
        }
        struct termios c;
        struct winsize w;
        memset(&c, 0, sizeof c);
        memset(&w, 0, sizeof w);
        tcgetattr(tty, &c);
        ioctl(tty, TIOCGWINSZ, &w);
        snprintf(line, sizeof line, "step %d icanon=%d echo=%d isig=%d winsize=%dx%d fg=%d\n", i,
                 !!(c.c_lflag & ICANON), !!(c.c_lflag & ECHO), !!(c.c_lflag & ISIG), w.ws_row,
                 w.ws_col, tcgetpgrp(tty) == getpgrp());
        say(line);
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        while (nanosleep(&ts, &ts) != 0 && !got_int) {}
    }
    say("done\n");
    return 0;
}

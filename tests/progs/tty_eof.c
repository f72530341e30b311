/* Terminal EOF test program (docs/terminals.md, tests/tests/terminals.rs): what read(2) returns
 * for input queued on a canonical-mode terminal before a checkpoint, EOFs (^D) included.
 *
 * Usage: tty_eof TRIGGER_PREFIX [own]. Two rounds, r = 1 and 2. Each round prints "ready r",
 * then waits (polling every 10 ms, 120 s at most) until the file TRIGGER_PREFIX<r> exists,
 * without reading; then reads its terminal with read(2), one call at a time, printing
 *   "rd r n=<bytes returned> [<bytes, \n and non-printable bytes escaped>]"
 * for each, until a read returns "end\n" (or fails, or 20 reads); then "done r". After round 2:
 * "bye", exit 0.
 *
 * Without "own" the terminal is stdin (the test types on it). With "own" the program makes a
 * pty pair (openpty, canonical, echo on) and plays the typist on its master: before "ready r"
 * it writes "abc^D^Dx^@y\npar", after the trigger "t\n" and "end\n"; it reads the slave.
 * The expected reads either way: "abc" (3), "" (0: EOF at the start of a line), "x\0y\n" (4),
 * "part\n" (5), "end\n" (4). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char INPUT[] = "abc\x04\x04x\0y\npar";

static void put(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) { perror("write"); exit(3); }
        s += w;
        n -= (size_t)w;
    }
}

static void wait_file(const char *path) {
    for (int i = 0; i < 12000; i++) {
        if (access(path, F_OK) == 0) return;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        while (nanosleep(&ts, &ts) != 0) {}
    }
    fprintf(stderr, "tty_eof: no %s after 120 s\n", path);
    exit(7);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: tty_eof TRIGGER_PREFIX [own]\n"); return 2; }
    int own = argc > 2 && strcmp(argv[2], "own") == 0;
    int in = 0, m = -1;
    if (own && openpty(&m, &in, NULL, NULL, NULL) != 0) { perror("openpty"); return 2; }
    for (int round = 1; round <= 2; round++) {
        if (own) {
            put(m, INPUT, sizeof INPUT - 1);
            /* Nothing is readable yet, so poll makes the line discipline take the bytes now. */
            struct pollfd p = { in, POLLIN, 0 };
            poll(&p, 1, 0);
        }
        printf("ready %d\n", round);
        fflush(stdout);
        char path[4096];
        snprintf(path, sizeof path, "%s%d", argv[1], round);
        wait_file(path);
        if (own) put(m, "t\nend\n", 6);
        for (int i = 0; i < 20; i++) {
            char buf[256];
            ssize_t n = read(in, buf, sizeof buf);
            if (n < 0) { perror("read"); return 4; }
            char out[1200];
            size_t k = 0;
            for (ssize_t j = 0; j < n; j++) {
                unsigned char c = (unsigned char)buf[j];
                if (c == '\n') k += (size_t)sprintf(out + k, "\\n");
                else if (c < 32 || c > 126 || c == '\\') k += (size_t)sprintf(out + k, "\\x%02x", c);
                else out[k++] = (char)c;
            }
            out[k] = 0;
            printf("rd %d n=%zd [%s]\n", round, n, out);
            fflush(stdout);
            if (n == 4 && memcmp(buf, "end\n", 4) == 0) break;
        }
        printf("done %d\n", round);
        fflush(stdout);
    }
    printf("bye\n");
    return 0;
}

/* Half-closed connections (issue 5): a request, then shutdown(SHUT_WR), then the answer.
 *
 * Usage: halfclose LINES   (in a scratch directory; it waits for a file ./go)
 *
 * The parent listens on TCP 127.0.0.1 (ephemeral port) and makes a UNIX stream socketpair and
 * a UNIX seqpacket socketpair; it prints "parent waiting" and forks a child, which connects to
 * the listener (the parent accepts), writes LINES numbered lines on the TCP connection and on
 * the stream pair and LINES messages on the seqpacket pair, shuts down the sending side of
 * all three and prints "child sent and shut down". The parent waits until ./go exists, then
 * reads each connection to its end of file and prints how many lines/messages and bytes came
 * and "eof", and answers "got N" on each; the child reads the three answers to their end of
 * file, prints them and exits 7; the parent prints its status. Output: 8 lines, identical on
 * every run. The harness checkpoints while the bytes and the end of file wait unread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "halfclose[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        done += (size_t)r;
    }
}

/* Reads fd to its end of file: the bytes (and messages, for seqpacket) that came. */
static void drain(int fd, int seqpacket, long *bytes, long *units) {
    char buf[65536];
    *bytes = 0;
    *units = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) return;
        *bytes += r;
        if (seqpacket) {
            (*units)++;
        } else {
            for (ssize_t i = 0; i < r; i++) *units += buf[i] == '\n';
        }
    }
}

int main(int argc, char **argv) {
    int lines = argc > 1 ? atoi(argv[1]) : 200;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0) die("listen");
    if (getsockname(l, (struct sockaddr *)&a, &alen) != 0) die("getsockname");
    int st[2], sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, st) != 0) die("socketpair stream");
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) die("socketpair seqpacket");
    printf("parent waiting\n");
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        close(l);
        close(st[0]);
        close(sp[0]);
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
        char line[64];
        for (int i = 0; i < lines; i++) {
            int n = snprintf(line, sizeof line, "request line %d\n", i);
            write_full(c, line, (size_t)n);
            write_full(st[1], line, (size_t)n);
            if (send(sp[1], line, (size_t)n, 0) != n) die("send seqpacket");
        }
        if (shutdown(c, SHUT_WR) || shutdown(st[1], SHUT_WR) || shutdown(sp[1], SHUT_WR))
            die("shutdown");
        printf("child sent and shut down\n");
        int fds[3] = {c, st[1], sp[1]};
        const char *names[3] = {"tcp", "stream", "seqpacket"};
        /* All three answers first, then print them: the parent has printed its lines by then
         * (it answers on the last connection after its last line). */
        char bufs[3][128];
        for (int k = 0; k < 3; k++) {
            size_t got = 0;
            for (;;) {
                ssize_t r = read(fds[k], bufs[k] + got, sizeof bufs[k] - 1 - got);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    die("read answer");
                }
                if (r == 0) break;
                got += (size_t)r;
            }
            bufs[k][got] = 0;
        }
        for (int k = 0; k < 3; k++) printf("child: %s answer %s", names[k], bufs[k]);
        _exit(7);
    }
    close(st[1]);
    close(sp[1]);
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    struct stat sb;
    for (int i = 0; stat("go", &sb) != 0; i++) {
        if (i > 12000) {
            errno = ETIMEDOUT;
            die("waiting for ./go");
        }
        struct timespec t = {0, 10000000L};
        nanosleep(&t, NULL);
    }
    int fds[3] = {c, st[0], sp[0]};
    const char *names[3] = {"tcp", "stream", "seqpacket"};
    for (int k = 0; k < 3; k++) {
        long bytes, units;
        drain(fds[k], k == 2, &bytes, &units);
        printf("parent: %s %ld %s, %ld bytes, eof\n", names[k], units, k == 2 ? "messages" : "lines",
               bytes);
        char ans[64];
        int n = snprintf(ans, sizeof ans, "got %ld\n", units);
        if (k == 2) {
            if (send(fds[k], ans, (size_t)n, 0) != n) die("send answer");
        } else {
            write_full(fds[k], ans, (size_t)n);
        }
        close(fds[k]);
    }
    int status;
    while (waitpid(kid, &status, 0) < 0) {
        if (errno != EINTR) die("waitpid");
    }
    printf("parent: child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

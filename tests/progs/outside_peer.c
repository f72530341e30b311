/* Sockets test program (issue 5): a connection to a peer outside the computation, and a
 * listener that outside clients use.
 *
 * Usage: outside_peer PORT   (run in a scratch directory; writes its listener's port to
 * ./listen.port).
 *
 * Listens on 127.0.0.1 (ephemeral port), connects to 127.0.0.1:PORT (the test's server, which
 * sends a few lines), prints "connected", then reads one line every 300 ms, printing
 * "got LINE", until end of file ("eof") or an error; then sends one byte with MSG_NOSIGNAL and
 * prints "send: ok" or "send: <error>"; then accepts one client on its listener (within 30 s),
 * reads a line, answers "echo LINE" and prints "served LINE". Exit 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "outside_peer: %s: %s\n", what, strerror(errno));
    exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* One line (without the newline) into buf; returns its length, 0 at end of file, -1 on error. */
static int read_line(int fd, char *buf, int cap) {
    int n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return n > 0 ? n : 0;
        if (c == '\n') {
            buf[n] = 0;
            return n > 0 ? n : 1;
        }
        if (n < cap - 1) buf[n++] = c;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: outside_peer PORT\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (l < 0 || bind(l, (struct sockaddr *)&la, sizeof la) != 0 || listen(l, 4) != 0)
        die("listen");
    socklen_t al = sizeof la;
    getsockname(l, (struct sockaddr *)&la, &al);
    FILE *pf = fopen("listen.port.tmp", "w");
    if (!pf) die("listen.port");
    fprintf(pf, "%d\n", ntohs(la.sin_port));
    fclose(pf);
    rename("listen.port.tmp", "listen.port");

    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((unsigned short)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
    printf("connected\n");
    char line[256];
    for (;;) {
        sleep_ms(300);
        int n = read_line(s, line, sizeof line);
        if (n == 0) {
            printf("eof\n");
            break;
        }
        if (n < 0) {
            printf("read: %s\n", strerror(errno));
            break;
        }
        printf("got %s\n", line);
    }
    if (send(s, "x", 1, MSG_NOSIGNAL) == 1)
        printf("send: ok\n");
    else
        printf("send: %s\n", strerror(errno));

    struct pollfd p = {.fd = l, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, 30000)) < 0 && errno == EINTR) {
    }
    if (r != 1) {
        fprintf(stderr, "outside_peer: no client within 30 s\n");
        return 3;
    }
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    int n = read_line(c, line, sizeof line);
    if (n <= 0) die("client line");
    char out[300];
    int len = snprintf(out, sizeof out, "echo %s\n", line);
    if (write(c, out, (size_t)len) != len) die("answer");
    printf("served %s\n", line);
    close(c);
    return 0;
}

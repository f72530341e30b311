/* Sockets test program (issue 5): a pre-forked server — two workers sharing one listening
 * socket, each serving the connections it accepts with poll — and a client process.
 *
 * Usage: prefork [ROUNDS]   (default 150).
 *
 * The parent listens on 127.0.0.1 (ephemeral port) and forks two workers and a client. A worker
 * polls the listener (non-blocking accept: the other worker may win) and its connections; for
 * each request line "c R" it answers "c R v" where v depends only on c and R. The client opens
 * 4 connections, then each round sends one request on every connection and reads the 4
 * answers, printing one line per round; 15 ms between rounds. At the end it sends "quit" on
 * each connection and exits; the parent kills the workers (SIGTERM), reaps everyone and prints
 * the client's status. Which worker serves which connection varies; the output does not:
 * ROUNDS + 2 lines. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CONNS 4
#define MAXC 16

static void die(const char *what) {
    fprintf(stderr, "prefork[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static unsigned value(int c, int r) {
    unsigned x = (unsigned)(c * 7919 + r * 104729);
    x ^= x >> 7;
    return x * 2654435761u % 1000003u;
}

static void worker(int l) {
    struct pollfd p[MAXC + 1];
    char buf[MAXC][128];
    int len[MAXC];
    int n = 0;
    p[0].fd = l;
    p[0].events = POLLIN;
    for (;;) {
        int r = poll(p, (nfds_t)(n + 1), -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (p[0].revents & POLLIN) {
            int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
            if (c >= 0 && n < MAXC) {
                p[n + 1].fd = c;
                p[n + 1].events = POLLIN;
                len[n] = 0;
                n++;
            } else if (c < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                die("accept");
            }
        }
        for (int i = 0; i < n; i++) {
            if (!(p[i + 1].revents & (POLLIN | POLLHUP))) continue;
            ssize_t k = read(p[i + 1].fd, buf[i] + len[i], sizeof buf[i] - 1 - (size_t)len[i]);
            if (k == 0) {
                close(p[i + 1].fd);
                p[i + 1] = p[n];
                memcpy(buf[i], buf[n - 1], sizeof buf[i]);
                len[i] = len[n - 1];
                n--;
                i--;
                continue;
            }
            if (k < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                die("read");
            }
            len[i] += (int)k;
            char *nl;
            while ((nl = memchr(buf[i], '\n', (size_t)len[i])) != NULL) {
                *nl = 0;
                int c, rr;
                if (strcmp(buf[i], "quit") == 0) {
                    /* nothing: the client closes */
                } else if (sscanf(buf[i], "%d %d", &c, &rr) == 2) {
                    char out[64];
                    int ol = snprintf(out, sizeof out, "%d %d %u\n", c, rr, value(c, rr));
                    if (write(p[i + 1].fd, out, (size_t)ol) != ol) die("write");
                }
                int used = (int)(nl - buf[i]) + 1;
                memmove(buf[i], nl + 1, (size_t)(len[i] - used));
                len[i] -= used;
            }
        }
    }
}

static void client(struct sockaddr_in *a, int rounds) {
    int c[CONNS];
    FILE *in[CONNS];
    for (int i = 0; i < CONNS; i++) {
        c[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (c[i] < 0 || connect(c[i], (struct sockaddr *)a, sizeof *a) != 0) die("connect");
        in[i] = fdopen(dup(c[i]), "r");
    }
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < CONNS; i++) {
            char req[32];
            int l = snprintf(req, sizeof req, "%d %d\n", i, r);
            if (write(c[i], req, (size_t)l) != l) die("write request");
        }
        printf("round %d:", r);
        for (int i = 0; i < CONNS; i++) {
            char line[64];
            if (!fgets(line, sizeof line, in[i])) die("read answer");
            line[strcspn(line, "\n")] = 0;
            printf(" [%s]", line);
        }
        printf("\n");
        fflush(stdout);
        sleep_ms(15);
    }
    for (int i = 0; i < CONNS; i++) {
        if (write(c[i], "quit\n", 5) != 5) die("quit");
        close(c[i]);
    }
    _exit(0);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 150;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 16) != 0)
        die("listen");
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    pid_t w[2];
    for (int i = 0; i < 2; i++) {
        w[i] = fork();
        if (w[i] < 0) die("fork");
        if (w[i] == 0) worker(l);
    }
    pid_t cl = fork();
    if (cl < 0) die("fork");
    if (cl == 0) {
        close(l);
        client(&a, rounds);
    }
    int st;
    while (waitpid(cl, &st, 0) < 0) {
        if (errno != EINTR) die("waitpid client");
    }
    printf("client exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    for (int i = 0; i < 2; i++) {
        kill(w[i], SIGTERM);
        int ws;
        while (waitpid(w[i], &ws, 0) < 0) {
            if (errno != EINTR) die("waitpid worker");
        }
    }
    printf("done\n");
    return 0;
}

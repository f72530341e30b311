/* A fast writer and a slow reader over TCP (issue 5): the reader's receive window is full and
 * the writer's send queue holds megabytes the reader has not received yet, at any moment.
 *
 * Usage: backpressure MIB [PORT | both]   (default 48)
 *
 * The parent listens on 127.0.0.1 and forks a child that connects; the parent writes MIB MiB
 * of consecutive 32-bit counters as fast as it can (blocking writes); the child reads 64 KiB
 * every 5 ms and checks every counter, printing "child read N MiB ok" per MiB, or
 * "MISMATCH ..." and exit 3 at the first wrong one (a lost or repeated byte shifts every
 * counter after it). The parent prints the child's exit status. Output: MIB + 1 lines,
 * identical on every run.
 *
 * With PORT: no child; the counters go to a reader outside the computation listening on
 * 127.0.0.1:PORT (the test's), and the program prints "writer done" at the end.
 *
 * With "both": the connection is stuck both ways: each process also has a thread writing
 * MIB MiB of counters to the other as fast as it can, while its main thread reads slowly.
 * The child prints its lines as above; the parent checks its stream silently and prints
 * "parent read MIB MiB ok" (or the mismatch) after the child's status. MIB + 2 lines. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "backpressure[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Reads `total` bytes of counters slowly from `c`; `loud`: print a line per MiB. Returns 0,
 * or 3 after printing what went wrong. */
static int read_counters(int c, long total, int loud) {
    static __thread unsigned char buf[65536];
    unsigned char part[4];
    int pn = 0;
    uint32_t want = 0;
    long got = 0, next = 1L << 20;
    while (got < total) {
        sleep_ms(5);
        ssize_t r = read(c, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            printf("%s: early end of file after %ld bytes\n", loud ? "child" : "parent", got);
            return 3;
        }
        for (ssize_t i = 0; i < r; i++) {
            part[pn++] = buf[i];
            if (pn == 4) {
                uint32_t v;
                memcpy(&v, part, 4);
                if (v != want) {
                    printf("%s: MISMATCH at byte %ld: counter %u, expected %u\n",
                           loud ? "child" : "parent", got + i, v, want);
                    return 3;
                }
                want++;
                pn = 0;
            }
        }
        got += r;
        while (got >= next && next <= total) {
            if (loud) printf("child read %ld MiB ok\n", next >> 20);
            next += 1L << 20;
        }
    }
    return 0;
}

static void write_counters(int c, long total) {
    static __thread uint32_t buf[65536];
    uint32_t v = 0;
    for (long sent = 0; sent < total; sent += (long)sizeof buf) {
        for (int i = 0; i < 65536; i++) buf[i] = v++;
        size_t off = 0;
        while (off < sizeof buf) {
            ssize_t r = write(c, (char *)buf + off, sizeof buf - off);
            if (r < 0) {
                if (errno == EINTR) continue;
                die("write");
            }
            off += (size_t)r;
        }
    }
}

struct writer {
    int fd;
    long total;
};

static void *writer_main(void *arg) {
    struct writer *w = arg;
    write_counters(w->fd, w->total);
    return NULL;
}

/* "both": a writer thread on `c` while this thread reads. */
static int both_ways(int c, long total, int loud) {
    pthread_t t;
    struct writer w = {c, total};
    if (pthread_create(&t, NULL, writer_main, &w) != 0) die("pthread_create");
    int st = read_counters(c, total, loud);
    pthread_join(t, NULL);
    return st;
}

int main(int argc, char **argv) {
    long total = (argc > 1 ? atol(argv[1]) : 48) << 20;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int both = argc > 2 && strcmp(argv[2], "both") == 0;
    if (argc > 2 && !both) {
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)atoi(argv[2])),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&to, sizeof to) != 0) die("connect");
        write_counters(c, total);
        printf("writer done\n");
        return 0;
    }
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0)
        die("listen");
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (const struct sockaddr *)&a, sizeof a) != 0) die("connect");
        _exit(both ? both_ways(c, total, 1) : read_counters(c, total, 1));
    }
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    int mine = 0;
    if (both) {
        mine = both_ways(c, total, 0);
    } else {
        write_counters(c, total);
    }
    int st;
    while (waitpid(kid, &st, 0) < 0) {
        if (errno != EINTR) die("waitpid");
    }
    printf("parent: reader exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    if (both && mine == 0) printf("parent read %ld MiB ok\n", total >> 20);
    return 0;
}

/* Two separately launched programs of one computation talking over TCP (issue 5: restart in
 * parts, each part rebuilding its ends of the connections through the coordinator's name
 * service).
 *
 * Usage: netpair server DIR ROUNDS | netpair client DIR ROUNDS
 *
 * The server listens on 127.0.0.1 and [::1] (ephemeral ports; [::1] only if IPv6 works),
 * writes "PORT4 PORT6\n" to DIR/net.port (PORT6 0 without IPv6) and accepts one connection on
 * each. The client waits for that file and connects to both. Each round the server writes a
 * 16 KiB burst on the IPv4 connection and an 8 KiB one on the IPv6 connection; the client
 * waits 40 ms (the bytes sit in its queues), reads and checks both, answers one line on the
 * IPv4 connection with their checksums and sends a 4 KiB burst back on the IPv6 one; the
 * server waits 20 ms (the client's bytes sit in its queue), reads and checks them. Both
 * print one line a round, saying also whether every socket still has the local and peer
 * address it had at the start ("names ok"). The client also makes a third connection, to
 * another listener of the server, sends 50 lines on it and shuts down its sending side; the
 * server accepts it only after the last round (so it waits, with its bytes and end of file,
 * in the listener's queue all along), reads it to its end, prints "server late: ..." and
 * answers, which the client prints. Then the server shuts its connections down; the client
 * prints "client done" at end of file. Exit status 0; any mismatch exits 3. Output:
 * ROUNDS + 2 lines each, identical on every run. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define B4 16384
#define B6 8192
#define BACK 4096

static const char *who = "netpair";

static void die(const char *what) {
    fprintf(stderr, "%s[%d]: %s: %s\n", who, (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
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

/* 1 on success, 0 at end of file before the first byte. */
static int read_full(int fd, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            if (done == 0) return 0;
            errno = EPIPE;
            die("short read");
        }
        done += (size_t)r;
    }
    return 1;
}

static void fill(unsigned char *b, size_t n, int round, int salt) {
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 7 + (size_t)round * 13 + (size_t)salt);
}

static uint32_t sum(const unsigned char *b, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++) s = s * 31 + b[i];
    return s;
}

static int check(const unsigned char *b, size_t n, int round, int salt) {
    unsigned char want[B4];
    fill(want, n, round, salt);
    return memcmp(b, want, n) == 0;
}

struct names {
    struct sockaddr_storage local, peer;
    socklen_t llen, plen;
};

static void names_of(int fd, struct names *n) {
    n->llen = sizeof n->local;
    n->plen = sizeof n->peer;
    if (getsockname(fd, (struct sockaddr *)&n->local, &n->llen) != 0) die("getsockname");
    if (getpeername(fd, (struct sockaddr *)&n->peer, &n->plen) != 0) die("getpeername");
}

static int same_names(int fd, const struct names *was) {
    struct names now;
    names_of(fd, &now);
    return now.llen == was->llen && now.plen == was->plen &&
           memcmp(&now.local, &was->local, now.llen) == 0 &&
           memcmp(&now.peer, &was->peer, now.plen) == 0;
}

/* The loopback address of `family` with `port` into *a; returns its length. */
static socklen_t loopback(int family, int port, struct sockaddr_storage *a) {
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)a;
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_port = htons((uint16_t)port);
        return sizeof *v4;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)a;
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_loopback;
    v6->sin6_port = htons((uint16_t)port);
    return sizeof *v6;
}

static int listen_on(int family, int *port) {
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_storage a;
    socklen_t len = loopback(family, 0, &a);
    if (bind(s, (struct sockaddr *)&a, len) != 0 || listen(s, 4) != 0) {
        close(s);
        return -1;
    }
    len = sizeof a;
    if (getsockname(s, (struct sockaddr *)&a, &len) != 0) die("getsockname");
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
                                    : ((struct sockaddr_in6 *)&a)->sin6_port);
    return s;
}

static int connect_to(int family, int port) {
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    struct sockaddr_storage a;
    socklen_t len = loopback(family, port, &a);
    while (connect(s, (struct sockaddr *)&a, len) != 0) {
        if (errno != EINTR) die("connect");
    }
    return s;
}

static int server(const char *dir, int rounds) {
    int p4 = 0, p6 = 0;
    int l4 = listen_on(AF_INET, &p4);
    if (l4 < 0) die("listen 127.0.0.1");
    int l6 = listen_on(AF_INET6, &p6);
    int p3 = 0;
    int l3 = listen_on(AF_INET, &p3);
    if (l3 < 0) die("listen 127.0.0.1 (late)");
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/net.port", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) die("net.port");
    fprintf(f, "%d %d %d\n", p4, l6 >= 0 ? p6 : 0, p3);
    fclose(f);
    if (rename(tmp, path) != 0) die("rename");
    int c4 = accept4(l4, NULL, NULL, SOCK_CLOEXEC);
    if (c4 < 0) die("accept 127.0.0.1");
    int c6 = -1;
    if (l6 >= 0) {
        c6 = accept4(l6, NULL, NULL, SOCK_CLOEXEC);
        if (c6 < 0) die("accept [::1]");
    }
    struct names n4, n6;
    names_of(c4, &n4);
    if (c6 >= 0) names_of(c6, &n6);
    static unsigned char b[B4];
    for (int r = 0; r < rounds; r++) {
        fill(b, B4, r, 1);
        write_full(c4, b, B4);
        if (c6 >= 0) {
            fill(b, B6, r, 2);
            write_full(c6, b, B6);
        }
        char line[128];
        size_t n = 0;
        for (;;) {
            if (n + 1 >= sizeof line) die("line too long");
            if (!read_full(c4, line + n, 1)) die("client gone");
            if (line[n++] == '\n') break;
        }
        line[n - 1] = 0;
        sleep_ms(20);
        int back_ok = 1;
        if (c6 >= 0) {
            if (!read_full(c6, b, BACK)) die("client gone");
            back_ok = check(b, BACK, r, 3);
        }
        int names_ok = same_names(c4, &n4) && (c6 < 0 || same_names(c6, &n6));
        printf("server round %d: %s, back %s, names %s\n", r, line, back_ok ? "ok" : "BAD",
               names_ok ? "ok" : "changed");
        fflush(stdout);
        if (!back_ok) return 3;
    }
    /* The late connection waited in l3's queue the whole run, its request and end of file
     * sent long ago. */
    int c3 = accept4(l3, NULL, NULL, SOCK_CLOEXEC);
    if (c3 < 0) die("accept late");
    int lines = 0, bytes = 0;
    for (;;) {
        ssize_t r = read(c3, b, sizeof b);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read late");
        }
        if (r == 0) break;
        bytes += (int)r;
        for (ssize_t i = 0; i < r; i++) lines += b[i] == '\n';
    }
    printf("server late: %d lines, %d bytes, eof\n", lines, bytes);
    char ans[64];
    int an = snprintf(ans, sizeof ans, "late ok %d\n", lines);
    write_full(c3, ans, (size_t)an);
    close(c3);
    shutdown(c4, SHUT_WR);
    if (c6 >= 0) shutdown(c6, SHUT_WR);
    return 0;
}

static int client(const char *dir, int rounds) {
    char path[4096];
    snprintf(path, sizeof path, "%s/net.port", dir);
    int p4 = 0, p6 = 0, p3 = 0;
    for (int i = 0;; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int ok = fscanf(f, "%d %d %d", &p4, &p6, &p3) == 3;
            fclose(f);
            if (ok) break;
        }
        if (i > 3000) {
            errno = ETIMEDOUT;
            die("waiting for net.port");
        }
        sleep_ms(10);
    }
    int c4 = connect_to(AF_INET, p4);
    int c6 = p6 ? connect_to(AF_INET6, p6) : -1;
    /* A late request: sent at once, then our end of file; the server accepts it at the end. */
    int c3 = connect_to(AF_INET, p3);
    for (int i = 0; i < 50; i++) {
        char req[32];
        int n = snprintf(req, sizeof req, "late request %d\n", i);
        write_full(c3, req, (size_t)n);
    }
    if (shutdown(c3, SHUT_WR) != 0) die("shutdown late");
    struct names n4, n6;
    names_of(c4, &n4);
    if (c6 >= 0) names_of(c6, &n6);
    static unsigned char b[B4];
    for (int r = 0; r < rounds; r++) {
        sleep_ms(40);
        if (!read_full(c4, b, B4)) die("server gone");
        int ok = check(b, B4, r, 1);
        uint32_t s4 = sum(b, B4), s6 = 0;
        if (c6 >= 0) {
            if (!read_full(c6, b, B6)) die("server gone");
            ok = ok && check(b, B6, r, 2);
            s6 = sum(b, B6);
        }
        char line[128];
        int n = snprintf(line, sizeof line, "%08x %08x %s\n", s4, s6, ok ? "ok" : "BAD");
        write_full(c4, line, (size_t)n);
        if (c6 >= 0) {
            fill(b, BACK, r, 3);
            write_full(c6, b, BACK);
        }
        int names_ok = same_names(c4, &n4) && (c6 < 0 || same_names(c6, &n6));
        printf("client round %d: %s, names %s\n", r, ok ? "ok" : "BAD", names_ok ? "ok" : "changed");
        fflush(stdout);
        if (!ok) return 3;
    }
    char late[64];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(c3, late + got, sizeof late - 1 - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read late answer");
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    late[got] = 0;
    printf("client late answer: %s", late);
    if (read_full(c4, b, 1)) {
        errno = EPROTO;
        die("more bytes than expected");
    }
    printf("client done\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: netpair server|client DIR ROUNDS\n");
        return 2;
    }
    int rounds = atoi(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[1], "server") == 0) {
        who = "netpair server";
        int st = server(argv[2], rounds);
        if (st == 0) printf("server done\n");
        return st;
    }
    who = "netpair client";
    return client(argv[2], rounds);
}

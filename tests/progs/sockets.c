/* Sockets test program (issue 5): a parent and a child talking over every kind of socket
 * ckpt restores, with bytes in flight at any moment.
 *
 * Usage: sockets [ROUNDS]   (default 60). Run in a scratch directory: it binds ./srv.sock
 * and writes its TCP port to ./srv.port.
 *
 * The parent listens on TCP 127.0.0.1 (ephemeral port), TCP [::1] (if IPv6 works), a UNIX
 * stream socket at ./srv.sock and one with an abstract name, binds a UNIX datagram socket at
 * ./dg.sock, and makes three socketpairs (stream, seqpacket, datagram) and a UDP socket bound
 * to 127.0.0.1. It forks a child that connects to the four listeners (the parent accepts) and
 * connects a UDP socket to the parent's. Each round the child also sends two datagrams to
 * ./dg.sock from an unbound socket (unconnected sendto) and answers on the abstract one. Each round the parent writes a
 * burst on every connection (16 KiB on each stream, 3 messages on seqpacket and datagram
 * pairs); the child waits 40 ms (so the bytes sit in the queues), reads them all, checks them,
 * and answers on the TCP connection with one line of checksums; it also sends one UDP
 * datagram. The parent prints one line per round with the child's checksums, the UDP payload,
 * and whether every socket still has the local and peer addresses it had at the start
 * ("names ok"). Then the parent sends "quit", reaps the child (exit 7) and prints its
 * status. Output: ROUNDS + 2 lines, identical on every run; about 60 ms per round. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BURST 16384
#define NSOCK 16

static void die(const char *what) {
    fprintf(stderr, "sockets[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
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

static void read_full(int fd, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            errno = EPIPE;
            die("read: unexpected end of file");
        }
        done += (size_t)r;
    }
}

static ssize_t recv_msg(int fd, void *buf, size_t n) {
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0) return r;
        if (errno != EINTR) die("recv");
    }
}

static void fill(unsigned char *b, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345;
        b[i] = (unsigned char)(x >> 16);
    }
}

static uint32_t sum(const unsigned char *b, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

/* Addresses each socket had at the start. */
struct names {
    int fd;
    struct sockaddr_storage local, peer;
    socklen_t llen, plen;
};
static struct names names[NSOCK];
static int nnames;

static void remember(int fd) {
    struct names *n = &names[nnames++];
    n->fd = fd;
    n->llen = sizeof n->local;
    n->plen = sizeof n->peer;
    if (getsockname(fd, (struct sockaddr *)&n->local, &n->llen) != 0) die("getsockname");
    if (getpeername(fd, (struct sockaddr *)&n->peer, &n->plen) != 0) n->plen = 0;
}

static int names_ok(void) {
    for (int i = 0; i < nnames; i++) {
        struct sockaddr_storage a, b;
        socklen_t la = sizeof a, lb = sizeof b;
        if (getsockname(names[i].fd, (struct sockaddr *)&a, &la) != 0) return 0;
        if (getpeername(names[i].fd, (struct sockaddr *)&b, &lb) != 0) lb = 0;
        if (la != names[i].llen || memcmp(&a, &names[i].local, la) != 0) {
            fprintf(stderr, "sockets: fd %d local address changed\n", names[i].fd);
            return 0;
        }
        if (lb != names[i].plen || memcmp(&b, &names[i].peer, lb) != 0) {
            fprintf(stderr, "sockets: fd %d peer address changed\n", names[i].fd);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 60;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int one = 1;

    int l4 = socket(AF_INET, SOCK_STREAM, 0);
    if (l4 < 0) die("socket");
    setsockopt(l4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l4, (struct sockaddr *)&a4, sizeof a4) != 0) die("bind tcp4");
    if (listen(l4, 8) != 0) die("listen tcp4");
    socklen_t al = sizeof a4;
    getsockname(l4, (struct sockaddr *)&a4, &al);
    FILE *pf = fopen("srv.port", "w");
    if (!pf) die("srv.port");
    fprintf(pf, "%d\n", ntohs(a4.sin_port));
    fclose(pf);

    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (l6 >= 0 && (bind(l6, (struct sockaddr *)&a6, sizeof a6) != 0 || listen(l6, 8) != 0)) {
        close(l6);
        l6 = -1;
    }
    if (l6 >= 0) {
        al = sizeof a6;
        getsockname(l6, (struct sockaddr *)&a6, &al);
    }

    struct sockaddr_un au = {.sun_family = AF_UNIX};
    strcpy(au.sun_path, "srv.sock");
    unlink(au.sun_path);
    int lu = socket(AF_UNIX, SOCK_STREAM, 0);
    if (lu < 0 || bind(lu, (struct sockaddr *)&au, sizeof au) != 0 || listen(lu, 8) != 0)
        die("unix listener");

    struct sockaddr_un aa = {.sun_family = AF_UNIX};
    int alen = snprintf(aa.sun_path + 1, sizeof aa.sun_path - 1, "ckpt-sockets-%d", (int)getpid());
    socklen_t aalen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)alen);
    int la = socket(AF_UNIX, SOCK_STREAM, 0);
    if (la < 0 || bind(la, (struct sockaddr *)&aa, aalen) != 0 || listen(la, 8) != 0)
        die("abstract listener");
    struct sockaddr_un ad = {.sun_family = AF_UNIX};
    strcpy(ad.sun_path, "dg.sock");
    unlink(ad.sun_path);
    int dgs = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (dgs < 0 || bind(dgs, (struct sockaddr *)&ad, sizeof ad) != 0) die("bind dg.sock");

    int sp[2], sq[2], sd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) die("socketpair stream");
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) != 0) die("socketpair seqpacket");
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sd) != 0) die("socketpair dgram");

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in au4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (u < 0 || bind(u, (struct sockaddr *)&au4, sizeof au4) != 0) die("udp bind");
    al = sizeof au4;
    getsockname(u, (struct sockaddr *)&au4, &al);

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(sp[0]);
        close(sq[0]);
        close(sd[0]);
        int c4 = socket(AF_INET, SOCK_STREAM, 0);
        if (c4 < 0 || connect(c4, (struct sockaddr *)&a4, sizeof a4) != 0) die("connect tcp4");
        setsockopt(c4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int c6 = -1;
        if (l6 >= 0) {
            c6 = socket(AF_INET6, SOCK_STREAM, 0);
            if (c6 < 0 || connect(c6, (struct sockaddr *)&a6, sizeof a6) != 0) die("connect tcp6");
        }
        int cu = socket(AF_UNIX, SOCK_STREAM, 0);
        if (cu < 0 || connect(cu, (struct sockaddr *)&au, sizeof au) != 0) die("connect unix");
        int cudp = socket(AF_INET, SOCK_DGRAM, 0);
        if (cudp < 0 || connect(cudp, (struct sockaddr *)&au4, sizeof au4) != 0)
            die("connect udp");
        int ca = socket(AF_UNIX, SOCK_STREAM, 0);
        if (ca < 0 || connect(ca, (struct sockaddr *)&aa, aalen) != 0) die("connect abstract");
        int cdg = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (cdg < 0) die("socket dgram");
        close(la);
        close(dgs);
        close(l4);
        if (l6 >= 0) close(l6);
        close(lu);
        close(u);
        unsigned char *buf = malloc(BURST);
        unsigned char *want = malloc(BURST);
        for (int r = 0;; r++) {
            char cmd[8];
            read_full(c4, cmd, 4);
            if (memcmp(cmd, "quit", 4) == 0) break;
            sleep_ms(40);
            uint32_t s4, s6 = 0, su, ss, sqs = 0, sds = 0;
            read_full(c4, buf, BURST);
            s4 = sum(buf, BURST);
            fill(want, BURST, (unsigned)r * 5 + 1);
            if (memcmp(buf, want, BURST) != 0) fprintf(stderr, "child: tcp4 data wrong\n");
            if (c6 >= 0) {
                read_full(c6, buf, BURST);
                s6 = sum(buf, BURST);
            }
            read_full(cu, buf, BURST);
            su = sum(buf, BURST);
            read_full(sp[1], buf, BURST);
            ss = sum(buf, BURST);
            for (int m = 0; m < 3; m++) {
                ssize_t n = recv_msg(sq[1], buf, BURST);
                sqs = sqs * 31 + sum(buf, (size_t)n) + (uint32_t)n;
                n = recv_msg(sd[1], buf, BURST);
                sds = sds * 31 + sum(buf, (size_t)n) + (uint32_t)n;
            }
            char line[200];
            int len = snprintf(line, sizeof line, "%08x %08x %08x %08x %08x %08x\n", s4, s6, su,
                               ss, sqs, sds);
            char dg[32];
            int dl = snprintf(dg, sizeof dg, "udp %d", r);
            if (send(cudp, dg, (size_t)dl, 0) < 0) die("send udp");
            for (int m = 0; m < 2; m++) {
                dl = snprintf(dg, sizeof dg, "dg %d.%d", r, m);
                if (sendto(cdg, dg, (size_t)dl, 0, (struct sockaddr *)&ad, sizeof ad) < 0)
                    die("sendto dg.sock");
            }
            dl = snprintf(dg, sizeof dg, "abs %d\n", r * r);
            write_full(ca, dg, (size_t)dl);
            write_full(c4, line, (size_t)len);
        }
        _exit(7);
    }
    close(sp[1]);
    close(sq[1]);
    close(sd[1]);
    int s4 = accept(l4, NULL, NULL);
    if (s4 < 0) die("accept tcp4");
    int s6 = -1;
    if (l6 >= 0 && (s6 = accept(l6, NULL, NULL)) < 0) die("accept tcp6");
    int su = accept(lu, NULL, NULL);
    if (su < 0) die("accept unix");
    int sa = accept(la, NULL, NULL);
    if (sa < 0) die("accept abstract");
    remember(l4);
    if (l6 >= 0) remember(l6);
    remember(lu);
    remember(s4);
    if (s6 >= 0) remember(s6);
    remember(su);
    remember(la);
    remember(sa);
    remember(dgs);
    remember(sp[0]);
    remember(sq[0]);
    remember(sd[0]);
    remember(u);

    unsigned char *buf = malloc(BURST);
    FILE *in = fdopen(dup(s4), "r");
    FILE *ain = fdopen(sa, "r");
    for (int r = 0; r < rounds; r++) {
        write_full(s4, "next", 4);
        fill(buf, BURST, (unsigned)r * 5 + 1);
        write_full(s4, buf, BURST);
        fill(buf, BURST, (unsigned)r * 5 + 2);
        if (s6 >= 0) write_full(s6, buf, BURST);
        fill(buf, BURST, (unsigned)r * 5 + 3);
        write_full(su, buf, BURST);
        fill(buf, BURST, (unsigned)r * 5 + 4);
        write_full(sp[0], buf, BURST);
        for (int m = 0; m < 3; m++) {
            size_t n = 100 + (size_t)((r * 7 + m * 13) % 900);
            fill(buf, n, (unsigned)(r * 3 + m));
            if (send(sq[0], buf, n, 0) < 0) die("send seqpacket");
            if (send(sd[0], buf, n / 2, 0) < 0) die("send dgram");
        }
        char line[200];
        if (!fgets(line, sizeof line, in)) die("read reply");
        line[strcspn(line, "\n")] = 0;
        char dg[32], d1[32], d2[32], ab[32];
        ssize_t dl = recv_msg(u, dg, sizeof dg - 1);
        dg[dl] = 0;
        dl = recv_msg(dgs, d1, sizeof d1 - 1);
        d1[dl] = 0;
        dl = recv_msg(dgs, d2, sizeof d2 - 1);
        d2[dl] = 0;
        if (!fgets(ab, sizeof ab, ain)) die("read abstract");
        ab[strcspn(ab, "\n")] = 0;
        printf("round %d: %s | %s | %s %s | %s | names %s\n", r, line, dg, d1, d2, ab,
               names_ok() ? "ok" : "CHANGED");
        sleep_ms(20);
    }
    write_full(s4, "quit", 4);
    int st;
    while (waitpid(child, &st, 0) < 0) {
        if (errno != EINTR) die("waitpid");
    }
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    printf("done\n");
    unlink("srv.sock");
    unlink("dg.sock");
    return 0;
}

/* Sockets test program (issue 5): connections that wait in a listener's queue, with bytes
 * already sent on them, while checkpoints happen.
 *
 * Usage: pending poll|epoll   (in the run directory; waits for a file "go" there).
 *
 * The server listens on 127.0.0.1 and [::1] (TCP, ephemeral ports), on the UNIX stream socket
 * "pend.sock" and the UNIX seqpacket socket "pend.seq" (relative paths), and forks 8 clients
 * one after the other, two per listener. Client j binds (UNIX: to "cl<j>.sock"), connects, says
 * "hello <j> <its own address>" then sends 20 numbered messages of varying length, tells the
 * server through a pipe that it is done, and blocks reading the server's answer. Once all 8
 * are done the server prints "ready" and waits (without accepting) until the file "go"
 * exists: the harness checkpoints, kills and restarts meanwhile. Then it accepts the 8
 * connections with poll() on the blocking listeners and plain accept() ("poll" mode) or with
 * an edge-triggered epoll on non-blocking listeners and accept4(SOCK_NONBLOCK|SOCK_CLOEXEC)
 * until EAGAIN ("epoll" mode, the listeners registered before "ready"); checks that the
 * accepted fd has the flags asked for, that accept's address, getpeername and the address
 * the client announced agree, reads and checks every message, answers "ok", and prints one
 * line per listener (accept order) and per client, then each client's exit status. The output
 * is the same in every run: 1 + 4 + 8 + 8 + 1 lines. */
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LISTENERS 4
#define PER 2
#define CLIENTS (LISTENERS * PER)
#define MSGS 20

static void die(const char *what) {
    fprintf(stderr, "pending[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static const char *kind[LISTENERS] = {"tcp4", "tcp6", "unix-stream", "unix-seqpacket"};
static int fam[LISTENERS] = {AF_INET, AF_INET6, AF_UNIX, AF_UNIX};
static int typ[LISTENERS] = {SOCK_STREAM, SOCK_STREAM, SOCK_STREAM, SOCK_SEQPACKET};
static const char *path[LISTENERS] = {NULL, NULL, "pend.sock", "pend.seq"};
static struct sockaddr_storage laddr[LISTENERS];
static socklen_t llen[LISTENERS];

/* "port N" or "path P": what the peer of a connection from this address is told. */
static void show(const struct sockaddr *a, socklen_t len, char *out, size_t cap) {
    if (a->sa_family == AF_INET)
        snprintf(out, cap, "port %u", ntohs(((const struct sockaddr_in *)a)->sin_port));
    else if (a->sa_family == AF_INET6)
        snprintf(out, cap, "port %u", ntohs(((const struct sockaddr_in6 *)a)->sin6_port));
    else if (a->sa_family == AF_UNIX && len > sizeof(sa_family_t))
        snprintf(out, cap, "path %s", ((const struct sockaddr_un *)a)->sun_path);
    else
        snprintf(out, cap, "unnamed");
}

static void message(int j, int k, char *out, size_t cap) {
    int n = (k * 37 + j * 11) % 200;
    int at = snprintf(out, cap, "c%d m%02d ", j, k);
    for (int i = 0; i < n && at < (int)cap - 2; i++) out[at++] = (char)('a' + (j + k + i) % 26);
    out[at++] = '\n';
    out[at] = 0;
}

static void send_all(int s, const char *b, size_t n) {
    while (n > 0) {
        ssize_t w = send(s, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        b += w;
        n -= (size_t)w;
    }
}

static void client(int j, int notify) {
    int l = j / PER;
    int s = socket(fam[l], typ[l], 0);
    if (s < 0) die("client socket");
    if (fam[l] == AF_UNIX) {
        struct sockaddr_un me = {.sun_family = AF_UNIX};
        snprintf(me.sun_path, sizeof me.sun_path, "cl%d.sock", j);
        unlink(me.sun_path);
        if (bind(s, (struct sockaddr *)&me, sizeof me) != 0) die("client bind");
    }
    if (connect(s, (struct sockaddr *)&laddr[l], llen[l]) != 0) die("client connect");
    struct sockaddr_storage me;
    socklen_t ml = sizeof me;
    if (getsockname(s, (struct sockaddr *)&me, &ml) != 0) die("client getsockname");
    char a[160], b[512];
    show((struct sockaddr *)&me, ml, a, sizeof a);
    snprintf(b, sizeof b, "hello %d %s\n", j, a);
    send_all(s, b, strlen(b));
    for (int k = 0; k < MSGS; k++) {
        message(j, k, b, sizeof b);
        send_all(s, b, strlen(b));
    }
    if (write(notify, "x", 1) != 1) die("notify");
    char r[8];
    size_t got = 0;
    while (got < 3) {
        ssize_t n = recv(s, r + got, 3 - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(2);
        got += (size_t)n;
    }
    _exit(memcmp(r, "ok\n", 3) == 0 ? 0 : 3);
}

struct conn {
    int listener, client;
    char report[256];
};

/* Reads a whole message (seqpacket) or line (stream) into b; returns its length. */
static int next_message(int s, int seqpacket, char *b, int cap, char *pend, int *npend) {
    if (seqpacket) {
        for (;;) {
            ssize_t n = recv(s, b, (size_t)cap - 1, 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                struct pollfd p = {s, POLLIN, 0};
                poll(&p, 1, 10000);
                continue;
            }
            if (n <= 0) return -1;
            b[n] = 0;
            return (int)n;
        }
    }
    for (;;) {
        char *nl = memchr(pend, '\n', (size_t)*npend);
        if (nl) {
            int len = (int)(nl - pend) + 1;
            if (len >= cap) return -1;
            memcpy(b, pend, (size_t)len);
            b[len] = 0;
            memmove(pend, pend + len, (size_t)(*npend - len));
            *npend -= len;
            return len;
        }
        ssize_t n = recv(s, pend + *npend, (size_t)(4096 - *npend), 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p = {s, POLLIN, 0};
            poll(&p, 1, 10000);
            continue;
        }
        if (n <= 0) return -1;
        *npend += (int)n;
    }
}

static void serve(int s, int l, const struct sockaddr *aa, socklen_t al, int want_nonblock,
                  struct conn *c) {
    c->listener = l;
    c->client = -1;
    char pend[4096], b[512], want[512], acc[160], peer[160];
    int npend = 0;
    int fl = fcntl(s, F_GETFL), fd = fcntl(s, F_GETFD);
    int flags_ok = (!!(fl & O_NONBLOCK) == want_nonblock) && (!!(fd & FD_CLOEXEC) == want_nonblock);
    show(aa, al, acc, sizeof acc);
    struct sockaddr_storage pa;
    socklen_t pl = sizeof pa;
    if (getpeername(s, (struct sockaddr *)&pa, &pl) != 0) die("getpeername");
    show((struct sockaddr *)&pa, pl, peer, sizeof peer);
    int n = next_message(s, typ[l] == SOCK_SEQPACKET, b, sizeof b, pend, &npend);
    int j;
    char said[160];
    if (n < 0 || sscanf(b, "hello %d %159[^\n]", &j, said) != 2) {
        snprintf(c->report, sizeof c->report, "%s: no hello (%d bytes)", kind[l], n);
        return;
    }
    c->client = j;
    int good = 0;
    for (int k = 0; k < MSGS; k++) {
        n = next_message(s, typ[l] == SOCK_SEQPACKET, b, sizeof b, pend, &npend);
        message(j, k, want, sizeof want);
        if (n < 0) break;
        if (strcmp(b, want) == 0) good++;
    }
    int extra = npend;
    send_all(s, "ok\n", 3);
    snprintf(c->report, sizeof c->report,
             "client %d on %s: %d/%d messages ok, %d stray bytes, addresses %s, flags %s", j,
             kind[l], good, MSGS, extra,
             strcmp(acc, said) == 0 && strcmp(peer, said) == 0 ? "agree" : "DIFFER",
             flags_ok ? "ok" : "WRONG");
    if (strcmp(acc, said) != 0 || strcmp(peer, said) != 0)
        fprintf(stderr, "pending: client %d said %s, accept gave %s, getpeername %s\n", j, said,
                acc, peer);
    close(s);
}

int main(int argc, char **argv) {
    int use_epoll = argc > 1 && strcmp(argv[1], "epoll") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ls[LISTENERS];
    for (int l = 0; l < LISTENERS; l++) {
        ls[l] = socket(fam[l], typ[l] | (use_epoll ? SOCK_NONBLOCK : 0), 0);
        if (ls[l] < 0) die("socket");
        memset(&laddr[l], 0, sizeof laddr[l]);
        if (fam[l] == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&laddr[l];
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            llen[l] = sizeof *a;
        } else if (fam[l] == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&laddr[l];
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_loopback;
            llen[l] = sizeof *a;
        } else {
            struct sockaddr_un *a = (struct sockaddr_un *)&laddr[l];
            a->sun_family = AF_UNIX;
            strcpy(a->sun_path, path[l]);
            unlink(path[l]);
            llen[l] = sizeof *a;
        }
        if (bind(ls[l], (struct sockaddr *)&laddr[l], llen[l]) != 0) die("bind");
        if (listen(ls[l], 16) != 0) die("listen");
        llen[l] = sizeof laddr[l];
        if (getsockname(ls[l], (struct sockaddr *)&laddr[l], &llen[l]) != 0) die("getsockname");
    }
    int ep = -1;
    if (use_epoll) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) die("epoll_create1");
        for (int l = 0; l < LISTENERS; l++) {
            struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)l};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, ls[l], &e) != 0) die("epoll_ctl");
        }
    }
    int pp[2];
    if (pipe(pp) != 0) die("pipe");
    pid_t pid[CLIENTS];
    for (int j = 0; j < CLIENTS; j++) {
        pid[j] = fork();
        if (pid[j] < 0) die("fork");
        if (pid[j] == 0) {
            close(pp[0]);
            for (int l = 0; l < LISTENERS; l++) close(ls[l]);
            if (ep >= 0) close(ep);
            client(j, pp[1]);
        }
        char x;
        while (read(pp[0], &x, 1) != 1) {
            if (errno != EINTR) die("read notify");
        }
    }
    printf("ready\n");
    while (access("go", F_OK) != 0) sleep_ms(20);

    struct conn conns[CLIENTS];
    int order[LISTENERS][CLIENTS];
    int norder[LISTENERS] = {0};
    int done = 0;
    while (done < CLIENTS) {
        int ready[LISTENERS] = {0}, any = 0;
        if (use_epoll) {
            struct epoll_event ev[LISTENERS];
            int n = epoll_wait(ep, ev, LISTENERS, 10000);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                printf("timeout waiting for connections (%d accepted)\n", done);
                break;
            }
            for (int i = 0; i < n; i++) ready[ev[i].data.u32] = any = 1;
        } else {
            struct pollfd p[LISTENERS];
            for (int l = 0; l < LISTENERS; l++) p[l] = (struct pollfd){ls[l], POLLIN, 0};
            int n = poll(p, LISTENERS, 10000);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                printf("timeout waiting for connections (%d accepted)\n", done);
                break;
            }
            for (int l = 0; l < LISTENERS; l++)
                if (p[l].revents & POLLIN) ready[l] = any = 1;
        }
        (void)any;
        for (int l = 0; l < LISTENERS; l++) {
            if (!ready[l]) continue;
            /* epoll (edge-triggered): everything until EAGAIN; poll: one per wakeup. */
            for (;;) {
                struct sockaddr_storage a;
                socklen_t al = sizeof a;
                int s = use_epoll ? accept4(ls[l], (struct sockaddr *)&a, &al,
                                            SOCK_NONBLOCK | SOCK_CLOEXEC)
                                  : accept(ls[l], (struct sockaddr *)&a, &al);
                if (s < 0) {
                    if (errno == EAGAIN || errno == EINTR) break;
                    die("accept");
                }
                if (done == CLIENTS) die("more connections than clients");
                serve(s, l, (struct sockaddr *)&a, al, use_epoll, &conns[done]);
                order[l][norder[l]++] = conns[done].client;
                done++;
                if (!use_epoll) break;
            }
        }
    }
    for (int l = 0; l < LISTENERS; l++) {
        printf("%s accepted:", kind[l]);
        for (int i = 0; i < norder[l]; i++) printf(" %d", order[l][i]);
        printf("\n");
    }
    for (int j = 0; j < CLIENTS; j++)
        for (int i = 0; i < done; i++)
            if (conns[i].client == j) printf("%s\n", conns[i].report);
    for (int i = 0; i < done; i++)
        if (conns[i].client < 0) printf("%s\n", conns[i].report);
    for (int j = 0; j < CLIENTS; j++) {
        int st;
        while (waitpid(pid[j], &st, 0) < 0) {
            if (errno != EINTR) die("waitpid");
        }
        printf("client %d: %s %d\n", j, WIFEXITED(st) ? "exit" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    for (int l = 2; l < LISTENERS; l++) unlink(path[l]);
    for (int j = PER * 2; j < CLIENTS; j++) {
        char p[32];
        snprintf(p, sizeof p, "cl%d.sock", j);
        unlink(p);
    }
    printf("done\n");
    return 0;
}

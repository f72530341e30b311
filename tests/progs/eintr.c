/* eintr.c — checks that blocking calls with a timeout (or none) are not cut short by a
 * checkpoint, and that an EINTR caused by the program's own signal still reaches it.
 *
 * Usage: eintr [mem|fds] [ROUNDS]   (default: mem 40)
 *
 *   mem  only waits that survive a restart (poll/ppoll on fd -1, select/pselect on no fd,
 *        semaphores): run through the whole checkpoint/kill/restart cycle.
 *   fds  the same on an empty pipe, plus epoll, poll(-1) on a pipe fed every 100 ms,
 *        and reads/accepts on sockets with SO_RCVTIMEO; pipes and sockets are not
 *        restored by ckpt yet, so this mode is checkpointed and resumed only.
 *
 * One worker thread per kind of call loops ROUNDS times over it: a 100 ms timeout that must
 * expire (0 ready / ETIMEDOUT / EAGAIN), or a wait that a helper thread satisfies every
 * 100 ms (sem_wait, poll(-1)). Each call is checked: "ok", "EINTR", "SHORT <elapsed>" (a
 * timeout returned before the time asked for, measured on the clock of its deadline:
 * CLOCK_REALTIME for sem_timedwait, else CLOCK_MONOTONIC) or "ERR ...".
 * Main prints one line per round once every worker has finished it ("round N: kind=ok
 * ..."), so the output is deterministic and grows as the program runs.
 *
 * Then, per worker in a fixed order, main sends SIGUSR1 (handler without SA_RESTART) every
 * 10 ms while the worker waits with a 5 s timeout: the call must return EINTR ("final KIND
 * ok"); a wrapper that swallowed it would time out instead. Last line: "done".
 *
 * Built with _FORTIFY_SOURCE so both the plain and the __*_chk entry points are used.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE
#define _FORTIFY_SOURCE 2
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXROUNDS 1000
#define RES 64
#define WAIT_MS 100
#define FINAL_MS 5000
/* SO_RCVTIMEO is kept in jiffies: the kernel may wake up to one tick early. */
#define SOCK_SLACK_MS 10

enum kind {
    K_POLL, K_POLLCHK, K_PPOLL, K_PPOLLCHK, K_SELECT, K_PSELECT, K_SEMTIMED, K_SEMCLOCK,
    K_SEMWAIT,
    /* fds mode only */
    K_EPOLL, K_EPOLLP, K_EPOLL2, K_POLLINF, K_RECV, K_READ, K_RECVFROM, K_RECVMSG, K_ACCEPT,
    K_ACCEPT4,
    NKINDS
};
static const char *names[NKINDS] = {
    "poll", "poll_chk", "ppoll", "ppoll_chk", "select", "pselect", "sem_timedwait",
    "sem_clockwait", "sem_wait", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll_inf",
    "recv_chk", "read_chk", "recvfrom", "recvmsg", "accept", "accept4",
};

static int use_fds, rounds, nkinds;
static int empty_pipe[2] = {-1, -1}, data_pipe[2] = {-1, -1}, sock[2] = {-1, -1};
static int listener = -1, ep = -1;
static sem_t never, posted;
static char results[NKINDS][MAXROUNDS + 1][RES];
static char final_res[NKINDS][RES];
static int done[NKINDS];
static int go_final[NKINDS];
static atomic_int final_done[NKINDS];
static pthread_t tids[NKINDS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Hide sizes and constness from the fortify checks, so the plain or the _chk entry point is
 * chosen on purpose. */
static inline void *opq(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}
static inline size_t opn(size_t n) {
    __asm__ volatile("" : "+r"(n));
    return n;
}

static int64_t now_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static struct timespec ts_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    return t;
}

static struct timespec abs_ms(clockid_t c, long ms) {
    int64_t n = now_ns(c) + (int64_t)ms * 1000000;
    struct timespec t = {n / 1000000000, n % 1000000000};
    return t;
}

static void die(const char *what) {
    fprintf(stderr, "eintr: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void on_usr1(int sig) { (void)sig; }

/* One call of kind k with a timeout of `ms` (ignored by the untimed kinds). Returns the call's
 * result; *err gets errno (0 if the call did not fail). */
static long call(int k, long ms, int *err, int round) {
    struct pollfd p[1] = {{.fd = use_fds ? empty_pipe[0] : -1, .events = POLLIN}};
    struct timespec ts = ts_ms(ms);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct epoll_event ev[4];
    char buf[16];
    fd_set rs;
    int nfds = use_fds ? empty_pipe[0] + 1 : 0;
    long rc = 0;
    errno = 0;
    switch (k) {
    case K_POLL:
        rc = poll(opq(p), 1, (int)ms);
        break;
    case K_POLLCHK:
        rc = poll(p, opn(1), (int)ms);
        break;
    case K_PPOLL:
        rc = ppoll(opq(p), 1, &ts, NULL);
        break;
    case K_PPOLLCHK:
        rc = ppoll(p, opn(1), &ts, NULL);
        break;
    case K_SELECT:
        FD_ZERO(&rs);
        if (use_fds) FD_SET(empty_pipe[0], &rs);
        rc = select(nfds, &rs, NULL, NULL, &tv);
        /* Linux: a timed-out select leaves no fd set and no time left in the timeval. */
        if (rc == 0 && ((use_fds && FD_ISSET(empty_pipe[0], &rs)) || tv.tv_sec || tv.tv_usec))
            rc = 1000;
        break;
    case K_PSELECT:
        FD_ZERO(&rs);
        if (use_fds) FD_SET(empty_pipe[0], &rs);
        rc = pselect(nfds, &rs, NULL, NULL, &ts, NULL);
        if (rc == 0 && use_fds && FD_ISSET(empty_pipe[0], &rs)) rc = 1000;
        break;
    case K_SEMTIMED: {
        struct timespec a = abs_ms(CLOCK_REALTIME, ms);
        rc = sem_timedwait(&never, &a);
        break;
    }
    case K_SEMCLOCK: {
        struct timespec a = abs_ms(CLOCK_MONOTONIC, ms);
        rc = sem_clockwait(&never, CLOCK_MONOTONIC, &a);
        break;
    }
    case K_SEMWAIT:
        rc = sem_wait(round > 0 ? &posted : &never);
        break;
    case K_EPOLL:
        rc = epoll_wait(ep, ev, 4, (int)ms);
        break;
    case K_EPOLLP:
        rc = epoll_pwait(ep, ev, 4, (int)ms, NULL);
        break;
    case K_EPOLL2:
        rc = epoll_pwait2(ep, ev, 4, &ts, NULL);
        break;
    case K_POLLINF: {
        p[0].fd = data_pipe[0];
        rc = poll(opq(p), 1, -1);
        if (rc == 1 && round > 0) {
            unsigned char c;
            if (!(p[0].revents & POLLIN) || read(data_pipe[0], opq(&c), 1) != 1 ||
                c != (unsigned char)round)
                rc = 1000;
        }
        break;
    }
    case K_RECV:
        rc = recv(sock[0], buf, opn(sizeof buf), 0);
        break;
    case K_READ:
        rc = read(sock[0], buf, opn(sizeof buf));
        break;
    case K_RECVFROM: {
        struct sockaddr_un a;
        socklen_t al = sizeof a;
        rc = recvfrom(sock[0], opq(buf), sizeof buf, 0, (struct sockaddr *)&a, &al);
        break;
    }
    case K_RECVMSG: {
        struct iovec io = {buf, sizeof buf};
        struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1};
        rc = recvmsg(sock[0], &m, 0);
        break;
    }
    case K_ACCEPT:
        rc = accept(listener, NULL, NULL);
        break;
    case K_ACCEPT4:
        rc = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        break;
    }
    *err = rc < 0 ? errno : 0;
    return rc;
}

/* What a round's call must return: 0 (timeout), -ETIMEDOUT/-EAGAIN (error), or 1 (ready). */
static int expected(int k) {
    switch (k) {
    case K_SEMTIMED:
    case K_SEMCLOCK:
        return -ETIMEDOUT;
    case K_RECV:
    case K_READ:
    case K_RECVFROM:
    case K_RECVMSG:
    case K_ACCEPT:
    case K_ACCEPT4:
        return -EAGAIN;
    case K_SEMWAIT:
        return 0;
    case K_POLLINF:
        return 1;
    default:
        return 0;
    }
}

static int timed(int k) { return k != K_SEMWAIT && k != K_POLLINF; }

static void *worker(void *arg) {
    int k = (int)(intptr_t)arg;
    /* A wait is measured on the clock of its deadline: sem_timedwait's is CLOCK_REALTIME,
     * which (unlike CLOCK_MONOTONIC after a restart) counts the time the program was down. */
    clockid_t clk = k == K_SEMTIMED ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    for (int r = 1; r <= rounds; r++) {
        int err;
        int64_t t0 = now_ns(clk);
        long rc = call(k, WAIT_MS, &err, r);
        int64_t el = now_ns(clk) - t0;
        int want = expected(k);
        int got = rc < 0 ? -err : (int)rc;
        int64_t min = (int64_t)(WAIT_MS - (want == -EAGAIN ? SOCK_SLACK_MS : 0)) * 1000000;
        char *out = results[k][r];
        if (rc < 0 && err == EINTR)
            snprintf(out, RES, "EINTR");
        else if (got != want)
            snprintf(out, RES, "ERR rc=%ld errno=%s", rc, rc < 0 ? strerror(err) : "-");
        else if (timed(k) && el < min)
            snprintf(out, RES, "SHORT %.3fms", el / 1e6);
        else
            snprintf(out, RES, "ok");
        pthread_mutex_lock(&mu);
        done[k] = r;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    while (!go_final[k]) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    int err;
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    long rc = call(k, FINAL_MS, &err, 0);
    int64_t el = now_ns(CLOCK_MONOTONIC) - t0;
    if (rc < 0 && err == EINTR && el < (int64_t)(FINAL_MS - 1000) * 1000000)
        snprintf(final_res[k], RES, "ok");
    else
        snprintf(final_res[k], RES, "NO-EINTR rc=%ld errno=%s after %.0fms", rc,
                 rc < 0 ? strerror(err) : "-", el / 1e6);
    atomic_store(&final_done[k], 1);
    return NULL;
}

/* Posts `posted` and feeds the data pipe once per round, every 100 ms. */
static void *feeder(void *arg) {
    (void)arg;
    for (int r = 1; r <= rounds; r++) {
        struct timespec t = ts_ms(WAIT_MS);
        nanosleep(&t, NULL);
        sem_post(&posted);
        if (use_fds) {
            unsigned char c = (unsigned char)r;
            if (write(data_pipe[1], &c, 1) != 1) die("write");
        }
    }
    return NULL;
}

static void set_rcvtimeo(int fd, long ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) die("SO_RCVTIMEO");
}

int main(int argc, char **argv) {
    use_fds = argc > 1 && strcmp(argv[1], "fds") == 0;
    if (argc > 1 && !use_fds && strcmp(argv[1], "mem") != 0) {
        fprintf(stderr, "usage: eintr [mem|fds] [ROUNDS]\n");
        return 2;
    }
    rounds = argc > 2 ? atoi(argv[2]) : 40;
    if (rounds < 1 || rounds > MAXROUNDS) rounds = 40;
    nkinds = use_fds ? NKINDS : K_SEMWAIT + 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: every wait below must report EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL)) die("sigaction");
    if (sem_init(&never, 0, 0) || sem_init(&posted, 0, 0)) die("sem_init");
    if (use_fds) {
        if (pipe(empty_pipe) || pipe(data_pipe)) die("pipe");
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sock)) die("socketpair");
        set_rcvtimeo(sock[0], WAIT_MS);
        listener = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        /* abstract name, unique per process */
        snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ckpt-eintr-%d", (int)getpid());
        socklen_t al = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
        if (listener < 0 || bind(listener, (struct sockaddr *)&a, al) || listen(listener, 4))
            die("listen");
        set_rcvtimeo(listener, WAIT_MS);
        ep = epoll_create1(0);
        struct epoll_event e = {.events = EPOLLIN};
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, empty_pipe[0], &e)) die("epoll");
    }

    pthread_t feed;
    for (int k = 0; k < nkinds; k++)
        if (pthread_create(&tids[k], NULL, worker, (void *)(intptr_t)k)) die("pthread_create");
    if (pthread_create(&feed, NULL, feeder, NULL)) die("pthread_create");

    for (int r = 1; r <= rounds; r++) {
        pthread_mutex_lock(&mu);
        for (int k = 0; k < nkinds; k++)
            while (done[k] < r) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        printf("round %d:", r);
        for (int k = 0; k < nkinds; k++) printf(" %s=%s", names[k], results[k][r]);
        printf("\n");
        fflush(stdout);
    }
    pthread_join(feed, NULL);

    /* The program's own signal must still interrupt every wait. */
    if (use_fds) {
        set_rcvtimeo(sock[0], FINAL_MS);
        set_rcvtimeo(listener, FINAL_MS);
    }
    for (int k = 0; k < nkinds; k++) {
        pthread_mutex_lock(&mu);
        go_final[k] = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        while (!atomic_load(&final_done[k])) {
            pthread_kill(tids[k], SIGUSR1);
            struct timespec t = ts_ms(10);
            nanosleep(&t, NULL);
        }
        pthread_join(tids[k], NULL);
        printf("final %s %s\n", names[k], final_res[k]);
        fflush(stdout);
    }
    printf("done\n");
    fflush(stdout);
    return 0;
}

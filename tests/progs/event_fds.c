/* Issue 5: event fds survive checkpoint/restart. An epoll set watches an eventfd, a signalfd
 * (SIGUSR1, blocked, sent to itself), a pipe (edge-triggered), a periodic timerfd and an
 * inotify fd with two live watches whose wds have gaps (1 and 3 were removed). Each step
 * (paced by the 20 ms timerfd) makes every source ready in a known way, collects the events
 * with epoll_wait and prints one deterministic line; fd flags and wds are checked every step.
 *
 * `event_fds pending` instead sets up state that must cross a checkpoint untouched (eventfd
 * counters, a semaphore eventfd, pending signals, an edge already consumed, a registration
 * whose fd number was closed, a queued inotify event), waits ~5 s printing "wait" lines, then
 * reads it all back. `event_fds ... raw` adds the second inotify watch with the raw syscall
 * (no wrapper sees it: the path must come from the file handle). `event_fds nested` nests an
 * epoll set in another, with a socket (restored by the sockets plugin) among the targets. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define STEPS 250
enum { D_EFD = 1, D_SFD, D_PIPE, D_TFD, D_INO };

static char dir[64], sub[96];
static int use_raw;

static int add_watch(int fd, const char *path, uint32_t mask, int raw) {
    if (raw) return (int)syscall(SYS_inotify_add_watch, fd, path, mask);
    return inotify_add_watch(fd, path, mask);
}

static void touch(const char *d, const char *name) {
    char p[160];
    snprintf(p, sizeof p, "%s/%s", d, name);
    unlink(p); /* a restarted step recreates it: IN_CREATE again */
    int f = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (f >= 0) close(f);
}

static void cleanup(void) {
    char p[160];
    for (int i = 0; i < STEPS; i++) {
        snprintf(p, sizeof p, "%s/f%d", dir, i);
        unlink(p);
        snprintf(p, sizeof p, "%s/g%d", sub, i);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/before", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/after", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/after", sub);
    unlink(p);
    rmdir(sub);
    snprintf(p, sizeof p, "%s/x", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/y", dir);
    rmdir(p);
    rmdir(dir);
}

static void mkdirs(void) {
    strcpy(dir, "/tmp/event_fds.XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(1); }
    snprintf(sub, sizeof sub, "%s/z", dir);
    char p[160];
    snprintf(p, sizeof p, "%s/x", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/y", dir);
    mkdir(p, 0755);
    mkdir(sub, 0755);
}

/* Watches with wd gaps: x=1 (removed), dir=2, y=3 (removed), z=4. */
static void watches(int ino, int *wd_dir, int *wd_sub) {
    char p[160];
    snprintf(p, sizeof p, "%s/x", dir);
    int w1 = add_watch(ino, p, IN_CREATE, 0);
    *wd_dir = add_watch(ino, dir, IN_CREATE, 0);
    snprintf(p, sizeof p, "%s/y", dir);
    int w3 = add_watch(ino, p, IN_CREATE, 0);
    *wd_sub = add_watch(ino, sub, IN_CREATE | IN_ONLYDIR, use_raw);
    inotify_rm_watch(ino, w1);
    inotify_rm_watch(ino, w3);
    char b[4096] __attribute__((aligned(8)));
    while (read(ino, b, sizeof b) > 0) /* the two IN_IGNORED events */
        ;
}

static int flags_ok(int fd, int nonblock, int cloexec) {
    int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
    return fl >= 0 && fdf >= 0 && !!(fl & O_NONBLOCK) == nonblock && !!(fdf & FD_CLOEXEC) == cloexec;
}

static int loop(void) {
    mkdirs();
    int efd = eventfd(0, EFD_NONBLOCK);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, 0);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
    int pp[2];
    pipe2(pp, O_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int ino = inotify_init1(IN_NONBLOCK);
    int wd_dir, wd_sub;
    watches(ino, &wd_dir, &wd_sub);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev;
    int srcs[][3] = {{efd, D_EFD, EPOLLIN}, {sfd, D_SFD, EPOLLIN}, {pp[0], D_PIPE, EPOLLIN | EPOLLET},
                     {tfd, D_TFD, EPOLLIN}, {ino, D_INO, EPOLLIN}};
    for (int i = 0; i < 5; i++) {
        ev.events = srcs[i][2];
        ev.data.u64 = srcs[i][1];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, srcs[i][0], &ev)) { perror("epoll_ctl"); return 1; }
    }
    struct itimerspec its = {{0, 20000000}, {0, 20000000}};
    timerfd_settime(tfd, 0, &its, 0);
    printf("start wds %d %d\n", wd_dir, wd_sub);
    fflush(stdout);
    for (int i = 0; i < STEPS; i++) {
        /* Wait for the tick (level-triggered: a tick pending since before a restart counts). */
        int ticked = 0;
        for (int tries = 0; !ticked && tries < 100; tries++) {
            struct epoll_event out[8];
            int n = epoll_wait(ep, out, 8, 100);
            for (int k = 0; k < n; k++)
                if (out[k].data.u64 == D_TFD) ticked = 1;
        }
        uint64_t ticks = 0;
        read(tfd, &ticks, sizeof ticks);
        /* Make the sources ready. */
        int want_efd = i % 3 == 0, want_sig = i % 5 == 0, want_dir = i % 7 == 0, want_sub = i % 11 == 0;
        if (want_efd) { uint64_t two = 2; write(efd, &two, sizeof two); }
        if (want_sig) kill(getpid(), SIGUSR1);
        char c = 'a' + i % 26;
        write(pp[1], &c, 1);
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        if (want_dir) touch(dir, name);
        if (want_sub) { snprintf(name, sizeof name, "g%d", i); touch(sub, name); }
        /* Collect. */
        uint64_t cnt = 0;
        int sig = 0, got_pipe = 0, seen = 0;
        char pipe_c = '-', ino_names[64] = "";
        int need = (want_efd ? 1 : 0) | (want_sig ? 2 : 0) | 4 | (want_dir || want_sub ? 8 : 0);
        for (int tries = 0; (seen & need) != need && tries < 50; tries++) {
            if (tries == 3 && (want_dir || want_sub) && !(seen & 8)) {
                /* inotify events queued at checkpoint time are lost (documented): make them again */
                if (want_dir) touch(dir, name);
                if (want_sub) { char g[16]; snprintf(g, sizeof g, "g%d", i); touch(sub, g); }
            }
            struct epoll_event out[8];
            int n = epoll_wait(ep, out, 8, 100);
            for (int k = 0; k < n; k++) {
                switch (out[k].data.u64) {
                case D_EFD:
                    if (read(efd, &cnt, sizeof cnt) == 8) seen |= 1;
                    break;
                case D_SFD: {
                    struct signalfd_siginfo si;
                    if (read(sfd, &si, sizeof si) == sizeof si) { sig = si.ssi_signo; seen |= 2; }
                    break;
                }
                case D_PIPE: {
                    char b[64];
                    ssize_t r;
                    while ((r = read(pp[0], b, sizeof b)) > 0) { pipe_c = b[r - 1]; got_pipe += r; }
                    seen |= 4;
                    break;
                }
                case D_INO: {
                    char b[4096] __attribute__((aligned(8)));
                    ssize_t r = read(ino, b, sizeof b);
                    for (char *p = b; r > 0 && p < b + r;) {
                        struct inotify_event *e = (struct inotify_event *)p;
                        char one[24];
                        snprintf(one, sizeof one, "%s%d:%s", ino_names[0] ? "," : "", e->wd, e->len ? e->name : "");
                        if (strlen(ino_names) + strlen(one) < sizeof ino_names) strcat(ino_names, one);
                        p += sizeof *e + e->len;
                    }
                    if (r > 0) seen |= 8;
                    break;
                }
                }
            }
        }
        int fl = flags_ok(efd, 1, 0) && flags_ok(sfd, 1, 1) && flags_ok(pp[0], 1, 0) && flags_ok(tfd, 1, 1) &&
                 flags_ok(ino, 1, 0) && flags_ok(ep, 0, 1);
        printf("step %d tick %s efd %llu sig %d pipe %d%c ino [%s] flags %s %s\n", i, ticked && ticks >= 1 ? "ok" : "FAIL",
               (unsigned long long)cnt, sig, got_pipe, pipe_c, ino_names, fl ? "ok" : "FAIL",
               (seen & need) == need ? "ok" : "FAIL");
        fflush(stdout);
    }
    cleanup();
    printf("end\n");
    return 0;
}

static int pending(void) {
    mkdirs();
    int efd = eventfd(0, EFD_NONBLOCK);
    uint64_t v = 5;
    write(efd, &v, sizeof v);
    int sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, 0);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    kill(getpid(), SIGUSR1); /* process-directed */
    raise(SIGUSR2);          /* thread-directed */
    int ep = epoll_create1(0);
    int pp[2];
    pipe2(pp, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 3};
    epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev);
    write(pp[1], "x", 1);
    struct epoll_event out[8];
    int first = epoll_wait(ep, out, 8, 1000); /* consumes the edge; data stays unread */
    /* A registration made through a number that is closed since (and reused). */
    int q[2];
    pipe2(q, O_NONBLOCK);
    int d = dup(q[0]);
    ev.events = EPOLLIN;
    ev.data.u64 = 77;
    epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev);
    close(d);
    int occupant = eventfd(42, EFD_NONBLOCK); /* takes number d */
    int ino = inotify_init1(IN_NONBLOCK);
    int wd_dir, wd_sub;
    watches(ino, &wd_dir, &wd_sub);
    touch(dir, "before"); /* queued, not read before the checkpoint */
    printf("ready first %d occupant-on-dup %s wds %d %d\n", first, occupant == d ? "yes" : "no", wd_dir, wd_sub);
    fflush(stdout);
    for (int i = 0; i < 100; i++) {
        struct timespec t = {0, 50000000};
        nanosleep(&t, 0);
        printf("wait %d\n", i);
        fflush(stdout);
    }
    uint64_t c = 0;
    int r = read(efd, &c, sizeof c);
    printf("eventfd %d %llu\n", r, (unsigned long long)c);
    printf("semaphore");
    for (int i = 0; i < 4; i++) {
        uint64_t s = 0;
        if (read(sem, &s, sizeof s) == 8) printf(" %llu", (unsigned long long)s);
        else printf(" %s", errno == EAGAIN ? "EAGAIN" : "ERR");
    }
    printf("\n");
    for (int i = 0; i < 3; i++) {
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) == sizeof si) printf("signalfd %d\n", (int)si.ssi_signo);
        else printf("signalfd %s\n", errno == EAGAIN ? "EAGAIN" : "ERR");
    }
    printf("flags %s\n", flags_ok(efd, 1, 0) && flags_ok(sem, 1, 1) && flags_ok(sfd, 1, 0) && flags_ok(ep, 0, 0) &&
                             flags_ok(ino, 1, 0) ? "ok" : "FAIL");
    /* Differs from a native run on purpose (the test checks these two lines separately). */
    int n = epoll_wait(ep, out, 8, 0);
    printf("special et-fresh-edge %d\n", n == 1 && out[0].data.u64 == 3);
    char b[4096] __attribute__((aligned(8)));
    ssize_t qr = read(ino, b, sizeof b);
    printf("special queued-inotify %d\n", qr > 0);
    /* The registration under the closed number still reports, and the number's owner is intact. */
    write(q[1], "y", 1);
    n = epoll_wait(ep, out, 8, 1000);
    printf("stale-registration %s\n", n == 1 && out[0].data.u64 == 77 ? "ok" : "FAIL");
    uint64_t oc = 0;
    read(occupant, &oc, sizeof oc);
    printf("occupant %llu\n", (unsigned long long)oc);
    touch(dir, "after");
    touch(sub, "after");
    char names[128] = "";
    for (int tries = 0; tries < 10 && strlen(names) < 12; tries++) {
        qr = read(ino, b, sizeof b);
        for (char *p = b; qr > 0 && p < b + qr;) {
            struct inotify_event *e = (struct inotify_event *)p;
            char one[40];
            snprintf(one, sizeof one, " %d:%s", e->wd, e->len ? e->name : "");
            if (strlen(names) + strlen(one) < sizeof names) strcat(names, one);
            p += sizeof *e + e->len;
        }
        if (qr <= 0) usleep(10000);
    }
    printf("inotify-after%s\n", names);
    cleanup();
    printf("end\n");
    return 0;
}

/* An epoll set holding another epoll set (which holds an eventfd and a socket, a kind not
 * restored yet): the restart must go on without the socket's registration. */
static int nested(void) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    int e = eventfd(0, EFD_NONBLOCK);
    int inner = epoll_create1(0), outer = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    epoll_ctl(inner, EPOLL_CTL_ADD, e, &ev);
    ev.data.u64 = 2;
    epoll_ctl(inner, EPOLL_CTL_ADD, sv[0], &ev);
    ev.data.u64 = 9;
    epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev);
    for (int i = 0; i < 100; i++) {
        struct timespec t = {0, 50000000};
        nanosleep(&t, 0);
        struct epoll_event o[4];
        printf("wait %d ready %d\n", i, epoll_wait(outer, o, 4, 0));
        fflush(stdout);
    }
    uint64_t one = 1;
    write(e, &one, sizeof one);
    struct epoll_event o[4];
    int n = epoll_wait(outer, o, 4, 1000);
    printf("outer %d data %llu\n", n, n > 0 ? (unsigned long long)o[0].data.u64 : 0ULL);
    n = epoll_wait(inner, o, 4, 1000);
    printf("inner %d data %llu\n", n, n > 0 ? (unsigned long long)o[0].data.u64 : 0ULL);
    printf("end\n");
    return 0;
}

int main(int argc, char **argv) {
    int pend = 0, nest = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "pending")) pend = 1;
        if (!strcmp(argv[i], "nested")) nest = 1;
        if (!strcmp(argv[i], "raw")) use_raw = 1;
    }
    return nest ? nested() : pend ? pending() : loop();
}

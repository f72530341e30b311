/* Process-tree test program: every way a program sees a pid must agree, before and after any
 * restart (docs/process-trees.md, "Virtual pids").
 *
 * The parent P forks one child C. They take 300 steps (15 ms apart); in each:
 *   P: kill(C, SIGUSR1), then writes the step number to C through a pipe.
 *   C: reads it, waits (up to 5 s) for its SA_SIGINFO handler to have seen that many SIGUSR1s,
 *      then checks (one digit each, 1 = as expected):
 *        h  the last SIGUSR1's si_pid is its parent (getppid() at fork)
 *        t  gettid() == getpid() in the main thread; tgkill(getpid(), gettid(), SIGUSR2) runs
 *           its handler with si_pid == getpid() and si_code SI_TKILL
 *        p  /proc/<getppid()>/comm reads "pid_views" (open), fopen("/proc/<getpid()>/status")
 *           works, stat and statx of /proc/<pid>/task/<pid> work, faccessat of
 *           /proc/<getppid()>/status works, readlink("/proc/self") is getpid()
 *        o  fcntl(F_SETOWN, getpid()) then F_GETOWN gives getpid(); same with -getpgrp()
 *        c  SO_PEERCRED of a fresh socketpair names getpid()
 *        s  sched_getaffinity, sched_getscheduler, getpriority(PRIO_PROCESS) and prlimit
 *           accept getpid() (ESRCH if it named no process)
 *        x  every 10th step: a forked child that execs this program as
 *           "pid_views probe <C's pid> <P's pid>" finds getppid() == C, kill(P, 0) works and
 *           /proc/<P>/comm is "pid_views" (ids survive exec), exit 0; 1 on other steps
 *      then sigqueue(getppid(), SIGUSR2, step) and sends its digits back to P.
 *   P: sigtimedwait for that SIGUSR2 (blocked in P): si_pid must be C (fork's value) with
 *      si_code SI_QUEUE and the step as value (digit q); /proc/<C>/comm reads "pid_views"
 *      (digit p); a second thread W of P (started after the fork) saved its gettid() at
 *      start: tgkill(getpid(), W's tid, SIGWINCH) runs the handler in W, where gettid() is
 *      still that tid, W's own gettid() never changed, and /proc/<pid>/task/<W's tid> and
 *      /proc/self/task/<W's tid> exist (digit w); then prints "step N child htpocsx parent qpw".
 * At the end P closes the pipe, C exits 5, P prints "child exit 5" (waitpid must return the
 * pid fork returned). 301 lines, exit status 0; runs ~5 s. C never prints. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS 300

static volatile sig_atomic_t n_usr1, usr1_pid, usr1_code;
static volatile sig_atomic_t n_usr2, usr2_pid, usr2_code;

static void on_usr1(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    usr1_pid = si->si_pid;
    usr1_code = si->si_code;
    n_usr1++;
}

static void on_usr2(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    usr2_pid = si->si_pid;
    usr2_code = si->si_code;
    n_usr2++;
}

static volatile pid_t helper_tid;
static volatile sig_atomic_t helper_ok = 1, winch_n, winch_tid_ok = 1;

static void on_winch(int s) {
    (void)s;
    if (gettid() != helper_tid) winch_tid_ok = 0;
    winch_n++;
}

static void sleep_ms(long ms);

static void *helper(void *a) {
    (void)a;
    helper_tid = gettid();
    for (;;) {
        if (gettid() != helper_tid) helper_ok = 0;
        sleep_ms(5);
    }
    return NULL;
}

static int thread_ok(int step) {
    pid_t me = getpid(), t = helper_tid;
    if (tgkill(me, t, SIGWINCH) != 0) return 0;
    for (int w = 0; winch_n < step && w < 5000; w++) sleep_ms(1);
    char path[96];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/task/%d", (int)me, (int)t);
    if (stat(path, &st) != 0) return 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)t);
    if (access(path, R_OK) != 0) return 0;
    return winch_n == step && winch_tid_ok && helper_ok;
}

static void die(const char *what) {
    fprintf(stderr, "pid_views[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read");
        if (r == 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

static void write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("write");
        done += (size_t)r;
    }
}

/* /proc/<pid>/comm is "pid_views". */
static int comm_ok(pid_t pid) {
    char path[64], buf[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strcmp(buf, "pid_views\n") == 0;
}

static int proc_ok(pid_t me, pid_t parent) {
    char path[96], buf[64];
    if (!comm_ok(parent)) return 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)me);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    fclose(f);
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/task/%d", (int)me, (int)me);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    struct statx sx;
    if (statx(AT_FDCWD, path, 0, STATX_TYPE, &sx) != 0 || !S_ISDIR(sx.stx_mode)) return 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)parent);
    if (faccessat(AT_FDCWD, path, R_OK, 0) != 0) return 0;
    ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
    if (n <= 0) return 0;
    buf[n] = 0;
    return atoi(buf) == (int)me;
}

static int owner_ok(int fd, pid_t me) {
    if (fcntl(fd, F_SETOWN, me) != 0 || fcntl(fd, F_GETOWN) != me) return 0;
    pid_t g = getpgrp();
    if (fcntl(fd, F_SETOWN, -g) != 0 || fcntl(fd, F_GETOWN) != -g) return 0;
    return fcntl(fd, F_SETOWN, 0) == 0;
}

static int peercred_ok(pid_t me) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    struct ucred c;
    socklen_t len = sizeof c;
    int ok = getsockopt(sv[0], SOL_SOCKET, SO_PEERCRED, &c, &len) == 0 && c.pid == me;
    close(sv[0]);
    close(sv[1]);
    return ok;
}

static int sched_ok(pid_t me) {
    cpu_set_t cs;
    struct rlimit rl;
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, (id_t)me);
    return sched_getaffinity(me, sizeof cs, &cs) == 0 && sched_getscheduler(me) >= 0 &&
           !(prio == -1 && errno != 0) && prlimit(me, RLIMIT_NOFILE, NULL, &rl) == 0;
}

/* This program's path, read at start: after a restart /proc/self/exe names the restorer. */
static char self_path[4096];

static int probe_ok(pid_t me, pid_t parent) {
    char a1[16], a2[16];
    snprintf(a1, sizeof a1, "%d", (int)me);
    snprintf(a2, sizeof a2, "%d", (int)parent);
    pid_t p = fork();
    if (p < 0) return 0;
    if (p == 0) {
        execl(self_path, "pid_views", "probe", a1, a2, (char *)NULL);
        _exit(98);
    }
    int st;
    pid_t w;
    while ((w = waitpid(p, &st, 0)) < 0 && errno == EINTR) {
    }
    return w == p && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int child(int in, int out, pid_t parent) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL) != 0) die("sigaction SIGUSR2");
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    if (sigprocmask(SIG_UNBLOCK, &s, NULL) != 0) die("sigprocmask");
    /* The action reads back as installed. */
    struct sigaction old;
    if (sigaction(SIGUSR2, NULL, &old) != 0 || old.sa_sigaction != on_usr2) {
        errno = EINVAL;
        die("sigaction reads back another handler");
    }
    for (;;) {
        int step;
        if (!read_full(in, &step, sizeof step)) break;
        for (int w = 0; n_usr1 < step && w < 5000; w++) sleep_ms(1);
        pid_t me = getpid();
        char d[8];
        /* SI_QUEUE: a SIGUSR1 pending at a checkpoint is queued again that way. */
        d[0] = '0' + (n_usr1 == step && usr1_pid == parent && getppid() == parent &&
                      (usr1_code == SI_USER || usr1_code == SI_QUEUE));
        int before = n_usr2;
        int t = gettid() == me && syscall(SYS_gettid) > 0 && tgkill(me, gettid(), SIGUSR2) == 0;
        d[1] = '0' + (t && n_usr2 == before + 1 && usr2_pid == me && usr2_code == SI_TKILL);
        d[2] = '0' + proc_ok(me, parent);
        d[3] = '0' + owner_ok(out, me);
        d[4] = '0' + peercred_ok(me);
        d[5] = '0' + sched_ok(me);
        d[6] = '0' + (step % 10 == 0 ? probe_ok(me, parent) : 1);
        d[7] = 0;
        union sigval v = {.sival_int = step};
        if (sigqueue(getppid(), SIGUSR2, v) != 0) die("sigqueue");
        write_full(out, d, sizeof d);
    }
    return 5;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "probe") == 0) {
        pid_t c = (pid_t)atoi(argv[2]), p = (pid_t)atoi(argv[3]);
        return getppid() == c && kill(p, 0) == 0 && comm_ok(p) ? 0 : 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (readlink("/proc/self/exe", self_path, sizeof self_path - 1) <= 0) die("readlink");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0) die("sigaction"); /* inherited by the child */
    sigset_t s2;
    sigemptyset(&s2);
    sigaddset(&s2, SIGUSR2);
    if (sigprocmask(SIG_BLOCK, &s2, NULL) != 0) die("sigprocmask");

    int down[2], up[2];
    if (pipe(down) || pipe(up)) die("pipe");
    pid_t self = getpid();
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        close(down[1]);
        close(up[0]);
        if (getppid() != self) _exit(97);
        _exit(child(down[0], up[1], self));
    }
    close(down[0]);
    close(up[1]);
    struct sigaction sw;
    memset(&sw, 0, sizeof sw);
    sw.sa_handler = on_winch;
    sw.sa_flags = SA_RESTART;
    sigemptyset(&sw.sa_mask);
    if (sigaction(SIGWINCH, &sw, NULL) != 0) die("sigaction SIGWINCH");
    pthread_t th;
    if (pthread_create(&th, NULL, helper, NULL) != 0) die("pthread_create");
    while (helper_tid == 0) sleep_ms(1);
    for (int step = 1; step <= STEPS; step++) {
        if (kill(kid, SIGUSR1) != 0) die("kill");
        write_full(down[1], &step, sizeof step);
        siginfo_t si;
        struct timespec tmo = {5, 0};
        int q;
        do {
            memset(&si, 0, sizeof si);
            q = sigtimedwait(&s2, &si, &tmo);
        } while (q < 0 && errno == EINTR);
        int qok = q == SIGUSR2 && si.si_pid == kid && si.si_code == SI_QUEUE &&
                  si.si_value.sival_int == step;
        char d[8];
        if (!read_full(up[0], d, sizeof d)) {
            errno = EPIPE;
            die("child gone");
        }
        printf("step %d child %s parent %d%d%d\n", step, d, qok,
               comm_ok(kid) && getpid() == self, thread_ok(step));
        sleep_ms(15);
    }
    close(down[1]);
    int st;
    pid_t w;
    while ((w = waitpid(kid, &st, 0)) < 0)
        if (errno != EINTR) die("waitpid");
    printf("child %s %d\n", w == kid ? "exit" : "wrong-pid",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

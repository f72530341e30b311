/* Process-tree test program 1 (docs/design-process-trees.md §11.2, test 1).
 *
 * The parent forks child1 and child2, connected parent -> child1 -> child2 -> parent by three
 * pipes, and a third child that _exit(7)s at once and is reaped only at the end (a zombie
 * across every checkpoint). Each of 300 steps the parent sends one message (64-byte header +
 * 64 KiB payload); child1 and child2 each transform the payload and forward it; the parent
 * reads the result back and prints one line with its checksum. Messages are pipelined: the
 * message of step k stays in flight (in the pipes, in a child blocked in write) while the
 * parent sleeps, and is read back during step k+1, so a checkpoint always finds data in the
 * pipes.
 *
 * Every 20 steps the parent sends SIGUSR1 to both children before the step's message; the
 * message says how many signals each child should have seen by then, the child waits (up to
 * 5 s) until its handler count reaches that, and reports the count in the header (a lost
 * signal shows as a smaller count, a duplicated one as a larger count).
 *
 * Ids: each child saves getpid()/getppid() right after fork and reports in every header
 * whether they are still the same, plus its getpid(); the parent compares that pid with what
 * fork returned, and its own getpid() with the value at start. (The parent's own getppid() is
 * not checked: after a restart its parent is ckpt-restart's helper, not the original one.)
 *
 * Output (deterministic, flushed per line): 300 lines
 *   "step N sum HEX ok sigs A B pid-same 1 ppid-same 1 zombie 1"
 * then "exit child1 exit 3 child2 exit 4 child3 exit 7 extra 0" and "done steps 300 total HEX".
 * The parent exits 0. Runs ~5 s. The children never print. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS 300
#define PAYLOAD 65536
#define SIG_EVERY 20
#define MAGIC 0x74726565u
#define CHUNK 4096

struct hdr {
    uint32_t magic, step, want_sigs, pad;
    int32_t pid[2];
    uint32_t sigs[2];
    uint32_t pid_ok[2];
    uint32_t ppid_ok[2];
    uint32_t pad2[4];
};
_Static_assert(sizeof(struct hdr) == 64, "header is 64 bytes");
#define MSG (sizeof(struct hdr) + PAYLOAD)

static volatile sig_atomic_t nsig;
static void on_usr1(int s) {
    (void)s;
    nsig++;
}

static void die(const char *what) {
    fprintf(stderr, "tree_pipeline[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Reads exactly n bytes; returns 0 on EOF before the first byte, n otherwise (dies on a
 * short read). */
static size_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            if (got == 0) return 0;
            errno = EPIPE;
            die("short read");
        }
        got += (size_t)r;
    }
    return got;
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

static unsigned char transform(int role, uint32_t step, size_t i, unsigned char b) {
    if (role == 0) return (unsigned char)(b * 5 + 1);
    return (unsigned char)(b ^ (unsigned char)(step * 7 + i));
}

/* child1 (role 0) and child2 (role 1): forward messages from `in` to `out`, transforming the
 * payload, until EOF. */
static int child(int role, int in, int out, pid_t my_pid, pid_t my_ppid) {
    static unsigned char buf[CHUNK];
    for (;;) {
        struct hdr h;
        if (read_full(in, &h, sizeof h) == 0) break;
        if (h.magic != MAGIC) {
            errno = EPROTO;
            die("bad magic");
        }
        /* The parent signalled before writing this message: wait for the handler. */
        for (int waited = 0; (uint32_t)nsig < h.want_sigs && waited < 5000; waited++) sleep_ms(1);
        h.pid[role] = (int32_t)getpid();
        h.sigs[role] = (uint32_t)nsig;
        h.pid_ok[role] = getpid() == my_pid;
        h.ppid_ok[role] = getppid() == my_ppid;
        write_full(out, &h, sizeof h);
        for (size_t off = 0; off < PAYLOAD; off += CHUNK) {
            if (read_full(in, buf, CHUNK) == 0) {
                errno = EPIPE;
                die("EOF inside a message");
            }
            for (size_t i = 0; i < CHUNK; i++) buf[i] = transform(role, h.step, off + i, buf[i]);
            write_full(out, buf, CHUNK);
        }
    }
    return role == 0 ? 3 : 4;
}

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void gen_payload(uint32_t step, unsigned char *p) {
    uint64_t s = (uint64_t)step * 0x9E3779B97F4A7C15ULL ^ 0x5DEECE66DULL;
    for (size_t i = 0; i < PAYLOAD; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        memcpy(p + i, &s, 8);
    }
}

/* Parent state. */
static int tx_fd, rx_fd;
static pid_t kid[3];
static pid_t me_at_start;
static unsigned char txbuf[MSG], rxbuf[MSG], expect[PAYLOAD];
static size_t txoff, txlen, rxoff;
static int rx_done; /* responses fully received */
static struct {
    uint64_t sum;
    int ok;
    uint32_t sigs[2];
    int pid_same, ppid_same;
} res[STEPS + 1];
static uint32_t sent_sigs;

static void take_response(void) {
    struct hdr h;
    memcpy(&h, rxbuf, sizeof h);
    unsigned char *p = rxbuf + sizeof h;
    int step = (int)h.step;
    if (h.magic != MAGIC || step != rx_done + 1) {
        fprintf(stderr, "tree_pipeline: response %d has step %d magic %x\n", rx_done + 1, step,
                h.magic);
        _exit(98);
    }
    gen_payload(h.step, expect);
    int ok = 1;
    for (size_t i = 0; i < PAYLOAD; i++)
        if (transform(1, h.step, i, transform(0, h.step, i, expect[i])) != p[i]) {
            ok = 0;
            break;
        }
    res[step].sum = fnv(p, PAYLOAD, 0xcbf29ce484222325ULL);
    res[step].ok = ok;
    res[step].sigs[0] = h.sigs[0];
    res[step].sigs[1] = h.sigs[1];
    res[step].pid_same = h.pid[0] == kid[0] && h.pid[1] == kid[1] && h.pid_ok[0] && h.pid_ok[1] &&
                         getpid() == me_at_start;
    res[step].ppid_same = h.ppid_ok[0] && h.ppid_ok[1];
    rx_done++;
}

/* Moves bytes both ways until the pending message is written and `need` responses are in. */
static void pump(int need) {
    while (txoff < txlen || rx_done < need) {
        struct pollfd p[2];
        int n = 0, ti = -1;
        if (txoff < txlen) {
            p[n] = (struct pollfd){.fd = tx_fd, .events = POLLOUT};
            ti = n++;
        }
        int ri = n;
        p[n++] = (struct pollfd){.fd = rx_fd, .events = POLLIN};
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (ti >= 0 && (p[ti].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(tx_fd, txbuf + txoff, txlen - txoff);
            if (w < 0 && errno != EAGAIN && errno != EINTR) die("write to child1");
            if (w > 0) txoff += (size_t)w;
        }
        if (p[ri].revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = read(rx_fd, rxbuf + rxoff, MSG - rxoff);
            if (r < 0 && errno != EAGAIN && errno != EINTR) die("read from child2");
            if (r == 0) {
                errno = EPIPE;
                die("EOF from child2 in the middle of the run");
            }
            if (r > 0) {
                rxoff += (size_t)r;
                if (rxoff == MSG) {
                    take_response();
                    rxoff = 0;
                }
            }
        }
    }
}

static int zombie_ok(void) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)kid[2], &si, WEXITED | WNOHANG | WNOWAIT) != 0) return 0;
    return si.si_pid == kid[2] && si.si_code == CLD_EXITED && si.si_status == 7;
}

static void print_step(int k) {
    printf("step %d sum %016llx %s sigs %u %u pid-same %d ppid-same %d zombie %d\n", k,
           (unsigned long long)res[k].sum, res[k].ok ? "ok" : "BAD", res[k].sigs[0],
           res[k].sigs[1], res[k].pid_same, res[k].ppid_same, zombie_ok());
    fflush(stdout);
}

static void describe(char *out, size_t n, int st) {
    if (WIFEXITED(st))
        snprintf(out, n, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, n, "signal %d", WTERMSIG(st));
    else
        snprintf(out, n, "status %#x", st);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    me_at_start = getpid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0) die("sigaction"); /* inherited by the children */

    int a[2], b[2], c[2];
    if (pipe(a) || pipe(b) || pipe(c)) die("pipe");
    fflush(stdout);

    pid_t self = getpid();
    kid[0] = fork();
    if (kid[0] < 0) die("fork child1");
    if (kid[0] == 0) {
        pid_t mp = getpid(), pp = getppid();
        close(a[1]);
        close(b[0]);
        close(c[0]);
        close(c[1]);
        if (pp != self) _exit(97);
        _exit(child(0, a[0], b[1], mp, pp));
    }
    kid[1] = fork();
    if (kid[1] < 0) die("fork child2");
    if (kid[1] == 0) {
        pid_t mp = getpid(), pp = getppid();
        close(a[0]);
        close(a[1]);
        close(b[1]);
        close(c[0]);
        if (pp != self) _exit(97);
        _exit(child(1, b[0], c[1], mp, pp));
    }
    kid[2] = fork();
    if (kid[2] < 0) die("fork child3");
    if (kid[2] == 0) _exit(7);
    close(a[0]);
    close(b[0]);
    close(b[1]);
    close(c[1]);
    tx_fd = a[1];
    rx_fd = c[0];
    if (fcntl(tx_fd, F_SETFL, O_NONBLOCK) || fcntl(rx_fd, F_SETFL, O_NONBLOCK)) die("fcntl");

    /* child3 is a zombie from here on (not reaped: WNOWAIT). */
    siginfo_t si;
    while (waitid(P_PID, (id_t)kid[2], &si, WEXITED | WNOWAIT) != 0)
        if (errno != EINTR) die("waitid child3");

    uint64_t total = 0xcbf29ce484222325ULL;
    for (int step = 1; step <= STEPS; step++) {
        if (step % SIG_EVERY == 0) {
            if (kill(kid[0], SIGUSR1) || kill(kid[1], SIGUSR1)) die("kill");
            sent_sigs++;
        }
        struct hdr h;
        memset(&h, 0, sizeof h);
        h.magic = MAGIC;
        h.step = (uint32_t)step;
        h.want_sigs = sent_sigs;
        memcpy(txbuf, &h, sizeof h);
        gen_payload((uint32_t)step, txbuf + sizeof h);
        txoff = 0;
        txlen = MSG;
        /* Send this step's message while reading the previous step's result back. */
        pump(step - 1);
        if (step > 1) {
            print_step(step - 1);
            total = (total ^ res[step - 1].sum) * 0x100000001b3ULL;
        }
        sleep_ms(15);
    }
    pump(STEPS);
    print_step(STEPS);
    total = (total ^ res[STEPS].sum) * 0x100000001b3ULL;

    /* EOF down the ring: child1 exits 3, child2 exits 4, then EOF reaches us. */
    close(tx_fd);
    long extra = 0;
    for (;;) {
        struct pollfd p = {.fd = rx_fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        ssize_t r = read(rx_fd, rxbuf, sizeof rxbuf);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            die("read at the end");
        }
        extra += r;
    }
    char d[3][32];
    for (int i = 0; i < 3; i++) {
        int st;
        while (waitpid(kid[i], &st, 0) != kid[i])
            if (errno != EINTR) die("waitpid");
        describe(d[i], sizeof d[i], st);
    }
    printf("exit child1 %s child2 %s child3 %s extra %ld\n", d[0], d[1], d[2], extra);
    printf("done steps %d total %016llx\n", STEPS, (unsigned long long)total);
    fflush(stdout);
    return 0;
}

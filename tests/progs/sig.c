/* sig.c — a process's signal state must survive checkpoint, resume and restart.
 *
 * Usage: sig [STEPS [HOSTILE]]   (defaults: 50 steps, hostile 1; ~0.1 s per step)
 *
 * Set-up:
 *   - HOSTILE: sigprocmask(SIG_BLOCK, everything) and sigaction(CKPT_SIGNAL, SIG_IGN)
 *     (the number comes from $CKPT_SIGNAL, else SIGRTMAX-2), and both must read back as
 *     set; the program must still be checkpointable. The helper thread below also waits
 *     for the checkpoint signal with sigtimedwait.
 *   - main's mask for the whole run: SIGALRM (taken only inside sigsuspend), SIGUSR1,
 *     SIGUSR2, SIGRTMIN+3, SIGWINCH (+ the checkpoint signal if HOSTILE).
 *   - pending process-directed signals queued early while blocked: SIGUSR1 (must never be
 *     delivered, must stay pending), SIGUSR2 with value 42, SIGRTMIN+3 three times with values 1, 2, 3.
 *   - ITIMER_REAL every 10 ms; its SIGALRM handler runs on a sigaltstack (SA_ONSTACK, sa_mask
 *     = all) and counts a failure when it is not on it. ITIMER_VIRTUAL (1000 s) and
 *     ITIMER_PROF (2000 s) are armed and must stay armed.
 *   - a helper thread loops on sigtimedwait({SIGWINCH}, 200 ms): it must always time out
 *     (EAGAIN) after at least 200 ms; it also stops the program if ticks stop coming.
 *
 * Each step waits for 10 ticks with the canonical `sigsuspend` loop (a return with no tick is
 * a spurious wake-up), then checks masks, dispositions and timers, and prints
 * "step N ok" or "step N FAIL <what>". At step STEPS-5 SIGUSR2 and SIGRTMIN+3 are unblocked:
 * their handlers must run exactly once / three times in order with their values. The end
 * prints whether the total number of ticks is plausible. A correct run prints the same bytes
 * every time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TICKS_PER_STEP 10
#define ALT_SIZE (64 * 1024)

static char altstack[ALT_SIZE] __attribute__((aligned(16)));
static volatile sig_atomic_t ticks, alt_bad, usr1_count, usr2_count, usr2_bad, rt_n;
static volatile int rt_vals[8];
static volatile sig_atomic_t helper_bad, done;
static int ckpt_sig, rt_sig, hostile;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void on_alrm(int sig) {
    volatile char probe = 0;
    stack_t ss;
    (void)sig;
    if ((char *)&probe < altstack || (char *)&probe >= altstack + ALT_SIZE) alt_bad++;
    if (sigaltstack(NULL, &ss) != 0 || !(ss.ss_flags & SS_ONSTACK)) alt_bad++;
    ticks++;
}

static void on_usr1(int sig) {
    (void)sig;
    usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    usr2_count++;
    if (si->si_code != SI_QUEUE || si->si_value.sival_int != 42) usr2_bad++;
}

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (rt_n < 8) rt_vals[rt_n] = si->si_value.sival_int;
    rt_n++;
}

static void *helper(void *arg) {
    sigset_t w;
    int last = -1, still = 0;
    (void)arg;
    sigemptyset(&w);
    sigaddset(&w, SIGWINCH);
    if (hostile) sigaddset(&w, ckpt_sig);
    while (!done) {
        struct timespec to = {0, 200 * 1000000L};
        double t0 = now_ms();
        int r = sigtimedwait(&w, NULL, &to);
        int e = errno;
        double el = now_ms() - t0;
        if (r != -1 || e != EAGAIN || el < 199.0) {
            if (!helper_bad) {
                fprintf(stderr, "sig: helper: sigtimedwait returned %d errno %d after %.1f ms\n", r,
                        e, el);
            }
            helper_bad++;
        }
        int t = ticks;
        if (t == last) {
            if (++still >= 15 && !done) { /* 3 s of running time without a tick */
                printf("FAIL itimer stalled at %d ticks\n", t);
                fflush(stdout);
                _exit(3);
            }
        } else {
            still = 0;
            last = t;
        }
    }
    return NULL;
}

/* True when every other thread of the process blocks all of `want` (SigBlk in /proc). */
static int others_block(unsigned long long want) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int ok = 1, me = (int)syscall(SYS_gettid);
    if (!d) return 1;
    while (ok && (e = readdir(d)) != NULL) {
        int tid = atoi(e->d_name);
        if (tid <= 0 || tid == me) continue;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* gone */
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "SigBlk:", 7) == 0 && (strtoull(line + 7, NULL, 16) & want) != want)
                ok = 0;
        fclose(f);
    }
    closedir(d);
    return ok;
}

static void add(char *buf, size_t n, const char *what) {
    size_t l = strlen(buf);
    snprintf(buf + l, n - l, " %s", what);
}

static int armed(int which, long max_sec, long interval_us) {
    struct itimerval v;
    if (getitimer(which, &v) != 0) return 0;
    long long val = v.it_value.tv_sec * 1000000LL + v.it_value.tv_usec;
    long long iv = v.it_interval.tv_sec * 1000000LL + v.it_interval.tv_usec;
    /* An expired ITIMER_REAL reads 0 until its SIGALRM (blocked here) is taken. */
    sigset_t p;
    if (val == 0 && which == ITIMER_REAL && sigpending(&p) == 0 && sigismember(&p, SIGALRM))
        val = 1;
    /* CPU-time timers are rounded up to a kernel tick: allow a second of slack. */
    return val > 0 && val <= (max_sec + 1) * 1000000LL && iv == interval_us;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 50;
    hostile = argc > 2 ? atoi(argv[2]) : 1;
    const char *cs = getenv("CKPT_SIGNAL");
    ckpt_sig = cs && *cs ? atoi(cs) : SIGRTMAX - 2;
    rt_sig = SIGRTMIN + 3;
    long unblock_step = steps - 5;
    char why[512] = "";
    sigset_t all, cur, old, run, waitmask, s;
    struct sigaction sa, q;

    if (hostile) {
        sigfillset(&all);
        if (sigprocmask(SIG_BLOCK, &all, NULL) != 0) add(why, sizeof why, "block-all");
        sigprocmask(SIG_BLOCK, NULL, &cur);
        if (!sigismember(&cur, ckpt_sig) || !sigismember(&cur, SIGUSR1))
            add(why, sizeof why, "mask-readback");
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        if (sigaction(ckpt_sig, &sa, NULL) != 0) add(why, sizeof why, "ignore");
        if (sigaction(ckpt_sig, NULL, &q) != 0 || q.sa_handler != SIG_IGN)
            add(why, sizeof why, "ignore-readback");
    }
    sigemptyset(&run);
    sigaddset(&run, SIGALRM);
    sigaddset(&run, SIGUSR1);
    sigaddset(&run, SIGUSR2);
    sigaddset(&run, rt_sig);
    sigaddset(&run, SIGWINCH);
    if (hostile) sigaddset(&run, ckpt_sig);
    sigprocmask(SIG_SETMASK, &run, &old);
    if (hostile && !sigismember(&old, ckpt_sig)) add(why, sizeof why, "oldmask");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_sigaction = on_rt;
    sigaction(rt_sig, &sa, NULL);

    /* A thread that exists before main (none natively; under ckpt its checkpoint thread)
     * must not take the process-directed signals below. ckpt's checkpoint thread blocks
     * them as its first action, but glibc starts every thread with all signals blocked and
     * then sets the creator's mask, so a single look at /proc can catch that transient
     * state: require two looks 50 ms apart. (Work-around for the checkpoint thread being
     * spawned with signals unblocked; harmless once it is created with them blocked.) */
    unsigned long long mine = (1ULL << (SIGUSR1 - 1)) | (1ULL << (SIGUSR2 - 1)) |
                              (1ULL << (rt_sig - 1)) | (1ULL << (SIGALRM - 1));
    for (int i = 0; !(others_block(mine) && (usleep(50000), others_block(mine))); i++) {
        if (i == 100) {
            add(why, sizeof why, "another-thread-takes-signals");
            break;
        }
    }

    /* Process-directed, pending while blocked. */
    union sigval v;
    v.sival_int = 0;
    kill(getpid(), SIGUSR1);
    v.sival_int = 42;
    sigqueue(getpid(), SIGUSR2, v);
    for (int i = 1; i <= 3; i++) {
        v.sival_int = i;
        sigqueue(getpid(), rt_sig, v);
    }

    stack_t ss = {.ss_sp = altstack, .ss_flags = 0, .ss_size = ALT_SIZE};
    if (sigaltstack(&ss, NULL) != 0) add(why, sizeof why, "sigaltstack");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    struct itimerval it = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct itimerval vt = {{0, 0}, {1000, 0}};
    setitimer(ITIMER_VIRTUAL, &vt, NULL);
    struct itimerval pt = {{0, 0}, {2000, 0}};
    setitimer(ITIMER_PROF, &pt, NULL);

    pthread_t th;
    if (pthread_create(&th, NULL, helper, NULL) != 0) add(why, sizeof why, "pthread_create");

    printf("start %s%s\n", why[0] ? "FAIL" : "ok", why);
    fflush(stdout);

    waitmask = run;
    sigdelset(&waitmask, SIGALRM);
    for (long step = 1; step <= steps; step++) {
        int spurious = 0;
        double t0 = now_ms();
        int target = ticks + TICKS_PER_STEP;
        while (ticks < target) {
            int b = ticks;
            sigsuspend(&waitmask);
            if (ticks == b) spurious++;
        }
        double el = now_ms() - t0;

        why[0] = 0;
        if (spurious) add(why, sizeof why, "spurious-wakeup");
        if (el < 50.0) add(why, sizeof why, "ticks-too-fast");
        if (alt_bad) add(why, sizeof why, "not-on-altstack");
        if (usr1_count) add(why, sizeof why, "usr1-delivered");
        if (sigpending(&s) != 0 || !sigismember(&s, SIGUSR1)) add(why, sizeof why, "usr1-not-pending");
        if (helper_bad) add(why, sizeof why, "helper-sigtimedwait");

        sigprocmask(SIG_BLOCK, NULL, &cur);
        if (!sigismember(&cur, SIGUSR1) || !sigismember(&cur, SIGALRM) ||
            !sigismember(&cur, SIGWINCH))
            add(why, sizeof why, "mask");
        if (step <= unblock_step && (!sigismember(&cur, SIGUSR2) || !sigismember(&cur, rt_sig)))
            add(why, sizeof why, "mask-pending");
        if (sigismember(&cur, ckpt_sig) != hostile) add(why, sizeof why, "mask-ckpt-view");

        if (sigaction(ckpt_sig, NULL, &q) != 0 || q.sa_handler != (hostile ? SIG_IGN : SIG_DFL))
            add(why, sizeof why, "ckpt-disposition-view");
        if (sigaction(SIGALRM, NULL, &q) != 0 || q.sa_handler != on_alrm ||
            !(q.sa_flags & SA_ONSTACK) || !sigismember(&q.sa_mask, ckpt_sig) ||
            !sigismember(&q.sa_mask, SIGUSR1))
            add(why, sizeof why, "alrm-action");

        if (!armed(ITIMER_REAL, 1, 10000)) add(why, sizeof why, "itimer-real");
        if (!armed(ITIMER_VIRTUAL, 1000, 0)) add(why, sizeof why, "itimer-virtual");
        if (!armed(ITIMER_PROF, 2000, 0)) add(why, sizeof why, "itimer-prof");

        if (step < unblock_step && (usr2_count || rt_n)) add(why, sizeof why, "delivered-early");
        if (step == unblock_step) {
            sigemptyset(&s);
            sigaddset(&s, SIGUSR2);
            sigaddset(&s, rt_sig);
            sigprocmask(SIG_UNBLOCK, &s, NULL);
        }
        if (step >= unblock_step) {
            if (usr2_count != 1 || usr2_bad) add(why, sizeof why, "usr2");
            if (rt_n != 3 || rt_vals[0] != 1 || rt_vals[1] != 2 || rt_vals[2] != 3)
                add(why, sizeof why, "rt-order");
        }
        printf("step %ld %s%s\n", step, why[0] ? "FAIL" : "ok", why);
        fflush(stdout);
    }
    done = 1;
    pthread_join(th, NULL);
    long t = ticks, want = steps * TICKS_PER_STEP;
    if (t >= want && t <= want + 20)
        printf("ticks ok\n");
    else
        printf("ticks FAIL %ld (want %ld..%ld)\n", t, want, want + 20);
    return 0;
}

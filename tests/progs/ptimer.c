/* ptimer.c — POSIX timers (timer_create & co.) must survive checkpoint and restart.
 *
 * Usage: ptimer [STEPS [MODE]]   STEPS default 250 (~5 s); MODE "all" (default) or
 *        "nothread" (no SIGEV_THREAD timer, to show what happens to the others).
 *
 * Timers, all created at start:
 *   sig   CLOCK_MONOTONIC, SIGEV_SIGNAL SIGUSR1, every 20 ms, counted by a handler
 *         (which checks si_code == SI_TIMER and the sigev_value);
 *   thr   CLOCK_MONOTONIC, SIGEV_THREAD every 20 ms, counted by its callback (which checks
 *         its argument and that it does not run on the main thread);
 *   once  CLOCK_MONOTONIC, SIGEV_THREAD_ID to the main thread, SIGUSR2, one shot at
 *         0.9 * STEPS * 20 ms: must fire exactly once, before the last step (the steps sleep
 *         STEPS * 20 ms of live time in all) and not before it is due;
 *   none  CLOCK_REALTIME, SIGEV_NONE, armed with TIMER_ABSTIME one hour ahead;
 *   cpu   CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 1000 s of CPU time.
 * Every 10th step also creates a SIGEV_THREAD one-shot (1 ms) with a 256 KiB stack attribute
 * (its callback checks its stack size) after deleting the previous one (once its callback ran:
 * the step waits up to 2 s for it), and creates, deletes
 * and queries a SIGEV_NONE timer (must answer EINVAL once deleted).
 *
 * Each step sleeps 20 ms, then checks timer_gettime of every timer (interval and remaining
 * value within bounds) and timer_getoverrun, and prints one deterministic line
 * "step N sig=ok thr=ok once=ok none=ok cpu=ok churn=ok" (FAIL in place of ok on error).
 * Counts depend on timing: they are only checked at the end, against bounds that hold under
 * any load (see the end of main), and counting must have gone on in the second half (after
 * the test's restarts). The last line is
 * "end counts=ok once=ok delete=ok"; a FAIL there carries the numbers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 20000000L
#define SIG_VALUE 4242
#define ONCE_VALUE 777

static atomic_long sig_count, sig_bad, thr_count, thr_bad;
static atomic_int once_fired, once_bad;
static atomic_long once_step, cur_step, once_at;
static atomic_int churn_fired, churn_bad;
static int thr_token, churn_token;

static long tid(void) { return syscall(SYS_gettid); }

static long mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void on_sig(int s, siginfo_t *si, void *uc) {
    (void)s;
    (void)uc;
    if (si->si_code == SI_TIMER && si->si_value.sival_int == SIG_VALUE)
        sig_count++;
    else
        sig_bad++;
}

static void on_once(int s, siginfo_t *si, void *uc) {
    (void)s;
    (void)uc;
    if (si->si_code == SI_TIMER && si->si_value.sival_int == ONCE_VALUE && tid() == getpid()) {
        if (once_fired++ == 0) {
            once_step = cur_step;
            once_at = mono_ns();
        }
    } else {
        once_bad++;
    }
}

static void on_thr(union sigval v) {
    if (v.sival_ptr == &thr_token && tid() != getpid())
        thr_count++;
    else
        thr_bad++;
}

static void on_churn(union sigval v) {
    pthread_attr_t a;
    size_t st = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstacksize(&a, &st);
        pthread_attr_destroy(&a);
    }
    if (v.sival_ptr == &churn_token && st >= 256 * 1024 && st < 1024 * 1024)
        churn_fired++;
    else
        churn_bad++;
}

static long ns(const struct timespec *t) { return t->tv_sec * 1000000000L + t->tv_nsec; }

static void sleep_ns(long n) {
    struct timespec req = {n / 1000000000L, n % 1000000000L}, rem;
    while (nanosleep(&req, &rem) == -1 && errno == EINTR)
        req = rem;
}

static void die(const char *what) {
    printf("setup FAIL %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static timer_t make(clockid_t c, struct sigevent *ev, const char *what) {
    timer_t t;
    if (timer_create(c, ev, &t) != 0)
        die(what);
    return t;
}

static void arm(timer_t t, int flags, long value, long interval, const char *what) {
    struct itimerspec its = {{interval / 1000000000L, interval % 1000000000L},
                             {value / 1000000000L, value % 1000000000L}};
    if (timer_settime(t, flags, &its, NULL) != 0)
        die(what);
}

/* Periodic timer: interval exactly PERIOD_NS, 0 < remaining <= PERIOD_NS, overrun >= 0. */
static int periodic_ok(timer_t t) {
    struct itimerspec v;
    if (timer_gettime(t, &v) != 0)
        return 0;
    long val = ns(&v.it_value);
    return ns(&v.it_interval) == PERIOD_NS && val > 0 && val <= PERIOD_NS &&
           timer_getoverrun(t) >= 0;
}

static int oneshot_ok(timer_t t, long max) {
    struct itimerspec v;
    if (timer_gettime(t, &v) != 0)
        return 0;
    long val = ns(&v.it_value);
    return ns(&v.it_interval) == 0 && val > 0 && val <= max;
}

static int once_ok(timer_t t, long max) {
    int f0 = once_fired;
    struct itimerspec v;
    if (timer_gettime(t, &v) != 0 || ns(&v.it_interval) != 0)
        return 0;
    long val = ns(&v.it_value);
    if (val > 0)
        return f0 == 0 && val <= max;
    /* Expired: its signal is due on this thread. */
    for (int i = 0; i < 100 && once_fired == 0; i++)
        sleep_ns(1000000);
    return once_fired == 1;
}

static const char *ok(int b) { return b ? "ok" : "FAIL"; }

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 250;
    int with_thread = !(argc > 2 && strcmp(argv[2], "nothread") == 0);
    long once_ns = steps * PERIOD_NS / 10 * 9;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_sig;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_once;
    sigaction(SIGUSR2, &sa, NULL);

    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    ev.sigev_value.sival_int = SIG_VALUE;
    timer_t t_sig = make(CLOCK_MONOTONIC, &ev, "timer_create sig");

    timer_t t_thr = 0;
    if (with_thread) {
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD;
        ev.sigev_notify_function = on_thr;
        ev.sigev_value.sival_ptr = &thr_token;
        t_thr = make(CLOCK_MONOTONIC, &ev, "timer_create thr");
    }

    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR2;
    ev.sigev_value.sival_int = ONCE_VALUE;
    ev._sigev_un._tid = (pid_t)tid();
    timer_t t_once = make(CLOCK_MONOTONIC, &ev, "timer_create once");

    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_NONE;
    timer_t t_none = make(CLOCK_REALTIME, &ev, "timer_create none");
    timer_t t_cpu = make(CLOCK_PROCESS_CPUTIME_ID, &ev, "timer_create cpu");

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    arm(t_none, TIMER_ABSTIME, ns(&now) + 3600 * 1000000000L, 0, "timer_settime none");
    arm(t_cpu, 0, 1000 * 1000000000L, 0, "timer_settime cpu");
    long t_arm = mono_ns();
    arm(t_once, 0, once_ns, 0, "timer_settime once");
    arm(t_sig, 0, PERIOD_NS, PERIOD_NS, "timer_settime sig");
    if (with_thread)
        arm(t_thr, 0, PERIOD_NS, PERIOD_NS, "timer_settime thr");

    pthread_attr_t churn_attr;
    pthread_attr_init(&churn_attr);
    pthread_attr_setstacksize(&churn_attr, 256 * 1024);
    timer_t churn_prev = 0;
    int have_churn = 0, nchurn = 0;

    long sig_mid = 0, thr_mid = 0;
    for (long step = 1; step <= steps; step++) {
        cur_step = step;
        sleep_ns(PERIOD_NS);
        int s_ok = periodic_ok(t_sig);
        int t_ok = with_thread ? periodic_ok(t_thr) : 1;
        int o_ok = once_ok(t_once, once_ns);
        int n_ok = oneshot_ok(t_none, 3600 * 1000000000L);
        int c_ok = oneshot_ok(t_cpu, 1000 * 1000000000L);
        int ch_ok = 1;
        if (step % 10 == 0) {
            if (with_thread) {
                /* The previous one-shot (1 ms) must have run its callback; allow 2 s. */
                for (int i = 0; i < 200 && churn_fired + churn_bad < nchurn; i++)
                    sleep_ns(10000000L);
                if (have_churn && timer_delete(churn_prev) != 0)
                    ch_ok = 0;
                memset(&ev, 0, sizeof ev);
                ev.sigev_notify = SIGEV_THREAD;
                ev.sigev_notify_function = on_churn;
                ev.sigev_notify_attributes = &churn_attr;
                ev.sigev_value.sival_ptr = &churn_token;
                if (timer_create(CLOCK_MONOTONIC, &ev, &churn_prev) != 0) {
                    ch_ok = 0;
                    have_churn = 0;
                } else {
                    have_churn = 1;
                    nchurn++;
                    struct itimerspec its = {{0, 0}, {0, 1000000}};
                    if (timer_settime(churn_prev, 0, &its, NULL) != 0)
                        ch_ok = 0;
                }
            }
            memset(&ev, 0, sizeof ev);
            ev.sigev_notify = SIGEV_NONE;
            timer_t tmp;
            struct itimerspec v;
            if (timer_create(CLOCK_MONOTONIC, &ev, &tmp) != 0)
                ch_ok = 0;
            else if (timer_delete(tmp) != 0 || timer_gettime(tmp, &v) != -1 || errno != EINVAL)
                ch_ok = 0;
        }
        if (step == steps / 2) {
            sig_mid = sig_count;
            thr_mid = thr_count;
        }
        printf("step %ld sig=%s thr=%s once=%s none=%s cpu=%s churn=%s\n", step, ok(s_ok), ok(t_ok),
               ok(o_ok), ok(n_ok), ok(c_ok), ok(ch_ok));
        fflush(stdout);
    }
    cur_step = steps + 1;
    /* The last churn one-shot's callback: allow 3 s. */
    for (int i = 0; i < 300 && churn_fired + churn_bad < nchurn; i++)
        sleep_ns(10000000L);

    /* Every step slept 20 ms of the program's own (live) time, so the loop took at least
     * STEPS * 20 ms > 0.9 * that: the one-shot fired during the loop, and not before once_ns
     * after it was armed. A periodic timer cannot have ticked more often than the time since it
     * was armed allows (the tests restart on the same machine, where CLOCK_MONOTONIC also counts
     * the time the program was down: a loose but load-independent upper bound), and each step's
     * wake-up takes at least one pending signal, so the lower bounds hold under any load. */
    long sc = sig_count, tc = thr_count, half = steps - steps / 2;
    long max_ticks = (mono_ns() - t_arm) / PERIOD_NS + 2;
    int counts_ok = sig_bad == 0 && thr_bad == 0 && sc >= steps / 3 && sc <= max_ticks &&
                    sc - sig_mid >= half / 3;
    if (with_thread)
        counts_ok = counts_ok && tc >= steps / 3 && tc <= max_ticks && tc - thr_mid >= half / 3 &&
                    churn_bad == 0 && churn_fired == nchurn;
    int o_ok = once_fired == 1 && once_bad == 0 && once_step <= steps &&
               once_at - t_arm >= once_ns;

    struct itimerspec v;
    int del_ok = timer_delete(t_sig) == 0 && timer_delete(t_once) == 0 &&
                 timer_delete(t_none) == 0 && timer_delete(t_cpu) == 0;
    if (with_thread)
        del_ok = del_ok && timer_delete(t_thr) == 0 && (!have_churn || timer_delete(churn_prev) == 0);
    del_ok = del_ok && timer_gettime(t_sig, &v) == -1 && errno == EINVAL;

    printf("end counts=%s", ok(counts_ok));
    if (!counts_ok)
        printf("(sig %ld mid %ld bad %ld thr %ld mid %ld bad %ld max %ld churn %d/%d bad %d)", sc,
               sig_mid, (long)sig_bad, tc, thr_mid, (long)thr_bad, max_ticks, (int)churn_fired, nchurn,
               (int)churn_bad);
    printf(" once=%s", ok(o_ok));
    if (!o_ok)
        printf("(fired %d at step %ld, %ld ms after arming, bad %d)", (int)once_fired,
               (long)once_step, (once_at - t_arm) / 1000000, (int)once_bad);
    printf(" delete=%s\n", ok(del_ok));
    fflush(stdout);
    return 0;
}

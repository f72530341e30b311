/* Process-tree test program 5 (docs/design-process-trees.md §11.2, test 5): memory shared
 * by a parent and its child.
 *
 * Usage: shm_counter TAG   (default: $SHM_COUNTER_TAG, else "default"). Uses the POSIX
 * shared memory objects "/ckpt-TAG" (kept for the whole run and its fd kept open, unlinked
 * at the end) and "/ckpt-TAG-gone" (unlinked right after mapping it, its fd closed).
 *
 * Before fork:
 *   - a MAP_SHARED|MAP_ANONYMOUS page holding a PTHREAD_PROCESS_SHARED mutex, the turn
 *     counter and each process's last value;
 *   - "/ckpt-TAG" (4 KiB) mapped shared: a counter;
 *   - "/ckpt-TAG-gone" (8 KiB) mapped shared then shm_unlink()ed: a second value, at the
 *     start of its second page.
 * Parent (even turns) and child (odd turns) take 500 turns: lock the mutex (blocking; the
 * holder sleeps 10 ms with it held), if it is not its turn unlock and retry 1 ms later;
 * otherwise update both segments, print the other process's last value and both counters,
 * record its own value, advance the turn, unlock, sleep 6 ms (while the other process
 * takes its turn). One line per turn, in turn order (both processes print to the same
 * stdout). At the end the parent reaps the child, prints its status and the final values,
 * unlinks "/ckpt-TAG", prints "done".
 * Output: 500 + 2 lines, identical on every run; ~5 s. Exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TURNS 500

struct shared {
    pthread_mutex_t m;
    int turn;
    uint64_t last[2];
};

static void die(const char *what) {
    fprintf(stderr, "shm_counter[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static void *map_named(const char *name, size_t size, int *fd_out, int unlink_now) {
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 && errno == EEXIST) { /* left over from a killed run: start afresh */
        shm_unlink(name);
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    }
    if (fd < 0) die("shm_open");
    if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap shm");
    if (unlink_now) {
        if (shm_unlink(name) != 0) die("shm_unlink");
        close(fd);
        fd = -1;
    }
    if (fd_out) *fd_out = fd;
    return p;
}

static struct shared *sh;
static volatile uint64_t *named;     /* in /ckpt-TAG */
static volatile uint64_t *gone;      /* in /ckpt-TAG-gone, second page */

static void run(int me) {
    const char *who = me ? "child" : "parent";
    for (int done = 0; done < TURNS / 2;) {
        int e = pthread_mutex_lock(&sh->m);
        if (e != 0) {
            errno = e;
            die("pthread_mutex_lock");
        }
        if (sh->turn % 2 != me) {
            pthread_mutex_unlock(&sh->m);
            sleep_ms(1);
            continue;
        }
        int t = sh->turn;
        uint64_t other = sh->last[1 - me];
        *named += (uint64_t)(1 + me);
        *gone = *gone * 6364136223846793005ULL + (uint64_t)t;
        uint64_t mine = *named ^ (*gone >> 17);
        printf("turn %d %s other-last %016llx named %llu gone %016llx\n", t, who,
               (unsigned long long)other, (unsigned long long)*named,
               (unsigned long long)*gone);
        fflush(stdout);
        sh->last[me] = mine;
        sleep_ms(10); /* with the mutex held: the other process blocks in it */
        sh->turn = t + 1;
        pthread_mutex_unlock(&sh->m);
        done++;
        sleep_ms(6);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *tag = argc > 1 ? argv[1] : getenv("SHM_COUNTER_TAG");
    if (!tag || !*tag) tag = "default";
    char name[256], name2[280];
    snprintf(name, sizeof name, "/ckpt-%s", tag);
    snprintf(name2, sizeof name2, "/ckpt-%s-gone", tag);

    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) die("mmap anon");
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0) die("setpshared");
    if (pthread_mutex_init(&sh->m, &a) != 0) die("mutex init");
    pthread_mutexattr_destroy(&a);

    int named_fd;
    named = map_named(name, 4096, &named_fd, 0);
    char *g = map_named(name2, 8192, NULL, 1);
    gone = (volatile uint64_t *)(g + 4096);
    *named = 1000;
    *gone = 7;

    fflush(stdout);
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        run(1);
        _exit(0);
    }
    run(0);
    int st;
    while (waitpid(kid, &st, 0) != kid)
        if (errno != EINTR) die("waitpid");
    struct stat nst;
    if (fstat(named_fd, &nst) != 0) die("fstat named");
    printf("child %s %d named %llu gone %016llx size %ld turn %d\n",
           WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
           (unsigned long long)*named, (unsigned long long)*gone, (long)nst.st_size, sh->turn);
    if (shm_unlink(name) != 0) die("shm_unlink at the end");
    printf("done\n");
    fflush(stdout);
    return 0;
}

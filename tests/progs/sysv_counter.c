/* Process-tree test program: SysV shared memory (shmget/shmat) shared by a parent and its
 * child, and its ids used after restarts.
 *
 * Usage: sysv_counter DIR   (DIR: an existing directory, unique to the run; the key of the
 * keyed segment is ftok(DIR, 'K') or the next free one).
 *
 * Before fork:
 *   - segment A: shmget(IPC_PRIVATE, 6000 bytes), attached, then IPC_RMID'ed at once (it
 *     lives while attached): a PTHREAD_PROCESS_SHARED mutex, the turn counter, each
 *     process's last value, a counter;
 *   - segment B: shmget(ftok(DIR, 'K'), 8192 bytes, IPC_CREAT|IPC_EXCL) (the next key if
 *     that one is taken; the key used is written to DIR/sysv.key), attached: a counter at
 *     the start of its second page.
 * After fork the child attaches B a second time (its own second view, kept to the end).
 * Parent (even turns) and child (odd turns) take 400 turns: lock the mutex (the holder sleeps
 * 10 ms with it held), if it is not its turn unlock and retry 1 ms later; otherwise update
 * both counters, print the other process's last value and both counters, record its own
 * value, and every 25 turns (still holding the mutex) also: shmctl(IPC_STAT) on both ids
 * (sizes, A marked destroyed, attach counts), shmat(B's id) once more, check that the new
 * view shows B's counter, shmdt it, check that shmget(key) gives B's id, print one "stat"
 * line. Then advance the turn, unlock,
 * sleep 6 ms. At the end the parent reaps the child, prints its status and the final values
 * and B's size from IPC_STAT, forks a child that execs this program with both ids in argv
 * ("--stat IDA IDB": IPC_STAT on each, one line), waits for it, removes B (IPC_RMID),
 * detaches both, prints "done".
 * Output: 400 + 16 + 3 lines, identical on every run; ~4 s. Exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TURNS 400
#define STAT_EVERY 25

struct shared {
    pthread_mutex_t m;
    int turn;
    uint64_t last[2];
    uint64_t a;
};

static void die(const char *what) {
    fprintf(stderr, "sysv_counter[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    _exit(99);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static key_t key;
static int ida, idb;
static struct shared *sh;
static volatile uint64_t *bcount;        /* B, second page */
static volatile uint64_t *bcount_child;  /* the child's second view of B */

static void stat_line(int t, const char *who) {
    struct shmid_ds da, db;
    if (shmctl(ida, IPC_STAT, &da) != 0) die("shmctl IPC_STAT A");
    if (shmctl(idb, IPC_STAT, &db) != 0) die("shmctl IPC_STAT B");
    char *v = shmat(idb, NULL, SHM_RDONLY);
    if (v == (void *)-1) die("shmat B again");
    uint64_t seen = *(volatile uint64_t *)(v + 4096);
    if (shmdt(v) != 0) die("shmdt");
    int found = shmget(key, 0, 0);
    printf("stat %d %s a-size %zu a-removed %d a-nattch %lu b-size %zu b-nattch %lu view %s "
           "lookup %s\n",
           t, who, (size_t)da.shm_segsz, (da.shm_perm.mode & SHM_DEST) ? 1 : 0,
           (unsigned long)da.shm_nattch, (size_t)db.shm_segsz, (unsigned long)db.shm_nattch,
           seen == *bcount ? "same" : "DIFFERENT", found == idb ? "same" : "DIFFERENT");
}

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
        sh->a += (uint64_t)(1 + me);
        volatile uint64_t *b = me ? bcount_child : bcount;
        *b = *b * 6364136223846793005ULL + (uint64_t)t;
        uint64_t mine = sh->a ^ (*bcount >> 17);
        printf("turn %d %s other-last %016llx a %llu b %016llx\n", t, who,
               (unsigned long long)other, (unsigned long long)sh->a,
               (unsigned long long)*bcount);
        if (t % STAT_EVERY == STAT_EVERY - 1) stat_line(t, who);
        fflush(stdout);
        sh->last[me] = mine;
        sleep_ms(10); /* with the mutex held: the other process blocks in it */
        sh->turn = t + 1;
        pthread_mutex_unlock(&sh->m);
        done++;
        sleep_ms(6);
    }
}

/* sysv_counter --stat IDA IDB: what the exec'd checker prints. */
static int stat_ids(const char *a, const char *b) {
    struct shmid_ds da, db;
    if (shmctl(atoi(a), IPC_STAT, &da) != 0) die("exec'd: shmctl IPC_STAT A");
    if (shmctl(atoi(b), IPC_STAT, &db) != 0) die("exec'd: shmctl IPC_STAT B");
    printf("exec'd stat a-size %zu a-removed %d a-nattch %lu b-size %zu b-nattch %lu\n",
           (size_t)da.shm_segsz, (da.shm_perm.mode & SHM_DEST) ? 1 : 0,
           (unsigned long)da.shm_nattch, (size_t)db.shm_segsz, (unsigned long)db.shm_nattch);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "--stat") == 0) return stat_ids(argv[2], argv[3]);
    if (argc < 2) {
        fprintf(stderr, "usage: sysv_counter DIR\n");
        return 2;
    }
    key = ftok(argv[1], 'K');
    if (key == -1) die("ftok");

    ida = shmget(IPC_PRIVATE, 6000, IPC_CREAT | 0600);
    if (ida < 0) die("shmget A");
    sh = shmat(ida, NULL, 0);
    if (sh == (void *)-1) die("shmat A");
    if (shmctl(ida, IPC_RMID, NULL) != 0) die("shmctl IPC_RMID A");
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    if (pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) != 0) die("setpshared");
    if (pthread_mutex_init(&sh->m, &ma) != 0) die("mutex init");
    pthread_mutexattr_destroy(&ma);

    /* ftok keeps only 16 bits of the inode: on a clash (another run's segment, never ours
     * to remove) take the next free key; DIR/sysv.key says which one (for cleanups). */
    for (int i = 0; i < 1000; i++, key++) {
        idb = shmget(key, 8192, IPC_CREAT | IPC_EXCL | 0600);
        if (idb >= 0 || errno != EEXIST) break;
    }
    if (idb < 0) die("shmget B");
    char kpath[4200];
    snprintf(kpath, sizeof kpath, "%s/sysv.key", argv[1]);
    FILE *kf = fopen(kpath, "w");
    if (!kf || fprintf(kf, "%d\n", (int)key) < 0 || fclose(kf) != 0) die("write sysv.key");
    char *bp = shmat(idb, NULL, 0);
    if (bp == (void *)-1) die("shmat B");
    bcount = (volatile uint64_t *)(bp + 4096);
    sh->a = 1000;
    *bcount = 7;

    fflush(stdout);
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        char *bp2 = shmat(idb, NULL, 0);
        if (bp2 == (void *)-1) die("shmat B in the child");
        bcount_child = (volatile uint64_t *)(bp2 + 4096);
        run(1);
        _exit(0);
    }
    run(0);
    int st;
    while (waitpid(kid, &st, 0) != kid)
        if (errno != EINTR) die("waitpid");
    struct shmid_ds db;
    if (shmctl(idb, IPC_STAT, &db) != 0) die("shmctl IPC_STAT B at the end");
    printf("child %s %d a %llu b %016llx b-size %zu b-nattch %lu turn %d\n",
           WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
           (unsigned long long)sh->a, (unsigned long long)*bcount, (size_t)db.shm_segsz,
           (unsigned long)db.shm_nattch, sh->turn);
    /* A program exec'd now gets the ids in argv: they must name the same segments. */
    fflush(stdout);
    pid_t chk = fork();
    if (chk < 0) die("fork checker");
    if (chk == 0) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%d", ida);
        snprintf(b, sizeof b, "%d", idb);
        /* argv[0], not /proc/self/exe: after a restart that names ckpt's restorer. */
        execl(argv[0], argv[0], "--stat", a, b, (char *)NULL);
        die("execl");
    }
    while (waitpid(chk, &st, 0) != chk)
        if (errno != EINTR) die("waitpid checker");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "sysv_counter: the exec'd checker failed (status %#x)\n", st);
        return 1;
    }
    if (shmctl(idb, IPC_RMID, NULL) != 0) die("shmctl IPC_RMID B");
    if (shmdt(bp) != 0) die("shmdt B");
    if (shmdt(sh) != 0) die("shmdt A");
    printf("done\n");
    fflush(stdout);
    return 0;
}

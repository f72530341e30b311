/* Process-tree test program 4 (docs/design-process-trees.md §11.2, test 4): file
 * descriptions shared by a parent and its child.
 *
 * Usage: shared_fd DIR   (default: $SHARED_FD_DIR, else "."). Files: DIR/shared_fd.data,
 * DIR/shared_fd.log, DIR/shared_fd.tmp (the last one unlinked at once).
 *
 * Before fork the parent creates and opens:
 *   - the data file (400 records of 16 bytes), opened O_RDONLY: one description, one offset;
 *   - the log, O_WRONLY|O_CREAT|O_TRUNC|O_APPEND;
 *   - a temp file, written (256 bytes), unlink()ed and kept open O_RDWR.
 * Then parent (even turns) and child (odd turns) take 400 turns, passing the turn number
 * through two pipes. In its turn a process prints the data fd's offset before reading (the
 * other process moved it), reads 16 bytes and prints the offset after (both must equal
 * 16*turn and 16*(turn+1)); appends one line to the log (and prints whether the log fd still
 * has O_APPEND); pwrite()s a 16-byte record into the deleted temp file, re-reads the whole
 * file and prints its size, link count and checksum. Both print to the same stdout (one
 * description) in turn order, flushing before passing the turn.
 *
 * At the end the parent reaps the child, prints its status, prints the log line by line
 * ("log: ..."), then "done". Output: 400 + 1 + 400 + 1 = 802 lines, identical on every run;
 * ~5 s. Exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TURNS 400
#define REC 16
#define TMP_HEAD 256

static void die(const char *what) {
    fprintf(stderr, "shared_fd[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
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

static int read_int(int fd) {
    int v;
    size_t got = 0;
    while (got < sizeof v) {
        ssize_t r = read(fd, (char *)&v + got, sizeof v - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read turn");
        }
        if (r == 0) {
            errno = EPIPE;
            die("turn pipe closed");
        }
        got += (size_t)r;
    }
    return v;
}

static int dfd, lfd, tfd;

static void turn(int t, const char *who) {
    off_t before = lseek(dfd, 0, SEEK_CUR);
    char rec[REC + 1];
    ssize_t r;
    while ((r = read(dfd, rec, REC)) < 0 && errno == EINTR) {
    }
    if (r != REC) die("read data");
    rec[REC] = 0;
    off_t after = lseek(dfd, 0, SEEK_CUR);

    char line[64];
    int n = snprintf(line, sizeof line, "turn %d by %s\n", t, who);
    write_full(lfd, line, (size_t)n);
    int fl = fcntl(lfd, F_GETFL);

    char trec[REC];
    char tmp[REC + 1];
    snprintf(tmp, sizeof tmp, "%c%014d\n", who[0], t);
    memcpy(trec, tmp, REC);
    if (pwrite(tfd, trec, REC, TMP_HEAD + (off_t)t * REC) != REC) die("pwrite tmp");
    struct stat st;
    if (fstat(tfd, &st) != 0) die("fstat tmp");
    static unsigned char buf[TMP_HEAD + TURNS * REC];
    ssize_t got = pread(tfd, buf, sizeof buf, 0);
    if (got < 0) die("pread tmp");
    uint64_t h = 0xcbf29ce484222325ULL;
    for (ssize_t i = 0; i < got; i++) h = (h ^ buf[i]) * 0x100000001b3ULL;

    printf("turn %d %s off-before %ld read %.15s off-after %ld shared %s append %d "
           "tmp size %ld nlink %ld sum %016llx\n",
           t, who, (long)before, rec, (long)after,
           before == (off_t)t * REC && after == (off_t)(t + 1) * REC ? "yes" : "NO",
           fl >= 0 && (fl & O_APPEND) != 0, (long)got, (long)st.st_nlink, (unsigned long long)h);
    fflush(stdout);
    sleep_ms(10);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *dir = argc > 1 ? argv[1] : getenv("SHARED_FD_DIR");
    if (!dir || !*dir) dir = ".";
    char data[4096], logp[4096], tmpp[4096];
    snprintf(data, sizeof data, "%s/shared_fd.data", dir);
    snprintf(logp, sizeof logp, "%s/shared_fd.log", dir);
    snprintf(tmpp, sizeof tmpp, "%s/shared_fd.tmp", dir);

    int w = open(data, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w < 0) die("create data");
    for (int i = 0; i < TURNS; i++) {
        char rec[REC + 1];
        snprintf(rec, sizeof rec, "rec%04d-%07x\n", i, (unsigned)(i * 2654435761u) >> 4);
        write_full(w, rec, REC);
    }
    close(w);
    dfd = open(data, O_RDONLY);
    if (dfd < 0) die("open data");
    lfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (lfd < 0) die("open log");
    tfd = open(tmpp, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (tfd < 0) die("open tmp");
    char head[TMP_HEAD];
    for (int i = 0; i < TMP_HEAD; i++) head[i] = (char)('a' + i % 26);
    write_full(tfd, head, sizeof head);
    if (unlink(tmpp) != 0) die("unlink tmp");

    int p2c[2], c2p[2];
    if (pipe(p2c) || pipe(c2p)) die("pipe");
    fflush(stdout);
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        for (int t = 1; t < TURNS; t += 2) {
            if (read_int(p2c[0]) != t) {
                errno = EPROTO;
                die("child: wrong turn");
            }
            turn(t, "child");
            int next = t + 1;
            write_full(c2p[1], &next, sizeof next);
        }
        _exit(0);
    }
    close(p2c[0]);
    close(c2p[1]);
    for (int t = 0; t < TURNS; t += 2) {
        if (t > 0 && read_int(c2p[0]) != t) {
            errno = EPROTO;
            die("parent: wrong turn");
        }
        turn(t, "parent");
        int next = t + 1;
        write_full(p2c[1], &next, sizeof next);
    }
    if (read_int(c2p[0]) != TURNS) {
        errno = EPROTO;
        die("parent: wrong last turn");
    }
    int st;
    while (waitpid(kid, &st, 0) != kid)
        if (errno != EINTR) die("waitpid");
    printf("child %s %d\n", WIFEXITED(st) ? "exit" : "signal",
           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    FILE *lf = fopen(logp, "r");
    if (!lf) die("reopen log");
    char line[256];
    int nlog = 0;
    while (fgets(line, sizeof line, lf)) {
        printf("log: %s", line);
        nlog++;
    }
    fclose(lf);
    printf("done log lines %d\n", nlog);
    fflush(stdout);
    return 0;
}

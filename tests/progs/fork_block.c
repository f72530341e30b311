/* Process-tree test program for `process_trees.rs::fork_children_listed`: a forked child
 * must be part of the computation (in `ckpt-command --list`) by the time fork() returns.
 *
 * Usage: fork_block FIFO. The parent forks and prints "forked child PID" (after fork
 * returned in the parent, so the child has joined by then). The child, right after fork,
 * opens FIFO for reading — which blocks until the test opens it for writing — reads one
 * byte, prints "child released by BYTE" and _exit(5)s. The parent reaps it and prints
 * "child exit 5", then exits 0. Output: 3 lines (the pid varies). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: fork_block FIFO\n");
        return 2;
    }
    fflush(stdout);
    pid_t kid = fork();
    if (kid < 0) {
        perror("fork");
        return 1;
    }
    if (kid == 0) {
        int fd;
        while ((fd = open(argv[1], O_RDONLY)) < 0 && errno == EINTR) {
        }
        if (fd < 0) {
            perror("open fifo");
            _exit(1);
        }
        char c = '?';
        ssize_t r;
        while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
        }
        printf("child released by %c\n", r == 1 ? c : '-');
        fflush(stdout);
        _exit(5);
    }
    printf("forked child %d\n", (int)kid);
    fflush(stdout);
    int st;
    while (waitpid(kid, &st, 0) != kid)
        if (errno != EINTR) {
            perror("waitpid");
            return 1;
        }
    printf("child %s %d\n", WIFEXITED(st) ? "exit" : "signal",
           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return 0;
}

/* A ckpt plugin library for the tests (`ckpt-launch --with-plugin`, docs/plugins.md): at
 * restart, a connection to a peer outside the computation that came back closed is made anew
 * to the same address, and the plugin first sends "resume\n" on it (the re-handshake a real
 * plugin would do: log in again, resubscribe). It says so in one line on stderr.
 * Built as a shared library (tests/build.rs: names ending in `_plugin`). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ckpt_plugin_reconnect(int fd, const struct sockaddr *local, socklen_t local_len,
                          const struct sockaddr *peer, socklen_t peer_len, size_t unread) {
    (void)local;
    (void)local_len;
    int s = socket(peer->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    if (connect(s, peer, peer_len) != 0) {
        close(s);
        return -1;
    }
    static const char hello[] = "resume\n";
    if (write(s, hello, strlen(hello)) != (ssize_t)strlen(hello)) {
        close(s);
        return -1;
    }
    fprintf(stderr, "reconnect_plugin: fd %d connected anew (%zu unread bytes dropped)\n", fd,
            unread);
    return s;
}

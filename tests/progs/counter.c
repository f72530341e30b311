/* counter.c — deterministic C test program for ckpt's end-to-end tests.
 *
 * Usage: counter [STEPS [SLEEP_MS]]   (defaults: 300 steps, 15 ms)
 *
 * Every step mutates, with read-modify-write so that the output depends on the
 * whole history of the memory:
 *   - a 64 MiB malloc'ed buffer (first half pre-filled with pseudo-random data,
 *     second half with resident zero pages): a few pseudo-random words plus a
 *     rolling 4 KiB stripe;
 *   - a 16 MiB MAP_PRIVATE|MAP_ANONYMOUS region (left mostly unpopulated);
 *   - a 256 KiB array on main's stack;
 *   - a __thread variable;
 * then prints "step N sum HEX" and fflush()es. The output is identical on every
 * run (no time, no pids, no addresses), so a checkpointed-and-restarted run must
 * produce exactly the bytes of a native run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define HEAP_BYTES (64u << 20)
#define MMAP_BYTES (16u << 20)
#define STACK_WORDS (32768u) /* 256 KiB */

static __thread uint64_t tls_acc = 0x1234567u;

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void sleep_ms(long ms) {
    struct timespec req = {ms / 1000, (ms % 1000) * 1000000L}, rem;
    while (nanosleep(&req, &rem) == -1 && errno == EINTR) req = rem;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 300;
    long pause = argc > 2 ? atol(argv[2]) : 15;
    volatile uint64_t stack_arr[STACK_WORDS];
    size_t heap_words = HEAP_BYTES / 8, mmap_words = MMAP_BYTES / 8, i;
    uint64_t *heap = malloc(HEAP_BYTES);
    uint64_t *anon = mmap(NULL, MMAP_BYTES, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!heap || anon == MAP_FAILED) {
        perror("counter: allocation");
        return 2;
    }
    for (i = 0; i < heap_words / 2; i++) heap[i] = rng();
    memset(heap + heap_words / 2, 0, HEAP_BYTES / 2);
    for (i = 0; i < STACK_WORDS; i++) stack_arr[i] = i * 0x100000001b3ull;

    uint64_t sum = 0;
    for (long step = 1; step <= steps; step++) {
        /* pseudo-random heap words, read-modify-write */
        for (int k = 0; k < 16; k++) {
            size_t w = rng() % heap_words;
            sum = mix(sum, heap[w]);
            heap[w] = mix(heap[w], (uint64_t)step * 31 + k);
        }
        /* rolling stripe: one 4 KiB page per step, walking the whole buffer */
        size_t base = ((size_t)step * 4099 * 512) % heap_words;
        for (i = 0; i < 512 && base + i < heap_words; i++) heap[base + i] += (uint64_t)step ^ i;
        sum = mix(sum, heap[base] ^ heap[base + 511 < heap_words ? base + 511 : base]);
        /* anonymous mapping: a few pages touched */
        for (int k = 0; k < 4; k++) {
            size_t w = rng() % mmap_words;
            sum = mix(sum, anon[w]);
            anon[w] = anon[w] * 6364136223846793005ull + (uint64_t)step;
        }
        /* big stack array */
        for (int k = 0; k < 8; k++) {
            size_t w = rng() % STACK_WORDS;
            sum = mix(sum, stack_arr[w]);
            stack_arr[w] = mix(stack_arr[w], (uint64_t)step);
        }
        /* thread-local */
        tls_acc = mix(tls_acc, (uint64_t)step);
        sum = mix(sum, tls_acc);

        printf("step %ld sum %016llx\n", step, (unsigned long long)sum);
        fflush(stdout);
        if (pause > 0) sleep_ms(pause);
    }
    free(heap);
    munmap(anon, MMAP_BYTES);
    return 0;
}

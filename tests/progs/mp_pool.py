# mp_pool.py — Python multiprocessing process-tree test program for ckpt's end-to-end tests
# (docs/design-process-trees.md §11.2, test 3).
#
# multiprocessing.Pool(4) (start method "fork", explicitly: the default changes in later
# Pythons) maps f over range(400) with imap(chunksize=1); f sleeps 50 ms and returns a hash of
# its argument. The parent prints each result in order, then "done". Involves: 4 forked
# workers, the pool's pipes (task queue, result queue), its SemLock semaphores (sem_open'ed
# and unlinked at once: deleted /dev/shm files mapped MAP_SHARED), and the pool's three
# handler threads in the parent. Output: 401 lines, identical on every run; ~5 s.
import hashlib
import multiprocessing
import time


def f(i):
    time.sleep(0.05)
    return hashlib.sha256(b"ckpt-%d" % i).hexdigest()[:16]


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        total = 0
        for i, h in enumerate(pool.imap(f, range(400), chunksize=1)):
            total = (total * 31 + int(h, 16)) % (1 << 64)
            print(f"step {i + 1} item {i} hash {h} total {total:016x}", flush=True)
    print("done 400", flush=True)

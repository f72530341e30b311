# Issue 3, test 6: concurrent.futures.ThreadPoolExecutor doing work in rounds; one line per
# round, deterministic.
import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def work(args):
    r, k = args
    h = hashlib.sha256()
    for i in range(200):
        h.update(f"{r}:{k}:{i}".encode())
    return h.hexdigest()[:16]


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
with ThreadPoolExecutor(max_workers=4) as pool:
    for r in range(rounds):
        out = list(pool.map(work, [(r, k) for k in range(8)]))
        print(f"round {r} {out[0]} {out[-1]}", flush=True)
        time.sleep(0.012)
print("done", flush=True)

"""counter.py — deterministic Python test program for ckpt's end-to-end tests.

Usage: python3 counter.py [STEPS [SLEEP_S]]   (defaults: 300 steps, 0.01 s)

Each step churns dicts and lists (insert, delete, sort, slice) and feeds the state
through sha256, then prints "step N sum HEX" with flush=True. Only ints and bytes
are hashed or iterated in hash order, so the output does not depend on
PYTHONHASHSEED and is identical on every run.
"""
import hashlib
import sys
import time


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    table = {}
    history = []
    acc = hashlib.sha256(b"ckpt")
    x = 12345
    for step in range(1, steps + 1):
        for k in range(200):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            key = x % 5000
            if key in table and k % 3 == 0:
                del table[key]
            else:
                table[key] = table.get(key, 0) + step * k
        history.append(sorted(table.items())[: 20 + step % 7])
        if len(history) > 50:
            history = history[10:]
        blob = repr(history[-1]).encode() + len(table).to_bytes(4, "little")
        acc.update(blob)
        digest = acc.hexdigest()[:16]
        print(f"step {step} sum {digest} n {len(table)}", flush=True)
        time.sleep(pause)


if __name__ == "__main__":
    main()

//! rust_counter — deterministic Rust (std) test program for ckpt's end-to-end tests.
//!
//! Usage: `rust_counter [STEPS [SLEEP_MS]]` (defaults: 300 steps, 15 ms).
//!
//! The Rust twin of `progs/counter.c`: every step read-modify-writes a 64 MiB `Vec` (half
//! pseudo-random, half resident zeros), a 16 MiB `libc::mmap` anonymous region, a 256 KiB
//! array on main's stack and a `thread_local!` cell, then prints `step N sum HEX` and
//! flushes. Output is identical on every run.

use std::cell::Cell;
use std::io::Write;
use std::time::Duration;

const HEAP_WORDS: usize = (64 << 20) / 8;
const MMAP_BYTES: usize = 16 << 20;
const MMAP_WORDS: usize = MMAP_BYTES / 8;
const STACK_WORDS: usize = 32768; // 256 KiB

thread_local! {
    static TLS_ACC: Cell<u64> = const { Cell::new(0x7654321) };
}

fn mix(mut h: u64, v: u64) -> u64 {
    h ^= v
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(h << 6)
        .wrapping_add(h >> 2);
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args.next().map_or(300, |s| s.parse().expect("STEPS"));
    let pause: u64 = args.next().map_or(15, |s| s.parse().expect("SLEEP_MS"));

    let mut rng = Rng(0x1319_8a2e_0370_7344);
    let mut heap: Vec<u64> = Vec::with_capacity(HEAP_WORDS);
    heap.extend((0..HEAP_WORDS / 2).map(|_| rng.next()));
    heap.resize(HEAP_WORDS, 0);

    // SAFETY: plain anonymous private mapping, checked for failure, never unmapped early.
    let anon = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            MMAP_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(p != libc::MAP_FAILED, "mmap failed");
        std::slice::from_raw_parts_mut(p as *mut u64, MMAP_WORDS)
    };

    let mut stack_arr = [0u64; STACK_WORDS];
    for (i, w) in stack_arr.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x1_0000_01b3);
    }
    let stack_arr = std::hint::black_box(&mut stack_arr);

    let out = std::io::stdout();
    let mut out = out.lock();
    let mut sum = 0u64;
    for step in 1..=steps {
        for k in 0..16 {
            let w = rng.below(HEAP_WORDS);
            sum = mix(sum, heap[w]);
            heap[w] = mix(heap[w], step * 31 + k);
        }
        let base = (step as usize * 4099 * 512) % HEAP_WORDS;
        let end = (base + 512).min(HEAP_WORDS);
        for (i, w) in heap[base..end].iter_mut().enumerate() {
            *w = w.wrapping_add(step ^ i as u64);
        }
        sum = mix(sum, heap[base] ^ heap[end - 1]);
        for _ in 0..4 {
            let w = rng.below(MMAP_WORDS);
            sum = mix(sum, anon[w]);
            anon[w] = anon[w]
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(step);
        }
        for _ in 0..8 {
            let w = rng.below(STACK_WORDS);
            sum = mix(sum, stack_arr[w]);
            stack_arr[w] = mix(stack_arr[w], step);
        }
        let t = TLS_ACC.with(|c| {
            c.set(mix(c.get(), step));
            c.get()
        });
        sum = mix(sum, t);

        writeln!(out, "step {step} sum {sum:016x}").expect("write stdout");
        out.flush().expect("flush stdout");
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
}

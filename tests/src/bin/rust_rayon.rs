//! Issue 3, test 5b: a rayon `par_iter` loop over many rounds (rayon's pool threads park on
//! condition variables between rounds); deterministic output, one line per round.

use rayon::prelude::*;
use std::time::Duration;

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .expect("pool");
    let mut v: Vec<u64> = (0..100_000).collect();
    let mut total = 0u64;
    for r in 0..rounds {
        let sum: u64 = pool.install(|| {
            v.par_iter_mut()
                .for_each(|x| *x = x.wrapping_mul(2862933555777941757).wrapping_add(r));
            v.par_iter().map(|x| x >> 40).sum()
        });
        total = total.wrapping_add(sum);
        println!("round {r} sum {sum}");
        std::thread::sleep(Duration::from_millis(12));
    }
    println!("done {total}");
}

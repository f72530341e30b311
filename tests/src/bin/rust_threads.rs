//! Issue 3, test 5a: `std::thread` workers fed through `mpsc` channels, results sent back;
//! one line per round, deterministic.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let (res_tx, res_rx) = mpsc::channel::<(usize, u64, u64)>();
    let mut jobs = Vec::new();
    let mut handles = Vec::new();
    for w in 0..4usize {
        let (tx, rx) = mpsc::channel::<u64>();
        jobs.push(tx);
        let res_tx = res_tx.clone();
        handles.push(thread::spawn(move || {
            let mut acc: u64 = w as u64;
            for r in rx {
                for k in 0..2000u64 {
                    acc = acc.wrapping_mul(6364136223846793005).wrapping_add(r ^ k);
                }
                res_tx.send((w, r, acc)).expect("main is alive");
            }
        }));
    }
    drop(res_tx);
    let mut total: u64 = 0;
    for r in 0..rounds {
        for tx in &jobs {
            tx.send(r).expect("worker is alive");
        }
        let mut got = [0u64; 4];
        for _ in 0..4 {
            let (w, rr, acc) = res_rx.recv().expect("worker answers");
            assert_eq!(rr, r);
            got[w] = acc;
        }
        let sum = got
            .iter()
            .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b));
        total = total.wrapping_add(sum);
        println!("round {r} sum {sum:016x}");
        thread::sleep(Duration::from_millis(12));
    }
    drop(jobs);
    for h in handles {
        h.join().expect("worker exits cleanly");
    }
    println!("done {total:016x}");
}

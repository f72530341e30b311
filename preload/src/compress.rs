//! Parallel compression of the image: one compressor thread per core, each owning one
//! 4 MiB input buffer, one output buffer and one deflate state, all allocated once. The
//! checkpoint thread fills input buffers with the image stream round-robin and writes the
//! finished gzip members in order, so the file is byte-for-byte what the sequential writer
//! makes.
//!
//! The compressor threads are the preload's own: they are created before user threads are
//! suspended (`ensure` runs at the start of a checkpoint, when glibc's locks are free), are
//! never suspended, and block every signal. Their buffers are recorded as empty memory in the
//! image. A restarted process has none of them; the next checkpoint creates them again.
//!
//! While user threads are frozen: no allocation here (the buffers never grow), no locks,
//! futex waits only.

use crate::cell::Owned;
use crate::sys;
use ckpt_format::image::{MEMBER_CHUNK, MemberEncoder};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

const IDLE: u32 = 0;
const SUBMITTED: u32 = 1;
const DONE: u32 = 2;
/// Output capacity: deflate never expands a chunk by more than a fraction of a percent.
const OUT_CAP: usize = MEMBER_CHUNK * 2;

struct Slot {
    state: AtomicU32,
    len: AtomicUsize,
    tid: AtomicI32,
    input: Owned<Vec<u8>>,
    output: Owned<Vec<u8>>,
    enc: Owned<MemberEncoder>,
}

struct Pool {
    slots: Vec<Slot>,
    alive: AtomicBool,
    level: u32,
}

static POOL: Owned<Option<&'static Pool>> = Owned::new(None);

fn pool() -> Option<&'static Pool> {
    // SAFETY: POOL is only written by the checkpoint thread (`ensure`), which is also the only
    // reader outside the workers (who get their slot reference at spawn).
    unsafe { *POOL.as_ptr() }
}

fn worker(slot: &'static Slot) {
    sys::sigprocmask(sys::SIG_SETMASK, Some(!0));
    slot.tid.store(sys::gettid(), Ordering::Release);
    loop {
        loop {
            let v = slot.state.load(Ordering::Acquire);
            if v == SUBMITTED {
                break;
            }
            sys::futex_wait(&slot.state, v, 1000);
        }
        let n = slot.len.load(Ordering::Acquire);
        // SAFETY: in SUBMITTED state the worker owns input, output and enc exclusively.
        unsafe {
            let (input, output, enc) = (slot.input.get(), slot.output.get(), slot.enc.get());
            enc.encode(&input[..n], output);
        }
        slot.state.store(DONE, Ordering::Release);
        sys::futex_wake(&slot.state);
    }
}

/// Makes sure the compressor threads run (call before suspending user threads). Returns false
/// (and the writer compresses alone) on a single core or if threads cannot be created.
pub fn ensure(level: u32) -> bool {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if cores < 2 {
        return false;
    }
    let p = match pool() {
        Some(p) if p.level == level => p,
        _ => {
            let slots = (0..cores)
                .map(|_| Slot {
                    state: AtomicU32::new(IDLE),
                    len: AtomicUsize::new(0),
                    tid: AtomicI32::new(0),
                    input: Owned::new(Vec::with_capacity(MEMBER_CHUNK)),
                    output: Owned::new(Vec::with_capacity(OUT_CAP)),
                    enc: Owned::new(MemberEncoder::new(level)),
                })
                .collect();
            let p: &'static Pool = Box::leak(Box::new(Pool {
                slots,
                alive: AtomicBool::new(false),
                level,
            }));
            // SAFETY: only the checkpoint thread writes POOL.
            unsafe { *POOL.get() = Some(p) };
            p
        }
    };
    if p.alive.load(Ordering::Acquire) {
        return true;
    }
    for s in &p.slots {
        s.state.store(IDLE, Ordering::Release);
        s.tid.store(0, Ordering::Release);
        let r = std::thread::Builder::new()
            .name("ckpt-zip".into())
            .stack_size(256 << 10)
            .spawn(move || worker(s));
        if r.is_err() {
            return false;
        }
    }
    // Wait (briefly) until every worker has told its tid, so suspension can leave it alone.
    for _ in 0..2000 {
        if p.slots.iter().all(|s| s.tid.load(Ordering::Acquire) != 0) {
            p.alive.store(true, Ordering::Release);
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// In a restarted process: the compressor threads are gone.
pub fn forget_threads() {
    if let Some(p) = pool() {
        p.alive.store(false, Ordering::Release);
    }
}

/// The compressor threads' tids (never suspended).
pub fn tids() -> Vec<i32> {
    match pool() {
        Some(p) if p.alive.load(Ordering::Acquire) => p
            .slots
            .iter()
            .map(|s| s.tid.load(Ordering::Acquire))
            .collect(),
        _ => Vec::new(),
    }
}

/// Address ranges of the compressor buffers: saved as empty memory.
pub fn buffer_ranges() -> Vec<(u64, u64)> {
    let Some(p) = pool() else { return Vec::new() };
    let mut v = Vec::new();
    for s in &p.slots {
        // SAFETY: only the buffers' addresses and capacities are read.
        let (i, o) = unsafe { (&*s.input.as_ptr(), &*s.output.as_ptr()) };
        for b in [i, o] {
            let a = b.as_ptr() as u64 & !4095;
            let e = (b.as_ptr() as u64 + b.capacity() as u64 + 4095) & !4095;
            v.push((a, e));
        }
    }
    v
}

/// Streams bytes into gzip members compressed by the pool, written to `inner` in order.
pub struct ParallelWriter<W: Write> {
    inner: W,
    pool: &'static Pool,
    /// Slot being filled.
    cur: usize,
    /// Slots submitted and not yet written, oldest first (ring of at most `slots.len()`).
    inflight: [usize; 8],
    head: usize,
    count: usize,
}

impl<W: Write> ParallelWriter<W> {
    /// `None` if the pool is not running.
    pub fn new(inner: W) -> Option<Self> {
        let pool = pool().filter(|p| p.alive.load(Ordering::Acquire))?;
        let w = ParallelWriter {
            inner,
            pool,
            cur: 0,
            inflight: [0; 8],
            head: 0,
            count: 0,
        };
        // SAFETY: no job is in flight: the checkpoint thread owns every slot's input.
        unsafe { w.pool.slots[0].input.get().clear() };
        Some(w)
    }

    fn n(&self) -> usize {
        self.pool.slots.len()
    }

    /// Waits for the oldest in-flight slot and writes its member.
    fn retire_oldest(&mut self) -> io::Result<()> {
        let i = self.inflight[self.head];
        let s = &self.pool.slots[i];
        while s.state.load(Ordering::Acquire) != DONE {
            sys::futex_wait(&s.state, SUBMITTED, 1000);
        }
        // SAFETY: DONE: the worker is finished with this slot until it is submitted again.
        let out = unsafe { s.output.get() };
        self.inner.write_all(out)?;
        s.state.store(IDLE, Ordering::Release);
        self.head = (self.head + 1) % self.n();
        self.count -= 1;
        Ok(())
    }

    fn submit_current(&mut self) -> io::Result<()> {
        let s = &self.pool.slots[self.cur];
        // SAFETY: the checkpoint thread owns the current slot's input until it submits it.
        let len = unsafe { s.input.get().len() };
        if len == 0 {
            return Ok(());
        }
        s.len.store(len, Ordering::Release);
        s.state.store(SUBMITTED, Ordering::Release);
        sys::futex_wake(&s.state);
        let tail = (self.head + self.count) % self.n();
        self.inflight[tail] = self.cur;
        self.count += 1;
        self.cur = (self.cur + 1) % self.n();
        // The next slot must be free before we fill it.
        if self.count == self.n() {
            self.retire_oldest()?;
        }
        // SAFETY: the slot is IDLE now (retired or never submitted).
        unsafe { self.pool.slots[self.cur].input.get().clear() };
        Ok(())
    }

    /// Writes every remaining member and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit_current()?;
        while self.count > 0 {
            self.retire_oldest()?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            // SAFETY: the checkpoint thread owns the current slot's input.
            let input = unsafe { self.pool.slots[self.cur].input.get() };
            let take = (MEMBER_CHUNK - input.len()).min(data.len());
            input.extend_from_slice(&data[..take]);
            data = &data[take..];
            if input.len() == MEMBER_CHUNK {
                self.submit_current()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! The SPM mailbox over the master domain's `inbox` and `outbox`, in
//! VDSM's format (`format::mailbox`): hosts ask the SPM to extend volumes,
//! the SPM replies. Both sides do their own direct I/O in-process (VDSM
//! runs a `dd` per read or write) and wake on events instead of scanning on
//! a clock: a host writes its block and then a new event block; the SPM
//! reads only the 4 KiB event block between scans, and scans all hosts'
//! blocks when its id changes (and, for hosts that send no events, at a
//! slow interval).
//!
//! The files are given open; both sides write whole 4 KiB blocks at 4 KiB
//! offsets from aligned buffers, as O_DIRECT needs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::mailbox::{
    self as fmt, decode_block, encode_block, event_block, event_id, Extend, Slot, BLOCK_SIZE,
    MESSAGE_SIZE, SLOTS,
};
use crate::primitives::pipeline::AlignedBuf;
use crate::types::Uuid;

/// Blocks the SPM reads, as VDSM does (`maxHostID` = 250 blocks from
/// offset 0): block 0 is the event block, so hosts 1 to 249 have a mailbox.
pub const BLOCKS: usize = 250;

/// Whether host id `host` has a block the SPM reads.
pub fn serves_host(host: u32) -> bool {
    (1..BLOCKS as u32).contains(&host)
}

/// How often each side looks at the storage.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A host's reads of its reply block while a request is outstanding.
    pub reply_poll: Duration,
    /// The SPM's reads of the event block.
    pub event_poll: Duration,
    /// The SPM's full scans when no event came (hosts that send none).
    pub full_scan: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            reply_poll: Duration::from_millis(5),
            event_poll: Duration::from_millis(20),
            full_scan: Duration::from_secs(10),
        }
    }
}

/// How long a slot waits after the reply was taken before the host reads
/// its block again (only to see the SPM acknowledge; nothing waits on it).
const CLEAN_POLL: Duration = Duration::from_millis(250);
/// After a block with a wrong checksum (a host caught mid-write), the SPM
/// scans again this soon.
const TORN_RETRY: Duration = Duration::from_millis(20);
/// The SPM's extend workers (VDSM: 5).
const WORKERS: usize = 8;

fn read_block(f: &File, offset: u64, len: usize) -> io::Result<AlignedBuf> {
    let mut buf = AlignedBuf::new(len);
    f.read_exact_at(buf.as_mut_slice(), offset)?;
    Ok(buf)
}

fn write_block(f: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let mut buf = AlignedBuf::new(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    f.write_all_at(buf.as_slice(), offset)?;
    f.sync_data()
}

fn slot_bytes(block: &[u8], i: usize) -> &[u8] {
    &block[i * MESSAGE_SIZE..(i + 1) * MESSAGE_SIZE]
}

// --- The host side ------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("host id {0} has no mailbox block (hosts 1 to 249 do)")]
    HostId(u32),
    #[error("{} requests are outstanding; no slot is free", SLOTS)]
    Full,
    #[error("the mailbox is stopped")]
    Stopped,
    #[error(transparent)]
    Format(#[from] fmt::MailboxError),
    #[error("cannot write the mailbox: {0}")]
    Io(#[from] io::Error),
}

/// What a request's waiter learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The SPM replied with this size in MiB (0: it could not extend).
    Size(u64),
    /// The mailbox stopped before a reply came.
    Stopped,
}

#[derive(Debug)]
enum HostSlot {
    Free,
    /// Sent; these waiters want the reply.
    Sent {
        bytes: [u8; MESSAGE_SIZE],
        waiters: Vec<mpsc::Sender<Reply>>,
    },
    /// The reply is taken and the clean marker written; free once the SPM
    /// mirrors it.
    Taken,
}

struct HostState {
    slots: Vec<HostSlot>,
    /// Our `outbox` block as last read: a reply is a change to it.
    seen: Vec<u8>,
}

struct HostShared {
    inbox: File,
    outbox: File,
    host: u32,
    timing: Timing,
    state: Mutex<HostState>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A host's side of the mailbox: queues requests, watches for replies.
pub struct HostMailbox {
    shared: Arc<HostShared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMailbox")
            .field("host", &self.shared.host)
            .finish()
    }
}

impl HostMailbox {
    /// Clears this host's requests left from before (VDSM does the same at
    /// start) and starts watching for replies.
    pub fn start(
        inbox: File,
        outbox: File,
        host: u32,
        timing: Timing,
    ) -> Result<HostMailbox, SendError> {
        if !serves_host(host) {
            return Err(SendError::HostId(host));
        }
        let offset = u64::from(host) * BLOCK_SIZE as u64;
        let seen = read_block(&outbox, offset, BLOCK_SIZE)?.as_slice().to_vec();
        write_block(&inbox, offset, &[0u8; BLOCK_SIZE])?;
        let shared = Arc::new(HostShared {
            inbox,
            outbox,
            host,
            timing,
            state: Mutex::new(HostState {
                slots: (0..SLOTS).map(|_| HostSlot::Free).collect(),
                seen,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let watcher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mailbox-host".into())
            .spawn(move || watcher.watch())
            .map_err(SendError::Io)?;
        Ok(HostMailbox {
            shared,
            thread: Some(thread),
        })
    }

    pub fn host(&self) -> u32 {
        self.shared.host
    }

    /// Queues `msg` (joining an identical outstanding request) and wakes
    /// the SPM; the receiver gets the reply.
    pub fn send(&self, msg: Extend) -> Result<mpsc::Receiver<Reply>, SendError> {
        let bytes = msg.encode()?;
        let (tx, rx) = mpsc::channel();
        let s = &self.shared;
        if s.stop.load(Ordering::SeqCst) {
            return Err(SendError::Stopped);
        }
        let mut st = s.state.lock().expect("mailbox state");
        for slot in st.slots.iter_mut() {
            if let HostSlot::Sent { bytes: b, waiters } = slot {
                if *b == bytes {
                    waiters.push(tx);
                    return Ok(rx);
                }
            }
        }
        // A slot whose reply area shows no old reply: an identical old
        // reply there would hide the new one.
        let quiet = |st: &HostState, i: usize| {
            matches!(
                Slot::decode(slot_bytes(&st.seen, i)),
                Ok(Slot::Empty | Slot::Clean)
            )
        };
        let free: Vec<usize> = (0..SLOTS)
            .filter(|&i| matches!(st.slots[i], HostSlot::Free))
            .collect();
        let i = *free
            .iter()
            .find(|&&i| quiet(&st, i))
            .or(free.first())
            .ok_or(SendError::Full)?;
        st.slots[i] = HostSlot::Sent {
            bytes,
            waiters: vec![tx],
        };
        if let Err(e) = s.write_requests(&st).and_then(|()| s.write_event()) {
            st.slots[i] = HostSlot::Free;
            return Err(e.into());
        }
        drop(st);
        s.wake.notify_all();
        Ok(rx)
    }

    /// Stops watching, clears this host's requests and tells every waiter.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let s = &self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = s.state.lock().expect("mailbox state");
        for slot in st.slots.iter_mut() {
            if let HostSlot::Sent { waiters, .. } = std::mem::replace(slot, HostSlot::Free) {
                for w in waiters {
                    let _ = w.send(Reply::Stopped);
                }
            }
        }
        let offset = u64::from(s.host) * BLOCK_SIZE as u64;
        if let Err(e) = write_block(&s.inbox, offset, &[0u8; BLOCK_SIZE]) {
            tracing::warn!(host = s.host, error = %e, "cannot clear this host's mailbox block");
        }
    }
}

impl Drop for HostMailbox {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

impl HostShared {
    fn offset(&self) -> u64 {
        u64::from(self.host) * BLOCK_SIZE as u64
    }

    fn write_requests(&self, st: &HostState) -> io::Result<()> {
        let mut slots = [Slot::Empty; SLOTS];
        for (i, slot) in st.slots.iter().enumerate() {
            slots[i] = match slot {
                HostSlot::Free => Slot::Empty,
                HostSlot::Taken => Slot::Clean,
                HostSlot::Sent { bytes, .. } => Slot::decode(bytes).map_err(io::Error::other)?,
            };
        }
        let block = encode_block(&slots).map_err(io::Error::other)?;
        write_block(&self.inbox, self.offset(), &block)
    }

    fn write_event(&self) -> io::Result<()> {
        write_block(&self.inbox, 0, &event_block(Uuid::new_v4()))
    }

    fn watch(&self) {
        let mut failures = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            let interval = {
                let st = self.state.lock().expect("mailbox state");
                if st.slots.iter().any(|s| matches!(s, HostSlot::Sent { .. })) {
                    self.timing.reply_poll
                } else if st.slots.iter().any(|s| matches!(s, HostSlot::Taken)) {
                    CLEAN_POLL
                } else {
                    // Nothing outstanding: sleep until a request comes.
                    let _ = self.wake.wait_timeout(st, Duration::from_secs(1));
                    continue;
                }
            };
            match self.check_replies() {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 100 == 0 {
                        tracing::warn!(host = self.host, failures, error = %e, "cannot read the mailbox replies");
                    }
                }
            }
            let st = self.state.lock().expect("mailbox state");
            if !self.stop.load(Ordering::SeqCst) {
                let _ = self.wake.wait_timeout(st, interval);
            }
        }
    }

    fn check_replies(&self) -> io::Result<()> {
        let block = read_block(&self.outbox, self.offset(), BLOCK_SIZE)?;
        let block = block.as_slice();
        let mut st = self.state.lock().expect("mailbox state");
        let mut rewrite = false;
        for i in 0..SLOTS {
            let now = slot_bytes(block, i);
            let changed = now != slot_bytes(&st.seen, i);
            match &mut st.slots[i] {
                HostSlot::Sent { bytes, waiters } if changed && now[0] == b'1' => {
                    if now[..37] != bytes[..37] {
                        continue;
                    }
                    let size = match Slot::decode(now) {
                        Ok(Slot::Extend(e)) => e.size_mib,
                        _ => 0,
                    };
                    for w in waiters.drain(..) {
                        let _ = w.send(Reply::Size(size));
                    }
                    st.slots[i] = HostSlot::Taken;
                    rewrite = true;
                }
                HostSlot::Taken if now == [1u8; MESSAGE_SIZE] => {
                    st.slots[i] = HostSlot::Free;
                }
                _ => {}
            }
        }
        st.seen.copy_from_slice(block);
        if rewrite {
            self.write_requests(&st)?;
        }
        Ok(())
    }
}

// --- The SPM side ---------------------------------------------------------------

/// Serves one request: the size in MiB to reply with, 0 if it failed.
pub type Handler = Arc<dyn Fn(u32, Extend) -> u64 + Send + Sync>;

/// What the SPM side has done, for the log and the benchmarks.
#[derive(Debug, Default)]
pub struct SpmStats {
    pub scans: AtomicU64,
    pub event_reads: AtomicU64,
    pub bytes_read: AtomicU64,
    pub requests: AtomicU64,
    pub refused_blocks: AtomicU64,
}

struct SpmShared {
    inbox: File,
    outbox: File,
    timing: Timing,
    handler: Handler,
    /// The `outbox` as written: replies and mirrored clean markers.
    replies: Mutex<Vec<u8>>,
    stop: AtomicBool,
    stats: SpmStats,
}

/// The SPM's side: reads requests, runs the handler, writes replies.
pub struct SpmMailbox {
    shared: Arc<SpmShared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SpmMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmMailbox").finish_non_exhaustive()
    }
}

struct Job {
    host: u32,
    slot: usize,
    msg: Extend,
}

impl SpmMailbox {
    /// Clears the `outbox` (old replies) and starts serving. The first
    /// scan takes every outstanding request as new: a new SPM serves what
    /// the last one left (extends are idempotent).
    pub fn start(
        inbox: File,
        outbox: File,
        handler: Handler,
        timing: Timing,
    ) -> io::Result<SpmMailbox> {
        let area = BLOCKS * BLOCK_SIZE;
        write_block(&outbox, 0, &vec![0u8; area])?;
        let shared = Arc::new(SpmShared {
            inbox,
            outbox,
            timing,
            handler,
            replies: Mutex::new(vec![0u8; area]),
            stop: AtomicBool::new(false),
            stats: SpmStats::default(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for n in 0..WORKERS {
            let (shared, rx) = (shared.clone(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mailbox-spm-{n}"))
                    .spawn(move || shared.work(&rx))?,
            );
        }
        let scanner = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("mailbox-spm".into())
                .spawn(move || scanner.serve(tx))?,
        );
        Ok(SpmMailbox { shared, threads })
    }

    pub fn stats(&self) -> &SpmStats {
        &self.shared.stats
    }

    /// Stops scanning; requests being served finish first.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for SpmMailbox {
    fn drop(&mut self) {
        self.halt();
    }
}

impl SpmShared {
    fn serve(&self, jobs: mpsc::Sender<Job>) {
        let mut seen = vec![0u8; BLOCKS * BLOCK_SIZE];
        let mut last_event: Option<Uuid> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let torn = match self.scan(&mut seen, &jobs) {
                Ok(torn) => torn,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the mailbox inbox");
                    false
                }
            };
            let scanned = Instant::now();
            // Between scans only the event block is read.
            while !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(self.timing.event_poll);
                if torn && scanned.elapsed() >= TORN_RETRY {
                    break;
                }
                if scanned.elapsed() >= self.timing.full_scan {
                    break;
                }
                self.stats.event_reads.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_read
                    .fetch_add(BLOCK_SIZE as u64, Ordering::Relaxed);
                match read_block(&self.inbox, 0, BLOCK_SIZE) {
                    Ok(block) => {
                        let id = event_id(block.as_slice());
                        if id.is_some() && id != last_event {
                            last_event = id;
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the mailbox event block"),
                }
            }
        }
    }

    /// One read of every host block; new requests go to the workers.
    /// Returns whether a block was refused (and should be read again soon).
    fn scan(&self, seen: &mut [u8], jobs: &mpsc::Sender<Job>) -> io::Result<bool> {
        let area = BLOCKS * BLOCK_SIZE;
        let buf = read_block(&self.inbox, 0, area)?;
        self.stats.scans.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_read
            .fetch_add(area as u64, Ordering::Relaxed);
        let mail = buf.as_slice();
        let mut torn = false;
        let mut dirty = Vec::new();
        {
            let mut replies = self.replies.lock().expect("mailbox replies");
            for host in 1..BLOCKS {
                let range = host * BLOCK_SIZE..(host + 1) * BLOCK_SIZE;
                let block = &mail[range.clone()];
                let slots = if (0..SLOTS).all(|i| block[i * MESSAGE_SIZE] == 0) {
                    vec![Ok(Slot::Empty); SLOTS]
                } else {
                    match decode_block(block) {
                        Ok(slots) => slots,
                        Err(e) => {
                            self.stats.refused_blocks.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(host, error = %e, "mailbox block refused this round");
                            // All of it counts as new once it reads right.
                            seen[range].fill(0);
                            torn = true;
                            continue;
                        }
                    }
                };
                let out = &mut replies[range.clone()];
                let mut changed_out = false;
                for (i, slot) in slots.iter().enumerate() {
                    let now = slot_bytes(block, i);
                    let reply = &mut out[i * MESSAGE_SIZE..(i + 1) * MESSAGE_SIZE];
                    match slot {
                        Ok(Slot::Clean) => {
                            if reply != [1u8; MESSAGE_SIZE] {
                                reply.fill(1);
                                changed_out = true;
                            }
                        }
                        // A host that cleared its block: its old replies
                        // must not pass for replies to its next requests.
                        Ok(Slot::Empty) => {
                            if reply[0] != 0 {
                                reply.fill(0);
                                changed_out = true;
                            }
                        }
                        Ok(Slot::Extend(msg)) if now != slot_bytes(&seen[range.clone()], i) => {
                            self.stats.requests.fetch_add(1, Ordering::Relaxed);
                            let _ = jobs.send(Job {
                                host: host as u32,
                                slot: i,
                                msg: *msg,
                            });
                        }
                        Ok(Slot::Extend(_)) => {}
                        Err(e) if now != slot_bytes(&seen[range.clone()], i) => {
                            tracing::warn!(host, slot = i, error = %e, "mailbox message ignored");
                        }
                        Err(_) => {}
                    }
                }
                seen[range].copy_from_slice(block);
                if changed_out {
                    dirty.push(host);
                }
            }
            for host in dirty {
                let range = host * BLOCK_SIZE..(host + 1) * BLOCK_SIZE;
                write_block(&self.outbox, range.start as u64, &replies[range])?;
            }
        }
        Ok(torn)
    }

    fn work(&self, jobs: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let job = {
                let rx = jobs.lock().expect("mailbox jobs");
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let size = (self.handler)(job.host, job.msg);
            let reply = Extend {
                size_mib: size,
                ..job.msg
            };
            let Ok(bytes) = reply.encode() else { continue };
            let host = job.host as usize;
            let mut replies = self.replies.lock().expect("mailbox replies");
            let at = host * BLOCK_SIZE + job.slot * MESSAGE_SIZE;
            replies[at..at + MESSAGE_SIZE].copy_from_slice(&bytes);
            let range = host * BLOCK_SIZE..(host + 1) * BLOCK_SIZE;
            if let Err(e) = write_block(&self.outbox, range.start as u64, &replies[range]) {
                tracing::warn!(host, error = %e, "cannot write a mailbox reply");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox_files(dir: &std::path::Path) -> (File, File) {
        let open = |name: &str| {
            let f = crate::primitives::scratch_file(dir, name);
            f.set_len(1 << 20).unwrap();
            f
        };
        (open("inbox"), open("outbox"))
    }

    fn fast() -> Timing {
        Timing {
            reply_poll: Duration::from_millis(2),
            event_poll: Duration::from_millis(2),
            full_scan: Duration::from_secs(60),
        }
    }

    fn msg(size_mib: u64) -> Extend {
        Extend {
            sd: Uuid::new_v4(),
            vol: Uuid::new_v4(),
            size_mib,
        }
    }

    fn reply(rx: &mpsc::Receiver<Reply>) -> Reply {
        rx.recv_timeout(Duration::from_secs(10)).expect("a reply")
    }

    #[test]
    fn a_request_is_served_and_its_slot_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, outbox) = mailbox_files(dir.path());
        let served = Arc::new(Mutex::new(Vec::new()));
        let log = served.clone();
        let handler: Handler = Arc::new(move |host, m: Extend| {
            log.lock().unwrap().push((host, m));
            if m.size_mib > 1000 {
                0
            } else {
                m.size_mib
            }
        });
        let spm = SpmMailbox::start(
            inbox.try_clone().unwrap(),
            outbox.try_clone().unwrap(),
            handler,
            fast(),
        )
        .unwrap();
        let host = HostMailbox::start(inbox, outbox, 7, fast()).unwrap();
        // More than 63 requests in turn: slots are freed and reused.
        for n in 0..80 {
            let m = msg(100 + n);
            assert_eq!(reply(&host.send(m).unwrap()), Reply::Size(100 + n));
        }
        assert_eq!(reply(&host.send(msg(5000)).unwrap()), Reply::Size(0));
        let served = served.lock().unwrap();
        assert_eq!(served.len(), 81);
        assert!(served.iter().all(|(h, _)| *h == 7));
        assert!(spm.stats().requests.load(Ordering::Relaxed) >= 81);
    }

    #[test]
    fn identical_requests_share_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, outbox) = mailbox_files(dir.path());
        let host = HostMailbox::start(
            inbox.try_clone().unwrap(),
            outbox.try_clone().unwrap(),
            3,
            fast(),
        )
        .unwrap();
        let m = msg(2048);
        let (a, b) = (host.send(m).unwrap(), host.send(m).unwrap());
        let block = read_block(&inbox, 3 * 4096, 4096).unwrap();
        let slots = decode_block(block.as_slice()).unwrap();
        assert_eq!(slots[0], Ok(Slot::Extend(m)));
        assert_eq!(slots[1], Ok(Slot::Empty));
        // The SPM comes later (a failover): it serves what is outstanding.
        let handler: Handler = Arc::new(|_, m: Extend| m.size_mib);
        let _spm = SpmMailbox::start(inbox, outbox, handler, fast()).unwrap();
        assert_eq!(reply(&a), Reply::Size(2048));
        assert_eq!(reply(&b), Reply::Size(2048));
    }

    #[test]
    fn hosts_outside_the_mailbox_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, outbox) = mailbox_files(dir.path());
        for id in [0, 250, 2000] {
            let e = HostMailbox::start(
                inbox.try_clone().unwrap(),
                outbox.try_clone().unwrap(),
                id,
                fast(),
            )
            .unwrap_err();
            assert!(matches!(e, SendError::HostId(_)), "{id}: {e}");
        }
    }

    #[test]
    fn a_block_with_a_bad_checksum_is_served_once_it_reads_right() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, outbox) = mailbox_files(dir.path());
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let handler: Handler = Arc::new(move |_, m: Extend| {
            c.fetch_add(1, Ordering::SeqCst);
            m.size_mib
        });
        let _spm = SpmMailbox::start(
            inbox.try_clone().unwrap(),
            outbox.try_clone().unwrap(),
            handler,
            fast(),
        )
        .unwrap();
        let m = msg(512);
        let mut slots = [Slot::Empty; SLOTS];
        slots[0] = Slot::Extend(m);
        let good = encode_block(&slots).unwrap();
        let mut bad = good.clone();
        bad[4092] ^= 0xff;
        write_block(&inbox, 9 * 4096, &bad).unwrap();
        write_block(&inbox, 0, &event_block(Uuid::new_v4())).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "a refused block is not served"
        );
        write_block(&inbox, 9 * 4096, &good).unwrap();
        // The handler runs before the reply is written: wait for the reply.
        let want = m.encode().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = read_block(&outbox, 9 * 4096, 4096).unwrap();
            if count.load(Ordering::SeqCst) > 0 && out.as_slice()[..64] == want[..] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never served: {:?}",
                &out.as_slice()[..64]
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

//! peer-floor-uring: the floor of the HTTP bench on io_uring. No framework,
//! no runtime: one thread per shard, each with its own `SO_REUSEPORT`
//! listener and ring, answering forkless `hello`'s bytes (`../floor.rs`).
//!
//! Run with: `cargo run --release -p peer-floor-uring -- --threads 1 --listen 127.0.0.1:0`
//!
//! The ring is set up `SINGLE_ISSUER | DEFER_TASKRUN` (completions are
//! posted only when this thread enters the kernel to wait: no interrupts of
//! the loop, no task-work IPIs), and every operation that can stay armed
//! does:
//!
//! - one **multishot accept** that installs each connection straight into
//!   the ring's table of **registered files** (no descriptor in the process
//!   table, no `fdget` per operation);
//! - one **multishot recv** per connection, into a **provided buffer ring**
//!   (the kernel picks a buffer when data arrives; the loop hands it back
//!   as soon as the bytes are parsed);
//! - one **send** per connection per loop turn with every answer of that
//!   turn.
//!
//! The loop is: one `io_uring_enter` that submits every send of the last
//! turn and waits for at least one completion; then every completion is
//! handled. So one syscall covers all the connections that were ready.
//! Closing shuts the socket down first (which ends its multishot recv),
//! then closes the registered file once nothing of it is in flight.

#[path = "../../args.rs"]
mod args;
#[path = "../../floor.rs"]
mod floor;

use std::alloc::{Layout, alloc_zeroed};
use std::io;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};

use floor::{Answers, MAX_INPUT, MAX_OUTPUT};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Submission queue entries (the completion queue is 8 times larger).
const ENTRIES: u32 = 1024;

/// Registered-file slots: the most connections a shard holds at once.
const FILES: u32 = 16 * 1024;

/// Provided buffers (a power of two) and their size.
const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 4096;

/// The provided buffer group's id.
const GROUP: u16 = 0;

/// Operation kinds, in the top byte of a completion's user data; the low 32
/// bits are the connection's registered-file slot.
const ACCEPT: u64 = 1 << 56;
const RECV: u64 = 2 << 56;
const SEND: u64 = 3 << 56;
const SHUTDOWN: u64 = 4 << 56;
const CLOSE: u64 = 5 << 56;
const KIND: u64 = 0xff << 56;

fn main() -> ExitCode {
    let args = args::parse();
    match floor::run(args.threads, args.listen, serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Default)]
struct Conn {
    /// Received bytes not yet answered (a partial head), at most
    /// [`MAX_INPUT`].
    input: Vec<u8>,
    /// Answers not yet handed to a send.
    out: Vec<u8>,
    /// The bytes of the send in flight (unmoved until it completes).
    sending: Vec<u8>,
    /// How much of `sending` the kernel took so far.
    sent: usize,
    send_in_flight: bool,
    recv_armed: bool,
    /// No more requests: close once the answers are sent.
    closing: bool,
    shutdown_sent: bool,
    /// Has answers waiting for a send, and is in the turn's `ready` list.
    queued: bool,
}

/// The provided buffer ring: the ring of buffer descriptors the kernel
/// takes from and this loop gives back to, and the buffers themselves.
struct Buffers {
    ring: *mut types::BufRingEntry,
    memory: *mut u8,
    /// The tail as this loop sees it (published with Release).
    tail: u16,
}

impl Buffers {
    fn new() -> io::Result<Buffers> {
        let ring_layout = Layout::from_size_align(
            usize::from(BUFFERS) * size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let memory_layout = Layout::from_size_align(usize::from(BUFFERS) * BUFFER_SIZE, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size. The allocations live
        // as long as the process (the ring and its buffers are never
        // unregistered), so they are never freed.
        let (ring, memory) = unsafe { (alloc_zeroed(ring_layout), alloc_zeroed(memory_layout)) };
        if ring.is_null() || memory.is_null() {
            return Err(io::Error::other("out of memory for the buffer ring"));
        }
        let mut buffers = Buffers {
            ring: ring.cast(),
            memory,
            tail: 0,
        };
        for bid in 0..BUFFERS {
            buffers.give_back(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// Puts buffer `bid` back at the ring's tail (seen by the kernel after
    /// [`Buffers::publish`]).
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `index` < BUFFERS, within the ring's allocation; the
        // kernel reads this entry only once the tail is published past it.
        let entry = unsafe { &mut *self.ring.add(index) };
        // SAFETY: `bid` < BUFFERS, so the offset is within `memory`.
        let addr = unsafe { self.memory.add(usize::from(bid) * BUFFER_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the ring's first entry, which is
        // valid and aligned for u16 (it is `resv` of `io_uring_buf`); the
        // kernel reads it, so it is written atomically with Release.
        let tail = unsafe { &*types::BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes the kernel put in buffer `bid`.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(BUFFER_SIZE);
        let bid = usize::from(bid % BUFFERS);
        // SAFETY: within `memory`; the kernel wrote `len` bytes there and
        // does not touch the buffer until it is given back.
        unsafe { std::slice::from_raw_parts(self.memory.add(bid * BUFFER_SIZE), len) }
    }
}

/// One shard: its ring, connections and buffers.
struct Shard {
    ring: IoUring,
    conns: Vec<Option<Box<Conn>>>,
    buffers: Buffers,
    answers: Answers,
    listener: RawFd,
    /// Connections with answers to send at the end of this turn.
    ready: Vec<u32>,
}

fn serve(shard: usize, listener: RawFd) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(ENTRIES * 8)
        .build(ENTRIES)?;
    ring.submitter().register_files_sparse(FILES)?;
    let buffers = Buffers::new()?;
    // SAFETY: the ring's memory is page-aligned, holds BUFFERS entries and
    // lives for the rest of the process (see `Buffers::new`).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(buffers.ring as u64, BUFFERS, GROUP, 0)?;
    }
    let mut shard = Shard {
        ring,
        conns: (0..FILES).map(|_| None).collect(),
        buffers,
        answers: Answers::new(shard),
        listener,
        ready: Vec::new(),
    };
    shard.arm_accept()?;
    let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(ENTRIES as usize * 8);
    loop {
        match shard.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        completions.clear();
        completions.extend(
            shard
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        shard.answers.refresh();
        for &(user_data, result, flags) in &completions {
            shard.complete(user_data, result, flags)?;
        }
        shard.buffers.publish();
        shard.send_ready()?;
    }
}

impl Shard {
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points to (a connection's
            // `sending`) stays put until its completion is handled.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // Full: submit what is queued and retry.
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener))
            .allocate_file_index(true)
            .build()
            .user_data(ACCEPT);
        self.push(&accept)
    }

    fn arm_recv(&mut self, slot: u32) -> io::Result<()> {
        let recv = opcode::RecvMulti::new(types::Fixed(slot), GROUP)
            .build()
            .user_data(RECV | u64::from(slot));
        self.push(&recv)
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) -> io::Result<()> {
        let slot = (user_data & 0xffff_ffff) as u32;
        match user_data & KIND {
            ACCEPT => {
                if let Ok(slot) = u32::try_from(result)
                    && let Some(entry) = self.conns.get_mut(slot as usize)
                {
                    *entry = Some(Box::new(Conn {
                        recv_armed: true,
                        ..Conn::default()
                    }));
                    self.arm_recv(slot)?;
                }
                // A failed accept (no free slot, an aborted connection)
                // is not fatal; a multishot accept that ended is re-armed.
                if !cqueue::more(flags) {
                    self.arm_accept()?;
                }
            }
            RECV => self.received(slot, result, flags)?,
            SEND => self.sent(slot, result)?,
            // The recv's end, then the close, follow on their own.
            SHUTDOWN | CLOSE => {}
            _ => {}
        }
        Ok(())
    }

    fn received(&mut self, slot: u32, result: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            if let Some(bid) = bid {
                self.buffers.give_back(bid);
            }
            return Ok(());
        };
        conn.recv_armed = more;
        match (usize::try_from(result), bid) {
            (Ok(len @ 1..), Some(bid)) => {
                let data = self.buffers.bytes(bid, len);
                if !conn.closing {
                    take_input(conn, data, &self.answers);
                }
                self.buffers.give_back(bid);
            }
            // Out of provided buffers: the recv ended; arm it again below.
            _ if result == -libc::ENOBUFS => {}
            // End of stream, or an error.
            _ => conn.closing = true,
        }
        if conn.out.len() > MAX_OUTPUT {
            // A client that sends without reading: stop.
            conn.closing = true;
            conn.out.clear();
        }
        if !conn.out.is_empty() && !conn.queued {
            conn.queued = true;
            self.ready.push(slot);
        }
        if !conn.recv_armed && !conn.closing {
            conn.recv_armed = true;
            return self.arm_recv(slot);
        }
        self.maybe_close(slot)
    }

    fn sent(&mut self, slot: u32, result: i32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        conn.send_in_flight = false;
        match usize::try_from(result) {
            Ok(n) => conn.sent += n,
            Err(_) => {
                conn.closing = true;
                conn.sending.clear();
                conn.out.clear();
            }
        }
        if conn.sent >= conn.sending.len() {
            conn.sending.clear();
            conn.sent = 0;
        }
        let more = conn.sent < conn.sending.len() || !conn.out.is_empty();
        if more && !conn.queued {
            conn.queued = true;
            self.ready.push(slot);
        }
        self.maybe_close(slot)
    }

    /// One send per connection that has answers and none in flight.
    fn send_ready(&mut self) -> io::Result<()> {
        let ready = std::mem::take(&mut self.ready);
        for &slot in &ready {
            let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            conn.queued = false;
            if conn.send_in_flight {
                // Sent again when the one in flight completes.
                continue;
            }
            if conn.sending.is_empty() {
                if conn.out.is_empty() {
                    continue;
                }
                std::mem::swap(&mut conn.sending, &mut conn.out);
                conn.sent = 0;
            }
            let rest = &conn.sending[conn.sent..];
            let send = opcode::Send::new(types::Fixed(slot), rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(SEND | u64::from(slot));
            conn.send_in_flight = true;
            self.push(&send)?;
        }
        self.ready = ready;
        self.ready.clear();
        Ok(())
    }

    /// Moves a closing connection on: once its answers are sent, shut it
    /// down (which ends its recv); once nothing of it is in flight, close
    /// its registered file and forget it.
    fn maybe_close(&mut self, slot: u32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        let unsent = conn.send_in_flight || !conn.sending.is_empty() || !conn.out.is_empty();
        if !conn.closing || unsent {
            return Ok(());
        }
        if conn.recv_armed {
            if !conn.shutdown_sent {
                conn.shutdown_sent = true;
                let shutdown = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                    .build()
                    .user_data(SHUTDOWN | u64::from(slot));
                self.push(&shutdown)?;
            }
            return Ok(());
        }
        self.conns[slot as usize] = None;
        let close = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(CLOSE | u64::from(slot));
        self.push(&close)
    }
}

/// Answers what `data` completes; keeps a partial head (bounded).
fn take_input(conn: &mut Conn, data: &[u8], answers: &Answers) {
    if conn.input.is_empty() {
        // The usual case: whole requests, parsed in the provided buffer.
        let done = floor::answer(data, &mut conn.out, answers);
        conn.closing |= done.close;
        if !done.close {
            conn.input.extend_from_slice(&data[done.consumed..]);
        }
    } else {
        conn.input.extend_from_slice(data);
        let done = floor::answer(&conn.input, &mut conn.out, answers);
        conn.closing |= done.close;
        conn.input.drain(..done.consumed);
    }
    if conn.input.len() > MAX_INPUT {
        conn.closing = true;
    }
    if conn.closing {
        conn.input = Vec::new();
    }
}

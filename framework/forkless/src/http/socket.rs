//! A connection's socket, watched for readiness by its shard's epoll
//! instance.
//!
//! glommio waits for a socket with a one-shot io_uring `POLL_ADD` each time
//! a read finds nothing: every request then adds and removes a wait-queue
//! entry on the socket and completes as task work, which costs more kernel
//! time per request than the socket I/O around it. So HTTP connections are
//! registered once, edge-triggered, with one epoll instance per shard
//! ([`Readiness`]), and the epoll descriptor is what the ring watches: one
//! `POLL_ADD` and one `epoll_wait` per batch of ready connections, however
//! many requests the batch holds. Reads and writes are plain non-blocking
//! syscalls on the socket, as in any epoll server.
//!
//! No wake-up is lost: a read or write that finds the socket not ready
//! stores the task's waker before the poll returns, and only the shard's
//! own thread harvests events (in the [`drive`] task), so any readiness
//! after that syscall is harvested later and wakes the stored waker.
//!
//! A connection that leaves HTTP (a `101`) is handed back to glommio
//! ([`Socket::into_std`]) for its upgrade task.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, Read as _};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use futures::future::{Either, select};
use glommio::io::PollableFd;
use slab::Slab;

/// Events harvested per `epoll_wait`; more are taken in another call.
const BATCH: usize = 256;

thread_local! {
    /// This shard's epoll instance, while any connection or its driver
    /// task holds it.
    static READINESS: RefCell<Weak<Readiness>> = const { RefCell::new(Weak::new()) };
}

/// One shard's epoll instance and the wakers of the connections it watches.
#[derive(Debug)]
struct Readiness {
    epoll: OwnedFd,
    waiting: RefCell<Slab<Waiting>>,
    /// The [`drive`] task, while it waits.
    driver: RefCell<Option<Waker>>,
    /// Whether a [`drive`] task runs.
    driving: Cell<bool>,
}

/// The tasks waiting for one socket.
#[derive(Debug, Default)]
struct Waiting {
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// A read event was harvested since the socket's last read began.
    readable: bool,
}

impl Readiness {
    /// This shard's instance, created on first use.
    fn current() -> io::Result<Rc<Readiness>> {
        if let Some(readiness) = READINESS.with(|current| current.borrow().upgrade()) {
            return Ok(readiness);
        }
        // SAFETY: epoll_create1 takes no pointers; its result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let readiness = Rc::new(Readiness {
            epoll,
            waiting: RefCell::new(Slab::new()),
            driver: RefCell::new(None),
            driving: Cell::new(false),
        });
        READINESS.with(|current| *current.borrow_mut() = Rc::downgrade(&readiness));
        Ok(readiness)
    }

    /// Watches `fd`; starts the [`drive`] task if none runs.
    fn register(self: &Rc<Self>, fd: i32) -> io::Result<usize> {
        let key = self.waiting.borrow_mut().insert(Waiting::default());
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key as u64,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call.
        let done =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if done < 0 {
            let error = io::Error::last_os_error();
            self.waiting.borrow_mut().remove(key);
            return Err(error);
        }
        if !self.driving.replace(true) {
            // Spawned once the set is not empty: the task may run at once.
            let watched = match self
                .epoll
                .try_clone()
                .and_then(|fd| PollableFd::new(fd).map_err(io::Error::from))
            {
                Ok(watched) => watched,
                Err(error) => {
                    self.driving.set(false);
                    self.deregister(fd, key);
                    return Err(error);
                }
            };
            crate::spawn(drive(self.clone(), watched)).detach();
        }
        Ok(key)
    }

    fn deregister(&self, fd: i32, key: usize) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        let mut waiting = self.waiting.borrow_mut();
        waiting.try_remove(key);
        if waiting.is_empty() {
            drop(waiting);
            // The last connection left: the driver ends (see [`drive`]).
            let driver = self.driver.borrow_mut().take();
            if let Some(driver) = driver {
                driver.wake();
            }
        }
    }

    /// Ready once no connection is watched; the driver's waker is kept.
    fn poll_unused(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waiting.borrow().is_empty() {
            return Poll::Ready(());
        }
        *self.driver.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn wait_readable(&self, key: usize, waker: &Waker) {
        if let Some(waiting) = self.waiting.borrow_mut().get_mut(key) {
            store(&mut waiting.reader, waker);
        }
    }

    /// Whether a read event came since the last [`take_readable`](Self::take_readable).
    fn is_readable(&self, key: usize) -> bool {
        self.waiting
            .borrow()
            .get(key)
            .is_none_or(|waiting| waiting.readable)
    }

    /// A read begins: events from now on are new.
    fn take_readable(&self, key: usize) {
        if let Some(waiting) = self.waiting.borrow_mut().get_mut(key) {
            waiting.readable = false;
        }
    }

    fn wait_writable(&self, key: usize, waker: &Waker) {
        if let Some(waiting) = self.waiting.borrow_mut().get_mut(key) {
            store(&mut waiting.writer, waker);
        }
    }

    /// Takes the ready events without blocking and wakes their tasks;
    /// whether the batch was full (more may be waiting).
    fn harvest(&self, events: &mut [libc::epoll_event], woken: &mut Vec<Waker>) -> bool {
        let capacity = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` is a valid, writable buffer of `capacity` events.
        let n =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), capacity, 0) };
        let Ok(n) = usize::try_from(n) else {
            return false;
        };
        {
            let mut waiting = self.waiting.borrow_mut();
            for event in &events[..n] {
                let Some(socket) = usize::try_from(event.u64)
                    .ok()
                    .and_then(|key| waiting.get_mut(key))
                else {
                    continue;
                };
                let flags = event.events as i32;
                let failed = flags & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
                if failed || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0 {
                    socket.readable = true;
                    woken.extend(socket.reader.take());
                }
                if failed || flags & libc::EPOLLOUT != 0 {
                    woken.extend(socket.writer.take());
                }
            }
        }
        // Woken outside the borrow: a wake may run code that reads or writes.
        woken.drain(..).for_each(Waker::wake);
        n == events.len()
    }
}

fn store(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(stored) if stored.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The shard's epoll driver: waits (through the ring) for the epoll
/// descriptor to be readable, then harvests. It ends, and the epoll
/// instance with it, when the last connection leaves: a shard that stops
/// must not keep a ring request pending on the way out (its executor would
/// wait on it), and the next connection starts a new instance.
async fn drive(readiness: Rc<Readiness>, watched: PollableFd<OwnedFd>) {
    let _driving = Driving(&readiness);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut woken = Vec::new();
    loop {
        while readiness.harvest(&mut events, &mut woken) {}
        let unused = poll_fn(|cx| readiness.poll_unused(cx));
        match select(pin!(watched.readable()), pin!(unused)).await {
            Either::Left((Ok(()), _)) => {}
            Either::Left((Err(error), _)) => {
                tracing::error!(%error, "cannot wait for the shard's epoll descriptor; connections stall");
                return;
            }
            Either::Right(((), _)) => return,
        }
    }
}

/// Marks the driver gone when its task ends or is dropped.
struct Driving<'a>(&'a Readiness);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.0.driving.set(false);
    }
}

/// A connection's socket; see the module docs.
#[derive(Debug)]
pub(crate) struct Socket {
    // Dropped first: leaves the epoll set while the descriptor is open.
    registration: Registration,
    stream: TcpStream,
    /// The last read emptied the socket's receive queue (it came back
    /// short, or would block).
    drained: bool,
}

/// A socket's place in its shard's epoll set.
#[derive(Debug)]
struct Registration {
    readiness: Rc<Readiness>,
    fd: i32,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.readiness.deregister(self.fd, self.key);
    }
}

impl Socket {
    /// Watches an accepted connection with this shard's epoll instance.
    pub(crate) fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        let readiness = Readiness::current()?;
        let fd = stream.as_raw_fd();
        let key = readiness.register(fd)?;
        Ok(Self {
            registration: Registration { readiness, fd, key },
            stream,
            drained: false,
        })
    }

    /// The socket's descriptor (still owned by it).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.stream.set_nodelay(on)
    }

    /// Reads what the socket holds, or waits until it holds something.
    ///
    /// A read that came back short emptied the socket's queue: until an
    /// event arrives, the next read waits without asking the kernel (which
    /// would only answer "would block"). Data that arrives after a read
    /// began always brings an event, edge-triggered or not.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let Registration { readiness, key, .. } = &self.registration;
        if self.drained && !readiness.is_readable(*key) {
            readiness.wait_readable(*key, cx.waker());
            return Poll::Pending;
        }
        readiness.take_readable(*key);
        loop {
            match (&self.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    readiness.wait_readable(*key, cx.waker());
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => {
                    self.drained = matches!(done, Ok(n) if n > 0 && n < buf.len());
                    return Poll::Ready(done);
                }
            }
        }
    }

    /// Sends what the socket takes, or waits until it takes something.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = socket2::SockRef::from(&self.stream);
        loop {
            // MSG_NOSIGNAL: a peer that went away is an error, not a SIGPIPE.
            match socket.send_with_flags(buf, libc::MSG_NOSIGNAL) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let Registration { readiness, key, .. } = &self.registration;
                    readiness.wait_writable(*key, cx.waker());
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => return Poll::Ready(done),
            }
        }
    }

    /// Shuts the write side.
    pub(crate) fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }

    /// The socket, no longer watched here, blocking again (as glommio takes
    /// an accepted socket).
    pub(crate) fn into_std(self) -> io::Result<TcpStream> {
        let Socket {
            registration,
            stream,
            ..
        } = self;
        drop(registration);
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    /// A connected pair: (client, server side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    /// The next read of `socket`, or `None` after 5 s (a lost wake-up).
    async fn read(socket: &mut Socket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let read = poll_fn(|cx| socket.poll_read(cx, &mut buf));
        match select(
            pin!(read),
            pin!(glommio::timer::sleep(Duration::from_secs(5))),
        )
        .await
        {
            Either::Left((Ok(n), _)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[test]
    fn reads_wait_for_their_event_and_the_driver_ends_with_the_last_socket() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("an executor");
        executor.run(async {
            let (mut client, server) = pair();
            let mut socket = Socket::new(server).expect("watched");
            let writer = std::thread::spawn(move || {
                for part in [&b"one"[..], b"two"] {
                    std::thread::sleep(Duration::from_millis(50));
                    client.write_all(part).expect("write");
                }
                client
            });
            // Nothing there yet: the read waits for the event.
            assert_eq!(read(&mut socket).await.as_deref(), Some(&b"one"[..]));
            // A short read: the next waits without asking the kernel.
            assert!(socket.drained);
            assert_eq!(read(&mut socket).await.as_deref(), Some(&b"two"[..]));
            let client = writer.join().expect("the writer");

            let instance = Rc::downgrade(&socket.registration.readiness);
            drop(socket);
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert!(
                instance.upgrade().is_none(),
                "the last socket ended the instance"
            );

            // The next connection gets a new instance and driver.
            let (mut client2, server) = pair();
            let mut socket = Socket::new(server).expect("watched again");
            client2.write_all(b"three").expect("write");
            assert_eq!(read(&mut socket).await.as_deref(), Some(&b"three"[..]));
            drop(client);
            drop(client2);
            assert_eq!(
                read(&mut socket).await.as_deref(),
                Some(&b""[..]),
                "the end of the stream"
            );
        });
    }
}

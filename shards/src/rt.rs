//! The one module that talks to the async runtime (glommio 0.9, io_uring).
//!
//! glommio's last release is 0.9.0 and upstream is quiet, so everything shardcast needs
//! from it goes through here: starting pinned executors, task queues, spawning, timers,
//! TCP sockets, and the SPSC channels between executors. Swapping the runtime means
//! re-implementing this file.
//!
//! Two task queues per shard: `media` (ingest, fan-out, feeds) gets most of the CPU and
//! a tight latency goal; `control` (HTTP API, housekeeping) gets the rest, so that a
//! burst of API requests or playlist renders never delays frames.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

/// Race two futures: the first to finish wins, the other is dropped.
pub use futures_lite::future::or;

/// The task queues of the current shard.
#[derive(Clone, Copy, Debug)]
struct Queues {
    media: TaskQueueHandle,
    control: TaskQueueHandle,
}

thread_local! {
    static QUEUES: std::cell::Cell<Option<Queues>> = const { std::cell::Cell::new(None) };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Media,
    Control,
}

/// Start one executor pinned to `cpu` and run `main` on it. `main` is called on the new
/// thread; the returned handle joins it.
pub fn start_executor<G, F, T>(
    name: &str,
    cpu: Option<usize>,
    main: G,
) -> io::Result<std::thread::JoinHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let name = name.to_owned();
    // glommio's own spawn() joins through its own handle type; a plain thread that
    // builds the executor keeps our handle std-only.
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let ex = LocalExecutorBuilder::new(placement)
            .name(&name)
            // Sleeping costs a ~25-30 µs wake-up (docs/runtime.md); a short spin avoids some of
            // them under load. 50 µs cost up to 10% of a core at 1,000 frames/s with one
            // viewer (bench/RESULTS.md, runtime micro-benchmarks); 10 µs keeps most of the
            // benefit.
            .spin_before_park(Duration::from_micros(10))
            .preempt_timer(Duration::from_millis(5))
            .make()
            .unwrap_or_else(|e| panic!("cannot start executor {name}: {e} (preflight checks should have caught this)"));
        ex.run(async move {
            let media = glommio::executor().create_task_queue(
                Shares::Static(1000),
                Latency::Matters(Duration::from_millis(2)),
                "media",
            );
            let control =
                glommio::executor().create_task_queue(Shares::Static(100), Latency::NotImportant, "control");
            QUEUES.with(|q| q.set(Some(Queues { media, control })));
            warm_up_timers().await;
            let task = glommio::spawn_local_into(main(), media).expect("the media queue was just created");
            task.await
        })
    })
}

/// The first timer on a glommio 0.9 executor can fire 30-50 ms late (docs/runtime.md); take
/// that hit at start-up, not on the first viewer's timeout.
async fn warm_up_timers() {
    for _ in 0..3 {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

fn queue(q: Queue) -> Option<TaskQueueHandle> {
    QUEUES.with(|qs| qs.get()).map(|qs| match q {
        Queue::Media => qs.media,
        Queue::Control => qs.control,
    })
}

/// Spawn a task on the current shard, in the given queue, detached.
pub fn spawn<F>(q: Queue, fut: F)
where
    F: Future<Output = ()> + 'static,
{
    match queue(q) {
        Some(tq) => glommio::spawn_local_into(fut, tq)
            .expect("queues are created at executor start")
            .detach(),
        None => glommio::spawn_local(fut).detach(),
    };
}

/// A spawned task whose result can be awaited; dropping it cancels the task.
pub struct Task<T>(glommio::Task<T>);

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Spawn a task whose result can be awaited (or that is cancelled when the handle drops).
pub fn spawn_task<F, T>(q: Queue, fut: F) -> Task<T>
where
    F: Future<Output = T> + 'static,
    T: 'static,
{
    Task(match queue(q) {
        Some(tq) => {
            glommio::spawn_local_into(fut, tq).expect("queues are created at executor start")
        }
        None => glommio::spawn_local(fut),
    })
}

/// Spawn a task whose panic (a bug) ends only that task: the panic is caught, and
/// `on_panic` gets its message. A panic that reached glommio could abort the process.
pub fn spawn_contained<F>(q: Queue, fut: F, on_panic: impl FnOnce(String) + 'static)
where
    F: Future<Output = ()> + 'static,
{
    use futures_lite::FutureExt;
    spawn(q, async move {
        if let Err(payload) = std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            on_panic(msg);
        }
    });
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Run `fut` with a deadline; `None` if it did not finish in time.
pub async fn timeout<F, T>(d: Duration, fut: F) -> Option<T>
where
    F: Future<Output = T>,
{
    glommio::timer::timeout(d, async move { Ok(fut.await) })
        .await
        .ok()
}

/// Let other tasks run if this one has used its slice.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// CPU time (user + system) the calling thread has used: on a shard thread, what this
/// shard costs, including the kernel work its system calls do.
pub fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Index of the executor running this code.
pub fn executor_id() -> usize {
    glommio::executor().id()
}

/// SPSC channel between two executors: create both ends anywhere with [`new_bounded`],
/// move each to its executor, then `connect` it there (each `connect` waits for the
/// other end's). Our own types over glommio's `shared_channel`, with only what the mesh
/// uses, so that changing the runtime stays inside this module.
///
/// [`new_bounded`]: channel::new_bounded
pub mod channel {
    use glommio::channels::shared_channel;

    /// The sending end before it is connected; `Send`, so it can move to its executor.
    pub struct SharedSender<M: Send>(shared_channel::SharedSender<M>);

    /// The receiving end before it is connected; `Send`, so it can move to its executor.
    pub struct SharedReceiver<M: Send>(shared_channel::SharedReceiver<M>);

    /// The sending end, bound to the executor that connected it.
    pub struct ConnectedSender<M: Send>(shared_channel::ConnectedSender<M>);

    /// The receiving end, bound to the executor that connected it.
    pub struct ConnectedReceiver<M: Send>(shared_channel::ConnectedReceiver<M>);

    /// A channel that holds up to `capacity` messages in flight.
    pub fn new_bounded<M: Send>(capacity: usize) -> (SharedSender<M>, SharedReceiver<M>) {
        let (tx, rx) = shared_channel::new_bounded(capacity);
        (SharedSender(tx), SharedReceiver(rx))
    }

    impl<M: Send + 'static> SharedSender<M> {
        /// Bind this end to the current executor; resolves once the receiver connected.
        pub async fn connect(self) -> ConnectedSender<M> {
            ConnectedSender(self.0.connect().await)
        }
    }

    impl<M: Send + 'static> SharedReceiver<M> {
        /// Bind this end to the current executor; resolves once the sender connected.
        pub async fn connect(self) -> ConnectedReceiver<M> {
            ConnectedReceiver(self.0.connect().await)
        }
    }

    impl<M: Send> ConnectedSender<M> {
        /// Send without waiting; a full or closed channel gives the message back.
        pub fn try_send(&self, msg: M) -> Result<(), M> {
            match self.0.try_send(msg) {
                Ok(()) => Ok(()),
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)))
                | Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))) => Err(m),
                Err(other) => {
                    unreachable!("try_send only fails with WouldBlock or Closed: {other}")
                }
            }
        }
    }

    impl<M: Send> ConnectedReceiver<M> {
        /// The next message; `None` once the sender is gone and the channel is drained.
        pub async fn recv(&self) -> Option<M> {
            self.0.recv().await
        }
    }
}

/// A listening TCP socket of this shard (SO_REUSEPORT: every shard binds the same port
/// and the kernel spreads connections over shards; glommio always sets it).
pub struct TcpListener(glommio::net::TcpListener);

impl TcpListener {
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        glommio::net::TcpListener::bind(addr)
            .map(TcpListener)
            .map_err(io::Error::from)
    }

    /// The next connection, already non-blocking (see [`TcpStream`]).
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let inner = self.0.accept().await.map_err(io::Error::from)?;
        TcpStream::new(inner)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr().map_err(io::Error::from)
    }
}

/// A connected TCP socket, always non-blocking.
///
/// glommio 0.9 leaves accepted sockets blocking (it passes MSG_DONTWAIT on its own
/// calls), so a raw `writev` on a full socket would park the whole shard in the kernel
/// until the peer reads (docs/runtime.md). Every stream is made non-blocking when it is
/// created, and waiting is done only through io_uring readiness:
/// - [`TcpStream::poll_read`] keeps one readiness poll armed across calls (glommio keeps
///   the source in the stream), so a task that polls it next to other events pays
///   nothing per wake-up until the peer actually sends something;
/// - [`TcpStream::poll_write_some`] waits for POLLOUT when the socket is full.
pub struct TcpStream {
    inner: glommio::net::TcpStream,
}

impl TcpStream {
    fn new(inner: glommio::net::TcpStream) -> io::Result<TcpStream> {
        set_nonblocking(inner.as_raw_fd())?;
        Ok(TcpStream { inner })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr().map_err(io::Error::from)
    }

    /// Connect to `addr` (an outgoing call: webhooks). The connect waits through
    /// io_uring; the caller bounds it with [`timeout`].
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let inner = glommio::net::TcpStream::connect(addr)
            .await
            .map_err(io::Error::from)?;
        TcpStream::new(inner)
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    /// Read what the peer sent, waiting for it through io_uring.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use futures_lite::AsyncReadExt;
        self.inner.read(buf).await
    }

    /// Poll for input; `Ready(Ok(0))` at end of stream. While nothing has arrived this
    /// costs no system call: the readiness poll armed by the first call stays armed.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        use futures_lite::AsyncRead;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    /// Read what the socket has without waiting: `Ok(None)` when nothing is there,
    /// `Ok(Some(0))` at end of stream.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match nix::sys::socket::recv(
            self.as_raw_fd(),
            buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => Ok(Some(n)),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(None),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// Write as much of `bufs` as the socket takes now, without waiting: one `writev`
    /// per call for everything pending (glommio has no vectored write). Returns the
    /// bytes written; what is left stays in `bufs` (the socket is full).
    pub fn try_write_vectored(&self, bufs: &mut Vec<Bytes>) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        let mut written_total = 0;
        while !bufs.is_empty() {
            match writev_nonblocking(fd, bufs) {
                Ok(n) => {
                    written_total += n;
                    consume(bufs, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written_total)
    }

    /// The socket was full: wait (io_uring POLLOUT) until it takes some of `bufs[0]`,
    /// then write what else it takes. `Ready(Ok(n))` with `n > 0` bytes written.
    pub fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut Vec<Bytes>,
    ) -> Poll<io::Result<usize>> {
        use futures_lite::AsyncWrite;
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        match Pin::new(&mut self.inner).poll_write(cx, first) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                consume(bufs, n);
                Poll::Ready(self.try_write_vectored(bufs).map(|more| n + more))
            }
        }
    }

    /// Write all of `bufs`, waiting on POLLOUT while the socket is full; fails with
    /// `TimedOut` when the peer takes nothing for `stall`. Only a full socket arms a
    /// timer.
    pub async fn write_all_vectored(
        &mut self,
        bufs: &mut Vec<Bytes>,
        stall: Duration,
    ) -> io::Result<usize> {
        let mut written = self.try_write_vectored(bufs)?;
        while !bufs.is_empty() {
            let step = timeout(
                stall,
                std::future::poll_fn(|cx| self.poll_write_some(cx, bufs)),
            );
            match step.await {
                Some(Ok(n)) => written += n,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("peer read nothing for {} ms", stall.as_millis()),
                    ))
                }
            }
        }
        Ok(written)
    }

    /// Set SO_SNDBUF (the kernel doubles it for bookkeeping).
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        // SAFETY: the fd belongs to `self`, which outlives this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.as_raw_fd()) };
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &bytes)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }

    /// Close at once with a reset (SO_LINGER 0): nothing lingers in FIN_WAIT or
    /// TIME_WAIT on our side, and the peer sees ECONNRESET. For refused connections.
    pub fn reset(self) {
        // SAFETY: the fd belongs to `self`, which outlives this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.as_raw_fd()) };
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Linger, &linger);
        drop(self);
    }

    /// Detach the socket from this executor so another shard can [`TcpStream::adopt`]
    /// it: the fd is duplicated and this executor's handle closed.
    pub fn release(self) -> io::Result<std::os::fd::OwnedFd> {
        let fd = nix::unistd::dup(self.as_raw_fd())
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        drop(self);
        // SAFETY: dup just returned this fd to us; nothing else owns it.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    /// Adopt a socket released by another shard; must run on the adopting shard.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<TcpStream> {
        // SAFETY: `fd` is an owned, open TCP socket (from `release`); ownership moves
        // into the stream, which closes it.
        let inner: glommio::net::TcpStream =
            unsafe { std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        TcpStream::new(inner)
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(())
}

/// A timer that can be moved to a new deadline without being re-created, and polled
/// next to other events in a hand-written future. Armed only while it exists.
pub struct Deadline {
    timer: glommio::timer::Timer,
    at: Instant,
    /// The waker the timer was last armed with: glommio re-inserts a timer into its
    /// timer tree on every poll (docs/runtime.md), so a task polled often (a viewer, at
    /// every frame) re-arms only when its waker or the deadline changed.
    armed_for: Option<std::task::Waker>,
}

impl Deadline {
    pub fn at(at: Instant) -> Deadline {
        Deadline {
            timer: glommio::timer::Timer::new(at.saturating_duration_since(Instant::now())),
            at,
            armed_for: None,
        }
    }

    pub fn when(&self) -> Instant {
        self.at
    }

    /// Move the deadline (a no-op when it is already there).
    pub fn reset(&mut self, at: Instant) {
        if at != self.at {
            self.at = at;
            self.timer
                .reset(at.saturating_duration_since(Instant::now()));
            self.armed_for = None;
        }
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            self.armed_for = None;
            return Poll::Ready(());
        }
        if self
            .armed_for
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let r = Pin::new(&mut self.timer).poll(cx).map(|_| ());
        if r.is_pending() {
            self.armed_for = Some(cx.waker().clone());
        }
        r
    }
}

/// An append-only file written through io_uring (buffered I/O, so every completed write
/// is in the kernel's page cache and survives a crash of this process; `sync` makes it
/// survive a power loss). Used by recordings.
pub struct FileWriter {
    file: glommio::io::BufferedFile,
    pos: u64,
    pending: Vec<u8>,
}

impl FileWriter {
    /// Create `path` (and its parent directories); fails if it exists.
    pub async fn create_new(path: &std::path::Path) -> io::Result<FileWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(FileWriter {
            file,
            pos: 0,
            pending: Vec::with_capacity(256 * 1024),
        })
    }

    /// Open `path` for appending, creating it (and its parent directories) if needed.
    /// The file is opened with O_APPEND, so every write lands at the end even when
    /// several shards append to the same file: lines written whole never interleave.
    pub async fn open_append(path: &std::path::Path) -> io::Result<FileWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .append(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(io::Error::from)?;
        let pos = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(FileWriter {
            file,
            pos,
            pending: Vec::with_capacity(64 * 1024),
        })
    }

    /// Queue bytes; they reach the file at the next `flush`.
    pub fn append(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes written to the file so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = std::mem::replace(&mut self.pending, Vec::with_capacity(256 * 1024));
        let len = buf.len();
        let n = self
            .file
            .write_at(buf, self.pos)
            .await
            .map_err(io::Error::from)?;
        self.pos += n as u64;
        if n < len {
            // A regular file only writes short when the disk is full.
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("short write: {n} of {len} bytes"),
            ));
        }
        Ok(())
    }

    pub async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(io::Error::from)
    }

    /// Flush, sync and close.
    pub async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        self.sync().await?;
        self.file.close().await.map_err(io::Error::from)
    }
}

/// At most this many buffers per writev (Linux IOV_MAX is 1024).
const MAX_IOV: usize = 64;

fn writev_nonblocking(fd: RawFd, bufs: &[bytes::Bytes]) -> io::Result<usize> {
    // On the stack: one write per viewer per wake-up must not allocate.
    let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
    let n = bufs.len().min(MAX_IOV);
    for (slot, b) in iov.iter_mut().zip(bufs) {
        *slot = io::IoSlice::new(b);
    }
    // sendmsg, not writev: the same vectored write, without the VFS layer writev goes
    // through for a socket (vfs_writev + fdget_pos were 7% of the server's profile at
    // 1,000 viewers; docs/runtime.md). MSG_DONTWAIT keeps it non-blocking even on an fd
    // that is not O_NONBLOCK; MSG_NOSIGNAL turns a closed peer into EPIPE, not SIGPIPE.
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    match nix::sys::socket::sendmsg::<()>(fd, &iov[..n], &[], flags, None) {
        Ok(n) => Ok(n),
        Err(errno) => Err(io::Error::from_raw_os_error(errno as i32)),
    }
}

fn consume(bufs: &mut Vec<bytes::Bytes>, mut n: usize) {
    let mut done = 0;
    for b in bufs.iter_mut() {
        if n >= b.len() {
            n -= b.len();
            done += 1;
        } else {
            bytes::Buf::advance(b, n);
            break;
        }
    }
    bufs.drain(..done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_partial_writes() {
        let mut bufs = vec![
            bytes::Bytes::from_static(b"abc"),
            bytes::Bytes::from_static(b"de"),
            bytes::Bytes::from_static(b"f"),
        ];
        consume(&mut bufs, 4);
        assert_eq!(
            bufs,
            vec![
                bytes::Bytes::from_static(b"e"),
                bytes::Bytes::from_static(b"f")
            ]
        );
        consume(&mut bufs, 2);
        assert!(bufs.is_empty());
    }
}

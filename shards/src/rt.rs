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
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::task::JoinHandle;
pub use glommio::timer::Timer;

/// Async I/O traits the runtime's sockets implement, and racing two futures.
pub mod aio {
    pub use futures_lite::future::or;
    pub use futures_lite::{AsyncReadExt, AsyncWriteExt};
}

/// The task queues of the current shard.
#[derive(Clone, Copy, Debug)]
pub struct Queues {
    pub media: TaskQueueHandle,
    pub control: TaskQueueHandle,
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
            // Sleeping costs a ~25-30 µs wake-up (DESIGN.md); a short spin avoids some of
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

/// The first timer on a glommio 0.9 executor can fire 30-50 ms late (DESIGN.md); take
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

/// Spawn a task whose result can be awaited (or that is cancelled when the handle drops).
pub fn spawn_task<F, T>(q: Queue, fut: F) -> glommio::Task<T>
where
    F: Future<Output = T> + 'static,
    T: 'static,
{
    match queue(q) {
        Some(tq) => {
            glommio::spawn_local_into(fut, tq).expect("queues are created at executor start")
        }
        None => glommio::spawn_local(fut),
    }
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

/// Index of the executor running this code.
pub fn executor_id() -> usize {
    glommio::executor().id()
}

/// SPSC channel between two executors: create both ends anywhere, move each to its
/// executor, then `connect` there.
pub mod channel {
    pub use glommio::channels::shared_channel::{
        new_bounded, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
    };

    /// Send without waiting; a full or closed channel gives the message back.
    pub fn try_send<M: Send>(tx: &ConnectedSender<M>, msg: M) -> Result<(), M> {
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)))
            | Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))) => Err(m),
            Err(other) => unreachable!("try_send only fails with WouldBlock or Closed: {other}"),
        }
    }
}

/// Bind a TCP listener with SO_REUSEPORT (glommio always sets it), so every shard binds
/// the same port and the kernel spreads connections over shards.
pub fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(io::Error::from)
}

/// Read what the socket has without waiting: `Ok(None)` when nothing is there, `Ok(Some(0))`
/// at end of stream. For viewers, which only need to drain the little their player
/// sends (acks, pings) now and then: a pending read per viewer per frame costs an
/// io_uring poll set-up and cancel each time.
pub fn try_read(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match nix::sys::socket::recv(
        stream.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(n) => Ok(Some(n)),
        Err(nix::errno::Errno::EAGAIN) => Ok(None),
        Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Make a socket non-blocking. glommio 0.9 leaves accepted sockets blocking (it passes
/// MSG_DONTWAIT on its own calls), so a raw `writev` on a full socket would park the
/// whole shard in the kernel until the peer reads: every socket shardcast accepts or
/// adopts goes through here first.
pub fn set_nonblocking(stream: &TcpStream) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = stream.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(())
}

/// Set SO_SNDBUF on a socket (the kernel doubles it for bookkeeping).
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    // SAFETY: the fd belongs to `stream`, which outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &bytes)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Detach a socket from this executor so another shard can adopt it with
/// [`adopt_stream`]: the fd is duplicated and this executor's handle closed.
pub fn release_stream(stream: TcpStream) -> io::Result<std::os::fd::OwnedFd> {
    let fd =
        nix::unistd::dup(stream.as_raw_fd()).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    drop(stream);
    // SAFETY: dup just returned this fd to us; nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Adopt a socket released by another shard; must run on the adopting shard.
pub fn adopt_stream(fd: std::os::fd::OwnedFd) -> io::Result<TcpStream> {
    // SAFETY: `fd` is an owned, open TCP socket (from `release_stream`); ownership
    // moves into the stream, which closes it.
    let stream: TcpStream =
        unsafe { std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    set_nonblocking(&stream)?;
    Ok(stream)
}

/// Write as much of `bufs` as the socket takes now, without waiting: one `writev` per
/// call for everything pending (glommio has no vectored write). Returns the bytes
/// written; what is left stays in `bufs` (the socket is full).
pub fn try_write_vectored(stream: &TcpStream, bufs: &mut Vec<bytes::Bytes>) -> io::Result<usize> {
    let fd = stream.as_raw_fd();
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

/// Write all of `bufs` to `stream`: `writev` while the socket takes it, and when it is
/// full, an async write that waits for it to drain through io_uring.
pub async fn write_all_vectored(
    stream: &mut TcpStream,
    bufs: &mut Vec<bytes::Bytes>,
) -> io::Result<usize> {
    use futures_lite::AsyncWriteExt;
    let mut written_total = try_write_vectored(stream, bufs)?;
    while !bufs.is_empty() {
        // Full socket: glommio's write waits for POLLOUT through io_uring.
        let n = stream.write(&bufs[0]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written_total += n;
        consume(bufs, n);
        written_total += try_write_vectored(stream, bufs)?;
    }
    Ok(written_total)
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
    // On the stack: one writev per viewer per wake-up must not allocate.
    let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
    let n = bufs.len().min(MAX_IOV);
    for (slot, b) in iov.iter_mut().zip(bufs) {
        *slot = io::IoSlice::new(b);
    }
    // SAFETY: the fd belongs to the TcpStream the caller holds for the whole call, so it
    // stays open for this one writev. glommio has no vectored write, and one writev per
    // wake-up instead of one write per frame is the fan-out's main syscall saving
    // (DESIGN.md "Writes").
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match nix::sys::uio::writev(borrowed, &iov[..n]) {
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

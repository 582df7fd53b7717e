//! The healthy side of an attack test: viewers that must lose no frame, a `/healthz`
//! probe that must answer within 1 s, and small tools for the attacking side (sockets
//! from other loopback addresses, the server's descriptor count).
//!
//! The viewer checks are the ones `tests/stall.rs` uses (it keeps its own copy).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proto::rtmp::MediaKind;

use super::{flv_tags_in, metric_sum, metric_sum_where, parse_response, Media, RtmpClient, Server};

/// The harness's publisher runs at 25 fps.
pub const FPS: f64 = 25.0;

/// What a healthy viewer saw: its media, and the longest wall-clock wait for bytes.
pub struct Seen {
    pub what: String,
    pub media: Vec<Media>,
    pub max_wall_gap: Duration,
    pub window: Duration,
}

impl Seen {
    /// Every frame: video timestamps never jump more than 500 ms, no 500 ms without
    /// bytes, the count matches the publish rate over the window, and none is missing
    /// inside the span received.
    pub fn assert_every_frame(&self, log: &dyn Fn() -> String) {
        // AVC sequence headers (packet type 0) are not frames.
        let video: Vec<u32> = self
            .media
            .iter()
            .filter(|m| m.kind == MediaKind::Video && m.body.get(1) != Some(&0))
            .map(|m| m.timestamp_ms)
            .collect();
        let worst = video
            .windows(2)
            .map(|w| w[1].wrapping_sub(w[0]))
            .max()
            .unwrap_or(u32::MAX);
        let expected = FPS * (self.window.as_secs_f64() - 1.5);
        let diag = || {
            format!(
                "{}: {} video frames (expected ≥ {expected:.0}), worst timestamp step {worst} ms, \
                 longest wait for bytes {:?}\nserver log:\n{}",
                self.what,
                video.len(),
                self.max_wall_gap,
                log()
            )
        };
        assert!(video.len() >= 2, "{}", diag());
        assert!(worst <= 500, "timestamp gap: {}", diag());
        assert!(
            self.max_wall_gap <= Duration::from_millis(500),
            "no bytes for a while: {}",
            diag()
        );
        assert!(
            video.len() as f64 >= expected * 0.9,
            "frames missing: {}",
            diag()
        );
        let span_frames = (video[video.len() - 1] - video[0]) as f64 / 1000.0 * FPS + 1.0;
        assert!(
            (video.len() as f64 - span_frames).abs() <= 2.0,
            "frames missing inside the timestamp span ({span_frames:.0} expected): {}",
            diag()
        );
    }
}

/// Read for `window`; returns the bytes and the longest wait between reads.
fn read_for(sock: &mut TcpStream, window: Duration) -> (Vec<u8>, Duration) {
    let deadline = Instant::now() + window;
    let (mut raw, mut buf) = (Vec::new(), vec![0u8; 65536]);
    let (mut last, mut max_gap) = (None::<Instant>, Duration::ZERO);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let now = Instant::now();
                if let Some(l) = last {
                    max_gap = max_gap.max(now - l);
                }
                last = Some(now);
                raw.extend_from_slice(&buf[..n]);
            }
        }
    }
    if let Some(l) = last {
        max_gap = max_gap.max(Instant::now() - l);
    }
    (raw, max_gap)
}

/// An HTTP-FLV viewer reading `path` for `window` on its own thread.
pub fn watch_flv(server: &Server, path: &str, window: Duration) -> JoinHandle<Seen> {
    let addr = server.http_addr();
    let what = format!("HTTP-FLV viewer of {path}");
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        write!(sock, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (raw, max_wall_gap) = read_for(&mut sock, window);
        let (status, head, body) = parse_response(&raw);
        assert_eq!(status, 200, "{what}: {head}");
        Seen {
            what,
            media: flv_tags_in(&body),
            max_wall_gap,
            window,
        }
    })
}

/// An RTMP viewer (the harness's client) of `app/name` for `window`.
pub fn watch_rtmp(server: &Server, app: &str, name: &str, window: Duration) -> JoinHandle<Seen> {
    let port = server.rtmp_port;
    let (app, name) = (app.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        let deadline = Instant::now() + window;
        let mut c = RtmpClient::player(port, &app, &name);
        c.expect_status("NetStream.Play.Start");
        let (mut last, mut max_gap, mut seen) = (Instant::now(), Duration::ZERO, c.media.len());
        while Instant::now() < deadline && !c.closed {
            c.pump(Duration::from_millis(20));
            let now = Instant::now();
            if c.media.len() > seen {
                seen = c.media.len();
                last = now;
            }
            max_gap = max_gap.max(now - last);
        }
        let what = format!("RTMP viewer of {app}/{name}");
        let media = std::mem::take(&mut c.media);
        c.stop();
        Seen {
            what,
            media,
            max_wall_gap: max_gap,
            window,
        }
    })
}

/// How the `/healthz` probe connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A new connection per probe: the accept path is part of what is measured.
    Fresh,
    /// One kept-alive connection (for tests that fill the global connection limit).
    KeepAlive,
}

/// `/healthz` every 250 ms for `window`: the probes, and the failures (slow or not 200)
/// with their times.
pub fn probe_health(
    addr: SocketAddr,
    window: Duration,
    how: Probe,
) -> JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut probes, mut bad) = (0, Vec::new());
        let mut kept: Option<KeepAlive> = None;
        while start.elapsed() < window {
            let t = Instant::now();
            let ok: std::io::Result<bool> = match how {
                Probe::Fresh => (|| {
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                    s.set_read_timeout(Some(Duration::from_secs(1)))?;
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
                    let mut raw = Vec::new();
                    s.read_to_end(&mut raw)?;
                    Ok(raw.starts_with(b"HTTP/1.1 200"))
                })(),
                Probe::KeepAlive => (|| {
                    if kept.is_none() {
                        kept = Some(KeepAlive::connect(addr)?);
                    }
                    let c = kept.as_mut().expect("just connected");
                    let r = c.get("/healthz").map(|(status, _)| status == 200);
                    if r.is_err() {
                        kept = None;
                    }
                    r
                })(),
            };
            let took = t.elapsed();
            probes += 1;
            if !matches!(ok, Ok(true)) || took > Duration::from_secs(1) {
                bad.push(format!("at {:?}: {ok:?} after {took:?}", t - start));
            }
            std::thread::sleep(Duration::from_millis(250).saturating_sub(took));
        }
        (probes, bad)
    })
}

/// The healthy clients of one stream: an RTMP viewer, an HTTP-FLV viewer and the
/// `/healthz` probe, for `window`.
pub struct Healthy {
    viewers: Vec<JoinHandle<Seen>>,
    health: JoinHandle<(usize, Vec<String>)>,
}

impl Healthy {
    /// `key` is `app/stream`, already being published.
    pub fn start(server: &Server, key: &str, window: Duration, how: Probe) -> Healthy {
        let (app, name) = key.split_once('/').expect("key is app/stream");
        Healthy {
            viewers: vec![
                watch_rtmp(server, app, name, window),
                watch_flv(server, &format!("/{key}.flv"), window),
            ],
            health: probe_health(server.http_addr(), window, how),
        }
    }

    /// Wait for the window to end; every frame arrived and every probe was answered.
    pub fn assert_unharmed(self, server: &Server) {
        for v in self.viewers {
            v.join().unwrap().assert_every_frame(&|| server.log());
        }
        let (n, bad) = self.health.join().unwrap();
        assert!(
            bad.is_empty() && n >= 8,
            "/healthz: {} of {n} probes slow (> 1 s) or failed: {bad:#?}\nserver log:\n{}",
            bad.len(),
            server.log()
        );
    }
}

/// A kept-alive HTTP/1.1 connection (responses with Content-Length only).
pub struct KeepAlive {
    sock: TcpStream,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(KeepAlive { sock })
    }

    /// GET `path`: (status, body).
    pub fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        write!(self.sock, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        let (head_end, length) = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| std::io::Error::other(format!("no Content-Length: {head}")))?;
                break (at + 4, length);
            }
            let n = self.sock.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&buf[..n]);
        };
        while raw.len() < head_end + length {
            let n = self.sock.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let (status, _, _) = parse_response(&raw[..head_end + length]);
        Ok((status, raw[head_end..head_end + length].to_vec()))
    }

    /// `/metrics` over this connection.
    pub fn metrics(&mut self) -> String {
        let (status, body) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    pub fn metric(&mut self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    pub fn metric_where(&mut self, name: &str, label: &str) -> f64 {
        metric_sum_where(&self.metrics(), name, label)
    }
}

/// A TCP connection to `dst` from the loopback address `src` (127.0.0.0/8 is all
/// loopback on Linux), so a test can be several clients.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 loopback only")
    };
    let err = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0))).map_err(err)?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst)).map_err(err)?;
    Ok(TcpStream::from(fd))
}

/// What became of a connection the server may have refused or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still open: nothing to read, no end of stream.
    Open,
    /// The server closed it (end of stream or reset).
    Closed,
}

/// Look without waiting.
pub fn fate(sock: &TcpStream) -> Fate {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let fate = loop {
        match (&*sock).read(&mut buf) {
            Ok(0) => break Fate::Closed,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Fate::Open,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break Fate::Closed,
        }
    };
    sock.set_nonblocking(false).unwrap();
    fate
}

/// GET /healthz (Connection: close) from `src`: Some(status), or None if the server
/// closed or reset the connection without an answer.
pub fn healthz_from(src: Ipv4Addr, dst: SocketAddr) -> Option<u16> {
    let mut s = connect_from(src, dst).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    (!raw.is_empty()).then(|| parse_response(&raw).0)
}

/// Open descriptors of process `pid`.
pub fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raise this process's soft open-files limit to the hard one (servers started after
/// this inherit it): the tests hold thousands of sockets.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    }
    hard
}

//! Shared harness for the integration tests: runs the real `shardcast` binary on free
//! loopback ports with a temporary config, and real clients (ffmpeg, ffprobe) against it.
//! A missing client fails the test with the Debian package to install; the README's
//! test command installs them, so a skip never hides a failure.
#![allow(dead_code)]

pub mod healthy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on, never handed out twice in this test process (a second
/// server on a port the first holds would fail to start).
pub fn free_port() -> u16 {
    static USED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut used = USED.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// Panics naming the Debian package when a client is missing.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("'{tool}' is not installed: apt-get install {package} (the README's test command does this)"))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Server {
    child: Option<Child>,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Start with 2 shards and `extra` TOML appended to a minimal config.
    pub fn start(name: &str, extra: &str) -> Server {
        Self::start_with_cores(name, "0-1", extra)
    }

    pub fn start_with_cores(name: &str, cores: &str, extra: &str) -> Server {
        let dir = temp_dir(name);
        let rtmp_port = free_port();
        let http_port = free_port();
        let config = dir.join("shardcast.toml");
        std::fs::write(&config, extra).unwrap();
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .arg("--config")
            .arg(&config)
            .args(["--cores", cores, "--bind", "127.0.0.1"])
            .args([
                "--rtmp-port",
                &rtmp_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .env(
                "RUST_LOG",
                std::env::var("SHARDCAST_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(&dir)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start shardcast");
        let mut server = Server {
            child: Some(child),
            rtmp_port,
            http_port,
            dir,
            log,
        };
        server.wait_port(rtmp_port);
        server.wait_port(http_port);
        server
    }

    fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "shardcast exited at start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "shardcast did not listen on port {port} within 20 s; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn rtmp_url(&self, path: &str) -> String {
        format!(
            "rtmp://127.0.0.1:{}/{}",
            self.rtmp_port,
            path.trim_start_matches('/')
        )
    }

    pub fn http_url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.http_port,
            path.trim_start_matches('/')
        )
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port))
    }

    /// A complete HTTP/1.1 GET (Connection: close): (status, head, body).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        http_request(self.http_addr(), "GET", path, &[])
    }

    pub fn post(&self, path: &str) -> (u16, String, Vec<u8>) {
        http_request(self.http_addr(), "POST", path, &[])
    }

    /// The sum of a metric over shards (and over label sets).
    pub fn metric(&self, name: &str) -> f64 {
        metric_sum(&String::from_utf8_lossy(&self.get("/metrics").2), name)
    }

    /// Per-shard values of a metric with a `shard` label.
    pub fn metric_by_shard(&self, name: &str) -> Vec<f64> {
        let text = String::from_utf8_lossy(&self.get("/metrics").2).into_owned();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{shard=")))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    }

    /// Send SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "shardcast did not exit within 15 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- shardcast log ({}) ---\n{}",
                    self.log.display(),
                    self.log()
                );
            }
        }
    }
}

fn nix_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Split a raw response; de-chunks a chunked body.
pub fn parse_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            out.extend_from_slice(&b[..size.min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn ffmpeg() -> Command {
    let mut c = Command::new(require("ffmpeg", "ffmpeg"));
    c.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    c
}

pub fn ffprobe() -> Command {
    Command::new(require("ffprobe", "ffmpeg"))
}

/// ffmpeg publishing a lavfi test pattern + tone over RTMP, paced in real time,
/// H.264 (keyframe every `gop` frames at 25 fps) + AAC.
pub fn publish_testsrc(url: &str, seconds: u32, gop: u32) -> Child {
    ffmpeg()
        .args(["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            &gop.to_string(),
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

/// Wait until `cond` holds, polling; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Decode `url` with ffmpeg for `seconds` (`-f null`): returns (frames decoded, stderr).
pub fn decode(url: &str, seconds: u32) -> (u64, String, Output) {
    let out = ffmpeg()
        .args([
            "-loglevel",
            "error",
            "-stats_period",
            "0.5",
            "-progress",
            "pipe:1",
            "-rw_timeout",
            "10000000",
        ])
        .args(["-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run ffmpeg");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (frames, stderr, out)
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

// ---- A blocking RTMP client over our sans-IO client core -------------------------------

use proto::rtmp::{
    ClientMode, MediaKind, PublishType, RtmpClientConfig, RtmpClientConn, RtmpClientEvent,
};

/// One received media message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    pub timestamp_ms: u32,
    pub body: bytes::Bytes,
}

pub struct RtmpClient {
    sock: TcpStream,
    conn: RtmpClientConn,
    pub statuses: Vec<String>,
    pub media: Vec<Media>,
    pub closed: bool,
}

impl RtmpClient {
    pub fn connect(port: u16, app: &str, mode: ClientMode) -> RtmpClient {
        let sock =
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to the RTMP port");
        sock.set_nodelay(true).unwrap();
        let tc_url = format!("rtmp://127.0.0.1:{port}/{app}");
        let conn = RtmpClientConn::new(RtmpClientConfig::new(&tc_url, app, mode));
        let mut c = RtmpClient {
            sock,
            conn,
            statuses: Vec::new(),
            media: Vec::new(),
            closed: false,
        };
        c.flush();
        c
    }

    pub fn publisher(port: u16, app: &str, name: &str) -> RtmpClient {
        Self::connect(
            port,
            app,
            ClientMode::Publish {
                name: name.into(),
                publish_type: PublishType::Live,
            },
        )
    }

    pub fn player(port: u16, app: &str, name: &str) -> RtmpClient {
        Self::connect(port, app, ClientMode::Play { name: name.into() })
    }

    fn flush(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                RtmpClientEvent::Transmit(b) => {
                    if self.sock.write_all(&b).is_err() {
                        self.closed = true;
                    }
                }
                RtmpClientEvent::Status { code, .. } => self.statuses.push(code),
                RtmpClientEvent::CallFailed { code, .. } => self.statuses.push(code),
                RtmpClientEvent::Connected => self.statuses.push("connected".into()),
                RtmpClientEvent::Media {
                    kind,
                    timestamp_ms,
                    body,
                } => self.media.push(Media {
                    kind,
                    timestamp_ms,
                    body,
                }),
            }
        }
    }

    /// Read for up to `d` (or until the server closes).
    pub fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut buf = vec![0u8; 65536];
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    if let Err(e) = self.conn.handle_bytes(Instant::now(), &buf[..n]) {
                        panic!("RTMP client: bad bytes from the server: {e}");
                    }
                    self.flush();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => self.closed = true,
            }
        }
    }

    /// Pump until `code` arrives; panics after 10 s.
    pub fn expect_status(&mut self, code: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.statuses.iter().any(|s| s == code) {
            assert!(
                Instant::now() < deadline && !self.closed,
                "no {code}; statuses so far: {:?}",
                self.statuses
            );
            self.pump(Duration::from_millis(50));
        }
    }

    pub fn send(&mut self, kind: MediaKind, timestamp_ms: u32, body: &[u8]) {
        self.conn
            .send_media(kind, timestamp_ms, body)
            .expect("publishing");
        self.flush();
    }

    pub fn stop(mut self) {
        self.conn.stop();
        self.flush();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    pub fn raw(&mut self) -> &mut TcpStream {
        &mut self.sock
    }
}

/// The tags of an FLV file as (kind, timestamp, body).
pub fn flv_tags(path: &Path) -> Vec<Media> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    flv_tags_in(&data)
}

/// The complete tags of FLV bytes (a file, or an HTTP-FLV body so far).
pub fn flv_tags_in(data: &[u8]) -> Vec<Media> {
    let mut reader = proto::flv::FlvReader::new();
    reader.push(data);
    let mut out = Vec::new();
    while let Ok(Some(tag)) = reader.poll_tag() {
        let kind = match tag.kind {
            proto::flv::TagKind::Audio => MediaKind::Audio,
            proto::flv::TagKind::Video => MediaKind::Video,
            proto::flv::TagKind::Script => MediaKind::Data,
        };
        out.push(Media {
            kind,
            timestamp_ms: tag.timestamp_ms,
            body: tag.body,
        });
    }
    out
}

// ---- HLS, recording and file helpers (tests/hls.rs, tests/record.rs) -------------------

/// Wait until `key` has a publisher (listed by the API as publishing).
pub fn wait_publishing(server: &Server, key: &str) {
    wait_for(
        &format!("stream {key} to be live"),
        Duration::from_secs(15),
        || {
            let (status, _, body) = server.get(&format!("/api/streams/{key}"));
            status == 200 && String::from_utf8_lossy(&body).contains("\"publishing\": true")
        },
    );
}

/// GET `path`, panicking unless the answer is 200.
pub fn get_ok(server: &Server, path: &str) -> (String, Vec<u8>) {
    let (status, head, body) = server.get(path);
    assert_eq!(status, 200, "GET {path}: {head}");
    (head, body)
}

/// GET and parse a media playlist.
pub fn media_playlist(server: &Server, path: &str) -> proto::hls::playlist::MediaPlaylist {
    let (_, body) = get_ok(server, path);
    let text = String::from_utf8(body)
        .unwrap_or_else(|e| panic!("GET {path}: playlist is not UTF-8: {e}"));
    proto::hls::parse::parse_media_playlist(&text)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{text}"))
}

/// The value of response header `name` (case-insensitive), if present.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A file's container duration in seconds according to ffprobe, and ffprobe's stderr.
pub fn probe_duration(path: &Path) -> (Option<f64>, String) {
    let out = ffprobe()
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let duration = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .ok();
    (duration, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The codec names ffprobe sees in `input` (a file or URL), and its stderr.
pub fn probe_codecs(input: &str) -> (Vec<String>, String) {
    let out = ffprobe()
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(input)
        .output()
        .expect("run ffprobe");
    let codecs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .collect();
    (codecs, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

impl Server {
    /// `kill -9` the server (no shutdown, no flush) and wait until it is gone.
    pub fn kill_hard(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        nix_kill(child.id(), "KILL");
        child.wait().expect("reap the killed server")
    }

    /// The server's log so far, for asserting on what it reported.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }
}

/// The span of a file's video packets in seconds (first pts to last pts + duration),
/// measured from the packets themselves rather than the container's duration field.
pub fn probe_video_span(path: &Path) -> f64 {
    let out = ffprobe()
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let (mut first, mut end) = (f64::MAX, f64::MIN);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split(',').map(|f| f.trim().parse::<f64>().ok());
        if let (Some(Some(pts)), duration) = (fields.next(), fields.next().flatten()) {
            first = first.min(pts);
            end = end.max(pts + duration.unwrap_or(0.0));
        }
    }
    assert!(
        first <= end,
        "no video packets in {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    end - first
}

/// Stop a client process (a publisher that outlived its use) and reap it.
pub fn end_process(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A decode with no error lines from the decoder and at least `min_frames` frames.
pub fn assert_clean_decode(what: &str, frames: u64, min_frames: u64, stderr: &str) {
    assert!(
        stderr.trim().is_empty(),
        "{what}: decoder errors:\n{stderr}"
    );
    assert!(
        frames >= min_frames,
        "{what}: decoded {frames} frames, expected at least {min_frames}"
    );
}

/// The sum of a metric over the label sets whose labels contain `label` (e.g.
/// `reason="stalled"`), over every shard.
pub fn metric_sum_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            l.split_once('{')
                .is_some_and(|(_, rest)| rest.split('}').next().unwrap_or("").contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Server {
    /// [`metric_sum_where`] on this server's `/metrics`.
    pub fn metric_where(&self, name: &str, label: &str) -> f64 {
        metric_sum_where(
            &String::from_utf8_lossy(&self.get("/metrics").2),
            name,
            label,
        )
    }
}

/// A TCP connection to `addr` whose receive buffer is set to `rcvbuf` bytes before the
/// handshake (so the advertised window stays small): a viewer that can stop reading.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 loopback only")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &rcvbuf).expect("SO_RCVBUF");
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect");
    TcpStream::from(fd)
}

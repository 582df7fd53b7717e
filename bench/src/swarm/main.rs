//! swarm: one process that publishes a real stream over RTMP and plays it back with
//! thousands of RTMP and HTTP-FLV viewers, then reports what each viewer got.
//!
//! One thread, one epoll set, non-blocking sockets: a viewer is its socket, its protocol
//! state (`viewer`) and its counts (`ledger::Tally`); there is no task, stack or read
//! buffer per viewer (all reads go through one shared buffer), so one core drives
//! thousands of viewers and the tool stays cheaper per viewer than the servers it
//! measures. Run it pinned to its own core (`taskset -c 1`).
//!
//! Phases: the publisher connects and publishes for `--warmup` (so a GOP is cached),
//! viewers join at `--ramp` per second, one settling second, then the measured window
//! of `--duration` (server CPU is sampled at both ends), then the publisher stops and
//! the viewers get `--grace` to receive the last frames before the counts are taken.
//! Every phase has a deadline: the tool always stops by itself.

mod args;
mod idle;
mod ledger;
mod publisher;
mod report;
mod viewer;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
use proto::rtmp::{ClientMode, PublishType, RtmpClientConfig, RtmpClientConn, RtmpClientEvent};

use args::Args;
use ledger::{Histograms, Ledger};
use publisher::{rtmp_kind, FlvSource, Schedule};
use report::{ProcessStats, ProtocolStats};
use viewer::{Protocol, Target, Viewer};

/// Reads per readiness event before serving other sockets (level-triggered epoll
/// brings us back for the rest).
const READS_PER_EVENT: usize = 4;
const READ_BUF: usize = 256 << 10;
/// How long the publisher may take to get `NetStream.Publish.Start`.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// After the ramp, before the window: lets the last joiners get their first GOP.
const SETTLE: Duration = Duration::from_secs(1);
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
enum SwarmError {
    Io(&'static str, io::Error),
    Source(publisher::SourceError),
    Publisher(String),
}

impl std::fmt::Display for SwarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwarmError::Io(what, e) => write!(f, "{what}: {e}"),
            SwarmError::Source(e) => write!(f, "{e}"),
            SwarmError::Publisher(e) => write!(f, "publisher: {e}"),
        }
    }
}

fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    raise_open_files();
    match run(&args) {
        Ok(line) => {
            eprint!("{}", report::human(&line));
            println!("{line}");
        }
        Err(e) => {
            eprintln!("swarm: {e}");
            std::process::exit(1);
        }
    }
}

/// Thousands of viewers need thousands of descriptors; the soft limit is often 1024.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

enum Role {
    Publisher {
        client: Box<RtmpClientConn>,
        source: Option<FlvSource>,
        schedule: Option<Schedule>,
    },
    Viewer {
        viewer: Box<Viewer>,
        played: bool,
    },
}

struct Conn {
    stream: Option<TcpStream>,
    connecting: bool,
    /// EPOLLOUT is in the interest set (only while connecting or output is pending).
    want_write: bool,
    out: VecDeque<Bytes>,
    role: Role,
    /// Set when the socket closed before the end: EOF, reset or a protocol error.
    ended: Option<String>,
}

impl Conn {
    fn queue_output(&mut self) {
        match &mut self.role {
            Role::Publisher { client, .. } => {
                while let Some(ev) = client.poll_event() {
                    if let RtmpClientEvent::Transmit(b) = ev {
                        self.out.push_back(b);
                    }
                }
            }
            Role::Viewer { viewer, .. } => {
                while let Some(b) = viewer.poll_transmit() {
                    self.out.push_back(b);
                }
            }
        }
    }

    /// Writes what is pending, vectored; `Ok(true)` when all of it went out.
    fn flush(&mut self) -> io::Result<bool> {
        let Some(stream) = &mut self.stream else {
            return Ok(true);
        };
        while !self.out.is_empty() {
            let slices: Vec<IoSlice> = self.out.iter().take(64).map(|b| IoSlice::new(b)).collect();
            match stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while n > 0 {
                        let front = self.out.front_mut().expect("wrote no more than was queued");
                        if n >= front.len() {
                            n -= front.len();
                            self.out.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

struct Swarm {
    epoll: Epoll,
    conns: Vec<Conn>,
    ledger: Ledger,
    hist: BTreeMap<Protocol, Histograms>,
    read_buf: Vec<u8>,
    publishing_since: Option<Instant>,
    /// False once the window is over: the publisher stops sending.
    publishing: bool,
}

/// A non-blocking TCP connect; completion shows up as EPOLLOUT.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Swarm {
    fn add(&mut self, addr: SocketAddr, role: Role) -> Result<usize, String> {
        let token = self.conns.len();
        let mut conn = Conn {
            stream: None,
            connecting: true,
            want_write: true,
            out: VecDeque::new(),
            role,
            ended: None,
        };
        conn.queue_output();
        match connect(addr) {
            Ok(stream) => {
                let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, token as u64);
                if let Err(e) = self.epoll.add(&stream, ev) {
                    conn.ended = Some(format!("epoll add: {e}"));
                } else {
                    conn.stream = Some(stream);
                }
            }
            Err(e) => conn.ended = Some(format!("connect {addr}: {e}")),
        }
        let err = conn.ended.clone();
        self.conns.push(conn);
        match err {
            Some(e) => Err(e),
            None => Ok(token),
        }
    }

    fn close(&mut self, token: usize, why: String) {
        let conn = &mut self.conns[token];
        if let Some(stream) = conn.stream.take() {
            let _ = self.epoll.delete(&stream);
        }
        if conn.ended.is_none() {
            conn.ended = Some(why);
        }
    }

    /// Flushes a connection and sets its EPOLLOUT interest to match what is left.
    fn flush(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if conn.connecting || conn.stream.is_none() {
            return;
        }
        match conn.flush() {
            Ok(done) => {
                if done == conn.want_write {
                    conn.want_write = !done;
                    let mut flags = EpollFlags::EPOLLIN;
                    if !done {
                        flags |= EpollFlags::EPOLLOUT;
                    }
                    let mut ev = EpollEvent::new(flags, token as u64);
                    let stream = conn.stream.as_ref().expect("checked above");
                    if let Err(e) = self.epoll.modify(stream, &mut ev) {
                        self.close(token, format!("epoll modify: {e}"));
                    }
                }
            }
            Err(e) => self.close(token, format!("write: {e}")),
        }
    }

    fn on_event(&mut self, token: usize, flags: EpollFlags, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let Some(stream) = &mut conn.stream else {
            return;
        };
        if conn.connecting {
            if !flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                return;
            }
            match stream.take_error() {
                Ok(None) if !flags.contains(EpollFlags::EPOLLERR) => conn.connecting = false,
                Ok(Some(e)) | Err(e) => return self.close(token, format!("connect: {e}")),
                Ok(None) => return self.close(token, "connect: socket error".into()),
            }
            self.flush(token);
            return;
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(token);
        }
        if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            return;
        }
        for _ in 0..READS_PER_EVENT {
            let conn = &mut self.conns[token];
            let Some(stream) = &mut conn.stream else {
                return;
            };
            let n = match stream.read(&mut self.read_buf) {
                Ok(0) => return self.close(token, "closed by the server".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(token, format!("read: {e}")),
            };
            let bytes = &self.read_buf[..n];
            let result = match &mut conn.role {
                Role::Viewer { viewer, played } => {
                    let hist = self.hist.entry(viewer.protocol).or_default();
                    let r = viewer
                        .handle_bytes(now, bytes, &self.ledger, hist)
                        .map_err(|e| e.to_string());
                    *played |= viewer.is_playing();
                    r
                }
                Role::Publisher {
                    client,
                    source,
                    schedule,
                } => {
                    let r = client.handle_bytes(now, bytes).map_err(|e| e.to_string());
                    if client.is_publishing() && schedule.is_none() {
                        if let Some(src) = source.take() {
                            *schedule = Some(Schedule::new(src, now));
                            self.publishing_since = Some(now);
                        }
                    }
                    r
                }
            };
            conn.queue_output();
            if let Err(e) = result {
                self.flush(token);
                return self.close(token, e);
            }
            if n < self.read_buf.len() {
                break;
            }
        }
        self.flush(token);
    }

    /// Sends the publisher's due tags.
    fn publish_due(&mut self, token: usize, now: Instant) -> Result<(), SwarmError> {
        if !self.publishing {
            return Ok(());
        }
        let conn = &mut self.conns[token];
        if let Some(why) = &conn.ended {
            return Err(SwarmError::Publisher(why.clone()));
        }
        let Role::Publisher {
            client,
            schedule: Some(schedule),
            ..
        } = &mut conn.role
        else {
            return Ok(());
        };
        let mut sent = false;
        while let Some((tag, ts)) = schedule.poll_due(now) {
            client
                .send_media(rtmp_kind(tag.kind), ts, &tag.body)
                .map_err(|e| SwarmError::Publisher(e.to_string()))?;
            if tag.media {
                self.ledger.record(tag.kind, ts, tag.body.len(), now);
            }
            sent = true;
        }
        if sent {
            conn.queue_output();
            self.flush(token);
        }
        Ok(())
    }

    fn next_publish_due(&self, token: usize) -> Option<Instant> {
        match &self.conns[token].role {
            Role::Publisher {
                schedule: Some(s), ..
            } if self.publishing => Some(s.next_due()),
            _ => None,
        }
    }

    fn poll(&mut self, events: &mut [EpollEvent], until: Instant) -> Result<(), SwarmError> {
        let now = Instant::now();
        let wait_ms = until
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000);
        let n = match self
            .epoll
            .wait(events, u16::try_from(wait_ms).unwrap_or(u16::MAX))
        {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(SwarmError::Io("epoll_wait", e.into())),
        };
        let now = Instant::now();
        for ev in &events[..n] {
            self.on_event(ev.data() as usize, ev.events(), now);
        }
        Ok(())
    }
}

fn sum_cpu(pids: &[String]) -> Option<f64> {
    pids.iter().map(|p| report::cpu_seconds(p)).sum()
}

fn sum_rss(pids: &[String]) -> u64 {
    pids.iter()
        .filter_map(|p| report::memory_kib(p))
        .map(|(rss, _)| rss)
        .sum()
}

fn run(args: &Args) -> Result<serde_json::Value, SwarmError> {
    let source = FlvSource::load(&args.flv).map_err(SwarmError::Source)?;
    eprintln!(
        "swarm: publishing {} ({} ms per loop)",
        args.flv.display(),
        source.loop_ms()
    );
    let mut swarm = Swarm {
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| SwarmError::Io("epoll_create", e.into()))?,
        conns: Vec::new(),
        ledger: Ledger::default(),
        hist: BTreeMap::new(),
        read_buf: vec![0; READ_BUF],
        publishing_since: None,
        publishing: true,
    };
    let pids: Vec<String> = args.server_pids.iter().map(u32::to_string).collect();
    let idle_thread = (args.idle_rtmp + args.idle_http > 0).then(|| {
        let (ra, ha, app, r, h) = (
            args.rtmp,
            args.http,
            args.app.clone(),
            args.idle_rtmp,
            args.idle_http,
        );
        std::thread::spawn(move || idle::open(ra, &app, r, ha, h))
    });
    let mut events = vec![EpollEvent::empty(); 1024];

    let tc_url = format!("rtmp://{}/{}", args.rtmp, args.app);
    let publish = RtmpClientConfig::new(
        &tc_url,
        &args.app,
        ClientMode::Publish {
            name: args.stream.clone(),
            publish_type: PublishType::Live,
        },
    );
    let pub_token = swarm
        .add(
            args.rtmp,
            Role::Publisher {
                client: Box::new(RtmpClientConn::new(publish)),
                source: Some(source),
                schedule: None,
            },
        )
        .map_err(SwarmError::Publisher)?;

    let started = Instant::now();
    let mut rss_peak = 0u64;
    let mut next_rss = started;
    let mut sample_rss = |now: Instant, next: &mut Instant| {
        if now >= *next {
            rss_peak = rss_peak.max(sum_rss(&pids));
            *next = now + RSS_SAMPLE_EVERY;
        }
    };

    // 1. publish until a GOP is cached
    let warm_until = loop {
        let now = Instant::now();
        if let Some(since) = swarm.publishing_since {
            if now >= since + args.warmup {
                break now;
            }
        } else if now > started + PUBLISH_DEADLINE {
            let why = swarm.conns[pub_token]
                .ended
                .clone()
                .unwrap_or_else(|| "no NetStream.Publish.Start".into());
            return Err(SwarmError::Publisher(format!(
                "not publishing after {PUBLISH_DEADLINE:?}: {why}"
            )));
        }
        swarm.publish_due(pub_token, now)?;
        let until = swarm
            .next_publish_due(pub_token)
            .unwrap_or(now + Duration::from_millis(10))
            .min(now + Duration::from_millis(10));
        swarm.poll(&mut events, until)?;
        sample_rss(Instant::now(), &mut next_rss);
    };

    // 2. ramp: viewers join at the configured rate, protocols interleaved
    let mut plan: Vec<Protocol> = Vec::with_capacity(args.rtmp_viewers + args.flv_viewers);
    let (mut r, mut f) = (args.rtmp_viewers, args.flv_viewers);
    while r + f > 0 {
        if r > 0 {
            plan.push(Protocol::Rtmp);
            r -= 1;
        }
        if f > 0 {
            plan.push(Protocol::HttpFlv);
            f -= 1;
        }
    }
    let rtmp_target = Target {
        authority: args.rtmp.to_string(),
        app: args.app.clone(),
        stream: args.stream.clone(),
    };
    let http_target = Target {
        authority: args.http.to_string(),
        ..rtmp_target.clone()
    };
    let mut viewers: Vec<(Protocol, usize)> = Vec::with_capacity(plan.len());
    let mut spawned = 0usize;
    while spawned < plan.len() {
        let now = Instant::now();
        let due = ((now - warm_until).as_secs_f64() * args.ramp_per_s as f64) as usize + 1;
        while spawned < due.min(plan.len()) {
            let protocol = plan[spawned];
            let (addr, target) = match protocol {
                Protocol::Rtmp => (args.rtmp, &rtmp_target),
                Protocol::HttpFlv => (args.http, &http_target),
            };
            let viewer = Box::new(Viewer::new(protocol, target, Instant::now()));
            let role = Role::Viewer {
                viewer,
                played: false,
            };
            match swarm.add(addr, role) {
                Ok(token) => viewers.push((protocol, token)),
                // counted from `ended` at the end, with the other errors
                Err(_) => viewers.push((protocol, swarm.conns.len() - 1)),
            }
            spawned += 1;
        }
        swarm.publish_due(pub_token, now)?;
        let until = swarm
            .next_publish_due(pub_token)
            .unwrap_or(now + Duration::from_millis(5))
            .min(now + Duration::from_millis(5));
        swarm.poll(&mut events, until)?;
        sample_rss(Instant::now(), &mut next_rss);
    }

    // idle connections are all open before the window (their RSS is in it)
    let idle_conns =
        idle_thread.map(|h| h.join().expect("the idle-connection thread does not panic"));
    // 3. settle, then 4. the measured window
    let mut procs = ProcessStats::default();
    let mut phase_end = Instant::now() + SETTLE;
    let mut window_start = None;
    let (mut cpu0, mut self0) = (None, 0.0);
    loop {
        let now = Instant::now();
        if now >= phase_end {
            if window_start.is_some() {
                break;
            }
            window_start = Some(now);
            cpu0 = sum_cpu(&pids);
            self0 = report::cpu_seconds("self").unwrap_or(0.0);
            procs.server_rss_window_start_kib = sum_rss(&pids);
            phase_end = now + args.duration;
            eprintln!("swarm: window start");
        }
        swarm.publish_due(pub_token, now)?;
        let until = swarm
            .next_publish_due(pub_token)
            .unwrap_or(phase_end)
            .min(phase_end)
            .min(next_rss);
        swarm.poll(&mut events, until)?;
        sample_rss(Instant::now(), &mut next_rss);
    }
    let window_end = Instant::now();
    procs.window = window_end - window_start.expect("the loop sets it before it can end");
    procs.server_cpu_s = cpu0.zip(sum_cpu(&pids)).map(|(a, b)| b - a);
    procs.swarm_cpu_s = report::cpu_seconds("self").unwrap_or(0.0) - self0;
    procs.swarm_rss_kib = report::memory_kib("self").map_or(0, |(rss, _)| rss);
    eprintln!("swarm: window end");

    // 4b. optional hold: the same load, outside the window (for strace/perf by the caller)
    if !args.hold.is_zero() {
        let hold_end = window_end + args.hold;
        loop {
            let now = Instant::now();
            if now >= hold_end {
                break;
            }
            swarm.publish_due(pub_token, now)?;
            let until = swarm
                .next_publish_due(pub_token)
                .unwrap_or(hold_end)
                .min(hold_end)
                .min(next_rss);
            swarm.poll(&mut events, until)?;
            sample_rss(Instant::now(), &mut next_rss);
        }
        eprintln!("swarm: hold end");
    }

    // 5. the publisher stops; the last frames drain
    swarm.publishing = false;
    let grace_end = window_end + args.grace;
    while Instant::now() < grace_end {
        swarm.poll(&mut events, grace_end)?;
        sample_rss(Instant::now(), &mut next_rss);
    }
    procs.server_rss_peak_kib = rss_peak.max(sum_rss(&pids));

    let mut stats: BTreeMap<Protocol, ProtocolStats> = BTreeMap::new();
    for (protocol, token) in viewers {
        let s = stats.entry(protocol).or_default();
        let conn = &swarm.conns[token];
        if let Role::Viewer { viewer, played } = &conn.role {
            let connected = conn.stream.is_some() || !conn.connecting;
            s.add(&viewer.tally, &swarm.ledger, connected, *played);
        }
        if let Some(why) = &conn.ended {
            if conn.connecting || why != "closed by the server" {
                s.error(why.clone());
            } else {
                s.disconnects += 1;
            }
        }
    }
    for (protocol, h) in std::mem::take(&mut swarm.hist) {
        stats.entry(protocol).or_default().hist = h;
    }
    let label = if args.label.is_empty() {
        "swarm"
    } else {
        &args.label
    };
    let mut line = report::json_line(label, &swarm.ledger, &stats, &procs);
    if let Some((open, failed, first)) = &idle_conns {
        line["idle"] = serde_json::json!({
            "rtmp_requested": args.idle_rtmp, "http_requested": args.idle_http,
            "open": open.len(), "failed": failed, "first_error": first,
        });
    }
    Ok(line)
}

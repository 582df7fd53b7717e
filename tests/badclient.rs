//! Bad clients against one shard (issue 14): connection floods past the per-IP, rate
//! and global limits, slowloris HTTP, thousands of silent RTMP sockets, and a second
//! server on the same ports. Each runs beside a healthy ffmpeg publisher, an RTMP and
//! an HTTP-FLV viewer that must lose no frame, and a `/healthz` probe that must answer
//! within 1 s; the attack's connections must be refused or closed within their limit,
//! and the server's descriptors return to where they were.
//!
//! The healthy clients connect from 127.0.0.1, which each config allows; attackers use
//! other loopback addresses (127.0.0.0/8 is all loopback), one per simulated client.
//! The tests take a lock so they never share the CPU with each other.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::healthy::*;
use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const REFUSED: &str = "shardcast_connections_refused_total";
const TIMEOUTS: &str = "shardcast_connection_timeouts_total";
const OPEN: &str = "shardcast_open_connections";
const TRACKED: &str = "shardcast_admission_tracked_ips";

fn reason(r: &str) -> String {
    format!("reason=\"{r}\"")
}

fn attacker(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// One shard, `limits` under `[limits]`, with 127.0.0.1 (the healthy side) allowed.
fn start(name: &str, limits: &str) -> Server {
    Server::start_with_cores(
        name,
        "0",
        &format!("[limits]\nallow = [\"127.0.0.1\"]\n{limits}"),
    )
}

/// The server with a live publisher on `live/ok`, and its descriptor count then.
fn with_publisher(server: &Server, seconds: u32) -> (Child, usize) {
    let publisher = publish_testsrc(&server.rtmp_url("live/ok"), seconds, 25);
    wait_publishing(server, "live/ok");
    std::thread::sleep(Duration::from_millis(500));
    (publisher, fds_of(server.pid()))
}

/// The server's descriptors come back to `baseline` (the healthy viewers have left).
fn assert_fds_back(server: &Server, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = fds_of(server.pid());
    while now > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = fds_of(server.pid());
    }
    eprintln!(
        "server fds {now} (baseline {baseline}), RSS {} KiB",
        rss_kib(server.pid())
    );
    assert!(
        now <= baseline,
        "server holds {now} descriptors, {baseline} before the attack\nserver log:\n{}",
        server.log()
    );
}

/// Wait until `name{label}` reaches `want` (counters settle a moment after the client
/// sees the close).
fn wait_metric(server: &Server, name: &str, label: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = server.metric_where(name, label);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn per_ip_limit_refuses_the_65th_connection_and_no_one_else() {
    let _serial = serial();
    // Long phase timeouts: the held connections must stay open for the whole test.
    let server = start(
        "bad-per-ip",
        "max_connections_per_ip = 64\naccept_rate_per_ip = 0\n\
         rtmp_handshake_timeout_ms = 60000\nhttp_head_timeout_ms = 60000\n",
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(8), Probe::Fresh);
    let rtmp = SocketAddr::from((Ipv4Addr::LOCALHOST, server.rtmp_port));
    let http = server.http_addr();

    // 64 connections from one IP over both ports: all held.
    let a = attacker(2);
    let held: Vec<TcpStream> = (0..64)
        .map(|i| connect_from(a, if i % 2 == 0 { rtmp } else { http }).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = held.iter().filter(|s| fate(s) == Fate::Open).count();
    assert_eq!(open, 64, "the first 64 connections of {a} must be accepted");
    // The 65th, on either port, is reset at once.
    for dst in [rtmp, http] {
        let extra = connect_from(a, dst).unwrap();
        let t = Instant::now();
        while fate(&extra) == Fate::Open && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            fate(&extra),
            Fate::Closed,
            "connection 65 of {a} to {dst} was kept"
        );
        eprintln!(
            "connection 65 of {a} to port {} closed after {:?}",
            dst.port(),
            t.elapsed()
        );
    }
    assert_eq!(wait_metric(&server, REFUSED, &reason("ip_limit"), 2.0), 2.0);
    // Another IP, and the allowed one past 64, are served.
    assert_eq!(healthz_from(attacker(3), http), Some(200));
    let allowed: Vec<TcpStream> = (0..80)
        .map(|_| connect_from(Ipv4Addr::LOCALHOST, rtmp).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(allowed.iter().all(|s| fate(s) == Fate::Open));
    assert_eq!(server.metric_where(REFUSED, &reason("ip_limit")), 2.0);
    // An operator sees the limit bite in the log (rate-limited lines).
    let log = server.log();
    assert!(
        log.contains("connection refused by [limits]") && log.contains("ip_limit"),
        "{log}"
    );
    wait_for(
        "only the attacker to be tracked",
        Duration::from_secs(3),
        || server.metric(TRACKED) == 1.0,
    );
    drop(allowed);

    // Its connections closed, the IP is forgotten and may connect again.
    drop(held);
    wait_for(
        "the attacker's entry to be freed",
        Duration::from_secs(3),
        || server.metric(TRACKED) == 0.0,
    );
    assert_eq!(healthz_from(a, http), Some(200));
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

#[test]
fn accept_rate_limit_lets_a_burst_through_then_the_rate() {
    let _serial = serial();
    let server = start(
        "bad-rate",
        "accept_rate_per_ip = 5\naccept_burst_per_ip = 10\n",
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(7), Probe::Fresh);
    let http = server.http_addr();

    // 40 requests, one connection each, as fast as they go.
    let a = attacker(4);
    let t = Instant::now();
    let answers: Vec<Option<u16>> = (0..40).map(|_| healthz_from(a, http)).collect();
    let took = t.elapsed();
    let served = answers.iter().filter(|s| **s == Some(200)).count();
    let refused = answers.iter().filter(|s| s.is_none()).count();
    eprintln!("rate limit: {served} of 40 served in {took:?}, {refused} refused");
    assert_eq!(served + refused, 40, "answers: {answers:?}");
    // The burst, plus what the rate refilled while the flood ran.
    let most = 10 + (5.0 * took.as_secs_f64()).ceil() as usize;
    assert!(
        (10..=most).contains(&served),
        "{served} served in {took:?}; expected 10 (the burst) to {most}"
    );
    assert_eq!(
        wait_metric(&server, REFUSED, &reason("rate_limit"), refused as f64),
        refused as f64
    );
    // Others are not limited by it.
    let b: Vec<_> = (0..10).map(|_| healthz_from(attacker(5), http)).collect();
    assert!(b.iter().all(|s| *s == Some(200)), "another IP: {b:?}");
    // The bucket refills: 2 s at 5/s is 10 tokens.
    std::thread::sleep(Duration::from_secs(2));
    let again: Vec<_> = (0..8).map(|_| healthz_from(a, http)).collect();
    assert!(
        again.iter().all(|s| *s == Some(200)),
        "after a pause: {again:?}"
    );
    // Buckets full again (≤ 2 s at 5/s), the entries are freed.
    wait_for("rate entries to be freed", Duration::from_secs(5), || {
        server.metric(TRACKED) == 0.0
    });
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

#[test]
fn global_limit_refuses_everyone_beyond_it_and_recovers() {
    let _serial = serial();
    const LIMIT: usize = 30;
    let server = start(
        "bad-global",
        &format!(
            "max_connections = {LIMIT}\naccept_rate_per_ip = 0\nhttp_head_timeout_ms = 60000\n"
        ),
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    // At the limit no new connection gets in, so the probe and the scrapes keep theirs.
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(7), Probe::KeepAlive);
    let mut scrape = KeepAlive::connect(server.http_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let open_before = scrape.metric(OPEN) as usize;
    eprintln!("open before the attack: {open_before} (publisher, 2 viewers, probe, scrape)");

    let a = attacker(7);
    let conns: Vec<TcpStream> = (0..50)
        .map(|_| connect_from(a, server.http_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let kept = conns.iter().filter(|s| fate(s) == Fate::Open).count();
    assert_eq!(
        kept,
        LIMIT - open_before,
        "connections admitted up to the limit"
    );
    assert_eq!(scrape.metric(OPEN) as usize, LIMIT);
    assert_eq!(
        scrape.metric_where(REFUSED, &reason("global_limit")) as usize,
        50 - kept
    );
    // The limit holds for allowed IPs too.
    assert_eq!(healthz_from(Ipv4Addr::LOCALHOST, server.http_addr()), None);
    // Room again once some close.
    drop(conns);
    wait_for("connections to close", Duration::from_secs(3), || {
        scrape.metric(OPEN) as usize == open_before
    });
    assert_eq!(
        healthz_from(Ipv4Addr::LOCALHOST, server.http_addr()),
        Some(200)
    );
    assert_eq!(healthz_from(a, server.http_addr()), Some(200));
    drop(scrape);
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

#[test]
fn slowloris_heads_are_cut_off_at_the_head_timeout() {
    let _serial = serial();
    const HEAD: Duration = Duration::from_secs(3);
    const CONNS: usize = 1000;
    // Admission off: this is about the head timeout alone.
    let server = start(
        "bad-slowloris",
        "max_connections_per_ip = 0\naccept_rate_per_ip = 0\nhttp_head_timeout_ms = 3000\n",
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(8), Probe::Fresh);

    // 1,000 connections from 4 IPs, each sending one byte of a request head every 2 s.
    let wire = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    struct Slow {
        sock: TcpStream,
        opened: Instant,
        sent: usize,
        last: Instant,
        reply: Vec<u8>,
        closed: Option<Duration>,
    }
    let mut slow: Vec<Slow> = (0..CONNS)
        .map(|i| {
            let sock = connect_from(attacker(10 + (i % 4) as u8), server.http_addr()).unwrap();
            let opened = Instant::now();
            Slow {
                sock,
                opened,
                sent: 0,
                last: opened - Duration::from_secs(2),
                reply: Vec::new(),
                closed: None,
            }
        })
        .collect();
    let started = Instant::now();
    while slow.iter().any(|s| s.closed.is_none())
        && started.elapsed() < HEAD * 2 + Duration::from_secs(2)
    {
        for s in slow.iter_mut().filter(|s| s.closed.is_none()) {
            if s.last.elapsed() >= Duration::from_secs(2) && s.sent < wire.len() {
                let _ = s.sock.write(&wire[s.sent..s.sent + 1]);
                s.sent += 1;
                s.last = Instant::now();
            }
            s.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            loop {
                match std::io::Read::read(&mut s.sock, &mut buf) {
                    Ok(0) => {
                        s.closed = Some(s.opened.elapsed());
                        break;
                    }
                    Ok(n) => s.reply.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.closed = Some(s.opened.elapsed());
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed: Vec<Duration> = slow.iter().filter_map(|s| s.closed).collect();
    let (first, last) = (
        closed.iter().min().copied().unwrap_or_default(),
        closed.iter().max().copied().unwrap_or_default(),
    );
    eprintln!(
        "slowloris: {} of {CONNS} closed, {:?} to {:?} after connecting",
        closed.len(),
        first,
        last
    );
    assert_eq!(
        closed.len(),
        CONNS,
        "slow heads still open after {:?}",
        started.elapsed()
    );
    assert!(
        first >= HEAD - Duration::from_millis(100) && last <= HEAD + Duration::from_millis(1500),
        "closed {first:?} to {last:?} after connecting; the head timeout is {HEAD:?}"
    );
    let answered = slow
        .iter()
        .filter(|s| s.reply.starts_with(b"HTTP/1.1 408"))
        .count();
    assert_eq!(answered, CONNS, "every trickled head gets 408");
    assert_eq!(
        wait_metric(&server, TIMEOUTS, &reason("http_head"), CONNS as f64),
        CONNS as f64
    );
    drop(slow);
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

#[test]
fn two_thousand_silent_rtmp_sockets_close_at_the_handshake_timeout() {
    let _serial = serial();
    const HANDSHAKE: Duration = Duration::from_secs(3);
    const CONNS: usize = 2000;
    let nofile = raise_open_files();
    assert!(
        nofile >= 2 * CONNS as u64 + 200,
        "ulimit -Hn is {nofile}; the test needs {}",
        2 * CONNS + 200
    );
    let server = start(
        "bad-idle-rtmp",
        "max_connections_per_ip = 0\naccept_rate_per_ip = 0\nrtmp_handshake_timeout_ms = 3000\n",
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    let rss_before = rss_kib(server.pid());
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(9), Probe::Fresh);
    let rtmp = SocketAddr::from((Ipv4Addr::LOCALHOST, server.rtmp_port));

    let t0 = Instant::now();
    let silent: Vec<TcpStream> = (0..CONNS)
        .map(|i| connect_from(attacker(20 + (i % 8) as u8), rtmp).unwrap())
        .collect();
    let connected = t0.elapsed();
    // All accepted and held before the timeout.
    std::thread::sleep(
        (t0 + Duration::from_millis(2000)).saturating_duration_since(Instant::now()),
    );
    let open_mid = server.metric(OPEN);
    let still = silent.iter().filter(|s| fate(s) == Fate::Open).count();
    eprintln!(
        "{CONNS} silent RTMP sockets connected in {connected:?}; at {:?}: {still} open, \
         server says {open_mid} open, RSS {} KiB (before {rss_before})",
        t0.elapsed(),
        rss_kib(server.pid())
    );
    assert_eq!(still, CONNS, "closed before the handshake timeout");
    assert!(open_mid >= CONNS as f64, "server counts {open_mid} open");
    // All closed by the timeout after the last connect, with slack.
    let deadline = t0 + connected + HANDSHAKE + Duration::from_secs(2);
    let mut open = CONNS;
    while Instant::now() < deadline {
        open = silent.iter().filter(|s| fate(s) == Fate::Open).count();
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "all silent sockets closed {:?} after the first connect",
        t0.elapsed()
    );
    assert_eq!(
        open, 0,
        "{open} silent RTMP sockets outlived the handshake timeout"
    );
    assert_eq!(
        wait_metric(&server, TIMEOUTS, &reason("rtmp_handshake"), CONNS as f64),
        CONNS as f64
    );
    drop(silent);
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

/// Start a second shardcast on `rtmp`/`http`: it must exit non-zero within 10 s; its
/// stderr.
fn second_instance(dir: &std::path::Path, bind: &str, rtmp: u16, http: u16) -> String {
    let config = dir.join("second.toml");
    // Beyond loopback publishing needs a key by default; this test is about the port.
    std::fs::write(&config, "[auth]\npublish = false\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .arg("--config")
        .arg(&config)
        .args(["--cores", "0", "--bind", bind])
        .args([
            "--rtmp-port",
            &rtmp.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second shardcast");
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second shardcast on ports {rtmp}/{http} ({bind}) kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "second shardcast exited with {status}:\n{stderr}"
    );
    eprintln!(
        "second instance ({bind}, {rtmp}/{http}) after {:?}: {status}: {}",
        t.elapsed(),
        stderr.trim()
    );
    stderr
}

#[test]
fn a_second_instance_on_the_same_ports_fails_to_start() {
    let _serial = serial();
    let server = start("bad-second", "");
    let (publisher, baseline) = with_publisher(&server, 30);
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(5), Probe::KeepAlive);
    let (rtmp, http) = (server.rtmp_port, server.http_port);

    let err = second_instance(&server.dir, "127.0.0.1", rtmp, http);
    assert!(
        err.contains("address in use") && err.contains(&format!("port {rtmp}")),
        "the error must say 'address in use' and name port {rtmp}: {err}"
    );
    // Only the HTTP port taken, by a wildcard bind: named too.
    let err = second_instance(&server.dir, "0.0.0.0", free_port(), http);
    assert!(
        err.contains("address in use") && err.contains(&format!("port {http}")),
        "{err}"
    );
    // Another program's SO_REUSEPORT listener is found as well.
    let other_port = free_port();
    let other = {
        use nix::sys::socket::*;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        let addr = SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, other_port));
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
        listen(&fd, Backlog::new(16).unwrap()).unwrap();
        fd
    };
    let err = second_instance(&server.dir, "127.0.0.1", free_port(), other_port);
    assert!(
        err.contains("another process listens on port") && err.contains(&other_port.to_string()),
        "{err}"
    );
    drop(other);

    // Every new connection still reaches the first server: 30 requests, 30 accepts
    // (plus the scrape's own).
    let before = server.metric("shardcast_http_connections_total");
    for _ in 0..30 {
        assert_eq!(
            healthz_from(Ipv4Addr::LOCALHOST, server.http_addr()),
            Some(200)
        );
    }
    let after = server.metric("shardcast_http_connections_total");
    assert_eq!(after - before, 31.0, "connections went somewhere else");
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    end_process(publisher);
}

/// An RTMP connection past the handshake that announces a 16 MB message and sends
/// `mib` MiB of it (legal so far), then holds.
fn partial_message_holder(port: u16, mib: usize) -> TcpStream {
    use std::io::Read;
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut c0c1 = vec![0u8; 1 + 1536];
    c0c1[0] = 3;
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut s0s1s2).expect("S0+S1+S2");
    s.write_all(&s0s1s2[1..1 + 1536]).unwrap();
    // Set Chunk Size 65536, then a type-0 header for a 16 MB video message on csid 6.
    let mut wire = proto::rtmp::serialize_message(2, 1, 0, 0, &65536u32.to_be_bytes(), 128)
        .unwrap()
        .to_vec();
    wire.extend_from_slice(&[0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
    wire.extend_from_slice(&vec![0x17; 65536]);
    for _ in 1..mib * 16 {
        wire.push(0xC6);
        wire.extend_from_slice(&vec![0x17; 65536]);
    }
    s.write_all(&wire).unwrap();
    s
}

/// Many connections each under their own cap add up: past the shard's input budget
/// the ones holding the most are closed, the healthy publisher (one frame in flight)
/// keeps going, and the memory comes back when they are gone.
#[test]
fn partial_messages_are_capped_shard_wide_and_their_memory_returned() {
    let _serial = serial();
    let server = start(
        "bad-input-budget",
        "max_buffered_input_bytes_per_shard = 67108864\nrtmp_handshake_timeout_ms = 60000\n",
    );
    let (publisher, baseline) = with_publisher(&server, 30);
    let rss_before = rss_kib(server.pid());
    let healthy = Healthy::start(&server, "live/ok", Duration::from_secs(8), Probe::Fresh);
    // 12 connections x 8 MiB = 96 MiB against a 64 MiB budget.
    let holders: Vec<TcpStream> = (0..12)
        .map(|_| partial_message_holder(server.rtmp_port, 8))
        .collect();
    wait_for("the budget to evict", Duration::from_secs(10), || {
        server.metric("shardcast_input_budget_evictions_total") >= 4.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let evicted = server.metric("shardcast_input_budget_evictions_total");
    let open = holders.iter().filter(|s| fate(s) == Fate::Open).count();
    let rss_peak = rss_kib(server.pid());
    eprintln!("input budget: {evicted} evicted, {open} of 12 holders open, RSS {rss_before} -> {rss_peak} KiB");
    assert!(
        (4.0..=5.0).contains(&evicted),
        "64 MiB holds 7 or 8 of the 8 MiB holders (the healthy publisher holds little): {evicted} evicted"
    );
    assert_eq!(open, 12 - evicted as usize);
    assert!(
        rss_peak < rss_before + 80 * 1024,
        "RSS {rss_peak} KiB: the budget did not bound memory (before: {rss_before})"
    );
    drop(holders);
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    // The holders' buffers are freed with them and their pages go back to the kernel
    // (shards::preflight fixes malloc's mmap threshold, so they are never heap pages).
    // (Within 16 MiB: the 60 MiB the holders took must come back; the rest is the
    // allocator's and the healthy clients' noise on a busy machine.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rss_after = rss_kib(server.pid());
    while rss_after >= rss_before + 16 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_kib(server.pid());
    }
    eprintln!("RSS after the holders left: {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_after} KiB after the holders left, {rss_before} before"
    );
    end_process(publisher);
}

/// 20,000 connections opened and closed at once on each port, from 4 client IPs with
/// no per-IP limits (every connection gets as far as a task): the healthy clients do
/// not notice, and every descriptor is back afterwards.
#[test]
fn a_connection_flood_on_each_port_harms_nobody() {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let _serial = serial();
    let server = start(
        "bad-flood",
        "max_connections_per_ip = 0\naccept_rate_per_ip = 0\n",
    );
    raise_open_files();
    let (publisher, baseline) = with_publisher(&server, 30);
    // The probe keeps its connection: a flood from the same host fills the kernel's
    // accept queue, where a new connection's SYN can wait a retransmit (1 s) whatever
    // the server does; what must hold is that the shard keeps answering.
    let healthy = Healthy::start(
        &server,
        "live/ok",
        Duration::from_secs(10),
        Probe::KeepAlive,
    );
    let rtmp = SocketAddr::from((Ipv4Addr::LOCALHOST, server.rtmp_port));
    let http = server.http_addr();
    let t = Instant::now();
    let floods: Vec<_> = (0..8u8)
        .map(|i| {
            let dst = if i % 2 == 0 { rtmp } else { http };
            std::thread::spawn(move || {
                let mut connected = 0;
                for _ in 0..5000 {
                    // RST on close: no TIME_WAIT on our side, so ports are not exhausted.
                    if let Ok(s) = connect_from(attacker(20 + i / 2), dst) {
                        let _ = setsockopt(
                            &s,
                            Linger,
                            &nix::libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            },
                        );
                        connected += 1;
                    }
                }
                connected
            })
        })
        .collect();
    let connected: usize = floods.into_iter().map(|f| f.join().unwrap()).sum();
    let took = t.elapsed();
    eprintln!(
        "flood: {connected} of 40000 connections in {took:?} ({:.0}/s)",
        connected as f64 / took.as_secs_f64()
    );
    assert!(connected >= 39_000, "only {connected} of 40000 connected");
    healthy.assert_unharmed(&server);
    assert_fds_back(&server, baseline);
    assert!(!server.log().contains("panicked"));
    end_process(publisher);
}

//! Access control with real clients (issue 15): signed tokens for publish and play on
//! RTMP (ffmpeg, our RTMP client for the exact status codes), HTTP-FLV, HLS and LL-HLS
//! (hls.js in headless Chromium), webhooks served by a Python `http.server`, the API's
//! bearer token, and the audit log of every decision.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const K1: &str = "k1-secret-for-tests-0123456789abcdef";
const K0: &str = "k0-older-secret-0123456789abcdef";

/// Secret files (mode 600) in their own directory, and the `[auth]` TOML naming them.
fn keys(name: &str, ids: &[(&str, &str)]) -> (PathBuf, String) {
    let dir = temp_dir(&format!("{name}-keys"));
    let mut toml = String::new();
    for (id, secret) in ids {
        let path = dir.join(format!("{id}.secret"));
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        toml.push_str(&format!(
            "[[auth.keys]]\nid = \"{id}\"\nsecret_file = \"{}\"\n",
            path.display()
        ));
    }
    (dir, toml)
}

/// `shardcast token ...` with `config`: the token it prints.
fn mint(config: &Path, stream: &str, action: &str, ttl: u64, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .arg("token")
        .args([
            "--stream",
            stream,
            "--action",
            action,
            "--ttl",
            &ttl.to_string(),
        ])
        .args(extra)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shardcast token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("v1."), "{token}");
    token
}

/// A config file for `shardcast token` alone (the keys of a server's config).
fn token_config(dir: &Path, keys_toml: &str) -> PathBuf {
    let p = dir.join("mint.toml");
    std::fs::write(&p, format!("[auth]\npublish = true\n{keys_toml}")).unwrap();
    p
}

/// The audit log's lines, parsed.
fn audit(server: &Server) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(server.dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
        .collect()
}

fn wait_audit(
    server: &Server,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut found = None;
    wait_for(
        &format!("audit line: {what}"),
        Duration::from_secs(10),
        || {
            found = audit(server).into_iter().find(|l| pred(l));
            found.is_some()
        },
    );
    found.unwrap()
}

fn refused_with(server: &Server, stream: &str, reason: &str) -> serde_json::Value {
    wait_audit(server, &format!("{stream} refused for {reason}"), |l| {
        l["event"] == "refused" && l["stream"] == stream && l["reason"] == reason
    })
}

/// `shardcast_access_denied_total` for one reason, summed over shards.
fn denied(server: &Server, reason: &str) -> f64 {
    let text = String::from_utf8_lossy(&server.get("/metrics").2).into_owned();
    text.lines()
        .filter(|l| l.starts_with("shardcast_access_denied_total{"))
        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// ffmpeg publishing for `seconds`; returns (exit ok, stderr) once it ends.
fn ffmpeg_publish(url: &str, seconds: u32) -> (bool, String) {
    let child = publish_testsrc(url, seconds, 25);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Our RTMP client's answer to a publish of `name` (may carry `?token=`).
fn publish_status(server: &Server, name: &str) -> Vec<String> {
    let mut c = RtmpClient::publisher(server.rtmp_port, "live", name);
    c.pump(Duration::from_millis(1500));
    c.statuses.clone()
}

fn end(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn publishing_needs_a_valid_token_and_each_bad_one_is_refused_with_its_reason() {
    let (kdir, keys_toml) = keys("auth-publish", &[("k1", K1), ("k0", K0)]);
    let server = Server::start(
        "auth-publish",
        &format!("[auth]\npublish = true\n{keys_toml}[audit]\nfile = \"audit.log\"\n"),
    );
    let mint_cfg = token_config(&kdir, &keys_toml);

    // No token: ffmpeg gives up, our client sees the code, the audit says why.
    let (ok, stderr) = ffmpeg_publish(&server.rtmp_url("live/cam"), 2);
    assert!(!ok, "ffmpeg published without a token");
    assert!(
        stderr.contains("token"),
        "ffmpeg's error names the token: {stderr}"
    );
    let st = publish_status(&server, "cam");
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Unauthorized"),
        "{st:?}"
    );
    refused_with(&server, "live/cam", "missing");

    // A token from `shardcast token`: it publishes, and viewers get the stream.
    let token = mint(&mint_cfg, "live/cam", "publish", 60, &[]);
    let publisher = publish_testsrc(&server.rtmp_url(&format!("live/cam?token={token}")), 30, 25);
    wait_publishing(&server, "live/cam");
    let (frames, err, _) = decode(&server.http_url("live/cam.flv"), 2);
    assert!(
        frames > 10,
        "HTTP-FLV of the tokened publish: {frames} frames; {err}"
    );
    let allowed = wait_audit(&server, "publish allowed", |l| {
        l["event"] == "publish" && l["stream"] == "live/cam" && l["outcome"] == "allowed"
    });
    assert_eq!(allowed["key_id"], "k1");
    assert_eq!(allowed["protocol"], "rtmp");
    assert!(allowed["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    end(publisher);

    // A token for another stream.
    let other = mint(&mint_cfg, "live/other", "publish", 60, &[]);
    let st = publish_status(&server, &format!("cam2?token={other}"));
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Unauthorized"),
        "{st:?}"
    );
    refused_with(&server, "live/cam2", "wrong_stream");

    // A play token does not publish.
    let play = mint(&mint_cfg, "live/cam2", "play", 60, &[]);
    publish_status(&server, &format!("cam2?token={play}"));
    refused_with(&server, "live/cam2", "wrong_action");

    // Expired: ttl 1, used 2 s later.
    let short = mint(&mint_cfg, "live/cam3", "publish", 1, &[]);
    std::thread::sleep(Duration::from_millis(2100));
    publish_status(&server, &format!("cam3?token={short}"));
    refused_with(&server, "live/cam3", "expired");

    // Tampered: one character of the signature changed.
    let good = mint(&mint_cfg, "live/cam4", "publish", 60, &[]);
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    publish_status(&server, &format!("cam4?token={bad}"));
    refused_with(&server, "live/cam4", "bad_signature");

    // Signed by a key the server does not have.
    let (k9dir, k9_toml) = keys(
        "auth-publish-k9",
        &[("k9", "k9-unknown-secret-0123456789abcdef")],
    );
    let unknown = mint(
        &token_config(&k9dir, &k9_toml),
        "live/cam5",
        "publish",
        60,
        &[],
    );
    publish_status(&server, &format!("cam5?token={unknown}"));
    refused_with(&server, "live/cam5", "unknown_key");

    // Bound to another client address.
    let bound = mint(
        &mint_cfg,
        "live/cam6",
        "publish",
        60,
        &["--ip", "127.0.0.2"],
    );
    publish_status(&server, &format!("cam6?token={bound}"));
    refused_with(&server, "live/cam6", "wrong_ip");
    let here = mint(
        &mint_cfg,
        "live/cam6",
        "publish",
        60,
        &["--ip", "127.0.0.1"],
    );
    let st = publish_status(&server, &format!("cam6?token={here}"));
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Start"),
        "IP-bound token: {st:?}"
    );

    // Rotation: the older key (second in the list) still signs valid tokens, and a
    // token in the tcUrl (connect) works like one after the stream name.
    let rotated = mint(&mint_cfg, "live/rot", "publish", 60, &["--key-id", "k0"]);
    let publisher = ffmpeg()
        .args([
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "30",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-f",
            "flv",
        ])
        .args([
            "-rtmp_tcurl",
            &format!("rtmp://127.0.0.1:{}/live?token={rotated}", server.rtmp_port),
        ])
        .arg(server.rtmp_url("live/rot"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_publishing(&server, "live/rot");
    let line = wait_audit(&server, "rotated key", |l| {
        l["event"] == "publish" && l["stream"] == "live/rot"
    });
    assert_eq!(line["key_id"], "k0");
    end(publisher);

    // A bad token in the tcUrl is refused at connect.
    let mut c = RtmpClient::connect(
        server.rtmp_port,
        &format!("live?token={bad}"),
        proto::rtmp::ClientMode::Publish {
            name: "x".into(),
            publish_type: proto::rtmp::PublishType::Live,
        },
    );
    c.pump(Duration::from_millis(1500));
    assert!(
        c.statuses
            .iter()
            .any(|s| s == "NetConnection.Connect.Rejected"),
        "{:?}",
        c.statuses
    );
    wait_audit(&server, "connect refused", |l| {
        l["event"] == "refused" && l["action"] == "connect" && l["reason"] == "bad_signature"
    });

    // The README's shell one-liner mints a token the server accepts.
    let script = format!(
        "secret={K1}\nscope=$(printf %s 'live/shell' | basenc --base64url | tr -d '=')\n\
         head=\"v1.k1.$(( $(date +%s) + 3600 )).publish.$scope\"\n\
         echo \"$head.$(printf %s \"$head\" | openssl dgst -sha256 -hmac \"$secret\" -binary | basenc --base64url | tr -d '=')\"\n"
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let shell_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let st = publish_status(&server, &format!("shell?token={shell_token}"));
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Start"),
        "shell token: {st:?}"
    );

    for reason in [
        "missing",
        "wrong_stream",
        "wrong_action",
        "expired",
        "bad_signature",
        "unknown_key",
        "wrong_ip",
    ] {
        assert!(
            denied(&server, reason) >= 1.0,
            "shardcast_access_denied_total{{reason=\"{reason}\"}}"
        );
    }
    // Refusals are logged with their reason (and rate-limited).
    let log = server.log();
    assert!(
        log.contains("publish refused") && log.contains("expired"),
        "{log}"
    );
    server.stop();
}

#[test]
fn a_secret_file_readable_by_everyone_is_refused() {
    let (dir, keys_toml) = keys("auth-mode", &[("k1", K1)]);
    std::fs::set_permissions(
        dir.join("k1.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args([
            "token", "--stream", "live/x", "--action", "publish", "--ttl", "60", "--config",
        ])
        .arg(token_config(&dir, &keys_toml))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("readable by every user") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(
        !err.contains(K1),
        "the secret leaked into the message: {err}"
    );
}

#[test]
fn playing_needs_a_token_on_rtmp_http_flv_and_hls() {
    let (kdir, keys_toml) = keys("auth-play", &[("k1", K1)]);
    let server = Server::start(
        "auth-play",
        &format!(
            "[auth]\npublish = false\nplay = true\n{keys_toml}[audit]\nfile = \"audit.log\"\n\
             [hls]\nsegment_ms = 1000\npart_ms = 200\nblocking_timeout_ms = 3000\n"
        ),
    );
    let mint_cfg = token_config(&kdir, &keys_toml);
    let publisher = publish_testsrc(&server.rtmp_url("live/cam"), 60, 25);
    wait_publishing(&server, "live/cam");
    let token = mint(&mint_cfg, "live/cam", "play", 300, &[]);
    let app_token = mint(&mint_cfg, "live/*", "play", 300, &[]);

    // RTMP.
    let mut c = RtmpClient::player(server.rtmp_port, "live", "cam");
    c.expect_status("NetStream.Play.Unauthorized");
    let (frames, err, _) = decode(&server.rtmp_url(&format!("live/cam?token={token}")), 2);
    assert!(frames > 10, "RTMP play with a token: {frames}; {err}");

    // HTTP-FLV: 401 without, 403 with a bad one, plays with a stream or app token.
    let (status, head, _) = server.get("/live/cam.flv");
    assert_eq!(status, 401, "{head}");
    assert!(header(&head, "www-authenticate").is_some(), "{head}");
    let (status, _, body) = server.get("/live/cam.flv?token=v1.k1.1.play.x.y");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    for t in [&token, &app_token] {
        let (frames, err, _) = decode(&server.http_url(&format!("live/cam.flv?token={t}")), 2);
        assert!(frames > 10, "HTTP-FLV with a token: {frames}; {err}");
    }

    // HLS: every request needs it, and playlists carry it into every URI.
    wait_for("LL-HLS playlist", Duration::from_secs(15), || {
        server.get(&format!("/live/cam/ll.m3u8?token={token}")).0 == 200
    });
    assert_eq!(server.get("/live/cam/index.m3u8").0, 401);
    for path in [
        "/live/cam/index.m3u8",
        "/live/cam/ll.m3u8",
        "/live/cam.m3u8",
        "/live/cam/ts.m3u8",
    ] {
        let (_, body) = get_ok(&server, &format!("{path}?token={token}"));
        let text = String::from_utf8(body).unwrap();
        let mut uris = 0;
        for line in text.lines() {
            if !line.starts_with('#') && !line.is_empty() {
                assert!(line.contains(&format!("token={token}")), "{path}: {line}");
                uris += 1;
            }
            if let Some(at) = line.find("URI=\"") {
                let uri = &line[at + 5..];
                let uri = &uri[..uri.find('"').unwrap()];
                assert!(uri.contains(&format!("token={token}")), "{path}: {line}");
                uris += 1;
            }
        }
        assert!(uris > 0, "{path} lists no URI: {text}");
    }
    // A segment without the token: 401; with it, the bytes.
    let (_, body) = get_ok(&server, &format!("/live/cam/ll.m3u8?token={token}"));
    let text = String::from_utf8(body).unwrap();
    let seg = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let seg_path = format!("/live/cam/{seg}");
    assert_eq!(server.get(&seg_path).0, 401, "{seg_path}");
    assert_eq!(
        server.get(&format!("{seg_path}?token={token}")).0,
        200,
        "{seg_path}"
    );

    // hls.js in headless Chromium plays LL-HLS from a tokened multivariant URL, and
    // every request it makes carries the token.
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require("node", "nodejs");
    require("chromium", "chromium");
    let out = Command::new("node")
        .arg(browser_dir.join("play.mjs"))
        .arg(server.http_url(&format!("live/cam/index.m3u8?token={token}")))
        .arg("4")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "play.mjs: {line}: {e}; {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && r["startMs"].is_number(),
        "hls.js never played: {r}"
    );
    assert!(r["advanced"].as_f64().unwrap() > 2.0, "{r}");
    let requests: Vec<&str> = r["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(requests.len() >= 5, "{requests:?}");
    assert!(
        requests
            .iter()
            .any(|u| u.contains("/p/") || u.contains("/s/")),
        "{requests:?}"
    );
    for u in &requests {
        assert!(
            u.contains(&format!("token={token}")),
            "a request without the token: {u}"
        );
    }

    // Audit: plays allowed per protocol, refusals with reasons.
    for protocol in ["rtmp", "http-flv", "hls"] {
        wait_audit(&server, &format!("{protocol} play"), |l| {
            l["event"] == "play" && l["protocol"] == protocol && l["outcome"] == "allowed"
        });
    }
    refused_with(&server, "live/cam", "missing");
    refused_with(&server, "live/cam", "malformed");
    assert!(denied(&server, "missing") >= 3.0);
    end(publisher);
    server.stop();
}

/// A webhook server in Python: answers by the stream in the JSON body, logs every call.
const HOOK_PY: &str = r#"
import http.server, json, sys, time
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log.write(json.dumps({"path": self.path, "body": body}) + "\n")
        stream = body.get("stream", "")
        if stream.endswith("/hang"):
            time.sleep(5)
        if stream.endswith("/denied"):
            code, answer = 403, {"reason": "banned by the test hook"}
        elif stream.endswith("/redir"):
            code, answer = 200, {"stream": "live/redirected"}
        elif stream.endswith("/rec") and self.path == "/on_publish":
            code, answer = 200, {"record": True}
        else:
            code, answer = 200, {}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

struct HookServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl HookServer {
    fn start(dir: &Path) -> HookServer {
        let script = dir.join("hook.py");
        std::fs::write(&script, HOOK_PY).unwrap();
        let port = free_port();
        let log = dir.join("hook-calls.jsonl");
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        wait_for("hook server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        HookServer { child, port, log }
    }

    fn calls(&self) -> Vec<serde_json::Value> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    fn config(&self, fail: &str) -> String {
        let url = |p: &str| format!("http://127.0.0.1:{}/{p}", self.port);
        format!(
            "[hooks.on_publish]\nurl = \"{}\"\ntimeout_ms = 800\nretries = 0\nfail = \"{fail}\"\n\
             [hooks.on_play]\nurl = \"{}\"\ntimeout_ms = 800\nretries = 0\nfail = \"{fail}\"\n\
             [hooks.on_unpublish]\nurl = \"{}\"\n[hooks.on_stop]\nurl = \"{}\"\n\
             [hooks.on_record_done]\nurl = \"{}\"\n[audit]\nfile = \"audit.log\"\n",
            url("on_publish"),
            url("on_play"),
            url("on_unpublish"),
            url("on_stop"),
            url("on_record_done"),
        )
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhooks_allow_deny_redirect_notify_and_time_out_closed_or_open() {
    let dir = temp_dir("auth-hooks-py");
    let hook = HookServer::start(&dir);
    let server = Server::start(
        "auth-hooks",
        &format!("[auth]\npublish = false\n{}", hook.config("closed")),
    );

    // Allowed: publishes; the hook saw the stream, the client IP and the protocol.
    let publisher = publish_testsrc(&server.rtmp_url("live/ok?x=1"), 30, 25);
    wait_publishing(&server, "live/ok");
    let call = hook
        .calls()
        .into_iter()
        .find(|c| c["body"]["stream"] == "live/ok")
        .unwrap();
    assert_eq!(call["path"], "/on_publish");
    assert_eq!(call["body"]["client_ip"], "127.0.0.1");
    assert_eq!(call["body"]["protocol"], "rtmp");
    assert_eq!(call["body"]["query"], "x=1");

    // Denied: the hook's reason reaches the client.
    let st = publish_status(&server, "denied");
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Unauthorized"),
        "{st:?}"
    );
    refused_with(&server, "live/denied", "hook_denied");

    // A hook that hangs: refused at the timeout (fail closed), and meanwhile the shard
    // serves everyone else.
    let t0 = Instant::now();
    let hang = std::thread::spawn({
        let port = server.rtmp_port;
        move || {
            let mut c = RtmpClient::publisher(port, "live", "hang");
            c.pump(Duration::from_millis(3000));
            c.statuses
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(server.get("/healthz").0, 200);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "healthz took {:?} during the hang",
            t.elapsed()
        );
    }
    let (frames, _, _) = decode(&server.http_url("live/ok.flv"), 1);
    assert!(
        frames > 5,
        "a viewer of another stream during the hang: {frames}"
    );
    let st = hang.join().unwrap();
    assert!(
        st.iter().any(|s| s == "NetStream.Publish.Unauthorized"),
        "{st:?}"
    );
    let line = refused_with(&server, "live/hang", "hook_failed");
    assert!(t0.elapsed() < Duration::from_secs(4), "{line}");

    // Redirect: the hook moves live/redir to live/redirected.
    let redir = publish_testsrc(&server.rtmp_url("live/redir"), 30, 25);
    wait_publishing(&server, "live/redirected");
    assert_eq!(server.get("/api/streams/live/redir").0, 404);

    // A hook that switches recording on (it is off in the config): the file is written
    // and on_record_done reports it.
    let rec = publish_testsrc(&server.rtmp_url("live/rec"), 3, 25);
    let out = rec.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut done = None;
    wait_for("on_record_done", Duration::from_secs(20), || {
        done = hook
            .calls()
            .into_iter()
            .find(|c| c["path"] == "/on_record_done" && c["body"]["stream"] == "live/rec");
        done.is_some()
    });
    let done = done.unwrap();
    let path = server.dir.join(done["body"]["path"].as_str().unwrap());
    assert!(done["body"]["bytes"].as_u64().unwrap() > 10_000, "{done}");
    assert!(
        std::fs::metadata(&path).unwrap().len() > 10_000,
        "{}",
        path.display()
    );

    // Play hook and the notifications of ends.
    let (frames, _, _) = decode(&server.http_url("live/ok.flv"), 1);
    assert!(frames > 5);
    end(publisher);
    end(redir);
    wait_for("on_unpublish and on_stop", Duration::from_secs(15), || {
        let calls = hook.calls();
        let seen = |p: &str, s: &str| {
            calls
                .iter()
                .any(|c| c["path"] == p && c["body"]["stream"] == s)
        };
        seen("/on_unpublish", "live/ok")
            && seen("/on_stop", "live/ok")
            && seen("/on_play", "live/ok")
    });
    wait_audit(&server, "hook line", |l| {
        l["event"] == "hook" && l["outcome"] == "denied"
    });
    wait_audit(&server, "unpublish line", |l| {
        l["event"] == "unpublish" && l["stream"] == "live/ok"
    });
    wait_audit(&server, "stop line", |l| {
        l["event"] == "stop" && l["stream"] == "live/ok"
    });
    let text = String::from_utf8_lossy(&server.get("/metrics").2).into_owned();
    assert!(
        text.contains("shardcast_hook_calls_total{shard=\"0\",reason=\"failed\"}"),
        "{text}"
    );
    server.stop();

    // The same hang with fail = "open": allowed after the timeout.
    let open = Server::start(
        "auth-hooks-open",
        &format!("[auth]\npublish = false\n{}", hook.config("open")),
    );
    let hang = publish_testsrc(&open.rtmp_url("live/hang"), 30, 25);
    wait_publishing(&open, "live/hang");
    wait_audit(&open, "failed open", |l| {
        l["event"] == "hook" && l["outcome"] == "failed_open"
    });
    end(hang);
    open.stop();
}

#[test]
fn the_api_needs_a_bearer_token_where_required() {
    let dir = temp_dir("auth-api-token");
    let token_file = dir.join("api.token");
    std::fs::write(&token_file, "api-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Tests listen on loopback only: `api_auth = true` is what binding beyond loopback
    // turns on by default (unit-tested in config::access).
    let server = Server::start(
        "auth-api",
        &format!(
            "[http]\napi_auth = true\napi_token_file = \"{}\"\n[audit]\nfile = \"audit.log\"\n",
            token_file.display()
        ),
    );
    let bearer = [("Authorization", "Bearer api-token-0123456789abcdef")];
    let wrong = [("Authorization", "Bearer api-token-0123456789abcdeX")];
    let addr = server.http_addr();
    assert_eq!(http_request(addr, "GET", "/api/streams", &[]).0, 401);
    assert_eq!(http_request(addr, "GET", "/api/streams", &wrong).0, 401);
    assert_eq!(http_request(addr, "GET", "/api/streams", &bearer).0, 200);
    assert_eq!(
        http_request(addr, "POST", "/api/streams/live/x/kick", &[]).0,
        401
    );
    assert_eq!(http_request(addr, "GET", "/metrics", &[]).0, 401);
    assert_eq!(http_request(addr, "GET", "/metrics", &bearer).0, 200);
    assert_eq!(http_request(addr, "GET", "/healthz", &[]).0, 200);

    // A kick with the token is audited.
    let publisher = publish_testsrc(&server.rtmp_url("live/k"), 30, 25);
    wait_for("live/k", Duration::from_secs(15), || {
        String::from_utf8_lossy(&http_request(addr, "GET", "/api/streams/live/k", &bearer).2)
            .contains("\"publishing\": true")
    });
    assert_eq!(
        http_request(addr, "POST", "/api/streams/live/k/kick", &bearer).0,
        200
    );
    wait_audit(&server, "kick", |l| {
        l["event"] == "kick" && l["stream"] == "live/k"
    });
    wait_audit(&server, "api refusal", |l| {
        l["event"] == "refused" && l["reason"] == "api_token"
    });
    end(publisher);
    server.stop();

    let open_metrics = Server::start(
        "auth-api-metrics",
        &format!(
            "[http]\napi_auth = true\nmetrics_public = true\napi_token_file = \"{}\"\n",
            token_file.display()
        ),
    );
    let addr = open_metrics.http_addr();
    assert_eq!(http_request(addr, "GET", "/metrics", &[]).0, 200);
    assert_eq!(http_request(addr, "GET", "/api/streams", &[]).0, 401);
    open_metrics.stop();
}

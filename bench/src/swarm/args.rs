//! Command-line flags of the swarm (hand-parsed: a dozen flags do not need a parser
//! crate in the load tool).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
swarm: publish one live stream and play it back with many viewers, then report.

  --flv FILE            FLV (H.264/AAC) to publish, replayed in real time and looped
  --rtmp ADDR           RTMP server (default 127.0.0.1:1935)
  --http ADDR           HTTP server for HTTP-FLV (default 127.0.0.1:8080)
  --app NAME            application (default live)
  --stream NAME         stream name (default bench)
  --rtmp-viewers N      RTMP viewers (default 0)
  --flv-viewers N       HTTP-FLV viewers (default 0)
  --duration SECS       measured window once every viewer is connected (default 10)
  --warmup SECS         publishing before the first viewer joins (default 2)
  --ramp N              viewers connected per second (default 2000)
  --hold SECS          after the window, keep publishing this long (markers on stderr:
                        'swarm: window start/end', 'swarm: hold end'), default 0
  --idle-rtmp N         N idle RTMP connections (handshake + connect, no play), opened
                        before the window and held to the end (for memory per idle viewer)
  --idle-http N         N idle HTTP keep-alive connections (one GET /healthz answered)
  --grace SECS          after the publisher stops, time for the last frames (default 1.5)
  --server-pid PID      sample this process's CPU and RSS over the window (repeatable)
  --label TEXT          copied into the JSON line
One JSON line goes to stdout at the end; the human summary to stderr.
";

#[derive(Clone, Debug)]
pub struct Args {
    pub flv: PathBuf,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub app: String,
    pub stream: String,
    pub rtmp_viewers: usize,
    pub flv_viewers: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub ramp_per_s: usize,
    pub grace: Duration,
    pub hold: Duration,
    pub idle_rtmp: usize,
    pub idle_http: usize,
    pub server_pids: Vec<u32>,
    pub label: String,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        flv: PathBuf::new(),
        rtmp: "127.0.0.1:1935".parse().expect("literal address"),
        http: "127.0.0.1:8080".parse().expect("literal address"),
        app: "live".into(),
        stream: "bench".into(),
        rtmp_viewers: 0,
        flv_viewers: 0,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        ramp_per_s: 2000,
        grace: Duration::from_millis(1500),
        hold: Duration::ZERO,
        idle_rtmp: 0,
        idle_http: 0,
        server_pids: Vec::new(),
        label: String::new(),
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}");
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad("seconds"))
        };
        match flag.as_str() {
            "--flv" => a.flv = value.into(),
            "--rtmp" => a.rtmp = value.parse().map_err(|_| bad("host:port"))?,
            "--http" => a.http = value.parse().map_err(|_| bad("host:port"))?,
            "--app" => a.app = value,
            "--stream" => a.stream = value,
            "--rtmp-viewers" => a.rtmp_viewers = value.parse().map_err(|_| bad("a count"))?,
            "--flv-viewers" => a.flv_viewers = value.parse().map_err(|_| bad("a count"))?,
            "--duration" => a.duration = secs(&value)?,
            "--warmup" => a.warmup = secs(&value)?,
            "--grace" => a.grace = secs(&value)?,
            "--hold" => a.hold = secs(&value)?,
            "--idle-rtmp" => {
                a.idle_rtmp = value
                    .parse()
                    .map_err(|_| format!("--idle-rtmp {value}: not a count"))?
            }
            "--idle-http" => {
                a.idle_http = value
                    .parse()
                    .map_err(|_| format!("--idle-http {value}: not a count"))?
            }
            "--ramp" => {
                a.ramp_per_s = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a positive count"))?
            }
            "--server-pid" => a.server_pids.push(value.parse().map_err(|_| bad("a pid"))?),
            "--label" => a.label = value,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.flv.as_os_str().is_empty() {
        return Err(format!("--flv is required\n{USAGE}"));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_parse_and_defaults_hold() {
        let a = args("--flv x.flv --rtmp-viewers 40 --flv-viewers 3 --duration 2.5 --server-pid 7 --server-pid 9").unwrap();
        assert_eq!(a.rtmp_viewers, 40);
        assert_eq!(a.flv_viewers, 3);
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!(a.server_pids, [7, 9]);
        assert_eq!(a.rtmp.port(), 1935);
        assert_eq!(a.app, "live");
    }

    #[test]
    fn bad_values_say_which_flag() {
        assert!(args("--rtmp-viewers 10")
            .unwrap_err()
            .contains("--flv is required"));
        assert!(args("--flv x --duration -1")
            .unwrap_err()
            .starts_with("--duration -1"));
        assert!(args("--flv x --ramp 0")
            .unwrap_err()
            .starts_with("--ramp 0"));
        assert!(args("--flv x --rtmp nowhere")
            .unwrap_err()
            .contains("host:port"));
        assert!(args("--flv").unwrap_err().contains("needs a value"));
        assert!(args("--flv x --bogus 1")
            .unwrap_err()
            .contains("unknown flag"));
    }
}

//! Idle connections for memory measurements: they cost the server a socket and its
//! per-connection state, but carry no media.
//!
//! - RTMP: TCP connect, the simple handshake (C0+C1, read S0+S1+S2, C2), one AMF0
//!   `connect` command; never `createStream`/`play`. What the server sends back
//!   (window ack size, `_result`, ...) is read once and dropped.
//! - HTTP: TCP connect, one `GET /healthz HTTP/1.1` (keep-alive), the response head read
//!   once; the connection then stays open with nothing pending.
//!
//! Blocking sockets on a helper thread, opened before the measured window; the caller
//! keeps the returned streams open until the report is out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn amf_string(out: &mut Vec<u8>, s: &str) {
    out.push(0x02);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn amf_key(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The `connect` command as one type-20 message on chunk stream 3, split at the default
/// 128-byte chunk size.
pub fn connect_message(app: &str, tc_url: &str) -> Vec<u8> {
    let mut body = Vec::new();
    amf_string(&mut body, "connect");
    body.push(0x00);
    body.extend_from_slice(&1f64.to_be_bytes());
    body.push(0x03);
    amf_key(&mut body, "app");
    amf_string(&mut body, app);
    amf_key(&mut body, "flashVer");
    amf_string(&mut body, "LNX 9,0,124,2");
    amf_key(&mut body, "tcUrl");
    amf_string(&mut body, tc_url);
    body.extend_from_slice(&[0x00, 0x00, 0x09]);
    let mut out = vec![0x03, 0, 0, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.push(20);
    out.extend_from_slice(&0u32.to_le_bytes());
    for (i, chunk) in body.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xC3);
        }
        out.extend_from_slice(chunk);
    }
    out
}

fn rtmp_idle(addr: SocketAddr, app: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut c0c1 = vec![0u8; 1537];
    c0c1[0] = 3;
    for (i, b) in c0c1[9..].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    s.write_all(&c0c1)?;
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.read_exact(&mut s0s1s2)?;
    // C2 echoes S1
    s.write_all(&s0s1s2[1..1537])?;
    s.write_all(&connect_message(app, &format!("rtmp://{addr}/{app}")))?;
    // the server's answer to connect (small); read what is there once
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let _ = s.read(&mut buf);
    Ok(s)
}

fn http_idle(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shardcast-swarm-idle\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::Error::other("closed before a response"));
    }
    Ok(s)
}

/// Opens `rtmp` idle RTMP and `http` idle HTTP connections; returns the open streams and
/// the number that failed (with the first error).
pub fn open(
    rtmp_addr: SocketAddr,
    app: &str,
    rtmp: usize,
    http_addr: SocketAddr,
    http: usize,
) -> (Vec<TcpStream>, usize, Option<String>) {
    let mut open = Vec::with_capacity(rtmp + http);
    let (mut failed, mut first) = (0, None);
    for i in 0..rtmp + http {
        let r = if i < rtmp {
            rtmp_idle(rtmp_addr, app)
        } else {
            http_idle(http_addr)
        };
        match r {
            Ok(s) => open.push(s),
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (open, failed, first)
}

#[cfg(test)]
mod tests {
    #[test]
    fn connect_is_one_chunked_type_20_message() {
        let m = super::connect_message("live", "rtmp://127.0.0.1:1935/live");
        assert_eq!(m[0], 0x03);
        assert_eq!(m[7], 20);
        let len = u32::from_be_bytes([0, m[4], m[5], m[6]]) as usize;
        assert_eq!(m.len(), 12 + len + (len - 1) / 128);
    }
}

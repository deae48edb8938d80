//! A small blocking JSON-RPC client (for the CLI and tests): HTTP/1.1 over
//! the daemon's Unix socket, or TCP with mutual TLS (plain TCP only where
//! cairnd was told to serve it so).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    /// host:port, in the clear (cairnd's `insecure_plain_tcp`).
    Tcp(String),
    /// host:port with mutual TLS.
    Tls {
        addr: String,
        config: Arc<rustls::ClientConfig>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach cairnd at {target}: {reason}")]
    Transport { target: String, reason: String },
    #[error("error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// A connection to cairnd.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => match s.read(buf) {
                // cairnd closes without a TLS close_notify after a reply
                // with Connection: close; the reply is complete by then.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub struct Client {
    target: Target,
    next_id: AtomicU64,
    timeout: Duration,
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client {
            target,
            next_id: AtomicU64::new(1),
            timeout: Duration::from_secs(300),
        }
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let reply = self.post(&body)?;
        let v: Value =
            serde_json::from_str(&reply).map_err(|e| self.transport(format!("bad reply: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(ClientError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Sends a raw request body; returns the raw reply body.
    pub fn post(&self, body: &str) -> Result<String, ClientError> {
        let request = format!(
            "POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            body
        );
        let mut raw = Vec::new();
        let io = |e: std::io::Error| self.transport(e.to_string());
        let mut s = self.connect()?;
        s.write_all(request.as_bytes()).map_err(io)?;
        s.read_to_end(&mut raw).map_err(io)?;
        parse_http_response(&raw).map_err(|e| self.transport(e))
    }

    /// A new connection to cairnd, with the client's read timeout.
    pub fn connect(&self) -> Result<Stream, ClientError> {
        let io = |e: std::io::Error| self.transport(e.to_string());
        let s = match &self.target {
            Target::Unix(p) => {
                let u = UnixStream::connect(p).map_err(io)?;
                u.set_read_timeout(Some(self.timeout)).map_err(io)?;
                Stream::Unix(u)
            }
            Target::Tcp(addr) => {
                let t = TcpStream::connect(addr).map_err(io)?;
                t.set_read_timeout(Some(self.timeout)).map_err(io)?;
                Stream::Tcp(t)
            }
            Target::Tls { addr, config } => {
                let name =
                    crate::tls::server_name(addr).map_err(|e| self.transport(e.to_string()))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| self.transport(e.to_string()))?;
                let t = TcpStream::connect(addr).map_err(io)?;
                t.set_read_timeout(Some(self.timeout)).map_err(io)?;
                let mut tls = rustls::StreamOwned::new(conn, t);
                // Handshake now, so a refused certificate is reported as such.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| self.transport(format!("TLS handshake failed: {e}")))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(s)
    }

    pub(crate) fn transport(&self, reason: String) -> ClientError {
        let target = match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(a) | Target::Tls { addr: a, .. } => a.clone(),
        };
        ClientError::Transport { target, reason }
    }
}

fn parse_http_response(raw: &[u8]) -> Result<String, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head.lines().next().unwrap_or("");
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    match code {
        200 => String::from_utf8(body).map_err(|_| "reply is not UTF-8".to_string()),
        204 => Ok(String::new()),
        _ => Err(format!("HTTP {code}: {}", String::from_utf8_lossy(&body))),
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_parsing() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(r).unwrap(), "{}");
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(r).unwrap(), "{}");
        assert!(parse_http_response(b"HTTP/1.1 500 x\r\n\r\noops").is_err());
    }
}

//! Keystone token validation: the caller's token is checked by Keystone
//! itself (`GET /v3/auth/tokens`, the token validating itself, which
//! Keystone's default policy allows its subject), and the answer kept for
//! a minute, as keystonemiddleware caches it. Only project-scoped tokens
//! act; the `admin` role makes an admin.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::Principal;
use super::Fault;

const CACHE_FOR: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from Keystone (a token with its catalog).
const MAX_ANSWER: u64 = 4 << 20;

#[derive(Debug)]
pub struct Keystone {
    https: bool,
    /// host:port
    addr: String,
    host: String,
    /// The path before `/v3`, without a trailing slash.
    prefix: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Keystone {
    /// `url`: Keystone's, e.g. `http://keystone:5000` or `.../identity`
    /// (a trailing `/v3` is allowed); `ca`: the CAs an https Keystone's
    /// certificate is checked against.
    pub fn new(url: &str, ca: &std::path::Path) -> Result<Keystone, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "the Keystone URL {url:?} is not http:// or https://"
            ));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("the Keystone URL {url:?} names no host"));
        }
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(']') || h.starts_with('[') => {
                h
            }
            _ => authority,
        };
        let addr = if authority.len() > host.len() {
            authority.to_string()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let prefix = format!("/{}", path.trim_end_matches('/'));
        let prefix = prefix
            .strip_suffix("/v3")
            .unwrap_or(&prefix)
            .trim_end_matches('/')
            .to_string();
        let tls = https
            .then(|| crate::tls::plain_client_config(ca).map_err(|e| format!("Keystone TLS: {e}")))
            .transpose()?;
        Ok(Keystone {
            https,
            addr,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            prefix,
            tls,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Who `token` is, as Keystone says.
    pub fn validate(&self, token: &str) -> Result<Principal, Fault> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let mut cache = self.cache.lock().expect("keystone cache");
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
            if let Some((p, _)) = cache.get(&key) {
                return Ok(p.clone());
            }
        }
        let unauthorized = || {
            Fault::new(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            )
        };
        if token.is_empty() || token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(unauthorized());
        }
        let (status, body) = self.get_token(token).map_err(|e| {
            tracing::warn!(error = %e, keystone = %self.addr, "cannot reach Keystone");
            Fault::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot validate the token with Keystone: {e}"),
            )
        })?;
        if status != 200 {
            return Err(unauthorized());
        }
        let t = &body["token"];
        let project = t["project"]["id"].as_str().ok_or_else(|| {
            Fault::new(
                StatusCode::UNAUTHORIZED,
                "A project-scoped token is required.",
            )
        })?;
        let principal = Principal {
            project: project.to_string(),
            user: t["user"]["id"].as_str().unwrap_or_default().to_string(),
            admin: t["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["name"] == "admin"),
        };
        self.cache
            .lock()
            .expect("keystone cache")
            .insert(key, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    /// `GET /v3/auth/tokens` of `token` by itself: status and JSON body.
    fn get_token(&self, token: &str) -> std::io::Result<(u16, Value)> {
        let tcp = TcpStream::connect(&self.addr)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        // HTTP/1.0: the answer ends with the connection, never chunked.
        let request = format!(
            "GET {}/v3/auth/tokens HTTP/1.0\r\nHost: {}\r\nX-Auth-Token: {token}\r\nX-Subject-Token: {token}\r\nAccept: application/json\r\n\r\n",
            self.prefix, self.host
        );
        let mut answer = Vec::new();
        if self.https {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let conn =
                rustls::ClientConnection::new(self.tls.clone().expect("https has TLS"), name)
                    .map_err(std::io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(request.as_bytes())?;
            match s.take(MAX_ANSWER).read_to_end(&mut answer) {
                Ok(_) => {}
                // Servers that close without close_notify: the answer is whole.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
        } else {
            let mut s = tcp;
            s.write_all(request.as_bytes())?;
            s.take(MAX_ANSWER).read_to_end(&mut answer)?;
        }
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("Keystone's answer has no body"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("Keystone's answer has no status"))?;
        Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_address_and_prefix() {
        let ca = std::path::Path::new("/nonexistent");
        let k = Keystone::new("http://keystone:5000/v3/", ca).unwrap();
        assert_eq!(
            (k.addr.as_str(), k.host.as_str(), k.prefix.as_str()),
            ("keystone:5000", "keystone", "")
        );
        let k = Keystone::new("http://10.0.0.1/identity", ca).unwrap();
        assert_eq!(
            (k.addr.as_str(), k.prefix.as_str()),
            ("10.0.0.1:80", "/identity")
        );
        assert!(Keystone::new("ftp://x", ca).is_err());
        assert!(Keystone::new("http://user@x", ca).is_err());
    }
}

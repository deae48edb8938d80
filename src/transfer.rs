//! Client side of image transfer: upload a local file into a ticket, or
//! download a ticket's image into a local file, sparsely (holes become
//! zero requests or stay holes) and in large requests. Used by
//! `cairn image upload/download` and the transfer benchmark.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;

use serde::Deserialize;

use crate::client::{Client, ClientError, Stream};
use crate::primitives::extents::data_ranges;
use crate::primitives::pipeline::{pieces, pipelined};

/// Bytes per PUT or ranged GET request.
const REQUEST_SIZE: u64 = 64 << 20;
/// Bytes per local read or write.
const BUFFER: usize = 4 << 20;

/// One range of a ticket's image, as `GET /images/{ticket}/extents` lists it.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    pub zero: bool,
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Data bytes sent or received.
    pub data: u64,
    /// Bytes handled as zeros (never sent).
    pub zeros: u64,
}

struct Response {
    status: u16,
    length: u64,
    body: BufReader<Stream>,
}

impl Response {
    fn text(mut self) -> String {
        let mut s = String::new();
        let _ = (&mut self.body).take(self.length).read_to_string(&mut s);
        s.trim().to_string()
    }
}

fn http_error(client: &Client, what: &str, r: Response) -> ClientError {
    let status = r.status;
    client.transport(format!("{what}: HTTP {status}: {}", r.text()))
}

/// Sends one request; `body` is (file, offset, length) to stream from a
/// file, or bytes.
fn request(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Body<'_>,
) -> Result<Response, ClientError> {
    let io = |e: std::io::Error| client.transport(e.to_string());
    let mut s = client.connect()?;
    let length = match &body {
        Body::None => 0,
        Body::Bytes(b) => b.len() as u64,
        Body::File { length, .. } => *length,
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {length}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(io)?;
    let sent = match body {
        Body::None => Ok(()),
        Body::Bytes(b) => s.write_all(b),
        // The file is read on another thread, overlapping the network.
        Body::File {
            file,
            offset,
            length,
        } => pipelined(
            pieces(offset, length, BUFFER),
            BUFFER,
            |at, buf| file.read_exact_at(buf, at),
            |_, buf| s.write_all(buf),
        ),
    };
    // A server refusing a request (403, 416) may answer and close before
    // reading the body: its answer says more than the broken pipe.
    let mut r = BufReader::with_capacity(BUFFER, s);
    if let Err(e) = sent {
        return match read_head(client, &mut r) {
            Ok((status, length)) if status != 200 => Ok(Response {
                status,
                length,
                body: r,
            }),
            _ => Err(io(e)),
        };
    }
    let (status, length) = read_head(client, &mut r)?;
    Ok(Response {
        status,
        length,
        body: r,
    })
}

/// Reads a response's status line and headers; returns the status and the
/// Content-Length.
fn read_head(client: &Client, r: &mut BufReader<Stream>) -> Result<(u16, u64), ClientError> {
    let io = |e: std::io::Error| client.transport(e.to_string());
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| client.transport(format!("bad HTTP status line {line:?}")))?;
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(io)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    Ok((status, length))
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    File {
        file: &'a File,
        offset: u64,
        length: u64,
    },
}

fn patch(client: &Client, path: &str, op: serde_json::Value) -> Result<(), ClientError> {
    let body = op.to_string();
    let r = request(
        client,
        "PATCH",
        path,
        &[("Content-Type", "application/json".into())],
        Body::Bytes(body.as_bytes()),
    )?;
    if r.status != 200 {
        return Err(http_error(client, "PATCH", r));
    }
    Ok(())
}

/// Uploads `file` into ticket `ticket` from offset 0: data ranges are sent,
/// holes are zeroed on the server, and everything is flushed at the end.
/// `progress` gets (bytes done, total).
pub fn upload(
    client: &Client,
    ticket: &str,
    file: &File,
    mut progress: impl FnMut(u64, u64),
) -> Result<TransferStats, ClientError> {
    let io = |e: std::io::Error| client.transport(e.to_string());
    let path = format!("/images/{ticket}");
    let total = file.metadata().map_err(io)?.len();
    let mut stats = TransferStats::default();
    let mut pos = 0;
    let zero = |stats: &mut TransferStats, start: u64, end: u64| {
        stats.zeros += end - start;
        patch(
            client,
            &path,
            serde_json::json!({"op": "zero", "offset": start, "size": end - start, "flush": false}),
        )
    };
    for (start, len) in data_ranges(file).map_err(io)? {
        if start > pos {
            zero(&mut stats, pos, start)?;
        }
        let mut off = start;
        while off < start + len {
            let n = (start + len - off).min(REQUEST_SIZE);
            let r = request(
                client,
                "PUT",
                &format!("{path}?flush=n"),
                &[("Content-Range", format!("bytes {off}-{}/*", off + n - 1))],
                Body::File {
                    file,
                    offset: off,
                    length: n,
                },
            )?;
            if r.status != 200 {
                return Err(http_error(client, "PUT", r));
            }
            off += n;
            stats.data += n;
            progress(off, total);
        }
        pos = start + len;
    }
    if pos < total {
        zero(&mut stats, pos, total)?;
    }
    patch(client, &path, serde_json::json!({"op": "flush"}))?;
    progress(total, total);
    Ok(stats)
}

/// Downloads ticket `ticket` into `file` (truncated to the image's size):
/// data ranges are fetched, zero ranges stay holes. `progress` gets
/// (bytes done, total).
pub fn download(
    client: &Client,
    ticket: &str,
    file: &File,
    mut progress: impl FnMut(u64, u64),
) -> Result<TransferStats, ClientError> {
    let io = |e: std::io::Error| client.transport(e.to_string());
    let path = format!("/images/{ticket}");
    let r = request(client, "GET", &format!("{path}/extents"), &[], Body::None)?;
    if r.status != 200 {
        return Err(http_error(client, "GET extents", r));
    }
    let extents: Vec<Extent> = serde_json::from_str(&r.text())
        .map_err(|e| client.transport(format!("bad extents: {e}")))?;
    let total = extents.last().map(|e| e.start + e.length).unwrap_or(0);
    file.set_len(0).map_err(io)?;
    file.set_len(total).map_err(io)?;
    let mut stats = TransferStats::default();
    for e in extents {
        if e.zero {
            stats.zeros += e.length;
            progress(e.start + e.length, total);
            continue;
        }
        let mut off = e.start;
        while off < e.start + e.length {
            let n = (e.start + e.length - off).min(REQUEST_SIZE);
            let mut r = request(
                client,
                "GET",
                &path,
                &[("Range", format!("bytes={off}-{}", off + n - 1))],
                Body::None,
            )?;
            if r.status != 206 && r.status != 200 {
                return Err(http_error(client, "GET", r));
            }
            if r.length != n {
                return Err(
                    client.transport(format!("GET {off}+{n}: the server sent {} bytes", r.length))
                );
            }
            // The file is written on another thread, overlapping the network.
            let body = &mut r.body;
            pipelined(
                pieces(off, n, BUFFER),
                BUFFER,
                |_, buf| body.read_exact(buf),
                |at, buf| file.write_all_at(buf, at),
            )
            .map_err(io)?;
            off += n;
            stats.data += n;
            progress(off, total);
        }
    }
    file.sync_all().map_err(io)?;
    Ok(stats)
}

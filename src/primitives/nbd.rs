//! A small NBD client for qemu's NBD servers on a unix socket: the fixed
//! newstyle handshake, then plain (not structured) requests one at a time.
//! Where data is and what is dirty comes from `qemu-img map` on the same
//! server; this moves the bytes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const OPT_EXPORT_NAME: u32 = 1;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_WRITE_ZEROES: u16 = 6;
const TRANSMISSION_READ_ONLY: u16 = 1 << 1;
const TRANSMISSION_SEND_FLUSH: u16 = 1 << 2;
const TRANSMISSION_SEND_WRITE_ZEROES: u16 = 1 << 6;

/// The most one request moves (qemu's servers take up to 32 MiB).
pub const MAX_REQUEST: usize = 32 << 20;

pub struct NbdClient {
    sock: UnixStream,
    size: u64,
    flags: u16,
    handle: u64,
}

fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl NbdClient {
    /// Connects to the server's default export ("").
    pub fn connect(socket: &Path) -> io::Result<NbdClient> {
        let mut sock = UnixStream::connect(socket)?;
        let mut hello = [0u8; 18];
        sock.read_exact(&mut hello)?;
        let magic = u64::from_be_bytes(hello[0..8].try_into().expect("8 bytes"));
        let opt = u64::from_be_bytes(hello[8..16].try_into().expect("8 bytes"));
        let server_flags = u16::from_be_bytes([hello[16], hello[17]]);
        if magic != NBDMAGIC || opt != IHAVEOPT || server_flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(protocol("not a fixed-newstyle NBD server"));
        }
        let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
        let client_flags = u32::from(FLAG_FIXED_NEWSTYLE)
            | if no_zeroes {
                u32::from(FLAG_NO_ZEROES)
            } else {
                0
            };
        let mut msg = Vec::with_capacity(20);
        msg.extend_from_slice(&client_flags.to_be_bytes());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        sock.write_all(&msg)?;
        let mut export = [0u8; 10];
        sock.read_exact(&mut export)?;
        if !no_zeroes {
            let mut zeroes = [0u8; 124];
            sock.read_exact(&mut zeroes)?;
        }
        Ok(NbdClient {
            sock,
            size: u64::from_be_bytes(export[0..8].try_into().expect("8 bytes")),
            flags: u16::from_be_bytes([export[8], export[9]]),
            handle: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_only(&self) -> bool {
        self.flags & TRANSMISSION_READ_ONLY != 0
    }

    fn request(&mut self, cmd: u16, offset: u64, len: u64, data: &[u8]) -> io::Result<()> {
        if len > u64::from(u32::MAX) || offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NBD request {offset}+{len} outside a disk of {} bytes",
                    self.size
                ),
            ));
        }
        self.handle += 1;
        let mut head = Vec::with_capacity(28 + data.len());
        head.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        head.extend_from_slice(&0u16.to_be_bytes());
        head.extend_from_slice(&cmd.to_be_bytes());
        head.extend_from_slice(&self.handle.to_be_bytes());
        head.extend_from_slice(&offset.to_be_bytes());
        head.extend_from_slice(&(len as u32).to_be_bytes());
        head.extend_from_slice(data);
        self.sock.write_all(&head)
    }

    fn reply(&mut self, data: &mut [u8]) -> io::Result<()> {
        let mut head = [0u8; 16];
        self.sock.read_exact(&mut head)?;
        let magic = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
        let error = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        let handle = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
        if magic != SIMPLE_REPLY_MAGIC || handle != self.handle {
            return Err(protocol("unexpected NBD reply"));
        }
        if error != 0 {
            // NBD's error numbers are Linux's errno values.
            return Err(io::Error::from_raw_os_error(error as i32));
        }
        self.sock.read_exact(data)
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        for (i, piece) in buf.chunks_mut(MAX_REQUEST).enumerate() {
            let at = offset + (i * MAX_REQUEST) as u64;
            self.request(CMD_READ, at, piece.len() as u64, &[])?;
            self.reply(piece)?;
        }
        Ok(())
    }

    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        for (i, piece) in buf.chunks(MAX_REQUEST).enumerate() {
            let at = offset + (i * MAX_REQUEST) as u64;
            self.request(CMD_WRITE, at, piece.len() as u64, piece)?;
            self.reply(&mut [])?;
        }
        Ok(())
    }

    /// Zeroes a range, leaving holes where the image can.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.flags & TRANSMISSION_SEND_WRITE_ZEROES == 0 {
            let zeros = vec![0u8; len.min(MAX_REQUEST as u64) as usize];
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(zeros.len() as u64) as usize;
                self.write_at(&zeros[..n], at)?;
                at += n as u64;
            }
            return Ok(());
        }
        let mut at = offset;
        // One request's length is 32 bits; stay well inside it.
        const ZERO_STEP: u64 = 1 << 30;
        while at < offset + len {
            let n = (offset + len - at).min(ZERO_STEP);
            self.request(CMD_WRITE_ZEROES, at, n, &[])?;
            self.reply(&mut [])?;
            at += n;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.flags & TRANSMISSION_SEND_FLUSH == 0 {
            return Ok(());
        }
        self.request(CMD_FLUSH, 0, 0, &[])?;
        self.reply(&mut [])
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // A polite goodbye; the server needs no reply.
        let _ = self.request(CMD_DISC, 0, 0, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// qemu-nbd serving a fresh raw file; killed on drop, before its
    /// directory goes.
    struct Server {
        child: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn serve(size: u64, extra: &[&str]) -> (Server, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
        let sock = dir.path().join("sock");
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "--socket"])
            .arg(&sock)
            .args(extra)
            .arg(&disk)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (Server { child, _dir: dir }, sock)
    }

    #[test]
    fn writes_reads_zeroes_and_flushes() {
        let (_server, sock) = serve(8 << 20, &[]);
        let mut c = NbdClient::connect(&sock).unwrap();
        assert_eq!(c.size(), 8 << 20);
        assert!(!c.read_only());
        c.write_at(&[0xab; 65536], 1 << 20).unwrap();
        c.write_zeroes((1 << 20) + 4096, 4096).unwrap();
        c.flush().unwrap();
        let mut back = vec![0u8; 65536];
        c.read_at(&mut back, 1 << 20).unwrap();
        assert!(back[..4096].iter().all(|&b| b == 0xab));
        assert!(back[4096..8192].iter().all(|&b| b == 0));
        assert!(back[8192..].iter().all(|&b| b == 0xab));
    }

    #[test]
    fn requests_outside_the_disk_fail_without_reaching_the_server() {
        let (_server, sock) = serve(1 << 20, &["--read-only"]);
        let mut c = NbdClient::connect(&sock).unwrap();
        assert!(c.read_only());
        let mut buf = vec![0u8; 8192];
        let e = c.read_at(&mut buf, (1 << 20) - 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // The connection is still good, and writes are refused by the server.
        c.read_at(&mut buf, 0).unwrap();
        assert!(c.write_at(&buf, 0).is_err());
    }
}

//! cairnd's log output: one line per event, each cut to a bounded length,
//! so no request can make the log grow by more than a line's worth.

use std::io::{self, Write};

/// The longest log line written, in bytes.
pub const MAX_LINE: usize = 4096;

/// Standard error, one capped line per write (the formatter writes each
/// event in one call).
#[derive(Clone, Copy, Default)]
pub struct CappedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CappedStderr {
    type Writer = CappedWriter<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        CappedWriter(io::stderr())
    }
}

pub struct CappedWriter<W>(pub W);

/// Never fails: a log line that cannot be written (the log's file system
/// is full, its pipe closed) is dropped, because the logger's fallback,
/// `eprintln!` to the same stderr, would panic the thread that logged:
/// the daemon keeps storage work going rather than its log.
impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = if buf.len() <= MAX_LINE {
            self.0.write_all(buf)
        } else {
            self.0.write_all(&buf[..MAX_LINE]).and_then(|()| {
                writeln!(
                    self.0,
                    "... ({} bytes of this line not logged)",
                    buf.len() - MAX_LINE
                )
            })
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn a_full_log_never_fails_the_caller() {
        let mut out = CappedWriter(Full);
        out.write_all(b"line\n").unwrap();
        out.write_all(&vec![b'x'; 1 << 20]).unwrap();
        out.flush().unwrap();
    }

    #[test]
    fn long_lines_are_cut() {
        let mut out = CappedWriter(Vec::new());
        out.write_all(b"short\n").unwrap();
        out.write_all(&vec![b'x'; 1 << 20]).unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert!(text.starts_with("short\n"));
        assert!(text.len() < MAX_LINE + 100);
        assert!(text.ends_with("bytes of this line not logged)\n"));
    }
}

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

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() <= MAX_LINE {
            self.0.write_all(buf)?;
        } else {
            self.0.write_all(&buf[..MAX_LINE])?;
            writeln!(
                self.0,
                "... ({} bytes of this line not logged)",
                buf.len() - MAX_LINE
            )?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! A QMP client: qemu's JSON machine protocol on a Unix socket, one JSON
//! object per line. Commands and events share the stream; events read
//! while waiting for a command's return are kept for the caller.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("{0} is not a qemu QMP socket: {1}")]
    NotQmp(String, String),
    #[error("qemu closed the QMP connection")]
    Closed,
    #[error("qemu refused {command}: {class}: {desc}")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] io::Error),
}

/// The longest line read from qemu: a peer that is not qemu must not make
/// cairnd buffer without end.
const MAX_LINE: usize = 1 << 20;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: VecDeque<Value>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects, checks the greeting is qemu's and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let name = path.display().to_string();
        let not_qmp = |why: String| QmpError::NotQmp(name.clone(), why);
        let stream = UnixStream::connect(path).map_err(|e| not_qmp(e.to_string()))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: VecDeque::new(),
        };
        let greeting = qmp
            .read_line()
            .map_err(|e| not_qmp(format!("no greeting ({e})")))?;
        let Some(version) = greeting.get("QMP").and_then(|q| q.get("version")) else {
            return Err(not_qmp("its greeting is not qemu's".into()));
        };
        tracing::debug!(socket = %name, ?version, "QMP connected");
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_line(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = io::Read::take(&mut self.reader, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if !line.ends_with(b"\n") {
            return Err(QmpError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "a QMP line longer than 1 MiB",
            )));
        }
        serde_json::from_slice(&line)
            .map_err(|e| QmpError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        loop {
            let v = self.read_line()?;
            if v.get("event").is_some() {
                self.events.push_back(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else if let Some(e) = v.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or("").to_string(),
                    desc: e["desc"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }

    /// The next event, waiting up to the connection's read timeout;
    /// None when none came.
    pub fn next_event(&mut self) -> Result<Option<Value>, QmpError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        match self.read_line() {
            Ok(v) if v.get("event").is_some() => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(QmpError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.writer.set_read_timeout(Some(timeout))
    }
}

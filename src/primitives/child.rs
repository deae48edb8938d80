//! Helper processes that may hang: I/O on shared storage runs in a child
//! so that a dead mount blocks the child, never a cairnd thread.

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Makes the process `cmd` starts die (SIGKILL) with the thread that
/// starts it, so no qemu-img or qemu-io outlives a killed cairnd and keeps
/// writing to storage a restart is recovering. The kernel ties this to the
/// spawning *thread*: callers wait for the child on that thread (long-lived
/// servers are started from a thread of their own, see `engine::nbd`).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure makes only async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died before the signal was armed.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other("the parent process is gone"));
            }
            Ok(())
        });
    }
}

/// Runs `cmd` and collects its output, unless it takes longer than
/// `timeout`: then it is killed and `Ok(None)` returned. A child stuck in
/// the kernel dies only once its I/O returns; it is reaped then, off the
/// caller's thread.
pub fn output_within(mut cmd: Command, timeout: Duration) -> io::Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drained while the child runs, so a full pipe never stalls it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            }));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_die_with_their_parent() {
        // A shell (the parent) starts a sleeper that would die with it, and
        // is killed; the sleeper must not outlive it.
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        die_with_parent(&mut cmd);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawner = std::thread::spawn(move || {
            let child = cmd.spawn().unwrap();
            tx.send(child.id()).unwrap();
            // The spawning thread ends without waiting: the kernel kills
            // the child, as it would if cairnd died.
            std::mem::forget(child);
        });
        let pid = rx.recv().unwrap();
        spawner.join().unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid as i32),
                rustix::process::WaitOptions::NOHANG,
            );
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "the child outlived the thread that started it");
    }

    #[test]
    fn output_or_timeout() {
        let mut echo = Command::new("sh");
        echo.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = output_within(echo, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));

        let mut big = Command::new("head");
        big.args(["-c", "1000000", "/dev/zero"]);
        let out = output_within(big, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout.len(), 1_000_000, "a full pipe does not stall");

        let mut slow = Command::new("sleep");
        slow.arg("10");
        let start = Instant::now();
        assert!(output_within(slow, Duration::from_millis(100))
            .unwrap()
            .is_none());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

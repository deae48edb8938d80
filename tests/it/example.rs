//! The Python example in examples/ runs against a real cairnd.

use std::path::Path;
use std::process::Command;

use crate::common::*;

#[test]
fn python_walkthrough_example() {
    let d = Daemon::start_bare();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/walkthrough.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--storage")
        .arg(d.data().join("walkthrough"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}\ncairnd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(stdout.contains("the disk is ready"), "{stdout}");
}

//! The Python example in examples/ runs against a real cairnd.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Over mutual TLS, with Python's ssl (OpenSSL) as the client: the
/// certificates `cairn pki` makes work beyond rustls.
#[test]
fn python_walkthrough_example() {
    let d = Daemon::start_with(Opts {
        embedded: false,
        tcp: true,
        ..Default::default()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/walkthrough.py");
    let pki = d.data().join("pki");
    let out = Command::new("python3")
        .arg(script)
        .arg("--url")
        .arg(format!("https://{}", d.tcp.clone().unwrap()))
        .arg("--cert")
        .arg(pki.join("client.pem"))
        .arg("--key")
        .arg(pki.join("client-key.pem"))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
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

//! Domain monitoring: vitals from real O_DIRECT reads, a domain that goes
//! missing and comes back, and reads that hang without blocking cairnd.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

fn fast_monitor(extra: &[(&str, &str)]) -> Daemon {
    let mut env = vec![
        ("CAIRN_MONITOR_INTERVAL".to_string(), "0.05".to_string()),
        ("CAIRN_MONITOR_TIMEOUT".to_string(), "0.5".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Daemon::start_with(Opts {
        env,
        ..Default::default()
    })
}

/// Waits until the domain's vitals satisfy `ok`; returns them.
fn vitals_until(d: &Daemon, sd: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = d.call("Host.getStorageRepoStats", json!({"domains": [sd]}));
        let v = all[sd].clone();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "vitals never settled: {all}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn monitored_domains_report_vitals_and_recover() {
    let d = fast_monitor(&[]);
    let (_, sd) = d.embedded();
    assert_eq!(d.call("Host.getStorageRepoStats", json!({})), json!({}));
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 1}),
    );
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 1}),
    );
    let v = vitals_until(&d, &sd, |v| v["actual"] == true);
    assert_eq!(
        (
            v["valid"].clone(),
            v["code"].clone(),
            v["version"].clone(),
            v["acquired"].clone()
        ),
        (json!(true), json!(0), json!(5), json!(false)),
        "{v}"
    );
    let delay: f64 = v["delay"].as_str().unwrap().parse().unwrap();
    let last: f64 = v["lastCheck"].as_str().unwrap().parse().unwrap();
    assert!(delay > 0.0 && delay < 1.0 && last < 1.0, "{v}");

    // The metadata disappears: invalid with the domain's error; back: valid.
    let md = d.domain_dir(&sd).join("dom_md").join("metadata");
    let aside = md.with_extension("aside");
    std::fs::rename(&md, &aside).unwrap();
    let v = vitals_until(&d, &sd, |v| v["valid"] == false);
    assert_eq!(v["code"], 358, "{v}");
    std::fs::rename(&aside, &md).unwrap();
    vitals_until(&d, &sd, |v| v["valid"] == true && v["code"] == 0);

    // Monitoring an unknown domain reports it invalid; bad host ids fail.
    let other = uuid();
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": other, "hostID": 2}),
    );
    let v = vitals_until(&d, &other, |v| v["actual"] == true);
    assert_eq!(
        (v["valid"].clone(), v["code"].clone()),
        (json!(false), json!(358))
    );
    let (code, _) = d.call_err(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 0}),
    );
    assert_eq!(code, 1000);

    d.call("Host.stopMonitoringDomain", json!({"sdUUID": other}));
    d.call("Host.stopMonitoringDomain", json!({"sdUUID": other}));
    let all = d.call("Host.getStorageRepoStats", json!({}));
    assert_eq!(all.as_object().unwrap().keys().collect::<Vec<_>>(), [&sd]);
}

/// Reads that never return (a dead mount) make the domain invalid, while
/// cairnd keeps answering and can still stop.
#[test]
fn hung_reads_never_block_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("hung-dd");
    std::fs::write(&dd, "#!/bin/sh\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = fast_monitor(&[("CAIRN_DD", dd.to_str().unwrap())]);
    let (sp, sd) = d.embedded();
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 1}),
    );
    let v = vitals_until(&d, &sd, |v| v["actual"] == true);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["code"], 379, "{v}");
    // Everything else goes on.
    let start = Instant::now();
    d.create_volume(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"}));
    d.call("Host.getStorageRepoStats", json!({}));
    assert!(start.elapsed() < Duration::from_secs(5));
    d.call("Host.stopMonitoringDomain", json!({"sdUUID": sd}));
    let start = Instant::now();
    d.stop(false);
    assert!(start.elapsed() < Duration::from_secs(10), "cairnd stops");
}

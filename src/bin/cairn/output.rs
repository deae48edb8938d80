//! Output for people (tables, sizes) and scripts (--json), and size parsing.

use super::*;

pub(crate) fn new_uuid() -> String {
    cairn::types::Uuid::new_v4().to_string()
}

// ---- output ----

pub(crate) fn print_value(ctx: &Ctx, v: &Value, human: impl FnOnce(&Value)) {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(v).expect("json"));
    } else {
        human(v);
    }
}

/// An object as aligned `key value` lines (or JSON with --json).
/// Reports a command that changed something: `value` with --json, else
/// one line.
pub(crate) fn done(ctx: &Ctx, value: Value, line: &str) {
    print_value(ctx, &value, |_| println!("{line}"));
}

pub(crate) fn print_fields(ctx: &Ctx, v: &Value) {
    print_value(ctx, v, print_pairs);
}

pub(crate) fn print_pairs(v: &Value) {
    let fields = v.as_object().cloned().unwrap_or_default();
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (k, val) in &fields {
        println!("{k:<width$}  {}", s(val));
    }
}

pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

pub(crate) fn parse_size(text: &str) -> Res<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| usage(format!("invalid size {text:?}")))?;
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(usage(format!(
                "invalid size suffix in {text:?} (use K, M, G or T)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| usage(format!("size {text:?} is too large")))
}

// ---- tasks ----

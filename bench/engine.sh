#!/usr/bin/env bash
# Benchmarks of Cairn's task, recovery and lock machinery (issue 3), run
# in-process on the file system of the working directory; rewrites the
# engine table in bench/RESULTS.md. With SOAK=1 also runs the kill -9 soak.
#   bench/engine.sh            TASKS=1000 RECOVER=1000 LOCKS=1000000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins --example cairn-bench --example cairn-soak >&2
B=target/release/examples/cairn-bench
mkdir -p bench/work && cd bench/work
tasks=$(../../$B tasks --count "${TASKS:-1000}")
recovery=$(../../$B recovery --count "${RECOVER:-1000}")
locks=$(../../$B locks --count "${LOCKS:-1000000}")
soak='null'
if [ "${SOAK:-0}" = 1 ]; then
    soak=$(../../target/release/examples/cairn-soak --rounds "${ROUNDS:-200}" --clients "${CLIENTS:-4}")
fi
cd ../..
python3 - "$tasks" "$recovery" "$locks" "$soak" <<'PY'
import datetime, json, platform, sys
sys.path.insert(0, "bench")
from results import publish
t, r, l, s = (json.loads(x) for x in sys.argv[1:])
rows = [
    (f"tasks/s, same workload, in memory / persisted ({t['count']} tasks)",
     f"{t['memory_per_second']:,.0f} / {t['persisted_per_second']:,.0f}", "overhead measured"),
    (f"recover {r['count']} persisted tasks at SPM start (s)", f"{r['seconds']:.3f}", "< 1 s"),
    ("uncontended acquire + release (µs)", f"{l['uncontended_ns'] / 1000:.2f}", "< 5 µs"),
    ("64 threads on 4 resources, acquisitions/s", f"{l['contended_64_per_second']:,.0f}", "measured"),
]
if s:
    rows.append((f"kill -9 soak: {s['rounds']} rounds, {s['clients']} clients, {s['operations']} operations",
                 f"{s['violations']} violations", "0"))
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}.", "",
       "| measure | result | target |", "|---|---|---|"]
out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
text = "\n".join(out)
publish("engine", text)
PY

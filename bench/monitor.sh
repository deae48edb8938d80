#!/usr/bin/env bash
# Issue 5: the cost of monitoring 50 storage domains. cairnd monitors
# DOMAINS local domains at the default 10 s interval for SECONDS seconds;
# the CPU time of cairnd and of its dd readers (from /proc) and the reads
# issued are recorded. Every domain must stay valid throughout.
# Rewrites the monitor table in bench/RESULTS.md.
#   DOMAINS=50 SECONDS_=120 bench/monitor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
DOMAINS=${DOMAINS:-50}
DURATION=${SECONDS_:-120}
WORK=${BENCH_DIR:-$PWD/bench/work}/monitor
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --bins >&2
target/release/cairnd --data-dir "$WORK/cairn" --no-embedded-default --log-level warn >"$WORK/cairnd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
SOCK=$WORK/cairn/cairnd.sock
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
python3 - "$SOCK" "$WORK" "$DOMAINS" "$DURATION" "$PID" <<'PY'
import datetime, json, os, platform, socket, sys, time, uuid
sys.path.insert(0, "bench")
from results import publish
sock, work, n, duration, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def call(method, params):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    s.sendall(("POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)).encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    r = json.loads(data.split(b"\r\n\r\n", 1)[1])
    if "error" in r: raise SystemExit("%s: %s" % (method, r["error"]))
    return r["result"]

domains = []
for i in range(n):
    path = os.path.join(work, "storage", "d%02d" % i)
    os.makedirs(path)
    call("StoragePool.connectStorageServer", {"storagepoolID": "00000000-0000-0000-0000-000000000000",
         "domainType": "LOCALFS", "connectionParams": [{"id": i, "connection": path}]})
    sd = str(uuid.uuid4())
    call("StorageDomain.create", {"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": path,
         "name": "d%02d" % i, "domainClass": "Data"})
    domains.append(sd)

def cpu():
    """(cairnd's own CPU seconds, its reaped children's) from /proc."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12])) / tick, (int(f[13]) + int(f[14])) / tick

def reads():
    io = dict(l.split(": ") for l in open("/proc/%d/io" % pid).read().splitlines())
    return int(io["syscr"])

for sd in domains:
    call("Host.startMonitoringDomain", {"sdUUID": sd, "hostID": 1})
t0, (own0, kids0) = time.time(), cpu()
invalid = 0
while time.time() - t0 < duration:
    time.sleep(5)
    stats = call("Host.getStorageRepoStats", {})
    invalid += sum(1 for sd in domains if stats[sd]["actual"] and not stats[sd]["valid"])
elapsed = time.time() - t0
own, kids = cpu()
stats = call("Host.getStorageRepoStats", {})
delays = sorted(float(stats[sd]["delay"]) for sd in domains)
if invalid or not all(stats[sd]["valid"] for sd in domains):
    raise SystemExit("a monitored domain was reported invalid")
checks = n * elapsed / 10
own_pct = (own - own0) / elapsed * 100
kids_pct = (kids - kids0) / elapsed * 100
rows = [
    ("domains monitored, interval", f"{n}, 10 s (about {checks / elapsed:.1f} checks/s)"),
    ("cairnd CPU", f"{own_pct:.2f}% of one core"),
    ("dd readers' CPU (one per check)", f"{kids_pct:.2f}% of one core ({(kids - kids0) / checks * 1000:.2f} ms per check)"),
    ("I/O", f"{checks / elapsed:.1f} O_DIRECT reads/s of 4 KiB ({checks / elapsed * 4:.0f} KiB/s)"),
    ("read delay, median / max", f"{delays[len(delays) // 2] * 1000:.2f} / {delays[-1] * 1000:.2f} ms"),
]
text = "\n".join([f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, {elapsed:.0f} s, release build, local domains on the root disk.", "",
                  "| measure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
publish("monitor", text)
PY

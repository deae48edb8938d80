"""The Cinder face against Cairn's own JSON-RPC, in one run on one cairnd
(bench/cinder.sh starts it): thin 1 GiB volume create + delete pairs per
second through each, then the list of LIST volumes with details through
the Cinder API (pages of 1000, as clients follow them) beside JSON-RPC's
listing of the same images. A create that does not end available, or a
list that misses a volume, fails the run.

    cinder_bench.py SOCKET CINDER_ADDR PAIRS LIST
"""

import http.client
import json
import socket
import sys
import time
import uuid

BLANK = "00000000-0000-0000-0000-000000000000"


class Rpc:
    def __init__(self, path):
        class Conn(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
        self.new = lambda: Conn("cairnd", timeout=600)
        self.conn = self.new()

    def call(self, method, params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        try:
            self.conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
            raw = self.conn.getresponse().read()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # cairnd closes a connection idle for its idle timeout.
            self.conn = self.new()
            self.conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
            raw = self.conn.getresponse().read()
        r = json.loads(raw)
        if "error" in r:
            sys.exit(f"{method}: {r['error']}")
        return r["result"]

    def task(self, t):
        while True:
            st = self.call("Task.getStatus", {"taskID": t})
            if st["taskState"] == "finished":
                if st["code"] != 0:
                    sys.exit(f"task failed: {st}")
                self.call("Task.clear", {"taskID": t})
                return
            time.sleep(0.002)


class Cinder:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.headers = {"X-Auth-Token": "bench:bench", "Content-Type": "application/json",
                        "OpenStack-API-Version": "volume 3.71"}

    def req(self, method, path, body=None):
        self.conn.request(method, "/v3/bench" + path, json.dumps(body) if body else None, self.headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)

    def wait(self, vid, gone=False):
        while True:
            status, body = self.req("GET", f"/volumes/{vid}")
            if gone and status == 404:
                return
            if not gone and body["volume"]["status"] == "available":
                return
            if not gone and body["volume"]["status"] == "error":
                sys.exit(f"volume {vid} went to error: {body}")
            time.sleep(0.002)


def cinder_pairs(c, n):
    start = time.time()
    for i in range(n):
        status, body = c.req("POST", "/volumes", {"volume": {"size": 1, "name": f"pair-{i}"}})
        if status != 202:
            sys.exit(f"create: {status} {body}")
        vid = body["volume"]["id"]
        c.wait(vid)
        status, _ = c.req("DELETE", f"/volumes/{vid}")
        if status != 202:
            sys.exit(f"delete: {status}")
        c.wait(vid, gone=True)
    return n / (time.time() - start)


def rpc_pairs(r, sp, sd, n):
    start = time.time()
    for _ in range(n):
        img, vol = str(uuid.uuid4()), str(uuid.uuid4())
        r.task(r.call("Volume.create", {"storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                                        "volumeID": vol, "size": str(1 << 30), "volFormat": "COW",
                                        "preallocate": "SPARSE", "diskType": "DATA", "desc": "",
                                        "srcImgUUID": BLANK, "srcVolUUID": BLANK}))
        r.task(r.call("Image.delete", {"storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                                       "postZero": False, "force": False}))
    return n / (time.time() - start)


def main():
    sock, addr, pairs, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    r, c = Rpc(sock), Cinder(addr)
    sp = r.call("Host.getConnectedStoragePools", {})[0]
    sd = r.call("StoragePool.getInfo", {"storagepoolID": sp})["info"]["master_uuid"]
    # Alternate the two faces so neither gets a warmer disk.
    rounds = 2
    cinder_rate = sum(cinder_pairs(c, pairs // rounds) for _ in range(rounds)) / rounds
    rpc_rate = sum(rpc_pairs(r, sp, sd, pairs // rounds) for _ in range(rounds)) / rounds
    made = set()
    start = time.time()
    for i in range(count):
        status, body = c.req("POST", "/volumes", {"volume": {"size": 1, "name": f"list-{i:05}"}})
        if status != 202:
            sys.exit(f"create: {status} {body}")
        made.add(body["volume"]["id"])
    fill_s = time.time() - start
    for vid in made:
        c.wait(vid)
    # The list: pages of 1000 with details, following next links.
    best = None
    for _ in range(3):
        start, seen, path = time.time(), set(), "/volumes/detail?limit=1000"
        while path:
            status, body = c.req("GET", path)
            if status != 200:
                sys.exit(f"list: {status} {body}")
            seen.update(v["id"] for v in body["volumes"])
            nxt = [l["href"] for l in body.get("volumes_links", []) if l["rel"] == "next"]
            path = nxt[0][nxt[0].index("/volumes"):] if nxt else None
        took = time.time() - start
        if made - seen:
            sys.exit(f"the list missed {len(made - seen)} volumes")
        best = took if best is None else min(best, took)
    start = time.time()
    images = r.call("StorageDomain.getImages", {"storagedomainID": sd})
    rpc_list = time.time() - start
    if not made <= set(images):
        sys.exit("StorageDomain.getImages missed volumes")
    print(json.dumps({"pairs": pairs, "cinder_pairs_s": cinder_rate, "rpc_pairs_s": rpc_rate,
                      "count": count, "fill_s": fill_s, "list_s": best, "rpc_images_s": rpc_list}))


if __name__ == "__main__":
    main()

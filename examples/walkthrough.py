#!/usr/bin/env python3
"""The classic VDSM walkthrough, against cairnd, over plain JSON-RPC 2.0.

connectStorageServer -> StorageDomain.create -> StoragePool.create ->
StoragePool.connect -> spmStart -> Volume.create (10 GiB COW/SPARSE leaf)
-> wait for the task -> Task.clear.

Only the Python standard library is used. Run it against a cairnd started
without the embedded default pool (a host connects to one pool at a time):

    cairnd --data-dir /tmp/cairn-demo --no-embedded-default &
    python3 examples/walkthrough.py --socket /tmp/cairn-demo/cairnd.sock \
        --storage /tmp/cairn-demo/walkthrough

or over TCP, which is mutual TLS: `cairnd --listen 127.0.0.1:4044` with the
certificates of `cairn pki`, and `--url https://127.0.0.1:4044 --cert
client.pem --key client-key.pem --ca ca.pem`.
"""

import argparse
import http.client
import itertools
import json
import os
import socket
import ssl
import sys
import time
import uuid

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
LOCALFS_DOMAIN = 4
DATA_DOMAIN = 1
COW_FORMAT = 4
SPARSE_VOL = 2


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


class VdsmError(Exception):
    def __init__(self, code, message):
        super().__init__("error %s: %s" % (code, message))
        self.code = code


class Client:
    def __init__(self, socket_path=None, url=None, tls=None):
        self._socket = socket_path
        self._url = url
        self._tls = tls
        self._ids = itertools.count(1)

    def _connection(self):
        if self._socket:
            return UnixHTTPConnection(self._socket)
        host = self._url.split("://", 1)[-1].rstrip("/")
        if self._tls:
            return http.client.HTTPSConnection(host, context=self._tls)
        return http.client.HTTPConnection(host)

    def call(self, method, **params):
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        conn = self._connection()
        conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        conn.close()
        if "error" in reply:
            raise VdsmError(reply["error"]["code"], reply["error"]["message"])
        print("%-35s -> %s" % (method, json.dumps(reply["result"])))
        return reply["result"]


def wait_task(client, task_id):
    while True:
        status = client.call("Task.getStatus", taskID=task_id)
        if status["taskState"] == "finished":
            break
        time.sleep(0.1)
    if status["taskResult"] != "success":
        raise VdsmError(status["code"], status["message"])
    client.call("Task.clear", taskID=task_id)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", help="cairnd's Unix socket")
    ap.add_argument("--url", help="cairnd's TCP address, e.g. https://127.0.0.1:4044")
    ap.add_argument("--cert", help="this client's certificate (for https)")
    ap.add_argument("--key", help="its private key")
    ap.add_argument("--ca", help="the cluster CA that signed cairnd's certificate")
    ap.add_argument("--storage", required=True, help="a local directory to hold the new domain")
    args = ap.parse_args()
    if not (args.socket or args.url):
        ap.error("give --socket or --url")

    tls = None
    if args.url and args.url.startswith("https://"):
        if not (args.cert and args.key and args.ca):
            ap.error("https needs --cert, --key and --ca (cairnd authenticates its clients)")
        tls = ssl.create_default_context(cafile=args.ca)
        tls.load_cert_chain(args.cert, args.key)
    client = Client(args.socket, args.url, tls)
    sp_uuid, sd_uuid, img_uuid, vol_uuid = (str(uuid.uuid4()) for _ in range(4))
    os.makedirs(args.storage, exist_ok=True)
    path = os.path.abspath(args.storage)
    master_version = 1
    host_id = 1

    statuses = client.call("StoragePool.connectStorageServer", storagepoolID=BLANK_UUID,
                           domainType=LOCALFS_DOMAIN, connectionParams=[dict(id=1, connection=path)])
    assert statuses == [{"id": 1, "status": 0}], statuses

    client.call("StorageDomain.create", storagedomainID=sd_uuid, domainType=LOCALFS_DOMAIN,
                typeArgs=path, name="my local domain", domainClass=DATA_DOMAIN, version=5)

    client.call("StoragePool.create", storagepoolID=sp_uuid, name="pool name", masterSdUUID=sd_uuid,
                masterVersion=master_version, domainList=[sd_uuid], lockRenewalIntervalSec=0,
                leaseTimeSec=0, ioOpTimeoutSec=0, leaseRetries=0)

    client.call("StoragePool.connect", storagepoolID=sp_uuid, hostID=host_id, scsiKey="scsikey",
                masterSdUUID=sd_uuid, masterVersion=master_version)

    task = client.call("StoragePool.spmStart", storagepoolID=sp_uuid, prevID=-1, prevLver="-1",
                       enableScsiFencing="false")
    wait_task(client, task)

    size = 10 * 1024 ** 3
    task = client.call("Volume.create", volumeID=vol_uuid, storagepoolID=sp_uuid, storagedomainID=sd_uuid,
                       imageID=img_uuid, size=str(size), volFormat=COW_FORMAT, preallocate=SPARSE_VOL,
                       diskType="DATA", desc="volly", srcImgUUID=BLANK_UUID, srcVolUUID=BLANK_UUID)
    wait_task(client, task)

    info = client.call("Volume.getInfo", volumeID=vol_uuid, storagepoolID=sp_uuid, storagedomainID=sd_uuid,
                       imageID=img_uuid)
    assert info["capacity"] == size and info["format"] == "COW" and info["legality"] == "LEGAL", info
    path = client.call("Image.prepare", storagepoolID=sp_uuid, storagedomainID=sd_uuid, imageID=img_uuid,
                       volumeID=vol_uuid)["path"]
    print("\nthe disk is ready; a VM would open %s" % path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VdsmError as e:
        print("failed: %s" % e, file=sys.stderr)
        sys.exit(1)

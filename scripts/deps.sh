# Installs what Cairn needs to build, run and test, if it is missing.
# Sourced by scripts/run-cairnd and scripts/test.

set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-img || need_pkgs+=(qemu-utils)
have mkfs.xfs || need_pkgs+=(xfsprogs)
have mkfs.ext4 || need_pkgs+=(e2fsprogs)
have losetup || need_pkgs+=(util-linux)
have mount || need_pkgs+=(mount)
have python3 || need_pkgs+=(python3)
have cc || need_pkgs+=(gcc)
# sanlock: the daemon for shared-storage leases, and libsanlock_client,
# which cairnd links.
have sanlock || need_pkgs+=(sanlock)
[ -e /usr/include/sanlock.h ] || need_pkgs+=(libsanlock-dev)
# lvm2: block domains are LVM volume groups (the tests drive real lvm
# commands on loop devices).
have lvm || need_pkgs+=(lvm2)
# GlusterFS: the tests run a real one-brick volume.
have glusterd || need_pkgs+=(glusterfs-server glusterfs-client)
# tgt serves block volumes to other hosts over iSCSI; the tests log in
# with libiscsi's user-space initiator.
have tgtd || need_pkgs+=(tgt)
have iscsi-readcapacity16 || need_pkgs+=(libiscsi-bin)

if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "cairn: installing ${need_pkgs[*]}" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        have sudo || { echo "cairn: need root (or sudo) to install ${need_pkgs[*]}" >&2; exit 1; }
        SUDO=sudo
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
    echo "cairn: Rust (cargo) is not installed; install a toolchain >= 1.85 with rustup" >&2
    exit 1
fi

# Two cores on the reference machines: keep builds to two jobs.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

# OpenStack's clients, unchanged from PyPI, for the Cinder face's tests
# and its README examples: a virtualenv of their own under target/.
clients_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/openstack-clients"
if [ ! -x "$clients_venv/bin/cinder" ] || [ ! -x "$clients_venv/bin/openstack" ]; then
    echo "cairn: installing python-cinderclient, openstacksdk and python-openstackclient into $clients_venv" >&2
    python3 -m venv "$clients_venv" 2>/dev/null || {
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$clients_venv"
    }
    "$clients_venv/bin/pip" install -q python-cinderclient openstacksdk python-openstackclient
fi
# A real Keystone (SQLite, fernet tokens) for the Cinder face's Keystone
# mode: a virtualenv of its own, since its pins differ from the clients'.
keystone_venv="$(dirname "$clients_venv")/keystone"
if [ ! -x "$keystone_venv/bin/keystone-manage" ]; then
    echo "cairn: installing keystone into $keystone_venv" >&2
    python3 -m venv "$keystone_venv"
    "$keystone_venv/bin/pip" install -q keystone
fi

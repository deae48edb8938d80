#!/bin/bash
# Runs inside the VM of bench/thin.sh (Debian's kernel under TCG, which has
# device-mapper): what device-mapper adds to an lvextend, under a writer.
# lvextend of an active LV (lvm suspends, reloads and resumes its mapping)
# against lvextend of an inactive one (metadata only), alternately, COUNT
# times each. Prints JSON: both lists of times in ms.
set -euo pipefail
COUNT=${1:-10}
modprobe dm-mod
modprobe loop
truncate -s 8G /tmp/lun
lun=$(losetup -f --show /tmp/lun)
cfg="devices { filter=[\"a|^$lun\$|\",\"r|.*|\"] obtain_device_list_from_udev=0 }
activation { udev_sync=0 udev_rules=0 monitoring=0 } backup { backup=0 archive=0 }"
lvm pvcreate -q --config "$cfg" "$lun" >/dev/null 2>&1
lvm vgcreate -q --config "$cfg" vg "$lun" >/dev/null 2>&1
lvm lvcreate -q --config "$cfg" -n active -L 256M -ay vg >/dev/null 2>&1
lvm lvcreate -q --config "$cfg" -n inactive -L 256M -an -Zn vg >/dev/null 2>&1
[ -b /dev/mapper/vg-active ] || { echo "no device-mapper mapping" >&2; exit 1; }
# The writer: direct 1 MiB writes over the active LV's first 256 MiB (tmpfs under it).
(while :; do dd if=/dev/zero of=/dev/mapper/vg-active bs=1M count=256 oflag=direct status=none; done) &
writer=$!
sleep 1
ms() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1; echo $(( (${EPOCHREALTIME/./} - ${s/./}) / 1000 )); }
dm=() meta=()
for _ in $(seq "$COUNT"); do
    dm+=("$(ms lvm lvextend -q --config "$cfg" -L +16M vg/active)")
    meta+=("$(ms lvm lvextend -q --config "$cfg" -L +16M vg/inactive)")
done
kill $writer
size=$(blockdev --getsize64 /dev/mapper/vg-active)
want=$(( (256 + 16 * COUNT) << 20 ))
[ "$size" = "$want" ] || { echo "the mapping holds $size bytes, not $want" >&2; exit 1; }
IFS=,
echo "{\"dm_ms\": [${dm[*]}], \"metadata_ms\": [${meta[*]}]}"

#!/bin/bash
# STAND-IN, tests only: runs the real lvm(8) with activation disabled, for
# kernels without device-mapper (this machine's). Metadata commands (pv*,
# vg*, lvcreate, lvextend, tags, reports) are real. Activation is imitated:
# an LV of one segment is mapped by a loop device over its extents on the
# PV, linked as /dev/<vg>/<lv> as udev links a device-mapper LV; an LV of
# several segments cannot be, and activating it fails saying so (the VM
# tier runs those with device-mapper). cairnd runs this when CAIRN_LVM
# names it. lvm prints "WARNING: Activation disabled." on every call.
set -u
args=()
config=""
while [ $# -gt 0 ]; do
    if [ "$1" = "--config" ]; then
        config="$2 global { activation=0 } activation { udev_sync=0 udev_rules=0 monitoring=0 }"
        args+=("--config" "$config")
        shift 2
    else
        args+=("$1")
        shift
    fi
done

report() { # report <field> <vg/lv>
    lvm lvs --config "$config" --noheadings --nosuffix --units b -o "$1" "$2" 2>/dev/null
}

deactivate() { # deactivate <vg/lv>
    local link="/dev/$1"
    [ -L "$link" ] || return 0
    local dev
    dev=$(readlink -f "$link")
    rm -f "$link"
    rmdir "$(dirname "$link")" 2>/dev/null
    # Detaches now, or when the last opener closes it.
    losetup -d "$dev" 2>/dev/null
    return 0
}

activate() { # activate <vg/lv>
    local name="$1" ranges pv first last size pe_start extent offset dev
    local rows
    # A row per segment.
    rows=$(report seg_pe_ranges,lv_size,vg_extent_size "$name")
    read -r ranges size extent <<< "$rows"
    [ "$(grep -c . <<< "$rows")" = 1 ] || ranges="$ranges more"
    case "$ranges" in
        *" "*|"")
            echo "  stand-in: $name has ${ranges:-no} segments; only a one-segment LV can be mapped without device-mapper" >&2
            return 5 ;;
    esac
    pv=${ranges%%:*}
    first=${ranges#*:}; first=${first%-*}
    pe_start=$(lvm pvs --config "$config" --noheadings --nosuffix --units b -o pe_start "$pv" 2>/dev/null | xargs)
    offset=$((pe_start + first * extent))
    dev=$(losetup -f --show --direct-io=on --offset "$offset" --sizelimit "$size" "$pv") || return 5
    mkdir -p "/dev/${name%%/*}"
    ln -sfn "$dev" "/dev/$name.new" && mv -T "/dev/$name.new" "/dev/$name"
}

# Remaps an active LV to its new size as device-mapper does: the same
# device grows, so whoever holds it open (a guest) sees the new size. A loop
# device can only grow where it lies; an LV whose start moved is mapped
# anew instead.
remap() { # remap <vg/lv>
    local name="$1" old rows ranges size extent pv first pe_start offset
    old=$(readlink -f "/dev/$name")
    rows=$(report seg_pe_ranges,lv_size,vg_extent_size "$name")
    read -r ranges size extent <<< "$rows"
    if [ "$(grep -c . <<< "$rows")" = 1 ] && [ "${ranges#* }" = "$ranges" ]; then
        pv=${ranges%%:*}
        first=${ranges#*:}; first=${first%-*}
        pe_start=$(lvm pvs --config "$config" --noheadings --nosuffix --units b -o pe_start "$pv" 2>/dev/null | xargs)
        offset=$((pe_start + first * extent))
        if [ "$(losetup --list --noheadings -O OFFSET "$old" | xargs)" = "$offset" ]; then
            python3 - "$old" "$size" <<'PY' && return 0
import fcntl, os, struct, sys
GET, SET = 0x4C05, 0x4C04  # LOOP_GET_STATUS64, LOOP_SET_STATUS64
fd = os.open(sys.argv[1], os.O_RDONLY)
info = bytearray(232)  # struct loop_info64
fcntl.ioctl(fd, GET, info)
struct.pack_into("=Q", info, 32, int(sys.argv[2]))  # lo_sizelimit
fcntl.ioctl(fd, SET, info)
PY
        fi
    fi
    activate "$name" || return 5
    losetup -d "$old" 2>/dev/null
    return 0
}

# The LVs a command names as vg/lv.
named_lvs() {
    local a skip=0
    for a in "$@"; do
        if [ $skip = 1 ]; then skip=0; continue; fi
        case "$a" in
            --config|--addtag|--deltag|--size|-L|--name|-n) skip=1 ;;
            */*) [ "${a#/}" = "$a" ] && echo "$a" ;;
        esac
    done
}

cmd="${args[0]}"
mode=""
for ((i = 1; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --activate|-a) mode="${args[$((i + 1))]}" ;;
        -ay) mode=y ;;
        -an) mode=n ;;
        --refresh) mode=refresh ;;
    esac
done

case "$cmd" in
    lvremove)
        for lv in $(named_lvs "${args[@]}"); do deactivate "$lv"; done ;;
    vgremove)
        vg="${args[-1]}"
        for link in /dev/"$vg"/*; do [ -L "$link" ] && deactivate "$vg/$(basename "$link")"; done ;;
esac

lvm "${args[@]}"
rc=$?
[ $rc -eq 0 ] || exit $rc

case "$cmd" in
    lvcreate)
        case "$mode" in
            y|ey|sy|ly)
                name="" prev=""
                for a in "${args[@]}"; do
                    case "$prev" in --name|-n) name="$a" ;; esac
                    prev="$a"
                done
                activate "${args[-1]}/$name" || exit 5 ;;
        esac ;;
    lvchange)
        for lv in $(named_lvs "${args[@]}"); do
            case "$mode" in
                y|ey|sy|ly) [ -L "/dev/$lv" ] || activate "$lv" || exit 5 ;;
                n) deactivate "$lv" ;;
                                refresh) if [ -L "/dev/$lv" ]; then remap "$lv" || exit 5; fi ;;
            esac
        done ;;
    lvextend)
        driverloaded=y prev=""
        for a in "${args[@]}"; do [ "$a" = "n" ] && [ "$prev" = "--driverloaded" ] && driverloaded=n; prev="$a"; done
        if [ $driverloaded = y ]; then
            for lv in $(named_lvs "${args[@]}"); do
                if [ -L "/dev/$lv" ]; then remap "$lv" || exit 5; fi
            done
        fi ;;
esac
exit 0

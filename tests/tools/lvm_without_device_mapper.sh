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

# One row per segment of an LV: PV, where the PV's extents start, the
# segment's first extent and length, the LV's size, the extent size (one
# lvm command: activation and remapping sit in every extend's latency).
segments() { # segments <vg/lv>
    lvm pvs --config "$config" --segments --noheadings --nosuffix --units b \
        -o pv_name,pe_start,pvseg_start,pvseg_size,lv_size,vg_extent_size \
        -S "vg_name=${1%%/*} && lv_name=${1#*/}" 2>/dev/null
}

# Where a one-segment LV lies: "PV OFFSET SIZE", or a message and failure.
placement() { # placement <vg/lv>
    local rows pv pe_start first _count size extent
    rows=$(segments "$1")
    if [ "$(grep -c . <<< "$rows")" != 1 ]; then
        echo "  stand-in: $1 has $(grep -c . <<< "$rows") segments; only a one-segment LV can be mapped without device-mapper" >&2
        return 5
    fi
    read -r pv pe_start first _count size extent <<< "$rows"
    echo "$pv $((pe_start + first * extent)) $size"
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
    local name="$1" where pv offset size dev
    where=$(placement "$name") || return 5
    read -r pv offset size <<< "$where"
    dev=$(losetup -f --show --direct-io=on --offset "$offset" --sizelimit "$size" "$pv") || return 5
    mkdir -p "/dev/${name%%/*}"
    ln -sfn "$dev" "/dev/$name.new" && mv -T "/dev/$name.new" "/dev/$name"
}

# Remaps an active LV to its new size as device-mapper does: the same
# device grows, so whoever holds it open (a guest) sees the new size. A loop
# device can only grow where it lies; an LV whose start moved is mapped
# anew instead.
remap() { # remap <vg/lv>
    local started=$EPOCHREALTIME
    remap_inner "$1"
    local rc=$?
    # Benchmarks take this imitation's cost out of their figures.
    if [ -n "${CAIRN_STANDIN_TIMES:-}" ]; then
        echo "remap $1 $(( (${EPOCHREALTIME/./} - ${started/./}) / 1000 ))" >> "$CAIRN_STANDIN_TIMES"
    fi
    return $rc
}

remap_inner() { # remap_inner <vg/lv>
    local name="$1" old where _pv offset size
    old=$(readlink -f "/dev/$name")
    if where=$(placement "$name" 2>/dev/null); then
        read -r _pv offset size <<< "$where"
        if [ "$(losetup --list --noheadings -O OFFSET "$old" | xargs)" = "$offset" ]; then
            # LOOP_GET_STATUS64, then LOOP_SET_STATUS64 with lo_sizelimit
            # (offset 32 of struct loop_info64, 232 bytes) set.
            perl -e 'open(my $f, "<", $ARGV[0]) or die "$ARGV[0]: $!";
                my $i = "\0" x 232;
                ioctl($f, 0x4C05, $i) or die "LOOP_GET_STATUS64: $!";
                substr($i, 32, 8) = pack("Q", $ARGV[1]);
                ioctl($f, 0x4C04, $i) or die "LOOP_SET_STATUS64: $!";' "$old" "$size" && return 0
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

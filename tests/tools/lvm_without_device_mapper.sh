#!/bin/bash
# STAND-IN, tests only: runs the real lvm(8) with activation disabled, for
# kernels without device-mapper (this machine's). Metadata commands (pv*,
# vg*, lvcreate, lvextend, tags, reports) are real; activation and refresh
# succeed and do nothing, as lvm does with activation=0. cairnd runs it when
# CAIRN_LVM names it; the VM tier uses the real lvm with device-mapper.
# lvm prints "WARNING: Activation disabled." on every call, saying so.
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--config" ]; then
        args+=("--config" "$2 global { activation=0 } activation { udev_sync=0 udev_rules=0 monitoring=0 }")
        shift 2
    else
        args+=("$1")
        shift
    fi
done
exec lvm "${args[@]}"

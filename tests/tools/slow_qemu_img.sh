#!/bin/sh
# Stands in for qemu-img in one test: "convert" becomes a copy that takes
# five minutes (the same process, so it keeps what cairnd set up for it);
# every other command is the real qemu-img.
if [ "$1" = convert ]; then
    echo "slow_qemu_img.sh: stand-in: convert sleeps" >&2
    exec sleep 300
fi
exec qemu-img "$@"

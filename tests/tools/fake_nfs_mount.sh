#!/bin/sh
# Stands in for mount(8) where the kernel has no NFS client: records each
# call's arguments (one line each) in $FAKE_NFS_LOG; an NFS mount
# "-t nfs -o OPTIONS -- SERVER:/EXPORT TARGET" bind-mounts
# $FAKE_NFS_ROOT/SERVER/EXPORT on TARGET instead. Anything else goes to
# the real mount.
printf '%s\n' "$*" >> "$FAKE_NFS_LOG"
if [ "$1" = "-t" ] && [ "$2" = "nfs" ]; then
    while [ "$1" != "--" ]; do shift; done
    spec=$2 target=$3
    server=${spec%%:*} export=${spec#*:}
    exec mount --bind "$FAKE_NFS_ROOT/$server$export" "$target"
fi
exec mount "$@"

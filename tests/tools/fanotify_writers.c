/*
 * Reports every write on a file system, with the process that made it:
 * one line per fanotify FAN_MODIFY event, in the order the
 * kernel queued them. The mark covers the whole file system (every mount
 * of it), so writes by hosts that mounted the same device elsewhere are
 * seen too. The multi-host tests use it to check that only the holder of
 * the SDM lease writes metadata. Needs CAP_SYS_ADMIN.
 *
 * Each line is "<pid>\t<parent pid>\t<path>"; the parent is 0 when the
 * writer has exited before its event is read.
 *
 * Usage: fanotify_writers <any path on the file system>
 * Prints "ready" once the mark is in place.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

static int parent_of(int pid)
{
    char stat[64];
    snprintf(stat, sizeof(stat), "/proc/%d/stat", pid);
    FILE *f = fopen(stat, "r");
    int ppid = 0;
    if (f) {
        /* pid (comm) state ppid: comm may hold spaces, so skip past ')'. */
        char line[1024];
        if (fgets(line, sizeof(line), f)) {
            char *end = strrchr(line, ')');
            if (end)
                sscanf(end + 1, " %*c %d", &ppid);
        }
        fclose(f);
    }
    return ppid;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_UNLIMITED_QUEUE, O_RDONLY | O_LARGEFILE);
    if (fan < 0) {
        perror("fanotify_init");
        return 1;
    }
    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_MODIFY, AT_FDCWD, argv[1]) < 0) {
        perror("fanotify_mark");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64 * 1024] __attribute__((aligned(8)));
    for (;;) {
        ssize_t len = read(fan, buf, sizeof(buf));
        if (len <= 0) {
            perror("read");
            return 1;
        }
        struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(ev, len); ev = FAN_EVENT_NEXT(ev, len)) {
            if (ev->fd < 0)
                continue;
            char link[64], path[PATH_MAX];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", ev->fd);
            ssize_t n = readlink(link, path, sizeof(path) - 1);
            path[n < 0 ? 0 : n] = 0;
            printf("%d\t%d\t%s\n", ev->pid, parent_of(ev->pid), path);
            close(ev->fd);
        }
        fflush(stdout);
    }
}

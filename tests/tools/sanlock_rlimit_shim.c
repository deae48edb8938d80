/*
 * LD_PRELOAD shim for running the sanlock daemon in a container without
 * CAP_SYS_RESOURCE: the daemon raises its memlock limit at start and exits
 * when it may not. This makes setrlimit calls refused with EPERM succeed.
 * Test harness only; production hosts run sanlock as packaged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>
int setrlimit(__rlimit_resource_t r, const struct rlimit *l) {
    int (*real)(__rlimit_resource_t, const struct rlimit *) = dlsym(RTLD_NEXT, "setrlimit");
    int rv = real(r, l);
    if (rv != 0 && errno == EPERM) { errno = 0; return 0; }
    return rv;
}
int setrlimit64(__rlimit_resource_t r, const struct rlimit64 *l) {
    int (*real)(__rlimit_resource_t, const struct rlimit64 *) = dlsym(RTLD_NEXT, "setrlimit64");
    int rv = real(r, l);
    if (rv != 0 && errno == EPERM) { errno = 0; return 0; }
    return rv;
}

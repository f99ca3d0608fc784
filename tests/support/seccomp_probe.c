/*
 * A probe run inside a test container (tests/seccomp.rs): it makes the
 * syscalls a default seccomp profile refuses and prints, one line each,
 * `<what>: ok` or `<what>: <errno name>`. Built static by the test, since
 * the busybox rootfs has no libc. Argument: a host pid to ptrace and read.
 * It refuses to run outside a rundmc container (no /.rundmc/init): on the
 * host, as root, its mount and ptrace would succeed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void report(const char *what, long rc)
{
    if (rc < 0)
        printf("%s: %s\n", what, strerrorname_np(errno));
    else
        printf("%s: ok\n", what);
}

int main(int argc, char **argv)
{
    if (access("/.rundmc/init", F_OK) != 0) {
        fprintf(stderr, "seccomp_probe: not in a rundmc container; refusing to run\n");
        return 2;
    }
    pid_t host_pid = argc > 1 ? (pid_t)atoi(argv[1]) : 1;

    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    report("add_key", syscall(SYS_add_key, "user", "rundmc-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));

    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));

    mkdir("/tmp/probe-mnt", 0700);
    report("mount", mount("none", "/tmp/probe-mnt", "tmpfs", 0, ""));
    report("unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER));

    report("ptrace(PTRACE_ATTACH, host pid)", ptrace(PTRACE_ATTACH, host_pid, 0, 0));
    char buf[8];
    struct iovec local = {buf, sizeof(buf)};
    struct iovec remote = {(void *)0x400000, sizeof(buf)};
    report("process_vm_readv(host pid)", process_vm_readv(host_pid, &local, 1, &remote, 1, 0));
    fflush(stdout);
    return 0;
}

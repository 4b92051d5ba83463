//! The default seccomp profile of every runtime: an allowlist modelled on Docker's / podman's
//! default (`moby/profiles/seccomp/default.json`) for a container without extra capabilities; every
//! other system call fails with EPERM.
//!
//! Left out on purpose (so EPERM): namespaces (`unshare`, `setns`; `clone` with a `CLONE_NEW*`
//! flag), mounts, the kernel keyring (`keyctl`, `add_key`, `request_key`), `bpf`,
//! `perf_event_open`, `userfaultfd` without `UFFD_USER_MODE_ONLY`, modules, `kexec_*`, `reboot`, swap, clock setting,
//! `open_by_handle_at`, `io_uring_*` (as Docker since 2023), and — stricter than Docker —
//! `ptrace`, `process_vm_readv/writev` and `kcmp` (a traced task cannot be checkpointed by CRIU)
//! and every non-native ABI (32-bit `int 0x80` calls are refused by architecture).
//! `clone3` answers ENOSYS, as in Docker, so that libc falls back to `clone`, whose flags the
//! filter can see.
//!
//! CRIU needs nothing added: it suspends the filter of the tasks it dumps
//! (`PTRACE_O_SUSPEND_SECCOMP`) and restores each task's filter itself as the last step of a
//! restore, so the filter travels with every checkpoint and migration.

use crate::{internal, Result};
use oci_spec::runtime::LinuxSeccomp;

/// System calls allowed with any arguments.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// `personality` values allowed (as Docker): Linux, `UNAME26`, `ADDR_NO_RANDOMIZE` and the query.
pub const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// `clone` is allowed only without any of these flags (`CLONE_NEWNS | CLONE_NEWCGROUP |
/// CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`): threads and
/// processes, never namespaces.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `UFFD_USER_MODE_ONLY`, the flag every userfaultfd created in a runtime must carry.
pub const UFFD_USER_MODE_ONLY: u64 = 1;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The seccomp section of a runtime's config.json.
pub fn profile() -> Result<LinuxSeccomp> {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_X86_64",
    };
    let mut syscalls = vec![serde_json::json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    for p in PERSONALITIES {
        syscalls.push(serde_json::json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
        }));
    }
    syscalls.push(serde_json::json!({
        "names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
    }));
    // Only user-mode userfaultfds (`UFFD_USER_MODE_ONLY`: no faults from kernel accesses, the
    // kind an unprivileged process may create): the pre-copy write tracker injects one into each
    // process (`ferry-tracker`) and takes it over at once.
    syscalls.push(serde_json::json!({
        "names": ["userfaultfd"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": UFFD_USER_MODE_ONLY, "valueTwo": UFFD_USER_MODE_ONLY, "op": "SCMP_CMP_MASKED_EQ"}],
    }));
    syscalls.push(serde_json::json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
    }));
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [arch],
        "syscalls": syscalls,
    }))
    .map_err(|e| internal!("seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_an_allowlist_that_refuses_namespaces_and_keys() {
        let p = profile().unwrap();
        assert_eq!(
            p.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        let allowed: Vec<&String> = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.args().is_none() && s.errno_ret().is_none())
            .flat_map(|s| s.names())
            .collect();
        for forbidden in [
            "unshare",
            "setns",
            "mount",
            "keyctl",
            "add_key",
            "bpf",
            "ptrace",
            "clone",
            "clone3",
            "io_uring_setup",
            "userfaultfd",
            "perf_event_open",
            "personality",
        ] {
            assert!(
                !allowed.iter().any(|n| *n == forbidden),
                "{forbidden} must not be allowed unconditionally"
            );
        }
        for needed in [
            "read",
            "futex",
            "mmap",
            "socket",
            "execve",
            "rseq",
            "getrandom",
        ] {
            assert!(allowed.iter().any(|n| *n == needed), "{needed} missing");
        }
        let mut names: Vec<&&str> = ALLOWED.iter().collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len(), "duplicate names in the list");
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.to_string().contains("SCMP_CMP_MASKED_EQ"), "{json}");
        // userfaultfd only with UFFD_USER_MODE_ONLY set (the write tracker's kind).
        let uffd: Vec<&serde_json::Value> = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n == "userfaultfd")
            })
            .collect();
        assert_eq!(uffd.len(), 1, "{json}");
        let arg = &uffd[0]["args"][0];
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(
            (&arg["index"], &arg["value"], &arg["valueTwo"]),
            (&0.into(), &1.into(), &1.into())
        );
    }
}

//! Run a system call inside another process: stop all its threads with `PTRACE_SEIZE` +
//! `PTRACE_INTERRUPT`, write `syscall; int3` at one thread's instruction pointer, run it, restore
//! code and registers, detach. x86_64 only.

use std::collections::BTreeMap;
use std::io;

/// A process whose every thread is stopped under ptrace; detached (and resumed) on drop.
pub struct Stopped {
    pid: i32,
    /// Thread id → signal to deliver when detaching (a signal that arrived while we held it).
    threads: BTreeMap<i32, i32>,
}

fn ptrace(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> io::Result<i64> {
    // PEEKTEXT returns data in the result: clear errno to tell it from an error.
    unsafe { *libc::__errno_location() = 0 };
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error().unwrap_or(0) != 0 {
            return Err(e);
        }
    }
    Ok(r)
}

/// Wait for `tid` to stop; returns the raw wait status.
fn wait_stop(tid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if r == tid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if !libc::WIFSTOPPED(status) {
        return Err(io::Error::other(format!(
            "thread {tid} exited while being stopped"
        )));
    }
    Ok(status)
}

fn is_event_stop(status: i32) -> bool {
    (status >> 16) == libc::PTRACE_EVENT_STOP
}

fn tasks(pid: i32) -> io::Result<Vec<i32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(t) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            v.push(t);
        }
    }
    Ok(v)
}

impl Stopped {
    /// Seize and stop every thread of `pid` (repeating until no new thread appears).
    pub fn seize(pid: i32) -> io::Result<Stopped> {
        let mut s = Stopped {
            pid,
            threads: BTreeMap::new(),
        };
        loop {
            let mut fresh = false;
            for tid in tasks(pid)? {
                if s.threads.contains_key(&tid) {
                    continue;
                }
                if let Err(e) = ptrace(libc::PTRACE_SEIZE, tid, 0, 0) {
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        continue; // the thread exited meanwhile
                    }
                    return Err(e);
                }
                s.threads.insert(tid, 0);
                fresh = true;
                ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)?;
                let st = wait_stop(tid)?;
                if !is_event_stop(st) {
                    // A signal-delivery stop: keep the signal for the detach.
                    s.threads.insert(tid, libc::WSTOPSIG(st));
                }
            }
            if !fresh {
                return Ok(s);
            }
        }
    }

    /// Run system call `nr` with `args` in the process; returns its raw result (`-errno` on error).
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> io::Result<i64> {
        let tid = self.pid;
        if !self.threads.contains_key(&tid) {
            return Err(io::Error::other("the main thread is gone"));
        }
        let mut saved: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        ptrace(libc::PTRACE_GETREGS, tid, 0, &mut saved as *mut _ as u64)?;
        let at = saved.rip;
        let orig = ptrace(libc::PTRACE_PEEKTEXT, tid, at, 0)? as u64;
        // syscall (0f 05); int3 (cc)
        let code = (orig & !0xff_ffff) | 0xcc_05_0f;
        ptrace(libc::PTRACE_POKETEXT, tid, at, code)?;
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX; // no syscall restart for the interrupted call
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = at;
        let run = (|| -> io::Result<i64> {
            ptrace(libc::PTRACE_SETREGS, tid, 0, &regs as *const _ as u64)?;
            let mut deliver = 0;
            loop {
                ptrace(libc::PTRACE_CONT, tid, 0, 0)?;
                let st = wait_stop(tid)?;
                let sig = libc::WSTOPSIG(st);
                if sig == libc::SIGTRAP && !is_event_stop(st) {
                    break;
                }
                if !is_event_stop(st) {
                    deliver = sig;
                }
            }
            if deliver != 0 {
                self.threads.insert(tid, deliver);
            }
            let mut out: libc::user_regs_struct = unsafe { std::mem::zeroed() };
            ptrace(libc::PTRACE_GETREGS, tid, 0, &mut out as *mut _ as u64)?;
            Ok(out.rax as i64)
        })();
        // Put the code and registers back whatever happened.
        let a = ptrace(libc::PTRACE_POKETEXT, tid, at, orig);
        let b = ptrace(libc::PTRACE_SETREGS, tid, 0, &saved as *const _ as u64);
        let r = run?;
        a?;
        b?;
        Ok(r)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for (&tid, &sig) in &self.threads {
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, sig as u64);
        }
    }
}

//! The memory areas of a process as `/proc/PID/smaps` lists them, with the flags the tracker needs.

use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub private: bool,
    /// Registered for userfaultfd write-protect (`uw` in VmFlags).
    pub uffd_wp: bool,
    /// `THPeligible: 1`.
    pub thp_eligible: bool,
    pub name: String,
}

impl Vma {
    /// Private writable memory: what the tracker registers.
    pub fn trackable(&self) -> bool {
        self.writable && self.private && self.name != "[vsyscall]"
    }
}

/// Parse `/proc/PID/smaps`.
pub fn read(pid: i32) -> io::Result<Vec<Vma>> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/smaps"))?)
}

pub fn parse(text: &str) -> io::Result<Vec<Vma>> {
    let bad = |l: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected smaps line {l:?}"),
        )
    };
    let mut v: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let mut f = line.split_whitespace();
                let perms = f.nth(1).ok_or_else(|| bad(line))?;
                let name = f.nth(3).unwrap_or("").to_string();
                v.push(Vma {
                    start,
                    end,
                    writable: perms.as_bytes().get(1) == Some(&b'w'),
                    private: perms.as_bytes().get(3) == Some(&b'p'),
                    uffd_wp: false,
                    thp_eligible: false,
                    name,
                });
                continue;
            }
        }
        let Some(last) = v.last_mut() else { continue };
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            last.uffd_wp = flags.split_whitespace().any(|f| f == "uw");
        } else if let Some(t) = line.strip_prefix("THPeligible:") {
            last.thp_eligible = t.trim() == "1";
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_names() {
        let t = "\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
THPeligible:    1
VmFlags: rd wr mr mw me ac uw
7f0000000000-7f0000001000 r--s 00001000 fd:01 1234                       /usr/lib/x.so
THPeligible:    0
VmFlags: rd mr me
";
        let v = parse(t).unwrap();
        assert_eq!(v.len(), 2);
        assert!(v[0].trackable() && v[0].uffd_wp && v[0].thp_eligible);
        assert_eq!(v[0].name, "[heap]");
        assert_eq!((v[0].start, v[0].end), (0x55d0c0000000, 0x55d0c0021000));
        assert!(!v[1].trackable() && !v[1].uffd_wp && !v[1].thp_eligible);
        assert_eq!(v[1].name, "/usr/lib/x.so");
    }
}

//! Hashing files while another process is still writing them: CRIU writes a dump's memory pages
//! once, front to back, and a [`Follower`] hashes each page image right behind it, so that a
//! checkpoint's hashing overlaps its dump instead of following it.
//!
//! Only for files written strictly by appending (a file rewritten in place after it was read would
//! get a wrong sha256, which the snapshot's verification then refuses: nothing is trusted wrongly,
//! but the snapshot is lost). Whatever is not followed, or whose size disagrees in the end, is hashed
//! afterwards as usual ([`crate::scan_dir_with`]).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A file being followed: how much of it is hashed so far.
struct Partial {
    file: File,
    sha: Sha256,
    done: u64,
}

/// Follows the files of one directory whose names `pick` accepts (see the module doc).
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<HashMap<String, Partial>>>>,
    prefix: String,
}

impl Follower {
    /// Starts following `dir` (which must exist). `prefix` is prepended to the file names in the
    /// result (e.g. `"criu/"`, to match a manifest's paths).
    pub fn start(dir: PathBuf, prefix: &str, pick: fn(&str) -> bool) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || follow(&dir, pick, &s));
        Follower {
            stop,
            thread: Some(thread),
            prefix: prefix.to_string(),
        }
    }

    /// Call once the writer has finished: hashes the rest of every followed file and returns
    /// path → (size, sha256). Empty if following failed (everything is then hashed afterwards).
    pub fn finish(mut self) -> HashMap<String, (u64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().expect("finished once").join() {
            Ok(Ok(files)) => files
                .into_iter()
                .map(|(name, p)| {
                    (
                        format!("{}{name}", self.prefix),
                        (p.done, hex::encode(p.sha.finalize())),
                    )
                })
                .collect(),
            _ => HashMap::new(),
        }
    }
}

impl Drop for Follower {
    /// A follower dropped unfinished (the dump failed) stops at its next pass.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(
    dir: &std::path::Path,
    pick: fn(&str) -> bool,
    stop: &AtomicBool,
) -> io::Result<HashMap<String, Partial>> {
    let mut files: HashMap<String, Partial> = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // Seen after the writer finished, the final pass below reads everything it wrote.
        let last = stop.load(Ordering::SeqCst);
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if pick(&name) && !files.contains_key(&name) && e.file_type().is_ok_and(|t| t.is_file())
            {
                files.insert(
                    name,
                    Partial {
                        file: File::open(e.path())?,
                        sha: Sha256::new(),
                        done: 0,
                    },
                );
            }
        }
        let mut progressed = false;
        for p in files.values_mut() {
            loop {
                let n = p.file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                p.sha.update(&buf[..n]);
                p.done += n as u64;
                progressed = true;
            }
        }
        if last {
            return Ok(files);
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_what_a_writer_appends_while_it_writes() {
        let t = tempfile::tempdir().unwrap();
        let f = Follower::start(t.path().to_path_buf(), "criu/", |n| n.starts_with("pages-"));
        let mut all = Vec::new();
        let mut out = File::create(t.path().join("pages-1.img")).unwrap();
        std::fs::write(t.path().join("core-1.img"), b"not followed").unwrap();
        for i in 0..200u32 {
            let chunk: Vec<u8> = (0..40_000u32)
                .map(|k| (k.wrapping_mul(i + 7) >> 3) as u8)
                .collect();
            out.write_all(&chunk).unwrap();
            all.extend_from_slice(&chunk);
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        drop(out);
        let got = f.finish();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got["criu/pages-1.img"],
            (all.len() as u64, hex::encode(Sha256::digest(&all)))
        );
    }
}

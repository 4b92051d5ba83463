//! Resolves an image's `User` (`name`, `uid`, `name:group`, `uid:gid`, ...) to numeric ids and a
//! home directory using the image's own `/etc/passwd` and `/etc/group`, as container engines do.

use super::unpack::resolve_in_root;
use crate::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct RunUser {
    pub uid: u32,
    pub gid: u32,
    /// The user's home inside the image (HOME; the runtime's log and work dir live under it).
    pub home: String,
}

impl RunUser {
    pub fn root() -> RunUser {
        RunUser {
            uid: 0,
            gid: 0,
            home: "/root".into(),
        }
    }
}

fn read(rootfs: &Path, file: &str) -> String {
    resolve_in_root(rootfs, Path::new(file))
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// `(name, uid, gid, home)` of every line of a passwd file.
fn passwd(text: &str) -> Vec<(String, u32, u32, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6)
                .then(|| {
                    Some((
                        f[0].to_string(),
                        f[2].parse().ok()?,
                        f[3].parse().ok()?,
                        f[5].to_string(),
                    ))
                })
                .flatten()
        })
        .collect()
}

pub fn resolve(rootfs: &Path, user: Option<&str>) -> Result<RunUser> {
    let Some(spec) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(RunUser::root());
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(&read(rootfs, "etc/passwd"));
    let (uid, mut gid, home) = match u.parse::<u32>() {
        Ok(uid) => match users.iter().find(|x| x.1 == uid) {
            Some(x) => (uid, x.2, x.3.clone()),
            None => (uid, 0, "/".to_string()),
        },
        Err(_) => {
            let x = users.iter().find(|x| x.0 == u).ok_or_else(|| Error::Invalid(format!("the image runs as user {u:?}, which its /etc/passwd does not list: fix the image's User")))?;
            (x.1, x.2, x.3.clone())
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read(rootfs, "etc/group")
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                })
                .ok_or_else(|| Error::Invalid(format!("the image runs as group {g:?}, which its /etc/group does not list: fix the image's User")))?,
        };
    }
    let home = if uid == 0 && (home.is_empty() || home == "/") {
        "/root".into()
    } else if home.is_empty() {
        "/".into()
    } else {
        home
    };
    Ok(RunUser { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_ids() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1300::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = root.path();
        assert_eq!(resolve(r, None).unwrap(), RunUser::root());
        assert_eq!(
            resolve(r, Some("app")).unwrap(),
            RunUser {
                uid: 1234,
                gid: 1300,
                home: "/home/app".into()
            }
        );
        assert_eq!(resolve(r, Some("app:staff")).unwrap().gid, 50);
        assert_eq!(
            resolve(r, Some("1234:7")).unwrap(),
            RunUser {
                uid: 1234,
                gid: 7,
                home: "/home/app".into()
            }
        );
        assert_eq!(
            resolve(r, Some("999")).unwrap(),
            RunUser {
                uid: 999,
                gid: 0,
                home: "/".into()
            }
        );
        assert!(resolve(r, Some("nobody"))
            .unwrap_err()
            .to_string()
            .contains("/etc/passwd"));
        assert!(resolve(r, Some("app:nogroup"))
            .unwrap_err()
            .to_string()
            .contains("/etc/group"));
    }
}

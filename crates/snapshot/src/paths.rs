use crate::SnapshotError;

/// Accepts only normalized relative paths: no root, no `..`, no `.`, no empty components.
pub fn check_relative_path(path: &str) -> Result<(), SnapshotError> {
    let bad = |reason| {
        Err(SnapshotError::UnsafePath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\0') {
        return bad("NUL byte in path");
    }
    if path.split('/').any(|c| c.is_empty()) {
        return bad("empty path component");
    }
    for c in path.split('/') {
        match c {
            ".." => return bad("parent directory (..) component"),
            "." => return bad("current directory (.) component"),
            _ => {}
        }
    }
    Ok(())
}

/// The top-level areas of a snapshot and whether links / whiteouts may live there.
pub(crate) fn in_writable_layer(path: &str) -> bool {
    path == "upper" || path.starts_with("upper/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        for p in ["a", "criu/pages-1.img", "upper/root/.ipython/x"] {
            check_relative_path(p).unwrap();
        }
    }

    #[test]
    fn refuses_escapes() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a/./b",
            "a/",
        ] {
            assert!(check_relative_path(p).is_err(), "{p} accepted");
        }
    }
}

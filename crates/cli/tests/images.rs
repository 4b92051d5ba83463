//! Images: an OCI image layout and a `docker save` tarball, both made here from the runtime
//! image's rootfs (split into layers, plus a layer with whiteouts, a user and an env var), imported
//! through the CLI and run as real runtimes; a migration target lacking the image receives it, and
//! one lacking a built image is refused before the source is touched.

mod common;

use common::{images_dir, Ferry};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Writes a layer tar of the rootfs' top-level entries that `keep` selects.
fn layer_from(rootfs: &Path, out: &Path, keep: impl Fn(&str) -> bool) {
    let mut b = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out).unwrap()));
    b.follow_symlinks(false);
    let mut entries: Vec<_> = std::fs::read_dir(rootfs).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let n = e.file_name().to_string_lossy().into_owned();
        if !keep(&n) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            b.append_dir_all(&n, e.path()).unwrap();
        } else {
            b.append_path_with_name(e.path(), &n).unwrap();
        }
    }
    b.into_inner().unwrap().flush().unwrap();
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// The top layer: a user `app` (uid 1234), its home and work dir, a whiteout of
/// /etc/debian_version and an opaque /usr/share/doc holding only `ferry-note`.
fn top_layer(rootfs: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], uid: u64| {
        let mut h = header(tar::EntryType::Regular, 0o644, uid, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap()
        + "app:x:1234:1234::/home/app:/bin/sh\n";
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap() + "app:x:1234:\n";
    file(&mut b, "etc/passwd", passwd.as_bytes(), 0);
    file(&mut b, "etc/group", group.as_bytes(), 0);
    file(&mut b, "etc/.wh.debian_version", b"", 0);
    file(&mut b, "usr/share/doc/.wh..wh..opq", b"", 0);
    file(&mut b, "usr/share/doc/ferry-note", b"layer 3\n", 0);
    for d in ["home/app", "srv/app"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 1234, 0);
        b.append_data(&mut h, d, &[][..]).unwrap();
    }
    file(&mut b, "srv/app/hello.txt", b"hi\n", 1234);
    b.into_inner().unwrap()
}

fn config(diff_ids: &[String], env: &[&str], workdir: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": env, "WorkingDir": workdir, "User": user},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    }))
    .unwrap()
}

/// An OCI image layout directory: two plain layers (the rootfs without /opt, then /opt) and the
/// gzip top layer.
fn oci_layout(dir: &Path, rootfs: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data_path: &Path| -> (String, u64) {
        let d = sha256_file(data_path);
        let size = std::fs::metadata(data_path).unwrap().len();
        std::fs::rename(data_path, blobs.join(&d[7..])).unwrap();
        (d, size)
    };
    let (l1, l2) = (dir.join("l1.tar"), dir.join("l2.tar"));
    layer_from(rootfs, &l1, |n| n != "opt");
    layer_from(rootfs, &l2, |n| n == "opt");
    let top = top_layer(rootfs);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&top).unwrap();
    let top_gz = gz.finish().unwrap();
    let l3 = dir.join("l3.tar.gz");
    std::fs::write(&l3, &top_gz).unwrap();
    let diff_ids = vec![sha256_file(&l1), sha256_file(&l2), sha256(&top)];
    let layers: Vec<(String, u64)> = [&l1, &l2, &l3].iter().map(|p| put(p)).collect();
    let cfg = config(
        &diff_ids,
        &[
            "PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
            "GREETING=hello-from-oci",
        ],
        "/srv/app",
        "app",
    );
    let cfg_path = dir.join("cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (cfg_digest, cfg_size) = put(&cfg_path);
    let media = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ];
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layers.iter().zip(media).map(|((d, s), m)| serde_json::json!({"mediaType": m, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let m_path = dir.join("m");
    std::fs::write(&m_path, &manifest).unwrap();
    let (m_digest, m_size) = put(&m_path);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A `docker save` tarball: manifest.json, HEX.json, and one uncompressed `layer.tar` per layer.
fn docker_save(out: &Path, rootfs: &Path, work: &Path) {
    std::fs::create_dir_all(work).unwrap();
    let (l1, l2) = (work.join("l1.tar"), work.join("l2.tar"));
    layer_from(rootfs, &l1, |n| n != "opt");
    layer_from(rootfs, &l2, |n| n == "opt");
    let diff_ids = vec![sha256_file(&l1), sha256_file(&l2)];
    let cfg = config(
        &diff_ids,
        &[
            "PATH=/opt/venv/bin:/usr/bin:/bin",
            "GREETING=hello-from-docker",
        ],
        "",
        "",
    );
    let cfg_name = format!("{}.json", &sha256(&cfg)[7..]);
    let manifest = serde_json::to_vec(&serde_json::json!([{"Config": cfg_name, "RepoTags": ["localhost/pydocker:1"], "Layers": [format!("{}/layer.tar", &diff_ids[0][7..19]), format!("{}/layer.tar", &diff_ids[1][7..19])]}])).unwrap();
    let mut b = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out).unwrap()));
    b.append_path_with_name(&l1, format!("{}/layer.tar", &diff_ids[0][7..19]))
        .unwrap();
    b.append_path_with_name(&l2, format!("{}/layer.tar", &diff_ids[1][7..19]))
        .unwrap();
    for (name, data) in [(cfg_name.as_str(), &cfg), ("manifest.json", &manifest)] {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
    std::fs::remove_dir_all(work).unwrap();
}

fn image<'a>(list: &'a Value, name: &str, host: &str) -> Option<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name && i["host"] == host)
}

#[test]
fn imported_oci_image_runs_with_its_config_and_whiteouts() {
    let Some(f) = Ferry::start_with(&["--images={state}/images"]) else {
        return;
    };
    let layout = f.state.join("layout");
    oci_layout(&layout, &images_dir().join("mrmd-python/rootfs"));
    let out = f.ok(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--name",
        "pyoci:test",
    ]);
    assert!(out.contains("pyoci:test imported on local"), "{out}");
    let list = f.json(&["image", "ls"]);
    let img = image(&list, "pyoci:test", "local").expect("listed");
    assert_eq!(img["source"], "imported");
    assert_eq!(img["layers"].as_array().unwrap().len(), 3);
    assert_eq!(img["config"]["user"], "app");
    assert_eq!(img["mrp_server"], "/opt/venv/bin/mrmd-python");

    f.ok(&["create", "--name", "oci", "--image", "pyoci:test"]);
    assert_eq!(f.json(&["inspect", "oci"])["image"], "pyoci:test");
    let got = f.py("oci", "import os\nprint(os.environ['GREETING'], os.getcwd(), os.getuid(), os.getgid(), os.environ['HOME'])\nprint(os.path.exists('/etc/debian_version'), sorted(os.listdir('/usr/share/doc')), open('/srv/app/hello.txt').read().strip())");
    assert_eq!(
        got.trim(),
        "hello-from-oci /srv/app 1234 1234 /home/app\nFalse ['ferry-note'] hi"
    );
    // In use: refused. Unused: removed, and the store keeps nothing of it.
    let err = f.fails(&["image", "rm", "pyoci:test"]);
    assert!(err.contains("used by runtime(s) oci"), "{err}");
    f.ok(&["rm", "--force", "oci"]);
    f.ok(&["image", "rm", "pyoci:test"]);
    assert!(image(&f.json(&["image", "ls"]), "pyoci:test", "local").is_none());
    let store = f.state.join("images/.store");
    for sub in ["rootfs", "blobs/sha256"] {
        assert_eq!(
            std::fs::read_dir(store.join(sub)).unwrap().count(),
            0,
            "{sub} left behind"
        );
    }
    // A runtime of an image that is not there is refused with what to do.
    let err = f.fails(&["create", "--name", "nope", "--image", "missing:1"]);
    assert!(err.contains("ferry image import"), "{err}");
}

#[test]
fn docker_save_image_moves_with_its_runtime_and_built_images_are_refused_first() {
    let Some(f) = Ferry::start_dev_args(2, &["--images-per-host"], &["--no-auto"]) else {
        return;
    };
    let tarball = f.state.join("pydocker.tar");
    docker_save(
        &tarball,
        &images_dir().join("mrmd-python/rootfs"),
        &f.state.join("docker-work"),
    );
    let out = f.ok(&["image", "import", tarball.to_str().unwrap(), "--host", "h1"]);
    assert!(out.contains("pydocker:1 imported on h1"), "{out}");
    let list = f.json(&["image", "ls"]);
    let on_h1 = image(&list, "pydocker:1", "h1").expect("on h1").clone();
    assert!(image(&list, "pydocker:1", "h2").is_none(), "only h1 has it");

    f.ok(&[
        "create",
        "--name",
        "dk",
        "--host",
        "h1",
        "--image",
        "pydocker:1",
    ]);
    assert_eq!(
        f.py(
            "dk",
            "import os\nx = 41\nprint(os.environ['GREETING'], os.getuid())"
        )
        .trim(),
        "hello-from-docker 0"
    );
    f.ok(&["migrate", "dk", "--to", "h2"]);
    assert_eq!(f.json(&["inspect", "dk"])["host"], "h2");
    assert_eq!(f.py("dk", "print(x + 1)").trim(), "42");
    let on_h2 = image(
        &f.json(&["image", "ls", "--host", "h2"]),
        "pydocker:1",
        "h2",
    )
    .expect("sent to h2")
    .clone();
    assert_eq!(on_h2["digest"], on_h1["digest"], "the same image arrived");
    // A copy restored under a new name runs the same image.
    let snap = f.json(&["checkpoint", "dk", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(&["restore", &snap, "--name", "dk2"]);
    assert_eq!(f.json(&["inspect", "dk2"])["image"], "pydocker:1");
    assert_eq!(
        f.py("dk2", "print(os.environ['GREETING'], x)").trim(),
        "hello-from-docker 41"
    );
    let events = f.json(&["events"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "image.sent"),
        "no image.sent event"
    );

    // h2 loses the built image: a move there is refused before the source is touched.
    std::fs::remove_file(f.state.join("agents/h2/images/mrmd-python")).unwrap();
    f.ok(&["create", "--name", "built", "--host", "h1"]);
    f.py("built", "y = 7");
    let err = f.fails(&["migrate", "built", "--to", "h2"]);
    assert!(
        err.contains("lacks image mrmd-python") && err.contains("nothing was changed"),
        "{err}"
    );
    let rt = f.json(&["inspect", "built"]);
    assert_eq!(
        (rt["host"].as_str(), rt["state"].as_str()),
        (Some("h1"), Some("running"))
    );
    assert_eq!(f.py("built", "print(y)").trim(), "7");
}

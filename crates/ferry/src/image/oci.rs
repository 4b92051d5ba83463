//! Import and export of images: an OCI image layout (directory or tar) or a `docker save` /
//! `podman save` tarball in; an OCI image layout tar out (to send an image to another host).
//!
//! Import: the tarball is staged (paths kept inside the staging dir), the manifest and config are
//! read and their digests checked, then each layer is decompressed (gzip, zstd or plain, by magic
//! bytes) and applied in order onto a fresh rootfs while hashing both the stored bytes (the blob
//! digest) and the uncompressed stream (the config's diff id). Only when every digest matched are
//! the rootfs and blobs moved into the store and the image record written. An image whose config
//! is already unpacked is not unpacked again.

use super::unpack::{apply_layer, resolve_in_root};
use super::{check_name, digest_hex, ImageConfig, ImageRecord, ImageStore, STORE_LOCK};
use crate::{Error, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hash.finalize()))
    }
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// One layer to apply: where its bytes are, and what they must hash to.
struct LayerSrc {
    path: PathBuf,
    /// Digest of the stored bytes (OCI: the descriptor's; docker save: none, the diff id checks).
    blob: Option<String>,
    media: String,
}

/// What the staged tarball describes.
struct Loaded {
    name_hint: Option<String>,
    manifest: Option<(String, Vec<u8>)>,
    config_bytes: Vec<u8>,
    config: ImageConfiguration,
    layers: Vec<LayerSrc>,
}

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("not a valid image archive: {what}"))
}

/// A file of the staging dir, resolved inside it.
fn staged(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = resolve_in_root(root, &super::unpack::clean(Path::new(rel))?)?;
    if !p.is_file() {
        return Err(invalid(format!("{rel} is missing")));
    }
    Ok(p)
}

fn read_blob(root: &Path, d: &Descriptor) -> Result<Vec<u8>> {
    let digest = d.digest().to_string();
    let p = staged(root, &format!("blobs/sha256/{}", digest_hex(&digest)?))?;
    let b = std::fs::read(p)?;
    if sha256(&b) != digest {
        return Err(Error::Invalid(format!(
            "blob {digest} does not match its digest: the archive is damaged"
        )));
    }
    Ok(b)
}

fn load_oci(root: &Path) -> Result<Loaded> {
    let index = ImageIndex::from_reader(std::fs::File::open(staged(root, "index.json")?)?)
        .map_err(|e| invalid(format!("index.json: {e}")))?;
    let mut desc = index
        .manifests()
        .first()
        .cloned()
        .ok_or_else(|| invalid("index.json lists no manifest"))?;
    // Several manifests: take linux/amd64 (or the first); a nested index: follow it once.
    if index.manifests().len() > 1 {
        if let Some(d) = index.manifests().iter().find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
            })
        }) {
            desc = d.clone();
        }
    }
    let name_hint = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME).cloned());
    if *desc.media_type() == MediaType::ImageIndex {
        let nested = ImageIndex::from_reader(&read_blob(root, &desc)?[..])
            .map_err(|e| invalid(format!("nested index: {e}")))?;
        desc = nested
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_none_or(|p| p.architecture().to_string() == "amd64")
            })
            .cloned()
            .ok_or_else(|| invalid("no linux/amd64 manifest"))?;
    }
    let mbytes = read_blob(root, &desc)?;
    let manifest =
        ImageManifest::from_reader(&mbytes[..]).map_err(|e| invalid(format!("manifest: {e}")))?;
    let config_bytes = read_blob(root, manifest.config())?;
    let config = parse_config(&config_bytes)?;
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let digest = l.digest().to_string();
        layers.push(LayerSrc {
            path: staged(root, &format!("blobs/sha256/{}", digest_hex(&digest)?))?,
            blob: Some(digest),
            media: l.media_type().to_string(),
        });
    }
    Ok(Loaded {
        name_hint,
        manifest: Some((desc.digest().to_string(), mbytes)),
        config_bytes,
        config,
        layers,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(root: &Path) -> Result<Loaded> {
    let m: Vec<DockerManifest> =
        serde_json::from_slice(&std::fs::read(staged(root, "manifest.json")?)?)
            .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let m = m
        .into_iter()
        .next()
        .ok_or_else(|| invalid("manifest.json lists no image"))?;
    let config_bytes = std::fs::read(staged(root, &m.config)?)?;
    // `HEX.json` or `blobs/sha256/HEX`: the file is named after its digest.
    let stem = Path::new(&m.config)
        .file_name()
        .map(|s| s.to_string_lossy().trim_end_matches(".json").to_string())
        .unwrap_or_default();
    if stem.len() == 64 && sha256(&config_bytes) != format!("sha256:{stem}") {
        return Err(Error::Invalid(format!(
            "image config {} does not match its digest: the archive is damaged",
            m.config
        )));
    }
    let config = parse_config(&config_bytes)?;
    let name_hint = m
        .repo_tags
        .and_then(|t| t.into_iter().next())
        .map(|t| t.rsplit('/').next().unwrap_or(&t).to_string());
    let layers = m
        .layers
        .iter()
        .map(|l| {
            Ok(LayerSrc {
                path: staged(root, l)?,
                blob: None,
                media: String::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Loaded {
        name_hint,
        manifest: None,
        config_bytes,
        config,
        layers,
    })
}

/// The image config; `history`, which oci-spec requires but many tools leave out, may be absent.
fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("config: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.entry("history").or_insert_with(|| serde_json::json!([]));
    }
    serde_json::from_value(v).map_err(|e| invalid(format!("config: {e}")))
}

/// Opens a layer's bytes: gzip, zstd or plain tar, recognised by their first bytes.
fn decompress<'a>(r: impl Read + 'a) -> Result<(Box<dyn Read + 'a>, &'static str)> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let head = std::io::BufRead::fill_buf(&mut r)?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        (
            Box::new(flate2::read::GzDecoder::new(r)),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        )
    } else {
        (Box::new(r), "application/vnd.oci.image.layer.v1.tar")
    })
}

/// Hashes a layer (stored bytes and uncompressed stream), applying it onto `onto` if given.
/// Returns (blob digest, diff id, stored size, media type).
fn read_layer(path: &Path, onto: Option<&Path>) -> Result<(String, String, u64, &'static str)> {
    let mut stored = Hashing::new(std::fs::File::open(path)?);
    let (diff, media) = {
        let (inner, media) = decompress(&mut stored)?;
        let mut plain = Hashing::new(inner);
        if let Some(root) = onto {
            apply_layer(&mut plain, root)?;
        }
        std::io::copy(&mut plain, &mut std::io::sink())
            .map_err(|e| Error::Invalid(format!("reading layer {}: {e}", path.display())))?;
        (plain.digest(), media)
    };
    std::io::copy(&mut stored, &mut std::io::sink())?;
    let size = stored.bytes;
    Ok((stored.digest(), diff, size, media))
}

fn image_config(c: &ImageConfiguration) -> ImageConfig {
    let Some(cfg) = c.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        env: cfg.env().clone().unwrap_or_default(),
        working_dir: cfg.working_dir().clone().filter(|w| !w.is_empty()),
        user: cfg.user().clone().filter(|u| !u.is_empty()),
        entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
        cmd: cfg.cmd().clone().unwrap_or_default(),
    }
}

/// Progress of an import: (layer index, layer count).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

impl ImageStore {
    /// Imports the image tarball read from `input` (OCI layout tar or `docker save`), as `name`
    /// (default: the name the archive gives). Blocking.
    pub fn import(
        &self,
        input: impl Read,
        name: Option<&str>,
        progress: Progress,
    ) -> Result<ImageRecord> {
        std::fs::create_dir_all(self.tmp_dir())?;
        let stage = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(self.tmp_dir())?;
        apply_layer(input, stage.path()).map_err(|e| match e {
            Error::Invalid(m) => invalid(m),
            other => other,
        })?;
        self.import_staged(stage.path(), name, progress)
    }

    fn import_staged(
        &self,
        root: &Path,
        name: Option<&str>,
        progress: Progress,
    ) -> Result<ImageRecord> {
        let loaded = if root.join("index.json").is_file() {
            load_oci(root)?
        } else if root.join("manifest.json").is_file() {
            load_docker(root)?
        } else {
            return Err(invalid("it has neither index.json (OCI image layout) nor manifest.json (docker save): give an OCI layout or a `docker save` / `podman save` tarball"));
        };
        let name = match name.map(str::to_string).or(loaded.name_hint.clone()) {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(Error::Invalid(
                    "the archive names no image: give one with --name NAME[:TAG]".into(),
                ))
            }
        };
        check_name(&name)?;
        let digest = sha256(&loaded.config_bytes);
        let diff_ids = loaded.config.rootfs().diff_ids().clone();
        if diff_ids.len() != loaded.layers.len() {
            return Err(invalid(format!(
                "the config lists {} layers, the manifest {}",
                diff_ids.len(),
                loaded.layers.len()
            )));
        }
        let _g = STORE_LOCK.lock().unwrap();
        if let Ok(existing) = self.get(&name) {
            if existing.digest == digest {
                return Ok(existing);
            }
            return Err(Error::Conflict(format!("an image named {name} already exists here ({}): remove it first (`ferry image rm {name}`) or import under another --name", existing.digest)));
        }
        let rootfs = self.rootfs_of_digest(&digest)?;
        let unpack_to = (!rootfs.is_dir()).then(|| root.join(".rootfs"));
        if let Some(d) = &unpack_to {
            std::fs::create_dir_all(d)?;
        }
        let mut blobs = Vec::new();
        let mut manifest_layers = Vec::new();
        let mut size = 0;
        for (i, (l, want_diff)) in loaded.layers.iter().zip(&diff_ids).enumerate() {
            progress(i, loaded.layers.len());
            let (blob, diff, bytes, media) = read_layer(&l.path, unpack_to.as_deref())?;
            if let Some(want) = &l.blob {
                if *want != blob {
                    return Err(Error::Invalid(format!(
                        "layer {want} does not match its digest ({blob}): the archive is damaged"
                    )));
                }
            }
            if diff != *want_diff {
                return Err(Error::Invalid(format!("layer {} unpacks to {diff}, but the image config says {want_diff}: the archive is damaged", i + 1)));
            }
            tracing::info!(image = %name, layer = i + 1, of = loaded.layers.len(), %blob, bytes, "image layer verified");
            size += bytes;
            blobs.push((blob.clone(), l.path.clone()));
            let media = if l.media.is_empty() {
                media.to_string()
            } else {
                l.media.clone()
            };
            manifest_layers
                .push(serde_json::json!({"mediaType": media, "digest": blob, "size": bytes}));
        }
        progress(loaded.layers.len(), loaded.layers.len());
        // Every digest matched: move the blobs and rootfs into the store, then the record.
        let cfg_path = root.join(".config");
        std::fs::write(&cfg_path, &loaded.config_bytes)?;
        blobs.push((digest.clone(), cfg_path));
        let (manifest_digest, manifest_bytes) = match loaded.manifest {
            Some(m) => m,
            None => {
                let m = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": loaded.config_bytes.len()},
                    "layers": manifest_layers,
                });
                let b = serde_json::to_vec(&m).expect("manifest serializes");
                (sha256(&b), b)
            }
        };
        let mpath = root.join(".manifest");
        std::fs::write(&mpath, &manifest_bytes)?;
        blobs.push((manifest_digest.clone(), mpath));
        std::fs::create_dir_all(self.store_dir().join("blobs/sha256"))?;
        for (d, p) in &blobs {
            let dest = self.blob_path(d)?;
            if !dest.exists() {
                std::fs::rename(p, &dest).or_else(|_| std::fs::copy(p, &dest).map(|_| ()))?;
            }
        }
        if let Some(d) = unpack_to {
            std::fs::create_dir_all(rootfs.parent().unwrap())?;
            std::fs::rename(d, &rootfs)?;
        }
        let rec = ImageRecord {
            name: name.clone(),
            digest: digest.clone(),
            source: "imported".into(),
            manifest_digest: Some(manifest_digest),
            config: image_config(&loaded.config),
            blobs: blobs.iter().map(|b| b.0.clone()).collect(),
            layers: diff_ids,
            size_bytes: size,
            created_at: Some(chrono::Utc::now().to_rfc3339()),
            mrp_server: None,
        };
        let rec_dir = root.join(".record");
        std::fs::create_dir_all(&rec_dir)?;
        std::fs::write(
            rec_dir.join("image.json"),
            serde_json::to_vec_pretty(&rec).expect("record serializes"),
        )?;
        std::os::unix::fs::symlink(
            Path::new("../.store/rootfs").join(digest_hex(&digest)?),
            rec_dir.join("rootfs"),
        )?;
        std::fs::write(rec_dir.join(".complete"), "")?;
        std::fs::rename(&rec_dir, self.image_dir(&name))?;
        tracing::info!(image = %name, %digest, bytes = size, "image imported");
        Ok(self.with_server(rec))
    }

    /// Writes image `name` as an OCI image layout tar (what [`ImageStore::import`] reads). Blocking.
    pub fn export(&self, name: &str, out: impl std::io::Write) -> Result<()> {
        let rec = self.get(name)?;
        if !rec.sendable() {
            return Err(Error::Invalid(format!("image {name} was built on this host (`ferry image build`) and has no layers to send: build it on the other host too")));
        }
        let manifest = rec
            .manifest_digest
            .clone()
            .ok_or_else(|| Error::Internal(format!("image {name} has no manifest")))?;
        let msize = std::fs::metadata(self.blob_path(&manifest)?)?.len();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": msize, "annotations": {REF_NAME: name}}],
        });
        let mut b = tar::Builder::new(out);
        let mut add = |path: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).map_err(Error::from)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(
            "index.json",
            &serde_json::to_vec(&index).expect("index serializes"),
        )?;
        for d in &rec.blobs {
            let p = self.blob_path(d)?;
            b.append_path_with_name(&p, format!("blobs/sha256/{}", digest_hex(d)?))?;
        }
        b.into_inner()?.flush()?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write as _;

    /// A tar of `files` (path, content); paths ending in `/` are directories.
    pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if p.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p.trim_end_matches('/'), &[][..])
                    .unwrap();
            } else {
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn config(diffs: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin", "GREETING=hi"], "WorkingDir": "/srv", "User": "0:0"},
            "rootfs": {"type": "layers", "diff_ids": diffs},
        }))
        .unwrap()
    }

    fn layers() -> Vec<Vec<u8>> {
        vec![
            tar_of(&[
                ("etc/", b""),
                ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                ("srv/", b""),
                ("srv/old", b"1"),
                ("srv/keep", b"k"),
            ]),
            tar_of(&[("srv/.wh.old", b""), ("srv/new", b"2")]),
        ]
    }

    /// An OCI layout tar: first layer plain, second gzip.
    fn oci_tar(name: &str, corrupt: bool) -> Vec<u8> {
        let ls = layers();
        let diffs: Vec<String> = ls.iter().map(|l| sha256(l)).collect();
        let blobs = [ls[0].clone(), gz(&ls[1])];
        let cfg = config(&diffs);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&cfg), "size": cfg.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&blobs[0]), "size": blobs[0].len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&blobs[1]), "size": blobs[1].len()},
            ],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(), "annotations": {REF_NAME: name}}]})).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
        ];
        let mut b1 = blobs[1].clone();
        if corrupt {
            let n = b1.len() / 2;
            b1[n] ^= 0xff;
        }
        for (d, data) in [
            (sha256(&manifest), manifest),
            (sha256(&cfg), cfg),
            (sha256(&blobs[0]), blobs[0].clone()),
            (sha256(&blobs[1]), b1),
        ] {
            files.push((format!("blobs/sha256/{}", &d[7..]), data));
        }
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        tar_of(&refs)
    }

    fn docker_tar() -> Vec<u8> {
        let ls = layers();
        let diffs: Vec<String> = ls.iter().map(|l| sha256(l)).collect();
        let cfg = config(&diffs);
        let cfg_name = format!("{}.json", &sha256(&cfg)[7..]);
        let manifest = serde_json::to_vec(&serde_json::json!([{"Config": cfg_name, "RepoTags": ["docker.io/library/demo:1.0"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}])).unwrap();
        tar_of(&[
            ("l1/layer.tar", &ls[0]),
            ("l2/layer.tar", &ls[1]),
            (&cfg_name, &cfg),
            ("manifest.json", &manifest),
        ])
    }

    fn check_rootfs(store: &ImageStore, name: &str) {
        let r = store.rootfs(name);
        assert!(r.join("srv/keep").exists() && r.join("srv/new").exists());
        assert!(!r.join("srv/old").exists(), "whiteout not honoured");
        let rec = store.get(name).unwrap();
        assert_eq!(rec.config.working_dir.as_deref(), Some("/srv"));
        assert!(rec.config.env.contains(&"GREETING=hi".to_string()));
    }

    #[test]
    fn oci_and_docker_imports_share_blobs_and_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        let a = store
            .import(&oci_tar("demo:oci", false)[..], None, &|_, _| {})
            .unwrap();
        assert_eq!(a.name, "demo:oci");
        assert_eq!(a.source, "imported");
        check_rootfs(&store, "demo:oci");
        let b = store.import(&docker_tar()[..], None, &|_, _| {}).unwrap();
        assert_eq!(b.name, "demo:1.0");
        check_rootfs(&store, "demo:1.0");
        assert_eq!(a.digest, b.digest, "same config, same image id");
        assert_eq!(
            std::fs::read_dir(store.store_dir().join("rootfs"))
                .unwrap()
                .count(),
            1,
            "one rootfs for both"
        );
        assert_eq!(store.list().len(), 2);
        // Re-importing the same image under its name is a no-op; a different one is refused.
        store.import(&docker_tar()[..], None, &|_, _| {}).unwrap();
        // Export → import elsewhere gives the same image id.
        let mut out = Vec::new();
        store.export("demo:1.0", &mut out).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let other = ImageStore::new(dir2.path());
        let c = other.import(&out[..], None, &|_, _| {}).unwrap();
        assert_eq!(c.digest, a.digest);
        check_rootfs(&other, "demo:1.0");
        // Removing one name keeps the shared rootfs; removing both frees everything.
        store.remove("demo:oci").unwrap();
        check_rootfs(&store, "demo:1.0");
        store.remove("demo:1.0").unwrap();
        assert_eq!(
            std::fs::read_dir(store.store_dir().join("rootfs"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(store.store_dir().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn zstd_and_gzip_layers_hash_their_uncompressed_stream() {
        let dir = tempfile::tempdir().unwrap();
        let plain = tar_of(&[("a/", b""), ("a/f", b"zstd layer")]);
        for (name, bytes) in [
            ("z", zstd::encode_all(&plain[..], 3).unwrap()),
            ("g", gz(&plain)),
            ("p", plain.clone()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes).unwrap();
            let root = dir.path().join(format!("root-{name}"));
            std::fs::create_dir_all(&root).unwrap();
            let (blob, diff, size, _) = read_layer(&p, Some(&root)).unwrap();
            assert_eq!(
                (blob, diff, size),
                (sha256(&bytes), sha256(&plain), bytes.len() as u64),
                "{name}"
            );
            assert_eq!(
                std::fs::read_to_string(root.join("a/f")).unwrap(),
                "zstd layer"
            );
        }
    }

    #[test]
    fn damaged_or_unknown_archives_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        let e = store
            .import(&oci_tar("demo:bad", true)[..], None, &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged") || e.contains("layer"), "{e}");
        assert!(store.list().is_empty());
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        assert!(
            !store.store_dir().join("rootfs").exists()
                || std::fs::read_dir(store.store_dir().join("rootfs"))
                    .unwrap()
                    .count()
                    == 0
        );
        let e = store
            .import(&tar_of(&[("hello", b"x")])[..], None, &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("index.json"), "{e}");
        let e = store
            .import(&b"not a tar at all"[..], Some("x"), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a valid image archive") || e.contains("index.json"),
            "{e}"
        );
        let e = store
            .import(&oci_tar("demo:x", false)[..], Some("bad/name"), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid image name"), "{e}");
    }
}

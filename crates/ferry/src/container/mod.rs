//! One runtime container on one host: a runc container running `mrmd-python` in its own network
//! namespace, with the image as a read-only lower layer and a per-runtime writable upper layer.
//!
//! Like youki's `Container`, each verb lives in its own file and says what it does and does not do:
//! [`create`], [`checkpoint`], [`restore`], [`freeze`], [`destroy`], [`status`].

pub mod checkpoint;
pub(crate) mod config;
pub mod create;
pub mod destroy;
pub mod freeze;
pub mod lazy;
pub mod restore;
pub mod seccomp;
pub mod status;

use crate::api::RuntimeSpec;
use crate::sys::netns::NetConfig;
use crate::sys::runc::Runc;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The host side of containers: where state, images and runc's root live, and how names are made.
/// One per agent; several agents on one machine (simulated hosts) use different prefixes.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub runc: Runc,
    /// Prefix of netns names and the cgroup parent, unique per host on a machine.
    pub prefix: String,
    /// The simulated host's own network namespace, if any (holds the host ends of the veths).
    pub outer_netns: Option<String>,
    /// This host's address that the root namespace routes its runtimes through (with `outer_netns`).
    pub route_via: Option<std::net::Ipv4Addr>,
    /// A routing namespace between hosts whose route to each runtime points here too (dev).
    pub fabric_netns: Option<String>,
    /// The address peers reach this host at (lazy migrations serve memory pages there).
    pub addr: std::net::IpAddr,
}

impl Host {
    pub fn new(
        name: &str,
        state_dir: PathBuf,
        images_dir: PathBuf,
        prefix: &str,
        outer_netns: Option<String>,
        route_via: Option<std::net::Ipv4Addr>,
    ) -> Host {
        let runc = Runc::new(state_dir.join("runc"));
        let addr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        Host {
            name: name.into(),
            state_dir,
            images_dir,
            runc,
            prefix: prefix.into(),
            outer_netns,
            route_via,
            fabric_netns: None,
            addr,
        }
    }

    pub fn runtimes_dir(&self) -> PathBuf {
        self.state_dir.join("runtimes")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots")
    }

    /// Where a migration's source dump goes: memory-backed (tmpfs) where the machine has one, since
    /// the dump only lives until it has been streamed to the target.
    pub fn scratch_dir(&self) -> PathBuf {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() && crate::sys::mount::is_tmpfs(shm) {
            shm.join(format!("ferry-{}", self.prefix))
        } else {
            self.state_dir.join("scratch")
        }
    }

    pub fn image_store(&self) -> crate::image::ImageStore {
        crate::image::ImageStore::new(&self.images_dir)
    }

    pub fn image_rootfs(&self, image: &str) -> PathBuf {
        self.image_store().rootfs(image)
    }

    /// The image's identity as recorded in snapshots: its build id, or its config digest.
    pub fn image_id(&self, image: &str) -> String {
        match self.image_store().get(image) {
            Ok(r) => r
                .digest
                .strip_prefix("local:")
                .unwrap_or(&r.digest)
                .to_string(),
            Err(_) => "unknown".into(),
        }
    }

    /// Images this host can run (built or imported, complete).
    pub fn images(&self) -> Vec<String> {
        self.image_store()
            .list()
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    pub fn container(&self, spec: RuntimeSpec) -> Container<'_> {
        Container { host: self, spec }
    }

    /// The cgroup parent of every runtime of this host.
    pub fn cgroup_parent(&self) -> String {
        format!("/ferry/{}", self.prefix.trim_end_matches('-'))
    }
}

/// What the image asks for its process; see [`Container::run_config`].
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub user: crate::image::RunUser,
    pub env: Vec<String>,
    /// The process's working directory.
    pub cwd: String,
    /// The MRP server's `--cwd` (where code runs).
    pub workdir: String,
    /// Absolute path of `mrmd-python` inside the image.
    pub server: String,
}

/// A runtime container on a [`Host`], addressed by its spec.
pub struct Container<'h> {
    pub host: &'h Host,
    pub spec: RuntimeSpec,
}

impl Container<'_> {
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn dir(&self) -> PathBuf {
        self.host.runtimes_dir().join(&self.spec.id)
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir().join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// The sparse filesystem image of the writable layer (its size is the plan's disk quota).
    pub fn layer_image(&self) -> PathBuf {
        self.dir().join("layer.img")
    }
    /// Where the layer image is mounted; holds the overlay's upper and work dirs.
    pub fn layer(&self) -> PathBuf {
        self.dir().join("layer")
    }
    /// The writable layer (overlay upper). A runtime made before layers had their own filesystem
    /// keeps its upper directly in its dir.
    pub fn upper(&self) -> PathBuf {
        let legacy = self.dir().join("upper");
        if legacy.is_dir() {
            return legacy;
        }
        self.layer().join("upper")
    }
    pub fn overlay_work(&self) -> PathBuf {
        if self.dir().join("upper").is_dir() {
            return self.dir().join("overlay-work");
        }
        self.layer().join("work")
    }
    pub fn runc_log(&self) -> PathBuf {
        self.dir().join("runc.log")
    }
    /// CRIU options for this container (passed by runc through the `org.criu.config` annotation).
    pub fn criu_conf(&self) -> PathBuf {
        self.dir().join("criu.conf")
    }
    pub fn spec_file(&self) -> PathBuf {
        self.dir().join("runtime.json")
    }
    /// The runtime's own log (stdout/stderr of the MRP server), inside its writable layer, under
    /// the home of the user the image runs as.
    pub fn runtime_log(&self) -> PathBuf {
        let home = self
            .run_config()
            .map(|r| r.user.home)
            .unwrap_or_else(|_| "/root".into());
        self.upper()
            .join(home.trim_start_matches('/'))
            .join(".ferry/runtime.log")
    }

    /// How the image wants its process run (user, env, directories) and where its MRP server is.
    pub fn run_config(&self) -> crate::Result<RunConfig> {
        let store = self.host.image_store();
        let rec = store.get(&self.spec.image)?;
        let rootfs = store.rootfs(&self.spec.image);
        let user = store.run_user(&self.spec.image)?;
        let path = rec.path_env().to_string();
        let server = crate::image::find_server(&rootfs, &path).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "image {:?} has no mrmd-python on its PATH ({path}): every runtime runs the MRP server; install it in the image (python3 -m pip install mrmd-python)",
                self.spec.image
            ))
        })?;
        let workdir = rec
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| format!("{}/work", user.home.trim_end_matches('/')));
        let cwd = rec
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| user.home.clone());
        Ok(RunConfig {
            user,
            env: rec.config.env,
            cwd,
            workdir,
            server,
        })
    }

    pub fn cgroup_path(&self) -> String {
        format!("{}/{}", self.host.cgroup_parent(), self.spec.id)
    }

    pub fn net(&self) -> NetConfig {
        let digest = Sha256::digest(format!("{}{}", self.host.prefix, self.spec.id));
        NetConfig {
            netns: format!("{}{}", self.host.prefix, self.spec.id),
            host_if: format!("fv{}", &hex::encode(digest)[..10]),
            host_ip: self.spec.host_ip,
            ip: self.spec.ip,
            prefix: self.spec.prefix,
            outer: self.host.outer_netns.clone(),
            root_route_via: self.host.route_via,
            fabric: self.host.fabric_netns.clone(),
            policy: self.spec.net.clone(),
        }
    }

    pub fn mrp_url(&self) -> String {
        crate::mrp::base_url(&self.spec.ip.to_string())
    }

    /// Persists the spec next to the container so that a restarted agent adopts it.
    pub fn save_spec(&self) -> crate::Result<()> {
        std::fs::create_dir_all(self.dir())?;
        std::fs::write(
            self.spec_file(),
            serde_json::to_vec_pretty(&self.spec).expect("spec serializes"),
        )?;
        Ok(())
    }

    pub async fn is_alive(&self) -> bool {
        matches!(self.host.runc.state(self.id()).await, Ok(Some(s)) if s.status == "running" || s.status == "paused")
    }
}

/// Copies a directory tree exactly (modes, owners, links, whiteouts) with `cp -a`.
pub async fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> crate::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !from.exists() {
        std::fs::create_dir_all(to)?;
        return Ok(());
    }
    crate::sys::cmd::run(
        "cp",
        &["-a", &from.display().to_string(), &to.display().to_string()],
    )
    .await
    .map(|_| ())
}

pub(crate) fn ms(since: std::time::Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

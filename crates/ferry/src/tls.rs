//! TLS (rustls) for the links that cross machines: the agent API (control plane → agent) and
//! agent-to-agent transfers. Servers take a PEM certificate chain and key; clients trust the CA
//! certificates of one PEM file, and nothing else (no system roots: a ferry fleet has its own CA).
//! `ferry dev up --tls` makes a throwaway CA and a certificate per simulated host ([`dev_ca`]).

use crate::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A server's certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            Error::Invalid(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::Invalid(format!(
                "{} is not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if v.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(v)
}

pub fn server_config(f: &ServerFiles) -> Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| {
        Error::Invalid(format!(
            "cannot read a PEM private key from {}: {e}",
            f.key.display()
        ))
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&f.cert)?, key)
        .map_err(|e| {
            Error::Invalid(format!(
                "certificate {} and key {} do not make a TLS server: {e}",
                f.cert.display(),
                f.key.display()
            ))
        })?;
    Ok(Arc::new(cfg))
}

/// The CA certificates a client trusts.
fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a usable CA certificate: {e}",
                ca.display()
            ))
        })?;
    }
    Ok(roots)
}

/// A client configuration that trusts `roots` and nothing else.
fn trusting(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    Ok(Arc::new(trusting(roots(ca)?)?))
}

/// `builder` with `tls` as its TLS configuration, if there is one (else reqwest's, which with
/// ferry's features trusts no root: plain HTTP only).
pub fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: Option<&rustls::ClientConfig>,
) -> reqwest::ClientBuilder {
    match tls {
        Some(cfg) => builder.use_preconfigured_tls(cfg.clone()),
        None => builder,
    }
}

/// A reqwest client that trusts only the CA in `ca` (or plain HTTP only, without one).
pub fn http_client(ca: Option<&Path>, builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    let tls = ca.map(client_config).transpose()?;
    with_tls(builder, tls.as_deref())
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))
}

/// A reqwest client that trusts this system's CA certificates: for reaching the outside world
/// (the npm registry, users' webhook receivers), never ferry's own hosts.
pub fn system_roots_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Unavailable(format!(
            "no CA certificates found on this system ({:?}): install ca-certificates",
            found.errors.first()
        )));
    }
    builder
        .use_preconfigured_tls(trusting(roots)?)
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))
}

/// Wraps a connection to `host` in TLS, checking its certificate against `cfg`'s roots.
pub async fn connect(
    cfg: Arc<rustls::ClientConfig>,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| Error::Invalid(format!("bad TLS server name {host:?}: {e}")))?,
    };
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Unavailable(format!("TLS with {host} failed: {e}")))
}

/// Serves `app` on `listener`: plain HTTP, or HTTPS with `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, app).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "TLS connection ended");
            }
        });
    }
}

/// A throwaway CA in `dir` (`ca.pem`) and, for each `(name, ip)`, `name.pem` + `name.key` signed by
/// it for that IP address. For dev topologies and tests; real fleets bring their own PKI.
pub fn dev_ca(dir: &Path, hosts: &[(String, IpAddr)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let bad = |e: rcgen::Error| Error::Internal(format!("making dev certificates: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry dev CA");
    let ca_key = rcgen::KeyPair::generate().map_err(bad)?;
    let ca = ca_params.self_signed(&ca_key).map_err(bad)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    for (name, ip) in hosts {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        p.subject_alt_names = vec![rcgen::SanType::IpAddress(*ip)];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let key = rcgen::KeyPair::generate().map_err(bad)?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(bad)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    Ok(dir.join("ca.pem"))
}

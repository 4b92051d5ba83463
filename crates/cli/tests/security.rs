//! Security of the links that cross machines: agents speaking TLS (rustls) with a fleet CA, the
//! control plane and peer agents checking their certificates, tokens still required, and errors
//! that never echo a secret.

mod common;
use common::{http, Ferry};
use std::process::Command;
use std::time::Duration;

/// `curl` to an agent from the root namespace; returns (exit code, HTTP status, body).
fn curl(url: &str, ca: &std::path::Path, token: Option<&str>) -> (i32, u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca)
    .arg(url);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let o = c.output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (
        o.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

#[test]
fn agents_over_tls_carry_a_migration_and_refuse_plain_http_unknown_cas_and_missing_tokens() {
    let Some(f) = Ferry::start_dev_tls(2) else {
        return;
    };
    let hosts = f.json(&["host", "ls"]);
    let urls: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["url"].as_str().unwrap().to_string())
        .collect();
    assert!(urls.iter().all(|u| u.starts_with("https://")), "{urls:?}");

    // A migration between TLS agents: control → agents and the agent → agent stream are TLS.
    f.ok(&["create", "--name", "sealed", "--host", "h1"]);
    f.py(
        "sealed",
        "import pandas as pd\ndf = pd.DataFrame({'a': range(100)})\nx = 41",
    );
    f.ok(&["migrate", "sealed", "--to", "h2"]);
    assert_eq!(f.json(&["inspect", "sealed"])["host"], "h2");
    assert_eq!(
        f.py("sealed", "print(x + 1, int(df.a.sum()))").trim(),
        "42 4950"
    );
    f.ok(&["migrate", "sealed", "--to", "h1"]);
    assert_eq!(f.py("sealed", "print(x)").trim(), "41");

    let ca = f.state.join("tls/ca.pem");
    let token = std::fs::read_to_string(f.state.join("agent-token"))
        .unwrap()
        .trim()
        .to_string();
    let info = format!("{}/agent/v1/info", urls[0]);
    // With the fleet CA and the token: answered.
    let (code, status, body) = curl(&info, &ca, Some(&token));
    assert_eq!((code, status), (0, 200), "{body}");
    // Without the token: refused, over TLS too; the refusal does not echo what was sent.
    let (_, status, body) = curl(
        &format!("{}/agent/v1/runtimes", urls[0]),
        &ca,
        Some("not-the-token"),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains("not-the-token") && !body.contains(&token),
        "a refusal echoes a secret: {body}"
    );
    // A client that trusts another CA (here: a host certificate, which is no CA) refuses the agent.
    let (code, _, _) = curl(&info, &f.state.join("tls/h2.pem"), Some(&token));
    assert_eq!(
        code, 60,
        "curl must refuse the agent's certificate (exit 60)"
    );
    // Plain HTTP to a TLS agent gets no answer.
    let addr = urls[0].trim_start_matches("https://");
    let plain = http(addr, "GET", "/agent/v1/info", "", Duration::from_secs(5));
    assert!(
        !matches!(plain, Ok((200, _))),
        "a TLS agent answered plain HTTP: {plain:?}"
    );
    // Host keys are readable by root only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.state.join("tls/h1.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_control_api_refuses_bad_tokens_without_echoing_them() {
    let Some(f) = Ferry::start() else { return };
    let addr = std::fs::read_to_string(f.state.join("serve.addr"))
        .unwrap()
        .trim()
        .to_string();
    let real = std::fs::read_to_string(f.state.join("token"))
        .unwrap()
        .trim()
        .to_string();
    for path in ["/api/v1/runtimes", "/api/v1/hosts", "/api/v1/events"] {
        let (status, body) = http(&addr, "GET", path, "", Duration::from_secs(5)).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body.contains("token"),
            "the refusal says what is missing: {body}"
        );
    }
    // A wrong token is refused, and neither it nor the real one appears in the answer.
    let out = Command::new(common::BIN)
        .arg("--state-dir")
        .arg(&f.state)
        .args(["--token", "guess-1234567890", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("guess-1234567890") && !err.contains(&real),
        "{err}"
    );
    assert!(err.to_lowercase().contains("token"), "{err}");
}

#[test]
fn the_control_api_and_the_proxy_speak_tls_when_given_a_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (
        certs.path().join("serve.pem"),
        certs.path().join("serve.key"),
    );
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ferry test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let Some(f) = Ferry::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]) else {
        return;
    };
    // The CLI refuses to talk to a TLS server it has no CA for, and says what to pass.
    let err = f.fails(&["ls"]);
    assert!(err.contains("--ca"), "{err}");
    let ca = cert.to_str().unwrap();
    f.ok(&["--ca", ca, "create", "--name", "tls1"]);
    let out = f.json(&["--ca", ca, "exec", "tls1", "x = 20\nprint(x * 2 + 2)"]);
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "42");
    // The proxy speaks TLS too.
    let proxy = f.proxy_addr();
    let auth = format!(
        "Authorization: Bearer {}",
        f.ok(&["--ca", ca, "token", "tls1"]).trim()
    );
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            ca,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"code":"print(x + 1)"}"#,
        ])
        .arg(format!("https://{proxy}/r/tls1/mrp/v1/execute"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && body.contains("21"),
        "{body} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Plain HTTP is not answered.
    let plain = http(
        &proxy,
        "GET",
        "/r/tls1/mrp/v1/capabilities",
        "",
        Duration::from_secs(5),
    );
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");
    f.ok(&["--ca", ca, "rm", "-f", "tls1"]);
}

//! Runtime credentials at the proxy, with a real `ferry serve` and real runtimes: no, wrong,
//! expired and another runtime's credentials are refused (401 / 403, never echoed) for plain HTTP,
//! SSE and WebSocket upgrades; the right ones pass; rotation; the browser exchange and its cookie;
//! a hibernated runtime woken only by an authorised request; forks and restores under new names
//! get tokens of their own; `--proxy-auth none`.

mod common;
use common::{http_as, request, Ferry};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A signed token minted exactly as docs/ACCESS.md's Python example does.
fn mint(key: &str, name: &str, expiry: i64) -> String {
    let code = format!(
        "import hmac, hashlib\nkey, name, exp = {key:?}, {name:?}, {expiry}\nmac = hmac.new(bytes.fromhex(key), f'ferry-access-v1\\n{{name}}\\n{{exp}}'.encode(), hashlib.sha256).hexdigest()\nprint(f'v1.{{name}}.{{exp}}.{{mac}}')"
    );
    let o = std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// (method, path under /r/NAME/, body, extra headers).
type Kind = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// The three kinds of request the proxy carries: plain HTTP, SSE, a WebSocket upgrade.
fn kinds() -> Vec<Kind> {
    vec![
        (
            "POST",
            "mrp/v1/execute",
            r#"{"code":"print(x + 1)"}"#,
            vec![],
        ),
        (
            "POST",
            "mrp/v1/execute/stream",
            r#"{"code":"print(x + 1)"}"#,
            vec![],
        ),
        (
            "GET",
            "mrp/v1/ws",
            "",
            vec![
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        ),
    ]
}

/// `request` with `Connection: Upgrade` where an Upgrade header is sent.
fn send(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
    auth: Option<&str>,
) -> (u16, String, String) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        h.push(("Authorization", b));
    }
    let mut raw = request(addr, method, path, &h, body, T).expect("the proxy answers");
    if extra.iter().any(|(k, _)| *k == "Upgrade") {
        // An upgrade answer may be followed by a held-open connection: only the head matters.
        raw.2.truncate(2000);
    }
    raw
}

#[test]
fn only_the_runtimes_own_credentials_pass_for_http_sse_and_websocket() {
    let Some(f) = Ferry::start() else { return };
    let alice = f.json(&["create", "--name", "alice"]);
    let ta = alice["access_token"]
        .as_str()
        .expect("create returns the token")
        .to_string();
    assert!(ta.len() >= 32, "128 bits or more: {ta}");
    assert_eq!(f.token("alice"), ta, "`ferry token` shows it again");
    let text = f.ok(&["create", "--name", "bob"]);
    let tb = f.token("bob");
    assert!(
        text.contains(&tb),
        "the text output shows the token: {text}"
    );
    assert_ne!(ta, tb);
    f.py("alice", "x = 41");
    let proxy = f.proxy_addr();
    let key = f.ok(&["token", "--signing-key"]).trim().to_string();
    assert_eq!(key.len(), 64);
    let expired = mint(&key, "alice", now() - 5);
    let bobs_signed = mint(&key, "bob", now() + 600);
    let signed = mint(&key, "alice", now() + 600);
    let cli_signed = f.ok(&["token", "alice", "--ttl", "1h"]).trim().to_string();
    assert!(cli_signed.starts_with("v1.alice."), "{cli_signed}");
    let ip = alice["ip"].as_str().unwrap();
    for (method, rest, body, extra) in kinds() {
        let path = format!("/r/alice/{rest}");
        let (status, head, text) = send(&proxy, method, &path, body, &extra, None);
        assert_eq!(status, 401, "{method} {rest} without a credential: {text}");
        assert!(
            header(&head, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
            "{head}"
        );
        assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
        assert!(
            text.contains("ferry token alice"),
            "says what to send: {text}"
        );
        for (what, bad) in [
            ("a wrong token", "not-the-token-0123456789abcdef"),
            ("bob's token", tb.as_str()),
            ("an expired signed token", expired.as_str()),
            ("bob's signed token", bobs_signed.as_str()),
        ] {
            let (status, head, text) = send(&proxy, method, &path, body, &extra, Some(bad));
            assert_eq!(status, 403, "{method} {rest} with {what}: {text}");
            assert!(!text.contains(bad) && !head.contains(bad), "{what} echoed");
            assert!(
                !text.contains(&ta) && !head.contains(&ta),
                "the real token shown"
            );
            assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
        }
        let control = f.control_token();
        for (what, good) in [
            ("its token", ta.as_str()),
            ("a signed token", signed.as_str()),
            ("a signed token from the CLI", cli_signed.as_str()),
            ("the control token", control.as_str()),
        ] {
            let (status, _, text) = send(&proxy, method, &path, body, &extra, Some(good));
            if extra.is_empty() {
                assert_eq!(status, 200, "{method} {rest} with {what}: {text}");
                assert!(text.contains("42"), "{what}: {text}");
            } else {
                // mrmd-python has no WebSocket endpoint: forwarded, the upgrade gets the
                // runtime's own answer, the same as sent to it directly.
                let direct = send(
                    &format!("{ip}:8888"),
                    method,
                    &format!("/{rest}"),
                    body,
                    &extra,
                    None,
                );
                assert_eq!(status, direct.0, "{what}: the runtime's answer ({text})");
                assert!(
                    !matches!(status, 401 | 403 | 502),
                    "{what}: {status} {text}"
                );
            }
        }
        if rest.ends_with("stream") {
            let (_, _, text) = send(&proxy, method, &path, body, &extra, Some(&ta));
            assert!(text.contains("event: done"), "an SSE stream: {text}");
        }
    }
    // Rotation takes effect at once: the old token is refused, the new one passes.
    let rotated = f.ok(&["token", "alice", "--rotate"]).trim().to_string();
    assert_ne!(rotated, ta);
    assert_eq!(f.token("alice"), rotated);
    let exec = "/r/alice/mrp/v1/execute";
    let code = r#"{"code":"print(x + 1)"}"#;
    assert_eq!(http_as(&proxy, &ta, "POST", exec, code, T).unwrap().0, 403);
    assert_eq!(
        http_as(&proxy, &rotated, "POST", exec, code, T).unwrap().0,
        200
    );
    assert_eq!(
        http_as(&proxy, &signed, "POST", exec, code, T).unwrap().0,
        200,
        "signed tokens do not depend on the access token"
    );
    // Clear errors for bad input.
    let err = f.fails(&["token", "alice", "--rotate", "--ttl", "1h"]);
    assert!(err.contains("--rotate"), "{err}");
    let err = f.fails(&["token", "nobody"]);
    assert!(err.contains("nobody"), "{err}");
    let err = f.fails(&["token"]);
    assert!(err.contains("ferry token NAME"), "{err}");
}

#[test]
fn the_browser_exchange_sets_a_scoped_cookie_that_rotation_ends() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "alice"]);
    f.ok(&["create", "--name", "bob"]);
    let ta = f.token("alice");
    let proxy = f.proxy_addr();
    // The exchange: a redirect to the same URL without the parameter, and the cookie.
    let (status, head, _) = request(
        &proxy,
        "GET",
        &format!("/r/alice/mrp/v1/capabilities?a=1&ferry-token={ta}"),
        &[],
        "",
        T,
    )
    .unwrap();
    assert_eq!(status, 303, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some("/r/alice/mrp/v1/capabilities?a=1")
    );
    let set = header(&head, "set-cookie").expect("a cookie").to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/r/alice/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    assert!(!set.contains(&ta), "the cookie holds no token: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let caps = "/r/alice/mrp/v1/capabilities";
    let with_cookie = |path: &str, c: &str| {
        request(&proxy, "GET", path, &[("Cookie", c)], "", T)
            .unwrap()
            .0
    };
    assert_eq!(with_cookie(caps, &cookie), 200, "the cookie works");
    assert_eq!(
        with_cookie("/r/bob/mrp/v1/capabilities", &cookie),
        403,
        "alice's cookie is refused on bob's path"
    );
    // The notebook page under the runtime's path is served by the proxy, with the cookie.
    let (status, _, page) = request(
        &proxy,
        "GET",
        "/r/alice/.ferry/notebook",
        &[("Cookie", &cookie)],
        "",
        T,
    )
    .unwrap();
    assert!(
        (status == 200 && page.contains("alice"))
            || (status == 404 && page.contains("ferry editor install")),
        "{status} {page}"
    );
    assert_eq!(
        request(&proxy, "GET", "/r/alice/.ferry/notebook", &[], "", T)
            .unwrap()
            .0,
        401,
        "the page needs the credential too"
    );
    // A bad exchange sets nothing.
    let (status, head, _) = request(
        &proxy,
        "GET",
        &format!("/r/bob/?ferry-token={ta}"),
        &[],
        "",
        T,
    )
    .unwrap();
    assert_eq!(status, 403);
    assert!(header(&head, "set-cookie").is_none());
    // /notebook/NAME on the control server: a signed-in operator is sent to the proxy's page with
    // a short-lived token for that runtime alone.
    let api = std::fs::read_to_string(f.state.join("serve.addr")).unwrap();
    let (status, _, _) = request(api.trim(), "GET", "/notebook/alice", &[], "", T).unwrap();
    assert_eq!(status, 401, "not signed in");
    let control = format!("Bearer {}", f.control_token());
    let (status, head, _) = request(
        api.trim(),
        "GET",
        "/notebook/alice",
        &[("Authorization", &control)],
        "",
        T,
    )
    .unwrap();
    assert_eq!(status, 303, "{head}");
    let to = header(&head, "location").unwrap().to_string();
    let prefix = format!("http://{proxy}/r/alice/.ferry/notebook?ferry-token=v1.alice.");
    assert!(to.starts_with(&prefix), "{to}");
    assert!(
        !to.contains(&f.control_token()),
        "the page never gets the control token"
    );
    let signed = to.split("ferry-token=").nth(1).unwrap();
    assert_eq!(
        http_as(&proxy, signed, "GET", "/r/bob/mrp/v1/capabilities", "", T)
            .unwrap()
            .0,
        403,
        "alice's notebook token opens nothing else"
    );
    let path = to.trim_start_matches(&format!("http://{proxy}"));
    let (status, head, _) = request(&proxy, "GET", path, &[], "", T).unwrap();
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some("/r/alice/.ferry/notebook"));
    let notebook_cookie = header(&head, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(with_cookie(caps, &notebook_cookie), 200);
    // Rotation ends every cookie of that runtime.
    f.ok(&["token", "alice", "--rotate"]);
    assert_eq!(
        with_cookie(caps, &cookie),
        403,
        "the cookie died with the token"
    );
    assert_eq!(with_cookie(caps, &notebook_cookie), 403);
}

#[test]
fn a_hibernated_runtime_is_woken_only_by_an_authorised_request() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "sleepy"]);
    f.py("sleepy", "x = 41");
    f.ok(&["hibernate", "sleepy"]);
    assert_eq!(f.state_of("sleepy"), "hibernated");
    let proxy = f.proxy_addr();
    let exec = "/r/sleepy/mrp/v1/execute";
    let code = r#"{"code":"print(x + 1)"}"#;
    let (status, _, _) = request(&proxy, "POST", exec, &[], code, T).unwrap();
    assert_eq!(status, 401);
    let (status, _) = http_as(&proxy, "wrong-token-0000", "POST", exec, code, T).unwrap();
    assert_eq!(status, 403);
    // Whether a name exists is not told to someone without its credential.
    let (status, _, _) = request(&proxy, "POST", "/r/ghost/mrp/v1/execute", &[], code, T).unwrap();
    assert_eq!(status, 401, "an unknown name looks the same");
    let (status, _) = http_as(
        &proxy,
        "wrong-token-0000",
        "POST",
        "/r/ghost/mrp/v1/execute",
        code,
        T,
    )
    .unwrap();
    assert_eq!(status, 403, "an unknown name looks the same");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        f.state_of("sleepy"),
        "hibernated",
        "refused requests woke nothing"
    );
    let t0 = Instant::now();
    let (status, body) = f
        .proxy("POST", exec, code, Duration::from_secs(60))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42"), "{body}");
    assert_eq!(f.state_of("sleepy"), "running");
    eprintln!("woken by an authorised request in {:?}", t0.elapsed());
}

#[test]
fn restores_under_a_new_name_get_a_token_of_their_own() {
    let Some(f) = Ferry::start() else { return };
    f.ok(&["create", "--name", "orig"]);
    f.py("orig", "x = 41");
    let to = f.token("orig");
    let snap = f.json(&["checkpoint", "orig", "--leave-running"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(&["restore", &snap, "--name", "copy"]);
    let tc = f.token("copy");
    assert_ne!(tc, to, "a copy is another tenant's runtime");
    let proxy = f.proxy_addr();
    let code = r#"{"code":"print(x + 1)"}"#;
    let exec = "/r/copy/mrp/v1/execute";
    assert_eq!(http_as(&proxy, &to, "POST", exec, code, T).unwrap().0, 403);
    let (status, body) = http_as(&proxy, &tc, "POST", exec, code, T).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42"));
    assert_eq!(f.token("orig"), to, "the original keeps its token");
    // Stopped and restored in place, a runtime keeps its token.
    f.ok(&["stop", "orig"]);
    f.ok(&["restore", &snap]);
    assert_eq!(f.token("orig"), to);
    assert_eq!(
        http_as(&proxy, &to, "POST", "/r/orig/mrp/v1/execute", code, T)
            .unwrap()
            .0,
        200
    );
}

#[test]
fn proxy_auth_none_lets_everyone_in_warns_and_doctor_flags_it() {
    let Some(f) = Ferry::start_with(&["--proxy-auth", "none"]) else {
        return;
    };
    f.ok(&["create", "--name", "open"]);
    let (status, _, body) = request(
        &f.proxy_addr(),
        "POST",
        "/r/open/mrp/v1/execute",
        &[],
        r#"{"code":"print(6 * 7)"}"#,
        T,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("42"));
    assert!(f.log().contains("--proxy-auth none"), "a warning at start");
    let o = f.cli(&["--json", "doctor"]);
    let checks: Value = serde_json::from_slice(&o.stdout).expect("doctor's JSON");
    let c = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "proxy credentials")
        .expect("doctor checks the proxy's credentials")
        .clone();
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["fix"].as_str().unwrap().contains("--proxy-auth none"),
        "{c}"
    );
}

#[test]
fn doctor_is_content_with_the_default() {
    let Some(f) = Ferry::start() else { return };
    let o = f.cli(&["--json", "doctor"]);
    let checks: Value = serde_json::from_slice(&o.stdout).expect("doctor's JSON");
    let c = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "proxy credentials")
        .unwrap()
        .clone();
    assert_eq!(c["ok"], true, "{c}");
}

#[test]
fn a_rotation_through_one_instance_ends_the_old_token_on_the_other_within_a_second() {
    let Some(a) = Ferry::start_dev_on(1, &["--no-auto"], true) else {
        return;
    };
    let b = a.second_instance(&["--no-auto"]);
    a.ok(&["create", "--name", "shared", "--host", "h1"]);
    let old = a.token("shared");
    let code = r#"{"code":"print(6 * 7)"}"#;
    let exec = "/r/shared/mrp/v1/execute";
    let (pa, pb) = (a.proxy_addr(), b.proxy_addr());
    // Created through A a moment ago: B's proxy knows the token already (one database read).
    assert_eq!(http_as(&pb, &old, "POST", exec, code, T).unwrap().0, 200);
    let new = a.ok(&["token", "shared", "--rotate"]).trim().to_string();
    let rotated = Instant::now();
    assert_eq!(
        http_as(&pa, &old, "POST", exec, code, T).unwrap().0,
        403,
        "at once on the instance that rotated it"
    );
    let lag = loop {
        if http_as(&pb, &old, "POST", exec, code, T).unwrap().0 == 403 {
            break rotated.elapsed();
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(3),
            "B still accepts the old token"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("the old token stopped working on the other instance after {lag:?}");
    assert!(lag < Duration::from_millis(1500), "{lag:?}");
    assert_eq!(http_as(&pb, &new, "POST", exec, code, T).unwrap().0, 200);
}

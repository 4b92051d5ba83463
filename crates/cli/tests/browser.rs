//! The real clients in a real browser: headless Chromium (chromedriver) runs the MRMD editor
//! bundle on `ferry serve`'s notebook page while the runtime migrates between simulated hosts,
//! and drives the dashboard (`/ui`). Real runc, CRIU, proxy and agents; no mocks.
//! Screenshots are kept in `<target dir>/test-artifacts/browser/` (or $FERRY_TEST_ARTIFACTS).

#[path = "common/browser.rs"]
mod chrome;
mod common;

use chrome::Browser;
use common::{http, http_as, request, Ferry, BIN};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The editor bundle for the tests: in $FERRY_EDITOR_DIR or /var/cache/ferry/editor (where
/// scripts/setup.sh puts it); installed there with `ferry editor install` when missing.
fn editor_dir() -> PathBuf {
    let dir = std::env::var_os("FERRY_EDITOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferry/editor"));
    let st = std::process::Command::new(BIN)
        .args(["editor", "install", "--dir"])
        .arg(&dir)
        .status()
        .expect("run ferry editor install");
    assert!(
        st.success(),
        "ferry editor install --dir {} failed",
        dir.display()
    );
    dir
}

fn serve_addr(f: &Ferry) -> String {
    std::fs::read_to_string(f.state.join("serve.addr"))
        .unwrap()
        .trim()
        .to_string()
}

const STREAM_TICKS: usize = 80;

/// The notebook: pandas in one cell, a cell that streams for ~20 s while the runtime moves
/// h1 → h2 (stop-copy) → h1 (lazy), then a cell that uses the DataFrame, then a plot (asset).
fn notebook_doc() -> String {
    format!(
        "# ferry notebook test\n\n\
```python\nimport pandas as pd\ndf = pd.DataFrame({{'a': range(1000), 'b': [i * i for i in range(1000)]}})\nprint('rows', len(df))\n```\n\n\
```python\nimport time\nfor i in range({STREAM_TICKS}):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\nprint('stream done')\n```\n\n\
```python\nprint('sum', int(df.b.sum()), 'rows', len(df))\n```\n\n\
```python\nimport io\nimport matplotlib.pyplot as plt\nfrom IPython.display import Image, display\nfig, ax = plt.subplots(figsize=(1.2, 0.8), dpi=40)\nax.plot([0, 1, 2, 3], [0, 1, 4, 9], color='#2b6cb0')\nbuf = io.BytesIO()\nfig.savefig(buf, format='png')\nplt.close(fig)\ndisplay(Image(data=buf.getvalue()))\n```\n"
    )
}

/// The bytes of `path` through the proxy at `addr`, with a runtime's token (curl: assets are binary).
fn fetch_bytes(addr: &str, token: &str, path: &str) -> Vec<u8> {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    assert!(
        o.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// The text of cell `i`'s output block in the editor's document.
async fn output_of(b: &Browser, i: usize) -> String {
    let v = b
        .js(&format!(
            "const doc = window.ferryNotebook.editor.getContent();
             const cells = window.ferryNotebook.editor.getCells();
             const c = cells[{i}];
             if (!c) return null;
             const m = doc.slice(c.end).match(/^\\s*```output:[^\\n]*\\n([\\s\\S]*?)```/);
             return m ? m[1] : null;"
        ))
        .await;
    v.as_str().unwrap_or("").to_string()
}

async fn run_cell(b: &Browser, i: usize) {
    b.js(&format!("window.__cell{i} = 'running'; window.ferryNotebook.editor.runCell({i}).then(() => window.__cell{i} = 'done', e => window.__cell{i} = 'failed: ' + e); return true;")).await;
}

async fn wait_cell(b: &Browser, i: usize, timeout: Duration) {
    let v = b
        .wait_js(
            &format!("cell {i} to finish"),
            &format!("return window.__cell{i} !== 'running' && window.__cell{i};"),
            timeout,
        )
        .await;
    assert_eq!(v, "done", "cell {i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_editor_keeps_working_while_its_runtime_moves() {
    if !chrome::browser_ready() {
        return;
    }
    let dir = editor_dir();
    let editor_arg = format!("--editor-dir={}", dir.display());
    let Some(f) = Ferry::start_dev_with(2, &["--no-auto", &editor_arg]) else {
        return;
    };
    f.ok(&["create", "--name", "nb", "--host", "h1"]);
    let proxy = f.proxy_addr();
    // The user holds only nb's own token: the page is opened through the exchange link.
    let token = f.token("nb");

    let b = Browser::start().await;
    b.client
        .goto(&format!(
            "http://{proxy}/r/nb/.ferry/notebook?ferry-token={token}"
        ))
        .await
        .unwrap();
    let here = b.client.current_url().await.unwrap();
    assert_eq!(
        here.as_str(),
        format!("http://{proxy}/r/nb/.ferry/notebook"),
        "the token left the URL"
    );
    let status = b.wait_js("the runtime to answer the page", "const s = document.getElementById('nb-status').textContent; return s.startsWith('ready') && s;", Duration::from_secs(30)).await;
    assert!(status.as_str().unwrap().contains("mrmd-python"), "{status}");
    let url = b.js("return window.ferryNotebook.runtimeUrl").await;
    assert_eq!(
        url,
        format!("http://{proxy}/r/nb/mrp/v1"),
        "the editor talks to the runtime through the proxy"
    );
    assert_eq!(
        b.js("return document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );
    let html = b.js("return document.documentElement.outerHTML").await;
    let html = html.as_str().unwrap();
    assert!(
        !html.contains(&token) && !html.contains(&f.control_token()),
        "the page holds no token"
    );

    // The whole document, set through the editor (CodeMirror) as typing would.
    let doc = serde_json::to_string(&notebook_doc()).unwrap();
    b.js(&format!("const ed = window.ferryNotebook.editor; ed.view.dispatch({{changes: {{from: 0, to: ed.view.state.doc.length, insert: {doc}}}}}); return ed.getCells().length;")).await;
    assert_eq!(
        b.js("return window.ferryNotebook.editor.getCells().length")
            .await,
        4
    );

    run_cell(&b, 0).await;
    wait_cell(&b, 0, Duration::from_secs(60)).await;
    assert_eq!(output_of(&b, 0).await.trim(), "rows 1000");

    // A matplotlib figure (an inline PNG) drawn before the moves: its file lives in the
    // runtime's writable layer.
    run_cell(&b, 3).await;
    wait_cell(&b, 3, Duration::from_secs(60)).await;
    let early = b.wait_js("the first plot", "const d = window.ferryNotebook.editor.getContent(); const m = d.match(/!\\[plot-1\\]\\(([^)]+)\\)/); return m && m[1];", Duration::from_secs(20)).await;
    let early = early.as_str().unwrap().to_string();

    // The long streaming cell; the runtime moves twice while it prints.
    run_cell(&b, 1).await;
    b.wait_js(
        "the stream to start",
        "const d = window.ferryNotebook.editor.getContent(); return d.includes('tick 3\\n');",
        Duration::from_secs(30),
    )
    .await;
    let m1: Value = f.json(&["migrate", "nb", "--to", "h2", "--mode", "stop-copy"]);
    assert_eq!(m1["to"], "h2");
    let mid = output_of(&b, 1).await;
    b.screenshot("notebook-1-streaming-after-stop-copy").await;
    let m2: Value = f.json(&["migrate", "nb", "--to", "h1", "--mode", "lazy"]);
    assert_eq!(m2["to"], "h1");
    assert!(b.js("return window.__cell1").await == "running", "both moves must happen while the cell streams; make the cell longer (output so far: {mid:?})");
    wait_cell(&b, 1, Duration::from_secs(120)).await;
    let streamed = output_of(&b, 1).await;
    let want: Vec<String> = (0..STREAM_TICKS)
        .map(|i| format!("tick {i}"))
        .chain(["stream done".to_string()])
        .collect();
    let got: Vec<&str> = streamed.lines().collect();
    assert_eq!(
        got, want,
        "every line streamed once, in order, across both moves"
    );
    assert!(
        mid.lines().count() < STREAM_TICKS,
        "the first move happened mid-stream"
    );

    // The session survived: the DataFrame made before the moves.
    run_cell(&b, 2).await;
    wait_cell(&b, 2, Duration::from_secs(60)).await;
    let expected: u64 = (0..1000u64).map(|i| i * i).sum();
    assert_eq!(
        output_of(&b, 2).await.trim(),
        format!("sum {expected} rows 1000")
    );

    // The plot made before the moves is still served, from the new host.
    let early_path = early
        .strip_prefix(&format!("http://{proxy}"))
        .unwrap_or_else(|| panic!("plot URL {early} is not behind the proxy"));
    let png = fetch_bytes(&proxy, &token, early_path);
    assert!(
        png.starts_with(b"\x89PNG\r\n"),
        "{early} after the moves is the PNG matplotlib drew: {:?}",
        &png[..png.len().min(16)]
    );

    // A plot: the asset URL the runtime gives (/mrp/v1/assets/F) works behind /r/nb.
    run_cell(&b, 3).await;
    wait_cell(&b, 3, Duration::from_secs(60)).await;
    // The document now links the new plot, behind the proxy; the file is served from there.
    let src = b.wait_js("the new plot in the document", &format!("const d = window.ferryNotebook.editor.getContent(); const m = d.match(/!\\[plot-1\\]\\(([^)]+)\\)/); return m && m[1] !== {} && m[1];", serde_json::to_string(&early).unwrap()), Duration::from_secs(20)).await;
    let src = src.as_str().unwrap().to_string();
    assert!(
        src.starts_with(&format!("http://{proxy}/r/nb/mrp/v1/assets/")),
        "{src}"
    );
    let path = src.strip_prefix(&format!("http://{proxy}")).unwrap();
    let png = fetch_bytes(&proxy, &token, path);
    assert!(
        png.starts_with(b"\x89PNG\r\n"),
        "a PNG drawn by matplotlib: {:?}",
        &png[..png.len().min(16)]
    );
    // And the editor shows a plot image loaded through the proxy.
    // (The editor renders only what is near the viewport: scroll to the plot at the end.)
    let img = b.wait_js("a plot image to load", &format!("window.scrollTo(0, document.documentElement.scrollHeight); const i = [...document.querySelectorAll('img')].find(i => i.src.startsWith({}) && i.complete && i.naturalWidth > 0); return i ? [i.src, i.naturalWidth, i.naturalHeight] : null;", serde_json::to_string(&format!("http://{proxy}/r/nb/mrp/v1/assets/")).unwrap()), Duration::from_secs(20)).await;
    assert_eq!(
        (img[1].as_u64(), img[2].as_u64()),
        (Some(48), Some(32)),
        "{img}"
    );
    let doc_now = b
        .js("return window.ferryNotebook.editor.getContent()")
        .await;

    // No error anywhere in the editor.
    assert_eq!(
        b.js("return window.ferryNotebook.errors").await,
        serde_json::json!([])
    );
    assert!(
        !doc_now.as_str().unwrap().contains("[Error"),
        "an error block in the document:\n{doc_now}"
    );
    assert_eq!(b.js("return window.ferryNotebook.completed").await, 5);
    b.screenshot("notebook-2-after-moves").await;
    b.js("[...document.querySelectorAll('img')].find(i => i.src.includes('/assets/')).scrollIntoView({block: 'end'}); return true;").await;
    b.screenshot("notebook-3-dataframe-and-plot").await;

    let rt = f.json(&["inspect", "nb"]);
    assert_eq!(
        (rt["host"].as_str(), rt["state"].as_str()),
        (Some("h1"), Some("running"))
    );
    let migs = f.json(&["migrations"]);
    assert_eq!(
        migs.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["result"] == "ok")
            .count(),
        2
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_the_fleet_and_migrates_from_the_page() {
    if !chrome::browser_ready() {
        return;
    }
    let Some(f) = Ferry::start_dev(2) else { return };
    // The benchmark reports kept in the repository, where the dashboard looks for them.
    let reports = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench");
    let bench_dir = f.state.join("bench");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let mut plots: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    plots.sort();
    assert!(!plots.is_empty(), "no bench plots in {}", reports.display());
    for p in &plots {
        std::fs::copy(reports.join(p), bench_dir.join(p)).unwrap();
    }
    f.ok(&["create", "--name", "web", "--host", "h1"]);
    f.ok(&["create", "--name", "db", "--host", "h2", "--plan", "free"]);
    let serve = serve_addr(&f);
    let token = std::fs::read_to_string(f.state.join("token"))
        .unwrap()
        .trim()
        .to_string();

    // /notebook/NAME is for a signed-in operator: it redirects to the page the proxy serves,
    // with a short-lived token for that runtime alone.
    let (status, body) = http(&serve, "GET", "/notebook/web", "", Duration::from_secs(10)).unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("Sign in"), "{body}");
    let bearer = format!("Bearer {token}");
    let (status, head, _) = request(
        &serve,
        "GET",
        "/notebook/web",
        &[("Authorization", &bearer)],
        "",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains("/r/web/.ferry/notebook?ferry-token=v1.web."),
        "{head}"
    );
    // Without the editor bundle, the notebook page says how to get it.
    let (status, body) = http_as(
        &f.proxy_addr(),
        &f.token("web"),
        "GET",
        "/r/web/.ferry/notebook",
        "",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("ferry editor install"), "{body}");

    let b = Browser::start().await;
    b.client.goto(&format!("http://{serve}/ui")).await.unwrap();
    b.wait_js(
        "the sign-in form",
        "return !document.getElementById('login').hidden;",
        Duration::from_secs(10),
    )
    .await;
    // Signed out, the page's API calls and the bench plots are refused.
    let refused = b.js("return Promise.all(['/api/v1/runtimes', '/ui/bench', '/ui/bench/migrate.svg'].map(u => fetch(u).then(r => r.status)))").await;
    assert_eq!(refused, serde_json::json!([401, 401, 401]));
    // A wrong token is refused with a message; the right one opens the dashboard.
    let token_input = b
        .client
        .find(fantoccini::Locator::Css("#token"))
        .await
        .unwrap();
    token_input.send_keys("not-the-token").await.unwrap();
    b.client
        .find(fantoccini::Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let err = b
        .wait_js(
            "the sign-in error",
            "return document.getElementById('login-error').textContent;",
            Duration::from_secs(10),
        )
        .await;
    assert!(err.as_str().unwrap().contains("wrong token"), "{err}");
    token_input.send_keys(&token).await.unwrap();
    b.client
        .find(fantoccini::Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js(
        "the runtimes table",
        "return document.querySelectorAll('#runtimes tr[data-runtime]').length === 2;",
        Duration::from_secs(20),
    )
    .await;
    // The session cookie is HttpOnly (scripts cannot read it) and the token is in no URL.
    assert_eq!(b.js("return document.cookie").await, "");
    assert!(!b
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains(&token));
    // A write with the cookie but without the page's header is refused (CSRF).
    let csrf = b
        .js("return fetch('/api/v1/runtimes/web/hibernate', {method: 'POST'}).then(r => r.status)")
        .await;
    assert_eq!(csrf, 401);

    // The page lists what the API lists.
    let hosts = f.json(&["host", "ls"]);
    let page_hosts = b.js("return [...document.querySelectorAll('#hosts tr[data-host]')].map(r => [r.dataset.host, r.querySelector('.health').textContent])").await;
    let api_hosts: Vec<Value> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            serde_json::json!([
                h["name"],
                if h["healthy"] == true {
                    "healthy"
                } else {
                    "unreachable"
                }
            ])
        })
        .collect();
    assert_eq!(page_hosts, Value::Array(api_hosts));
    let rts = f.json(&["ls"]);
    let page_rts = b.js("return [...document.querySelectorAll('#runtimes tr[data-runtime]')].map(r => [r.dataset.runtime, r.querySelector('.state').textContent, r.querySelector('.host').textContent, r.querySelector('.plan').textContent.split(' ')[0]])").await;
    let api_rts: Vec<Value> = rts
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!([r["name"], r["state"], r["host"], r["plan"]["name"]]))
        .collect();
    assert_eq!(page_rts, Value::Array(api_rts));
    // The memory graph fills from live samples.
    b.wait_js("a memory sample", "return (window.ferryDashboard.mem.get('web') || []).length >= 2 && document.querySelector('#runtimes tr[data-runtime=web] svg.memgraph polyline');", Duration::from_secs(20)).await;
    assert_eq!(b.js("return document.querySelectorAll('#runtimes tr[data-runtime=web] svg.memgraph line.threshold').length").await, 4);
    b.screenshot("dashboard-1-fleet").await;
    // The bench plots are shown, and load.
    let shown = b.wait_js("the bench plots", &format!("const f = [...document.querySelectorAll('#bench-reports figure')]; return f.length === {} && f.every(x => x.querySelector('img').complete && x.querySelector('img').naturalWidth > 0) && f.map(x => x.dataset.plot);", plots.len()), Duration::from_secs(20)).await;
    assert_eq!(shown, serde_json::json!(plots));

    // Migrate web h1 → h2 from the page: confirm, watch its phases, see it done.
    b.click("#runtimes tr[data-runtime=web] button[data-action=migrate]")
        .await;
    b.wait_js(
        "the confirmation",
        "return document.getElementById('confirm').open;",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(b.js("return [...document.querySelectorAll('#confirm select[name=to] option')].map(o => o.value)").await, serde_json::json!(["h2"]));
    b.screenshot("dashboard-2-confirm").await;
    b.client
        .find(fantoccini::Locator::Css("#confirm-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js("the migration's first phase", "const li = document.querySelector('#progress li[data-runtime=web]'); return li && li.querySelectorAll('.phases li').length > 0;", Duration::from_secs(30)).await;
    b.screenshot("dashboard-3-migrating").await;
    let done = b.wait_js("the migration to finish", "const li = document.querySelector('#progress li[data-runtime=web]'); return li && li.dataset.status !== 'running' && li.dataset.status;", Duration::from_secs(120)).await;
    assert_eq!(
        done,
        "ok",
        "{}",
        b.js("return document.querySelector('#progress li[data-runtime=web]').textContent")
            .await
    );
    let phases = b
        .js("return window.ferryDashboard.progress[0].phases")
        .await;
    let phases: Vec<&str> = phases
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        phases
            .iter()
            .any(|p| p.starts_with("freezing and dumping on h1")),
        "{phases:?}"
    );
    assert!(
        phases.iter().any(|p| p.starts_with("restoring on h2")),
        "{phases:?}"
    );

    // The API agrees, and the page shows the move with its phases.
    let rt = f.json(&["inspect", "web"]);
    assert_eq!(
        (rt["host"].as_str(), rt["state"].as_str()),
        (Some("h2"), Some("running"))
    );
    b.wait_js("the runtime on h2", "const r = document.querySelector('#runtimes tr[data-runtime=web]'); return r && r.querySelector('.host').textContent === 'h2' && r.dataset.state === 'running';", Duration::from_secs(20)).await;
    let migs = f.json(&["migrations"]);
    let id = migs[0]["id"].as_i64().unwrap();
    let segs = b
        .wait_js(
            "the migration's bar",
            &format!("const r = document.querySelector('#migrations tr[data-op=\"{id}\"]'); return r && r.dataset.result === 'ok' && Object.fromEntries([...r.querySelectorAll('.seg')].map(s => [s.classList[1], [Number(s.dataset.ms), s.getBoundingClientRect().width]]));"),
            Duration::from_secs(20),
        )
        .await;
    for k in ["checkpoint", "transfer", "restore", "downtime"] {
        let (ms, width) = (
            segs[k][0].as_f64().unwrap_or(0.0),
            segs[k][1].as_f64().unwrap_or(0.0),
        );
        assert!(ms > 0.0 && width >= 1.0, "no visible {k} segment: {segs}");
    }
    let t = &migs[0]["timings"];
    assert_eq!(
        segs["downtime"][0].as_f64().unwrap(),
        t["downtime_ms"].as_f64().unwrap().round(),
        "the bar shows the recorded downtime"
    );
    // Widths are to scale: the downtime bar against the whole migration's bar.
    let total_w: f64 = ["checkpoint", "transfer", "restore", "other"]
        .iter()
        .filter_map(|k| segs[k][1].as_f64())
        .sum();
    let ratio = segs["downtime"][1].as_f64().unwrap() / total_w;
    let want = t["downtime_ms"].as_f64().unwrap() / t["total_ms"].as_f64().unwrap();
    assert!(
        (ratio - want).abs() < 0.05,
        "downtime bar {ratio:.2} of the total, recorded {want:.2}"
    );
    b.wait_js("the live event", "return [...document.querySelectorAll('#events li')].some(li => li.dataset.kind === 'runtime.migrated');", Duration::from_secs(10)).await;
    assert_eq!(
        b.js("return document.querySelectorAll('#bench-plot svg .pt.downtime').length")
            .await,
        1
    );
    b.screenshot("dashboard-4-migrated").await;
    b.js("document.getElementById('migrations').scrollIntoView(); return true;")
        .await;
    b.screenshot("dashboard-5-history-and-bench").await;
    b.close().await;
}

/// Clicks `action` on `rt`'s row, fills the dialog's fields (name → value), confirms, and waits
/// until the page reports the operation done; returns its progress item's text.
async fn page_action(b: &Browser, rt: &str, action: &str, fields: &[(&str, &str)]) -> String {
    b.wait_js(&format!("{action} to be possible on {rt}"), &format!("const x = document.querySelector('#runtimes tr[data-runtime={rt}] button[data-action={action}]'); return x && !x.disabled;"), Duration::from_secs(30)).await;
    let before = b
        .js("return window.ferryDashboard.progress.length")
        .await
        .as_u64()
        .unwrap();
    b.click(&format!(
        "#runtimes tr[data-runtime={rt}] button[data-action={action}]"
    ))
    .await;
    b.wait_js(
        "the confirmation",
        "return document.getElementById('confirm').open;",
        Duration::from_secs(5),
    )
    .await;
    for (name, value) in fields {
        let v = serde_json::to_string(value).unwrap();
        b.js(&format!("const e = document.querySelector('#confirm [name={name}]'); if (e.type === 'checkbox') e.checked = {v} === 'on'; else e.value = {v}; return true;")).await;
    }
    b.client
        .find(fantoccini::Locator::Css("#confirm-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = b
        .wait_js(&format!("{action} of {rt} to finish"), &format!("const p = window.ferryDashboard.progress; return p.length > {before} && p[0].status !== 'running' && p[0].status;"), Duration::from_secs(120))
        .await;
    let text = b
        .js("return document.querySelector('#progress li').textContent")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status, "ok", "{action} {rt}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_hibernate_wake_checkpoint_fork_and_delete() {
    if !chrome::browser_ready() {
        return;
    }
    let Some(f) = Ferry::start_dev(2) else { return };
    f.ok(&["create", "--name", "app", "--host", "h1"]);
    f.py("app", "x = 41");
    let serve = serve_addr(&f);
    let token = std::fs::read_to_string(f.state.join("token"))
        .unwrap()
        .trim()
        .to_string();
    let b = Browser::start().await;
    b.client.goto(&format!("http://{serve}/ui")).await.unwrap();
    b.wait_js(
        "the sign-in form",
        "return !document.getElementById('login').hidden;",
        Duration::from_secs(10),
    )
    .await;
    b.client
        .find(fantoccini::Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    b.client
        .find(fantoccini::Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js(
        "the runtimes table",
        "return document.querySelector('#runtimes tr[data-runtime=app]');",
        Duration::from_secs(20),
    )
    .await;

    // Cancelling a confirmation does nothing.
    b.click("#runtimes tr[data-runtime=app] button[data-action=hibernate]")
        .await;
    b.wait_js(
        "the confirmation",
        "return document.getElementById('confirm').open;",
        Duration::from_secs(5),
    )
    .await;
    b.client
        .find(fantoccini::Locator::Css("#confirm button[value=cancel]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        b.js("return window.ferryDashboard.progress.length").await,
        0
    );
    assert_eq!(f.state_of("app"), "running");

    page_action(&b, "app", "hibernate", &[]).await;
    assert_eq!(f.state_of("app"), "hibernated");
    b.wait_js("the hibernated state", "return document.querySelector('#runtimes tr[data-runtime=app]').dataset.state === 'hibernated';", Duration::from_secs(20)).await;
    b.screenshot("actions-1-hibernated").await;
    page_action(&b, "app", "wake", &[]).await;
    assert_eq!(f.state_of("app"), "running");
    assert_eq!(
        f.py("app", "print(x + 1)").trim(),
        "42",
        "woken with its session"
    );

    let snaps = f.snapshot_count();
    page_action(&b, "app", "checkpoint", &[("leave_running", "on")]).await;
    assert_eq!(f.snapshot_count(), snaps + 1);
    assert_eq!(f.state_of("app"), "running");

    let fork = page_action(&b, "app", "fork", &[("to", "h2"), ("name", "app-copy")]).await;
    assert!(
        fork.contains("restoring the copy app-copy on h2"),
        "fork progress: {fork}"
    );
    let copy = f.json(&["inspect", "app-copy"]);
    assert_eq!(
        (copy["host"].as_str(), copy["state"].as_str()),
        (Some("h2"), Some("running"))
    );
    assert_eq!(f.py("app-copy", "print(x)").trim(), "41");
    b.wait_js(
        "the fork listed",
        "return document.querySelector('#runtimes tr[data-runtime=app-copy]');",
        Duration::from_secs(20),
    )
    .await;
    b.screenshot("actions-2-forked").await;

    // Deleting needs the name typed: a wrong one keeps the dialog open (the form is invalid).
    b.click("#runtimes tr[data-runtime=app-copy] button[data-action=delete]")
        .await;
    b.wait_js(
        "the confirmation",
        "return document.getElementById('confirm').open;",
        Duration::from_secs(5),
    )
    .await;
    b.js("document.querySelector('#confirm [name=confirm]').value = 'app'; return true;")
        .await;
    b.client
        .find(fantoccini::Locator::Css("#confirm-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        b.js("return document.getElementById('confirm').open").await,
        true,
        "a wrong name must not delete"
    );
    b.client
        .find(fantoccini::Locator::Css("#confirm button[value=cancel]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_action(&b, "app-copy", "delete", &[("confirm", "app-copy")]).await;
    assert!(f.fails(&["inspect", "app-copy"]).contains("app-copy"));
    b.wait_js(
        "the fork gone",
        "return !document.querySelector('#runtimes tr[data-runtime=app-copy]');",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(f.state_of("app"), "running");
    b.screenshot("actions-3-deleted").await;
    b.close().await;
}

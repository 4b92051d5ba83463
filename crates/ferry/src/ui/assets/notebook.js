// The notebook page: the real MRMD editor, its python cells run by one runtime through ferry's
// proxy (PROXY/r/NAME/mrp/v1), so the runtime can move between hosts under a typing user. The
// proxy serves this page under /r/NAME/.ferry/, so every call is same-origin and carries the
// runtime's access cookie.
// State for tests and curious users: window.ferryNotebook.
(function () {
  'use strict';
  const body = document.body;
  const name = body.dataset.runtime;
  const base = location.origin;
  const runtimeUrl = `${base}/r/${encodeURIComponent(name)}/mrp/v1`;
  const status = document.getElementById('nb-status');
  const saved = `ferry.notebook.${name}`;
  const doc = sessionStorage.getItem(saved) ||
    `# ${name}\n\nThis notebook runs on runtime **${name}** through ferry. ` +
    'ferry can move the runtime to another host while you work; variables stay.\n\n' +
    '```python\nimport sys, platform\nprint(platform.node(), sys.version.split()[0])\n```\n';

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = `pill ${cls || ''}`;
  }

  const state = { runtimeUrl, errors: [], runs: 0, completed: 0, running: 0 };
  window.ferryNotebook = state;

  const editor = mrmd.create(document.getElementById('editor'), { doc, dark: false });
  state.editor = editor;
  editor.connectRuntime('python', runtimeUrl);

  // mrmd-python hands back asset URLs relative to its own root (/mrp/v1/assets/F); behind the
  // proxy they live under /r/NAME/mrp/v1/assets/F.
  editor.execution.assetHandler = async ({ url }) => {
    if (!url) return null;
    const abs = url.startsWith('/mrp/v1/') ? runtimeUrl + url.slice('/mrp/v1'.length) : new URL(url, runtimeUrl).href;
    return { assetPath: abs, relativePath: abs };
  };

  const ex = editor.execution;
  ex.on('cellRun', () => { state.runs++; state.running++; setStatus('running…', 'busy'); });
  ex.on('cellComplete', (i, result) => {
    state.completed++;
    state.running = Math.max(0, state.running - 1);
    if (result && result.error) state.failed = (state.failed || 0) + 1; // cellError says why
    setStatus(state.running ? 'running…' : 'ready', state.running ? 'busy' : 'ok');
  });
  ex.on('cellError', (i, err) => {
    state.errors.push({ cell: i, error: String((err && (err.message || err.ename)) || err) });
    setStatus('error', 'bad');
  });
  ex.on('noRuntime', (i, cell, lang) => {
    state.errors.push({ cell: i, error: `no runtime for ${lang}` });
    setStatus(`no runtime for ${lang}`, 'bad');
  });

  // Keep the document for this tab (a reload keeps the notebook; the runtime keeps the state).
  setInterval(() => sessionStorage.setItem(saved, editor.getContent()), 2000);
  document.getElementById('run-all').addEventListener('click', () => editor.runAll());

  fetch(`${runtimeUrl}/capabilities`).then(r => r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`)))
    .then(c => setStatus(`ready · ${c.runtime} ${c.version}`, 'ok'))
    .catch(e => setStatus(`runtime unreachable: ${e.message}`, 'bad'));
})();

// The dashboard: hosts, runtimes, migrations and live events read from ferry's public API
// (fetch + EventSource, same origin, session cookie), and actions (migrate, hibernate, wake,
// fork, checkpoint, delete) with a confirmation and their progress from the event stream.
// State for tests and curious users: window.ferryDashboard.
(function () {
  'use strict';
  const $ = (s) => document.querySelector(s);
  const SVG = 'http://www.w3.org/2000/svg';
  const SAMPLES = 60;

  function el(tag, attrs, ...kids) {
    const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.setAttribute('class', v);
      else if (k === 'style') Object.assign(e.style, v); // CSSOM: allowed by the page's CSP, unlike style attributes
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
    return e;
  }

  const state = { hosts: [], runtimes: [], migrations: [], thresholds: [0.5, 0.75, 0.9, 0.95], mem: new Map(), progress: [], events: [], busy: new Set(), seen: {} };
  window.ferryDashboard = state;

  async function api(method, path, body) {
    const headers = method === 'GET' ? {} : { 'x-ferry-ui': '1' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(`/api/v1${path}`, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) {
      showLogin();
      throw new Error('signed out');
    }
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((j.error && j.error.message) || `HTTP ${r.status}`);
    return j;
  }

  // --- sign-in --------------------------------------------------------------------------------
  function showLogin() {
    $('#app').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    setConn('signed out', 'bad');
    $('#token').focus();
  }

  $('#login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('#login-error').textContent = '';
    const r = await fetch('/ui/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: $('#token').value }) });
    $('#token').value = '';
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      $('#login-error').textContent = (j.error && j.error.message) || `sign-in failed (HTTP ${r.status})`;
      return;
    }
    start();
  });

  $('#logout').addEventListener('click', async () => {
    await fetch('/ui/logout', { method: 'POST' });
    if (state.source) state.source.close();
    location.reload();
  });

  function setConn(text, cls) {
    $('#conn').textContent = text;
    $('#conn').className = `pill ${cls || ''}`;
  }

  // --- loading and rendering --------------------------------------------------------------------
  let reloadTimer = null;
  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadAll().catch(() => {}), 250);
  }

  async function loadAll() {
    const [info, runtimes, migrations] = await Promise.all([api('GET', '/info'), api('GET', '/runtimes'), api('GET', '/migrations?limit=50')]);
    state.hosts = info.hosts;
    if (Array.isArray(info.thresholds)) state.thresholds = info.thresholds;
    // Re-render only what changed: a row replaced under the pointer would swallow a click.
    const changed = (key, v) => { const j = JSON.stringify(v); if (state.seen[key] === j) return false; state.seen[key] = j; return true; };
    state.runtimes = runtimes;
    state.migrations = migrations;
    if (changed('hosts', info.hosts)) renderHosts();
    if (changed('runtimes', [runtimes, [...state.busy]])) renderRuntimes();
    if (changed('migrations', migrations)) renderMigrations();
    state.loadedAt = Date.now();
  }

  const mb = (b) => Math.round(b / 1048576);

  function renderHosts() {
    const tb = $('#hosts tbody');
    tb.replaceChildren(...state.hosts.map((h) => {
      const share = h.capacity_mb ? Math.min(1, h.used_mb / h.capacity_mb) : 0;
      return el('tr', { 'data-host': h.name },
        el('td', { class: 'name', text: h.name }),
        el('td', {}, el('span', { class: `pill health ${h.healthy ? 'ok' : 'bad'}`, text: h.healthy ? 'healthy' : 'unreachable' })),
        el('td', { class: 'mem' }, el('span', { class: 'meter' }, el('span', { style: { width: `${(share * 100).toFixed(1)}%` } })), ` ${h.used_mb} / ${h.capacity_mb} MB`),
        el('td', { class: 'labels' }, h.labels.length ? h.labels.map((l) => el('span', { class: 'label', text: l })) : el('span', { class: 'muted', text: '–' })),
        el('td', { class: 'muted', text: h.url }),
        el('td', {}, el('span', { class: `pill hoststate ${h.state === 'ready' ? 'ok' : 'busy'}`, text: h.state || 'ready' })),
        el('td', { class: 'actions' }, hostActions(h)));
    }));
  }

  function hostActions(h) {
    const b = (action, text) => el('button', { type: 'button', 'data-host-action': action, disabled: h.state === 'draining', text, onclick: () => actHost(action, h) });
    if (h.state === 'ready') return [b('drain', 'drain'), b('cordon', 'cordon')];
    return [b('drain', 'drain'), b('uncordon', 'uncordon')];
  }

  async function actHost(action, h) {
    const n = encodeURIComponent(h.name);
    let req;
    if (action === 'drain') {
      const here = state.runtimes.filter((r) => r.host === h.name && r.state === 'running').length;
      const f = await ask(`Drain host ${h.name}?`, [el('p', { text: `It is cordoned, then its ${here} running runtime(s) move to other hosts; what cannot move is hibernated. A runtime whose move fails keeps running here.` }),
        el('label', {}, 'mode ', el('select', { name: 'mode' },
          el('option', { value: 'stop-copy', text: 'stop-copy' }), el('option', { value: 'lazy', text: 'lazy' }), el('option', { value: 'hibernate', text: 'hibernate all' }))),
        el('label', {}, ' moves at a time ', el('input', { name: 'parallel', type: 'number', min: 1, max: 64, value: 2 }))], 'Drain');
      if (!f) return;
      req = { title: `drain host ${h.name} (${f.get('mode')})`, call: () => api('POST', `/hosts/${n}/drain`, { mode: f.get('mode'), parallel: Number(f.get('parallel')) || 2 }) };
    } else if (action === 'cordon' || action === 'uncordon') {
      const what = action === 'cordon' ? 'Nothing new is placed on it; its runtimes keep running.' : 'Placement may use it again.';
      if (!await ask(`${action[0].toUpperCase()}${action.slice(1)} host ${h.name}?`, [el('p', { text: what })], action)) return;
      req = { title: `${action} host ${h.name}`, call: () => api('POST', `/hosts/${n}/${action}`) };
    } else {
      return;
    }
    run(`host:${h.name}`, action, req);
  }

  function memGraph(rt) {
    const w = 160, hgt = 36;
    const svg = el('svg:svg', { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, class: 'memgraph', role: 'img' });
    for (const t of state.thresholds) {
      const y = (hgt - t * hgt).toFixed(1);
      svg.append(el('svg:line', { x1: 0, x2: w, y1: y, y2: y, class: `threshold t${Math.round(t * 100)}` }));
    }
    const series = state.mem.get(rt.name) || [];
    if (series.length) {
      const pts = series.map((s, i) => `${(w - (series.length - 1 - i) * (w / (SAMPLES - 1))).toFixed(1)},${(hgt - Math.min(1, s.share) * hgt).toFixed(1)}`);
      const x0 = pts[0].split(',')[0], x1 = pts[pts.length - 1].split(',')[0];
      svg.append(el('svg:polygon', { points: `${x0},${hgt} ${pts.join(' ')} ${x1},${hgt}`, class: 'area' }));
      svg.append(el('svg:polyline', { points: pts.join(' '), class: 'used' }));
      const last = series[series.length - 1];
      svg.append(el('svg:title', { text: `${mb(last.used)} of ${mb(last.limit)} MB (${(last.share * 100).toFixed(1)} %); thresholds ${state.thresholds.map((t) => `${t * 100}%`).join(' ')}` }));
    }
    return svg;
  }

  function memCell(rt) {
    if (rt.state !== 'running') state.mem.delete(rt.name); // its memory was freed or moved
    const series = state.mem.get(rt.name) || [];
    const last = series[series.length - 1];
    return el('td', { class: 'mem' }, memGraph(rt), el('span', { class: 'memtext', text: last ? ` ${mb(last.used)} / ${mb(last.limit)} MB` : (rt.state === 'running' ? ' …' : ' –') }));
  }

  function actionsFor(rt) {
    const busy = state.busy.has(rt.name) || ['migrating', 'restoring', 'creating'].includes(rt.state);
    const b = (action, label, enabled) => el('button', { type: 'button', 'data-action': action, disabled: busy || !enabled, onclick: () => act(action, rt) }, label);
    const running = rt.state === 'running';
    return el('td', { class: 'actions' },
      b('migrate', 'Migrate', running), b('fork', 'Fork', running),
      rt.state === 'hibernated' ? b('wake', 'Wake', true) : b('hibernate', 'Hibernate', running),
      b('checkpoint', 'Checkpoint', running), b('delete', 'Delete', true),
      el('a', { href: `/notebook/${encodeURIComponent(rt.name)}`, class: 'notebook-link' }, 'Notebook'));
  }

  function renderRuntimes() {
    const tb = $('#runtimes tbody');
    if (!state.runtimes.length) {
      tb.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'no runtimes yet: ferry create --name alice' })));
      return;
    }
    tb.replaceChildren(...state.runtimes.map((rt) => el('tr', { 'data-runtime': rt.name, 'data-state': rt.state },
      el('td', { class: 'name' }, el('strong', { text: rt.name }), rt.phase ? el('div', { class: 'phase muted', text: rt.phase }) : null),
      el('td', { class: 'state' }, el('span', { class: `pill state-${rt.state}`, text: rt.state, title: rt.state_reason || '' })),
      el('td', { class: 'plan', text: `${rt.plan.name} (${rt.plan.memory_mb} MB, ${rt.plan.cpus} CPU)` }),
      el('td', { class: 'host', text: rt.host }),
      memCell(rt),
      actionsFor(rt))));
  }

  // Phases of a migration's timings, as stacked segments.
  function segments(t) {
    const g = (k) => Number(t[k] || 0);
    const checkpoint = g('freeze_ms') + g('dump_ms') + g('copy_layer_ms') + g('hash_ms');
    const transfer = g('transfer_ms');
    const restore = g('restore_ms');
    const total = g('total_ms');
    return { checkpoint, transfer, restore, other: Math.max(0, total - checkpoint - transfer - restore), downtime: g('downtime_ms'), total };
  }

  function renderMigrations() {
    const tb = $('#migrations tbody');
    const rows = state.migrations;
    const max = Math.max(1, ...rows.map((m) => segments(m.timings).total));
    const W = 260;
    tb.replaceChildren(...rows.map((m) => {
      const s = segments(m.timings);
      const d = m.detail || {};
      const bar = el('div', { class: 'bar' }, ...['checkpoint', 'transfer', 'restore', 'other'].filter((k) => s[k] > 0)
        .map((k) => el('span', { class: `seg ${k}`, 'data-ms': s[k].toFixed(0), style: { width: `${Math.max(1, (s[k] / max) * W).toFixed(1)}px` }, title: `${k}: ${s[k].toFixed(0)} ms` })));
      const down = el('div', { class: 'bar' }, s.downtime > 0 ? el('span', { class: 'seg downtime', 'data-ms': s.downtime.toFixed(0), style: { width: `${Math.max(1, (s.downtime / max) * W).toFixed(1)}px` }, title: `downtime: ${s.downtime.toFixed(0)} ms` }) : null);
      return el('tr', { 'data-op': m.id, 'data-result': m.result },
        el('td', { text: m.id }),
        el('td', { class: 'muted', text: (m.started_at || '').replace('T', ' ').slice(0, 19) }),
        el('td', { text: m.runtime || '' }),
        el('td', { class: 'mode', text: d.mode || m.kind }),
        el('td', { text: `${d.from || '?'} → ${d.to || '?'}` }),
        el('td', {}, el('span', { class: `pill ${m.result === 'ok' ? 'ok' : m.result === 'running' ? 'busy' : 'bad'}`, text: m.result, title: m.error || '' })),
        el('td', { class: 'phases' }, bar, down),
        el('td', { class: 'num', text: s.downtime ? `${s.downtime.toFixed(0)} ms` : '–' }),
        el('td', { class: 'num', text: s.total ? `${(s.total / 1000).toFixed(2)} s` : '–' }));
    }));
    renderPlot();
  }

  // Downtime and total time of every migration in the list, oldest first (log scale).
  function renderPlot() {
    const ms = state.migrations.filter((m) => m.result === 'ok').slice().reverse();
    const box = $('#bench-plot');
    if (!ms.length) {
      box.replaceChildren(el('p', { class: 'muted', text: 'no finished migrations yet' }));
      return;
    }
    const W = 640, H = 180, L = 48, B = 24;
    const vals = ms.flatMap((m) => { const s = segments(m.timings); return [s.downtime, s.total]; }).filter((v) => v > 0);
    const lo = Math.log10(Math.max(1, Math.min(...vals) / 2)), hi = Math.log10(Math.max(...vals) * 2);
    const y = (v) => (H - B - ((Math.log10(Math.max(v, 1)) - lo) / (hi - lo || 1)) * (H - B - 8)).toFixed(1);
    const x = (i) => (L + (i + 0.5) * ((W - L - 8) / ms.length)).toFixed(1);
    const svg = el('svg:svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'plot', role: 'img' });
    for (let p = Math.ceil(lo); p <= hi; p++) {
      svg.append(el('svg:line', { x1: L, x2: W - 8, y1: y(10 ** p), y2: y(10 ** p), class: 'grid' }));
      svg.append(el('svg:text', { x: L - 4, y: y(10 ** p), class: 'axis', 'text-anchor': 'end', text: 10 ** p >= 1000 ? `${10 ** p / 1000} s` : `${10 ** p} ms` }));
    }
    ms.forEach((m, i) => {
      const s = segments(m.timings);
      const mode = (m.detail && m.detail.mode) || m.kind;
      if (s.total) svg.append(el('svg:circle', { cx: x(i), cy: y(s.total), r: 4, class: `pt total ${mode}` }, el('svg:title', { text: `#${m.id} ${mode} total ${s.total.toFixed(0)} ms` })));
      if (s.downtime) svg.append(el('svg:rect', { x: x(i) - 4, y: y(s.downtime) - 4, width: 8, height: 8, class: `pt downtime ${mode}` }, el('svg:title', { text: `#${m.id} ${mode} downtime ${s.downtime.toFixed(0)} ms` })));
      svg.append(el('svg:text', { x: x(i), y: H - 6, class: 'axis', 'text-anchor': 'middle', text: `#${m.id}` }));
    });
    box.replaceChildren(svg, el('p', { class: 'legend' }, el('span', { class: 'dot total' }), 'total ', el('span', { class: 'dot downtime' }), 'downtime (log scale)'));
  }

  // The SVG reports of `ferry bench` in the server's bench dir.
  async function loadBench() {
    const r = await fetch('/ui/bench', { credentials: 'same-origin' });
    if (!r.ok) return;
    const { plots } = await r.json();
    if (!plots.length) return;
    $('#bench-reports').replaceChildren(...plots.map((p) => el('figure', { class: 'bench', 'data-plot': p },
      el('img', { src: `/ui/bench/${encodeURIComponent(p)}`, alt: `benchmark ${p}` }), el('figcaption', { text: p }))));
  }

  async function sampleMemory() {
    const running = state.runtimes.filter((r) => r.state === 'running');
    await Promise.all(running.map(async (r) => {
      try {
        const rt = await api('GET', `/runtimes/${encodeURIComponent(r.name)}`);
        if (!rt.stats || !rt.stats.memory_limit_bytes) return;
        const s = { at: Date.now(), used: rt.stats.memory_bytes, limit: rt.stats.memory_limit_bytes };
        s.share = s.used / s.limit;
        const series = state.mem.get(r.name) || [];
        series.push(s);
        if (series.length > SAMPLES) series.shift();
        state.mem.set(r.name, series);
        const row = document.querySelector(`#runtimes tr[data-runtime="${CSS.escape(r.name)}"]`);
        if (row) row.querySelector('td.mem').replaceWith(memCell(r));
      } catch (e) { /* the next sample will tell */ }
    }));
  }

  // --- events ---------------------------------------------------------------------------------
  function addEvent(ev) {
    state.events.unshift(ev);
    if (state.events.length > 200) state.events.pop();
    const li = el('li', { 'data-kind': ev.kind },
      el('time', { class: 'muted', text: (ev.at || '').replace('T', ' ').slice(0, 19) }), ' ',
      el('span', { class: 'kind', text: ev.kind }), ' ',
      ev.runtime ? el('strong', { text: ev.runtime }) : null, ' ',
      el('span', { text: ev.reason }));
    const list = $('#events');
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  }

  function connectEvents() {
    if (state.source) state.source.close();
    const src = new EventSource('/api/v1/events/stream?plain=true');
    state.source = src;
    src.onopen = () => setConn('live', 'ok');
    src.onerror = () => setConn('reconnecting…', 'busy');
    src.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev.kind === 'operation.phase') {
        phaseOf(ev.runtime, ev.reason);
      } else {
        addEvent(ev);
      }
      reloadSoon();
    };
  }

  // --- actions with confirmation and progress ---------------------------------------------------
  // One confirmation at a time: a new question replaces an unanswered one (answered "no").
  let answer = null;
  $('#confirm').addEventListener('close', () => {
    const dlg = $('#confirm');
    const r = answer;
    answer = null;
    if (r) r(dlg.returnValue === 'ok' ? new FormData(dlg.querySelector('form')) : null);
  });

  function ask(title, fields, okLabel) {
    const dlg = $('#confirm');
    if (answer) {
      answer(null);
      answer = null;
    }
    $('#confirm-title').textContent = title;
    $('#confirm-body').replaceChildren(...fields);
    $('#confirm-ok').textContent = okLabel;
    dlg.returnValue = '';
    if (!dlg.open) dlg.showModal();
    return new Promise((resolve) => { answer = resolve; });
  }

  function hostSelect(rt) {
    const others = state.hosts.filter((h) => h.name !== rt.host);
    return el('label', {}, 'to host ', el('select', { name: 'to', required: true },
      others.map((h) => el('option', { value: h.name, disabled: !h.healthy || (h.state && h.state !== 'ready'), text: `${h.name} (${h.capacity_mb - h.used_mb} MB free${h.healthy ? '' : ', unreachable'}${h.state && h.state !== 'ready' ? `, ${h.state}` : ''})` }))));
  }

  async function act(action, rt) {
    const n = encodeURIComponent(rt.name);
    let req;
    if (action === 'migrate') {
      const f = await ask(`Migrate ${rt.name} from ${rt.host}`, [hostSelect(rt), el('label', {}, 'mode ', el('select', { name: 'mode' },
        el('option', { value: 'stop-copy', text: 'stop-copy (consistent; frozen while it moves)' }), el('option', { value: 'lazy', text: 'lazy (post-copy; resumes before memory arrives)' })))], 'Migrate');
      if (!f) return;
      req = { title: `migrate ${rt.name}: ${rt.host} → ${f.get('to')} (${f.get('mode')})`, call: () => api('POST', `/runtimes/${n}/migrate`, { to: f.get('to'), mode: f.get('mode') }) };
    } else if (action === 'fork') {
      const f = await ask(`Fork ${rt.name} (it keeps running)`, [hostSelect(rt), el('label', {}, 'new name ', el('input', { name: 'name', value: `${rt.name}-fork`, required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._-]{0,39}' }))], 'Fork');
      if (!f) return;
      req = { title: `fork ${rt.name} → ${f.get('name')} on ${f.get('to')}`, call: () => api('POST', `/runtimes/${n}/migrate`, { to: f.get('to'), mode: 'fork', name: f.get('name') }) };
    } else if (action === 'hibernate') {
      if (!await ask(`Hibernate ${rt.name}?`, [el('p', { text: 'It is snapshotted and stopped; its memory is freed. The next request through the proxy wakes it.' })], 'Hibernate')) return;
      req = { title: `hibernate ${rt.name}`, call: () => api('POST', `/runtimes/${n}/hibernate`) };
    } else if (action === 'wake') {
      if (!await ask(`Wake ${rt.name}?`, [el('p', { text: 'It is restored from its hibernation snapshot.' })], 'Wake')) return;
      req = { title: `wake ${rt.name}`, call: () => api('POST', `/runtimes/${n}/wake`) };
    } else if (action === 'checkpoint') {
      const f = await ask(`Checkpoint ${rt.name}?`, [el('label', {}, el('input', { type: 'checkbox', name: 'leave_running', checked: true }), ' keep it running after the snapshot')], 'Checkpoint');
      if (!f) return;
      const leave = f.get('leave_running') === 'on';
      req = { title: `checkpoint ${rt.name}${leave ? '' : ' and stop it'}`, call: () => api('POST', `/runtimes/${n}/checkpoint`, { leave_running: leave }) };
    } else if (action === 'delete') {
      const running = rt.state === 'running';
      const f = await ask(`Delete ${rt.name}?`, [el('p', { text: `This removes the runtime and its session${running ? ' (it is running: its state is lost)' : ''}. Snapshots stay.` }),
        el('label', {}, 'type its name to confirm ', el('input', { name: 'confirm', required: true, pattern: rt.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), autocomplete: 'off' }))], 'Delete');
      if (!f) return;
      req = { title: `delete ${rt.name}`, call: () => api('DELETE', `/runtimes/${n}${running ? '?force=true' : ''}`) };
    } else {
      return;
    }
    run(rt.name, action, req);
  }

  function run(name, action, req) {
    const item = { name, action, title: req.title, phases: [], status: 'running', started: Date.now() };
    state.progress.unshift(item);
    const phases = el('ol', { class: 'phases' });
    const status = el('span', { class: 'status pill busy', text: 'running' });
    const elapsed = el('span', { class: 'muted elapsed' });
    item.li = el('li', { 'data-runtime': name, 'data-action': action, 'data-status': 'running' }, el('strong', { text: req.title }), ' ', status, ' ', elapsed, phases);
    item.phaseList = phases;
    $('#progress').prepend(item.li);
    const tick = setInterval(() => { elapsed.textContent = `${((Date.now() - item.started) / 1000).toFixed(1)} s`; }, 100);
    state.busy.add(name);
    renderRuntimes();
    req.call().then((res) => {
      item.status = 'ok';
      item.result = res;
      status.textContent = 'done';
      status.className = 'status pill ok';
      const t = res && res.timings;
      if (t && t.downtime_ms !== undefined) phases.append(el('li', { class: 'summary', text: `frozen ${Number(t.downtime_ms).toFixed(0)} ms of ${Number(t.total_ms).toFixed(0)} ms` }));
    }, (e) => {
      item.status = 'failed';
      item.error = e.message;
      status.textContent = 'failed';
      status.className = 'status pill bad';
      phases.append(el('li', { class: 'error', text: e.message }));
    }).finally(() => {
      item.ended = Date.now();
      clearInterval(tick);
      elapsed.textContent = `${((Date.now() - item.started) / 1000).toFixed(1)} s`;
      item.li.setAttribute('data-status', item.status);
      state.busy.delete(name);
      reloadSoon();
    });
  }

  function phaseOf(runtime, text) {
    // The answer to the request may arrive just before the stream's last phases.
    const item = state.progress.find((p) => p.name === runtime && (p.status === 'running' || Date.now() - p.ended < 3000));
    if (!item || item.phases[item.phases.length - 1] === text) return;
    item.phases.push(text);
    item.phaseList.append(el('li', { text }));
  }

  // --- start ----------------------------------------------------------------------------------
  async function start() {
    try {
      await loadAll();
    } catch (e) {
      if (e.message !== 'signed out') setConn(e.message, 'bad');
      return;
    }
    $('#login').hidden = true;
    $('#app').hidden = false;
    $('#logout').hidden = false;
    api('GET', '/events?limit=30').then((evs) => evs.slice().reverse().forEach(addEvent)).catch(() => {});
    connectEvents();
    sampleMemory();
    loadBench().catch(() => {});
    if (!state.timers) state.timers = [setInterval(() => loadAll().catch(() => {}), 5000), setInterval(sampleMemory, 2000)];
  }

  start();
})();

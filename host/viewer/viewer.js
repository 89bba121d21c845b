// The polytrace viewer: search, trace waterfall, service map and service
// summary over the Jaeger-compatible API this same listener serves.
'use strict';

const $main = document.getElementById('main');
const PALETTE = ['#4c6ef5', '#12b886', '#f59f00', '#7048e8', '#e64980', '#15aabf', '#82c91e', '#fd7e14', '#a0522d'];

// A service's colour depends on its name and on the set of services the store
// knows (/api/services), never on which page or trace was drawn first, so the
// map, the waterfall and the tables agree on every view and every page load.
// In name order, each service takes the slot its name hashes to, or the next
// free one: distinct colours while the palette lasts (a bare hash would give
// two of four services one colour about half the time), and a new service
// recolours only those whose slots it takes, directly or down a probe chain
// (an index into the sorted list would recolour every service after it).
// Past PALETTE.length services the slots are freed and colours repeat.
function assignColours(services) {
  const assigned = new Map();
  let taken = new Set();
  for (const service of [...new Set(services)].sort()) {
    if (taken.size === PALETTE.length) taken = new Set();
    let slot = nameHash(service) % PALETTE.length;
    while (taken.has(slot)) slot = (slot + 1) % PALETTE.length;
    taken.add(slot);
    assigned.set(service, PALETTE[slot]);
  }
  return assigned;
}

// 32-bit FNV-1a over the name's UTF-16 code units.
function nameHash(name) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

// How long a view waits for /api/services before it draws without it.
const SERVICES_WAIT_MS = 1000;

let colours = new Map();
let asking = null;
// The store's services, with their colours assigned from them: one request at
// a time, shared by every view that asks while it is out.
function storeServices() {
  asking ??= api('/api/services')
    .then((services) => {
      colours = assignColours(services);
      return services;
    })
    .finally(() => {
      asking = null;
    });
  return asking;
}

// The colours a view draws `names` with, fixed before it draws so all its
// parts agree (a waterfall redrawn on collapse keeps its legend's colours).
// Asks the store again only when a name is new. A colour lookup never fails
// or holds up a view: if the store's answer fails or takes longer than
// SERVICES_WAIT_MS, a name it has not listed gets its hash slot, the colour
// it has when the store does not list it; a late answer colours later views.
async function serviceColours(names) {
  if ([...names].some((n) => !colours.has(n))) {
    const answered = storeServices().catch((e) => {
      console.warn(`polytrace: /api/services failed (${e.message}); services it does not list are coloured by name alone`);
    });
    await Promise.race([answered, new Promise((resolve) => setTimeout(resolve, SERVICES_WAIT_MS))]);
  }
  const fixed = colours;
  return (service) => fixed.get(service) ?? PALETTE[nameHash(service) % PALETTE.length];
}

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const ms = (us) => (us >= 1e6 ? `${(us / 1e6).toFixed(2)} s` : us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us} µs`);

async function api(path) {
  const r = await fetch(path);
  const body = await r.json();
  if (!r.ok) throw new Error(body?.errors?.[0]?.msg ?? `${r.status}`);
  return body.data;
}

function go(path) {
  history.pushState(null, '', path);
  route();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (a && !e.metaKey && !e.ctrlKey) {
    e.preventDefault();
    go(a.getAttribute('href'));
  }
});
window.addEventListener('popstate', route);

let refreshTimer = null;
function route() {
  clearInterval(refreshTimer);
  const path = location.pathname;
  const page = path.startsWith('/trace/') ? 'trace' : path.startsWith('/map') ? 'map' : path.startsWith('/summary') ? 'summary' : 'search';
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === page));
  const run = { search: searchPage, trace: () => tracePage(decodeURIComponent(path.slice(7))), map: mapPage, summary: summaryPage }[page];
  run().catch((e) => { $main.innerHTML = `<div class="panel err">${esc(e.message)}</div>`; });
}

// ---- search -------------------------------------------------------------

const LOOKBACKS = [['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days']];

async function searchPage() {
  const q = new URLSearchParams(location.search);
  const services = await storeServices();
  $main.innerHTML = `
    <h2>Search traces</h2>
    <form class="panel search" id="search">
      <label>Service<select name="service"><option value="">all services</option>${services.map((s) => `<option value="${esc(s)}" ${q.get('service') === s ? 'selected' : ''}>${esc(s)}</option>`).join('')}</select></label>
      <label>Operation<select name="operation"><option value="">all operations</option></select></label>
      <label>Status<select name="status"><option value="">any</option><option value="error">error</option><option value="ok">ok</option></select></label>
      <label>Attribute (key=value)<input name="tags" placeholder="user.id=user-1" value="${esc(q.get('tags') ?? '')}"></label>
      <label>Min duration<input name="minDuration" placeholder="e.g. 10ms" value="${esc(q.get('minDuration') ?? '')}"></label>
      <label>Max duration<input name="maxDuration" placeholder="e.g. 2s" value="${esc(q.get('maxDuration') ?? '')}"></label>
      <label>Time range<select name="lookback">${LOOKBACKS.map(([v, t]) => `<option value="${v}" ${(q.get('lookback') ?? '1h') === v ? 'selected' : ''}>${t}</option>`).join('')}</select></label>
      <label>Limit<input name="limit" type="number" min="1" max="1500" value="${esc(q.get('limit') ?? '20')}"></label>
      <label><span><input type="checkbox" name="live" ${q.get('live') ? 'checked' : ''}> live refresh</span><button type="submit">Find traces</button></label>
    </form>
    <div id="results" class="results"></div>`;
  const form = document.getElementById('search');
  form.status.value = q.get('status') ?? '';
  const loadOperations = async () => {
    const svc = form.service.value;
    const ops = svc ? await api(`/api/services/${encodeURIComponent(svc)}/operations`) : [];
    form.operation.innerHTML = `<option value="">all operations</option>${ops.map((o) => `<option value="${esc(o)}" ${q.get('operation') === o ? 'selected' : ''}>${esc(o)}</option>`).join('')}`;
  };
  form.service.addEventListener('change', loadOperations);
  await loadOperations();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    go(`/search?${params}`);
  });
  await showResults(q);
  if (q.get('live')) refreshTimer = setInterval(() => showResults(q), 5000);
}

function tagsParam(text) {
  const obj = {};
  for (const pair of text.trim().split(/\s+/).filter(Boolean)) {
    const i = pair.indexOf('=');
    if (i > 0) obj[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return Object.keys(obj).length ? JSON.stringify(obj) : '';
}

async function showResults(q) {
  const params = new URLSearchParams();
  for (const k of ['service', 'operation', 'status', 'minDuration', 'maxDuration', 'lookback', 'limit']) if (q.get(k)) params.set(k, q.get(k));
  if (!params.get('lookback')) params.set('lookback', '1h');
  let tags = tagsParam(q.get('tags') ?? '');
  // "billing, errors" means billing's own spans failed (Jaeger's error tag);
  // without a service, any failing span marks the trace.
  if (q.get('status') === 'error' && q.get('service')) {
    params.delete('status');
    tags = JSON.stringify({ ...(tags ? JSON.parse(tags) : {}), error: 'true' });
  }
  if (tags) params.set('tags', tags);
  const $results = document.getElementById('results');
  try {
    const traces = await api(`/api/traces?${params}`);
    const colourOf = await serviceColours(traces.flatMap((t) => Object.values(t.processes).map((p) => p.serviceName)));
    $results.innerHTML = traces.length ? traces.map((t) => resultCard(t, colourOf)).join('') : '<div class="panel empty">No traces match. Send a request to the app, or widen the search.</div>';
  } catch (e) {
    $results.innerHTML = `<div class="panel err">${esc(e.message)}</div>`;
  }
}

function summarize(trace) {
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const root = trace.spans.find((s) => !s.references.some((r) => ids.has(r.spanID))) ?? trace.spans[0];
  const start = Math.min(...trace.spans.map((s) => s.startTime));
  const end = Math.max(...trace.spans.map((s) => s.startTime + s.duration));
  const perService = new Map();
  for (const s of trace.spans) {
    const svc = trace.processes[s.processID].serviceName;
    perService.set(svc, (perService.get(svc) ?? 0) + 1);
  }
  const errors = trace.spans.filter(isError).length;
  return { root, start, duration: end - start, perService, errors };
}

const isError = (s) => s.tags.some((t) => t.key === 'error' && t.value === true);
const tagValue = (s, key) => s.tags.find((t) => t.key === key)?.value;

function resultCard(trace, colourOf) {
  const { root, start, duration, perService, errors } = summarize(trace);
  const svc = trace.processes[root.processID].serviceName;
  return `<a class="result ${errors ? 'error' : ''}" href="/trace/${trace.traceID}" data-nav data-trace="${trace.traceID}">
    <div class="title">${esc(svc)}: ${esc(root.operationName)} ${errors ? `<span class="err">⚠ ${errors} error${errors > 1 ? 's' : ''}</span>` : ''}</div>
    <div class="meta">${ms(duration)} · ${trace.spans.length} spans</div>
    <div class="chips">${[...perService].map(([s, n]) => `<span class="chip"><span class="dot" style="background:${colourOf(s)}"></span>${esc(s)} ${n}</span>`).join('')}</div>
    <div class="meta">${new Date(start / 1000).toLocaleString()} · ${trace.traceID.slice(0, 12)}…</div>
  </a>`;
}

// ---- trace --------------------------------------------------------------

// A CLIENT span's name is its method alone: show where the call went.
function label(s) {
  const url = tagValue(s, 'url.full');
  return tagValue(s, 'span.kind') === 'client' && url ? `${s.operationName} ${url}` : s.operationName;
}

// The duration beside its bar: after it, before it, or inside a full bar.
function durationLabel(left, width, us) {
  if (left + width < 82) return `<span class="dur" style="left:${left + width + 0.6}%">${ms(us)}</span>`;
  if (left > 18) return `<span class="dur" style="right:${100 - left + 0.6}%">${ms(us)}</span>`;
  return `<span class="dur inside" style="right:${Math.max(0.8, 100 - left - width + 0.8)}%">${ms(us)}</span>`;
}

async function tracePage(traceId) {
  const [trace] = await api(`/api/traces/${encodeURIComponent(traceId)}`);
  const { root, start, duration } = summarize(trace);
  const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
  const children = new Map();
  const roots = [];
  for (const s of trace.spans) {
    const parent = s.references.find((r) => r.refType === 'CHILD_OF' && byId.has(r.spanID));
    if (parent) (children.get(parent.spanID) ?? children.set(parent.spanID, []).get(parent.spanID)).push(s);
    else roots.push(s);
  }
  for (const list of children.values()) list.sort((a, b) => a.startTime - b.startTime);
  // The error path: every ancestor of a span in error.
  const onErrorPath = new Set();
  for (const s of trace.spans.filter(isError)) {
    let cur = s;
    while (cur) {
      onErrorPath.add(cur.spanID);
      const ref = cur.references.find((r) => byId.has(r.spanID));
      cur = ref ? byId.get(ref.spanID) : null;
    }
  }
  const processLanguage = (p) => p.tags.find((t) => t.key === 'polytrace.guest.language')?.value;
  const language = (s) => processLanguage(trace.processes[s.processID]);
  const services = [...new Set(trace.spans.map((s) => trace.processes[s.processID].serviceName))];
  const languageOf = new Map(Object.values(trace.processes).map((p) => [p.serviceName, processLanguage(p)]));
  const colourOf = await serviceColours(services);
  $main.innerHTML = `
    <div class="panel">
      <div class="trace-head">
        <h2 style="margin:0">${esc(trace.processes[root.processID].serviceName)}: ${esc(root.operationName)}</h2>
        <span>${ms(duration)} · ${trace.spans.length} spans · ${services.length} services</span>
        <span>trace <code id="trace-id">${trace.traceID}</code> <button class="plain" id="copy-id" type="button">copy id</button>
        <button class="plain" id="copy-tp" type="button">copy traceparent</button></span>
      </div>
      <div class="legend">${services.map((s) => {
        const lang = languageOf.get(s);
        return `<span class="chip service-chip" data-service="${esc(s)}"><span class="dot" style="background:${colourOf(s)}"></span>${esc(s)} <span class="muted">${esc(lang ?? '')}</span></span>`;
      }).join('')}</div>
    </div>
    <div class="trace-body">
      <div class="waterfall" id="waterfall"></div>
      <div class="panel detail" id="detail"><span class="muted">Click a span for its attributes, events and resource.</span></div>
    </div>`;
  const copy = (text) => navigator.clipboard?.writeText(text);
  document.getElementById('copy-id').onclick = () => copy(trace.traceID);
  document.getElementById('copy-tp').onclick = () => copy(`00-${trace.traceID}-${root.spanID}-01`);

  const collapsed = new Set();
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const render = () => {
    const rows = [];
    const walk = (s, depth) => {
      rows.push([s, depth]);
      if (!collapsed.has(s.spanID)) for (const c of children.get(s.spanID) ?? []) walk(c, depth + 1);
    };
    roots.sort((a, b) => a.startTime - b.startTime).forEach((r) => walk(r, 0));
    const scale = (us) => (duration ? ((us - start) / duration) * 100 : 0);
    const tick = (t) => (t === 0 ? 'left:4px;transform:none' : t === 1 ? 'right:6px;transform:none' : `left:${t * 100}%`);
    const html = [`<div class="axis"><div style="padding:4px 8px">Service: operation</div><div class="ticks">${ticks.map((t) => `<span style="${tick(t)}">${ms(Math.round(duration * t))}</span>`).join('')}</div></div>`];
    for (const [s, depth] of rows) {
      const svc = trace.processes[s.processID].serviceName;
      const kids = children.get(s.spanID)?.length ?? 0;
      const left = scale(s.startTime);
      const width = Math.max(0.2, scale(s.startTime + s.duration) - left);
      const err = isError(s);
      html.push(`<div class="row ${onErrorPath.has(s.spanID) ? 'error-path' : ''} ${err ? 'is-error' : ''}" data-span="${s.spanID}" data-service="${esc(svc)}">
        <div class="name" style="padding-left:${8 + depth * 14}px"><span class="toggle" data-toggle="${s.spanID}">${kids ? (collapsed.has(s.spanID) ? '▸' : '▾') : ''}</span>
          <span class="dot" style="background:${colourOf(svc)}"></span><span class="svc">${esc(svc)}</span><span class="op" title="${esc(label(s))}">${esc(label(s))}</span>${err ? '<span class="err" title="error">⚠</span>' : ''}</div>
        <div class="lane"><div class="bar ${err ? 'error' : ''}" style="left:${left}%;width:${width}%;background:${colourOf(svc)}"></div>
          ${durationLabel(left, width, s.duration)}</div></div>`);
    }
    document.getElementById('waterfall').innerHTML = html.join('');
  };
  render();
  document.getElementById('waterfall').addEventListener('click', (e) => {
    const toggle = e.target.closest('[data-toggle]');
    if (toggle && toggle.textContent) {
      const id = toggle.dataset.toggle;
      collapsed.has(id) ? collapsed.delete(id) : collapsed.add(id);
      render();
      return;
    }
    const row = e.target.closest('.row');
    if (!row) return;
    document.querySelectorAll('.row.selected').forEach((r) => r.classList.remove('selected'));
    row.classList.add('selected');
    showSpan(trace, byId.get(row.dataset.span), language, colourOf);
  });
  // Open the first failing span, the place to look first.
  const firstError = trace.spans.filter(isError).sort((a, b) => b.startTime - a.startTime).find((s) => !(children.get(s.spanID) ?? []).some(isError));
  if (firstError) {
    document.querySelector(`.row[data-span="${firstError.spanID}"]`)?.classList.add('selected');
    showSpan(trace, firstError, language, colourOf);
  }
}

function tagRows(tags) {
  return tags.map((t) => `<tr><td>${esc(t.key)}</td><td>${esc(typeof t.value === 'object' ? JSON.stringify(t.value) : t.value)}</td></tr>`).join('');
}

function showSpan(trace, s, language, colourOf) {
  const process = trace.processes[s.processID];
  const hidden = new Set(['error', 'otel.status_code', 'otel.status_description', 'span.kind']);
  const exceptions = s.logs.filter((l) => l.fields.some((f) => f.key === 'event' && f.value === 'exception'));
  const field = (l, k) => l.fields.find((f) => f.key === k)?.value;
  // Guest log records arrive as span logs with event "log" (level, message).
  const records = s.logs.filter((l) => field(l, 'event') === 'log');
  const others = s.logs.filter((l) => !exceptions.includes(l) && !records.includes(l));
  const logExtras = new Set(['event', 'level', 'message']);
  document.getElementById('detail').innerHTML = `
    <h3><span class="dot" style="background:${colourOf(process.serviceName)}"></span> ${esc(process.serviceName)}: ${esc(s.operationName)}</h3>
    <div class="muted">${esc(tagValue(s, 'span.kind') ?? '')} · ${ms(s.duration)} · ${esc(language(s) ?? '')}</div>
    ${isError(s) ? `<div class="err" id="span-status">status ERROR${tagValue(s, 'otel.status_description') ? `: ${esc(tagValue(s, 'otel.status_description'))}` : ''}</div>` : ''}
    ${exceptions.map((l) => `<div class="exception"><strong>${esc(field(l, 'exception.type'))}</strong>: ${esc(field(l, 'exception.message'))}
      ${field(l, 'exception.stacktrace') ? `<pre>${esc(field(l, 'exception.stacktrace'))}</pre>` : ''}</div>`).join('')}
    <h4>Attributes</h4><table>${tagRows(s.tags.filter((t) => !hidden.has(t.key)))}</table>
    ${records.length ? `<h4>Logs</h4><div id="span-logs">${records.map((l) => `<div class="logline level-${esc(String(field(l, 'level')).replace(/[0-9]/g, ''))}"><span class="muted">+${ms(l.timestamp - s.startTime)}</span> <strong>${esc(field(l, 'level'))}</strong> <span class="msg">${esc(field(l, 'message'))}</span>${l.fields.some((f) => !logExtras.has(f.key)) ? `<table>${tagRows(l.fields.filter((f) => !logExtras.has(f.key)))}</table>` : ''}</div>`).join('')}</div>` : ''}
    ${others.length ? `<h4>Events</h4>${others.map((l) => `<div><strong>${esc(field(l, 'event'))}</strong> <span class="muted">+${ms(l.timestamp - s.startTime)}</span><table>${tagRows(l.fields.filter((f) => f.key !== 'event'))}</table></div>`).join('')}` : ''}
    <h4>Resource</h4><table><tr><td>service.name</td><td>${esc(process.serviceName)}</td></tr>${tagRows(process.tags)}</table>
    <h4>Ids</h4><table><tr><td>span</td><td>${s.spanID}</td></tr><tr><td>parent</td><td>${esc(s.references[0]?.spanID ?? '(root)')}</td></tr></table>`;
}

// ---- service map --------------------------------------------------------

async function mapPage() {
  const q = new URLSearchParams(location.search);
  const lookback = q.get('lookback') ?? '1h';
  const map = await api(`/api/polytrace/service-map?lookback=${encodeURIComponent(lookback)}`);
  const colourOf = await serviceColours(map.nodes.map((n) => n.service));
  $main.innerHTML = `<h2>Service map</h2>
    <form class="panel search" id="window"><label>Time range<select name="lookback">${LOOKBACKS.map(([v, t]) => `<option value="${v}" ${lookback === v ? 'selected' : ''}>${t}</option>`).join('')}</select></label></form>
    <div id="map"></div>`;
  document.getElementById('window').lookback.onchange = (e) => go(`/map?lookback=${e.target.value}`);
  if (!map.nodes.length) {
    document.getElementById('map').innerHTML = '<div class="panel empty">No calls in this window.</div>';
    return;
  }
  // Columns by the longest call path from an entry service (cycles cut).
  const depth = new Map(map.nodes.map((n) => [n.service, 0]));
  for (let round = 0; round < map.nodes.length; round++) {
    for (const e of map.edges) {
      if (e.from !== e.to && depth.get(e.to) < depth.get(e.from) + 1) depth.set(e.to, depth.get(e.from) + 1);
    }
  }
  const columns = [];
  for (const n of map.nodes) (columns[Math.min(depth.get(n.service), map.nodes.length)] ??= []).push(n);
  const cols = columns.filter(Boolean);
  const W = 360, H = 130, NW = 170, NH = 48;
  const pos = new Map();
  const tallest = Math.max(...cols.map((c) => c.length));
  cols.forEach((col, c) => col.forEach((n, r) => pos.set(n.service, { x: 30 + c * W, y: 40 + (r + (tallest - col.length) / 2) * H })));
  const width = 60 + (cols.length - 1) * W + NW, height = 80 + tallest * H;
  const edges = map.edges.map((e) => {
    const a = pos.get(e.from), b = pos.get(e.to);
    const forward = b.x > a.x;
    const x1 = forward ? a.x + NW : a.x + NW / 2, y1 = forward ? a.y + NH / 2 : a.y + NH;
    const x2 = forward ? b.x : b.x + NW / 2, y2 = forward ? b.y + NH / 2 : b.y;
    const path = forward ? `M${x1},${y1} C${x1 + 90},${y1} ${x2 - 90},${y2} ${x2},${y2}` : `M${x1},${y1} L${x2},${y2}`;
    const lx = forward ? (x1 + x2) / 2 : x1 + 14, ly = (y1 + y2) / 2 - 6;
    const anchor = forward ? 'middle' : 'start';
    const bad = e.errors > 0;
    return `<g class="edge" data-from="${esc(e.from)}" data-to="${esc(e.to)}"><path d="${path}" fill="none" stroke="${bad ? '#d92d20' : '#98a2b3'}" stroke-width="${1.5 + Math.min(4, Math.log10(e.requests + 1))}" marker-end="url(#arrow)"/>
      <text class="edge-label ${bad ? 'bad' : ''}" x="${lx}" y="${ly}" text-anchor="${anchor}">${e.requests} req · ${e.error_percent.toFixed(1)}% err</text>
      <text class="edge-label" x="${lx}" y="${ly + 14}" text-anchor="${anchor}">p50 ${ms(e.latency_us.p50)} · p95 ${ms(e.latency_us.p95)}</text></g>`;
  }).join('');
  const nodes = map.nodes.map((n) => {
    const p = pos.get(n.service);
    return `<g class="node" data-service="${esc(n.service)}"><rect x="${p.x}" y="${p.y}" width="${NW}" height="${NH}" rx="8" fill="#fff" stroke="${colourOf(n.service)}" stroke-width="2"/>
      <text x="${p.x + NW / 2}" y="${p.y + 20}" text-anchor="middle" font-weight="600">${esc(n.service)}</text>
      <text x="${p.x + NW / 2}" y="${p.y + 37}" text-anchor="middle" fill="#667085">${esc(n.language)}</text></g>`;
  }).join('');
  document.getElementById('map').innerHTML = `<svg class="map" viewBox="0 0 ${width} ${height}" style="max-height:${height}px">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#667085"/></marker></defs>${edges}${nodes}</svg>`;
}

// ---- service summary ----------------------------------------------------

async function summaryPage() {
  const q = new URLSearchParams(location.search);
  const lookback = q.get('lookback') ?? '1h';
  const rows = await api(`/api/polytrace/summary?lookback=${encodeURIComponent(lookback)}`);
  const colourOf = await serviceColours(rows.map((r) => r.service));
  $main.innerHTML = `<h2>Services and operations</h2>
    <form class="panel search" id="window"><label>Time range<select name="lookback">${LOOKBACKS.map(([v, t]) => `<option value="${v}" ${lookback === v ? 'selected' : ''}>${t}</option>`).join('')}</select></label></form>
    ${rows.length ? `<table class="grid" id="summary"><thead><tr><th>Service</th><th>Operation</th><th>Kind</th><th class="num">Spans</th><th class="num">Rate /s</th><th class="num">Error %</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th></tr></thead><tbody>
    ${rows.map((r) => `<tr><td><span class="dot" style="background:${colourOf(r.service)}"></span> ${esc(r.service)}</td><td>${esc(r.operation)}</td><td class="muted">${esc(r.kind)}</td>
      <td class="num">${r.count}</td><td class="num">${r.rate_per_second.toFixed(3)}</td><td class="num ${r.error_percent > 0 ? 'err' : ''}">${r.error_percent.toFixed(1)}</td>
      <td class="num">${ms(r.latency_us.p50)}</td><td class="num">${ms(r.latency_us.p95)}</td><td class="num">${ms(r.latency_us.p99)}</td></tr>`).join('')}</tbody></table>` : '<div class="panel empty">No spans in this window.</div>'}`;
  document.getElementById('window').lookback.onchange = (e) => go(`/summary?lookback=${e.target.value}`);
}

// The store's services are asked for while the first view fetches its own data.
storeServices().catch(() => {});
route();

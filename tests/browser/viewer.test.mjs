// The viewer in a real browser (Debian's chromium driven by playwright-core),
// against a polytrace serving examples/checkout whose traces include a
// checkout that failed in billing. Run by tests/tests/viewer.rs:
//
//   node viewer.test.mjs UI_URL SCREENSHOT_DIR
//
// Exits non-zero with the failed expectation; screenshots of every page go
// to SCREENSHOT_DIR.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [ui, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

// Every colour the current view draws for a service, as [view, service,
// colour]: computed styles, so two spellings of one colour compare equal.
function drawnColours(page) {
  return page.evaluate(() => {
    const drawn = [];
    const add = (view, service, el, property = 'backgroundColor') => {
      if (el) drawn.push([view, service.trim(), getComputedStyle(el)[property]]);
    };
    for (const chip of document.querySelectorAll('.result .chip')) {
      add('search chip', chip.textContent.replace(/\s+\d+\s*$/, ''), chip.querySelector('.dot'));
    }
    for (const chip of document.querySelectorAll('.legend .service-chip')) {
      add('legend', chip.dataset.service, chip.querySelector('.dot'));
    }
    for (const row of document.querySelectorAll('#waterfall .row')) {
      add('waterfall dot', row.dataset.service, row.querySelector('.name .dot'));
      add('waterfall bar', row.dataset.service, row.querySelector('.bar'));
    }
    const head = document.querySelector('#detail h3');
    if (head) add('span detail', head.textContent.split(':')[0], head.querySelector('.dot'));
    for (const node of document.querySelectorAll('svg.map g.node')) {
      add('map node', node.dataset.service, node.querySelector('rect'), 'stroke');
    }
    for (const row of document.querySelectorAll('#summary tbody tr')) {
      add('services table', row.cells[0].textContent, row.cells[0].querySelector('.dot'));
    }
    return drawn;
  });
}

// The trace view's colours, with the span detail opened on one span of each
// service in turn.
async function spanColours(page) {
  const drawn = [];
  const services = await page.$$eval('.legend .service-chip', (chips) => chips.map((c) => c.dataset.service));
  for (const service of services) {
    await page.click(`#waterfall .row[data-service="${service}"] .op`);
    drawn.push(...(await drawnColours(page)));
  }
  return drawn;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  // Search for the checkout that failed in billing.
  await page.goto(`${ui}/search`);
  await page.waitForSelector('form#search select[name=service] option[value=billing]', { state: 'attached' });
  await page.selectOption('form#search select[name=service]', 'billing');
  await page.selectOption('form#search select[name=status]', 'error');
  await page.click('form#search button[type=submit]');
  await page.waitForSelector('.result');
  await page.screenshot({ path: join(shots, '1-search.png'), fullPage: true });
  const results = await page.$$eval('.result', (cards) => cards.map((c) => c.textContent));
  expect(results.length === 1, `one failed-in-billing checkout, got ${results.length}: ${results}`);
  expect(/api-gateway: POST \/checkout/.test(results[0]), `root of the result: ${results[0]}`);
  expect(/⚠ \d+ errors/.test(results[0]), `error marker on the result: ${results[0]}`);
  for (const service of ['api-gateway', 'fraud-service', 'session-service', 'billing']) {
    expect(results[0].includes(service), `${service} among the result's services`);
  }

  // Open it: the waterfall.
  const traceId = await page.getAttribute('.result', 'data-trace');
  await page.click('.result');
  await page.waitForSelector('#waterfall .row');
  const legend = await page.$$eval('.legend .service-chip', (chips) =>
    chips.map((c) => c.textContent.replace(/\s+/g, ' ').trim()),
  );
  for (const expected of ['api-gateway python', 'fraud-service go', 'session-service javascript', 'billing python']) {
    expect(legend.includes(expected), `legend has "${expected}": ${JSON.stringify(legend)}`);
  }
  const rows = await page.$$eval('#waterfall .row', (rs) =>
    rs.map((r) => ({
      service: r.dataset.service,
      op: r.querySelector('.op').textContent,
      error: r.classList.contains('is-error'),
      errorPath: r.classList.contains('error-path'),
    })),
  );
  // 15 of the services and their calls, 6 of their data (two session reads,
  // billing's rolled-back transaction of four statements).
  expect(rows.length === 21, `21 spans in the waterfall, got ${rows.length}`);
  const charge = rows.find((r) => r.service === 'billing' && r.op === 'charge_card');
  expect(charge?.error, 'billing charge_card is marked as error');
  expect(!rows.find((r) => r.service === 'fraud-service').error, 'fraud-service is not an error');
  expect(rows.filter((r) => r.errorPath).length === 5, `5 spans on the error path: ${JSON.stringify(rows)}`);
  // The failing span opens by itself, with its exception.
  const detail = await page.textContent('#detail');
  expect(detail.includes('billing: charge_card'), `detail shows the failing span: ${detail}`);
  expect(detail.includes('PaymentProcessorError'), `exception type in the detail: ${detail}`);
  expect(detail.includes('Traceback'), 'the Python stack trace in the detail');
  // The guest's log record (Python logging) is listed with its span.
  const logs = await page.textContent('#span-logs');
  expect(
    logs?.includes('ERROR') && logs.includes('payment processor did not answer in time'),
    `the span's log record in the detail: ${logs}`,
  );
  await page.screenshot({ path: join(shots, '2-trace.png'), fullPage: true });

  // Collapse the gateway's flow: its subtree disappears.
  const before = await page.$$eval('#waterfall .row', (rs) => rs.length);
  await page.click('#waterfall .row:nth-of-type(2) .toggle');
  const after = await page.$$eval('#waterfall .row', (rs) => rs.length);
  expect(after < before, `collapsing hides spans (${before} → ${after})`);
  await page.click('#waterfall .row:nth-of-type(2) .toggle');
  const expanded = await page.$$eval('#waterfall .row', (rs) => rs.length);
  expect(expanded === before, `expanding shows them again (${expanded})`);

  // Click another span: its attributes.
  await page.click('#waterfall .row[data-service="fraud-service"] .op');
  const fraud = await page.textContent('#detail');
  expect(fraud.includes('fraud-service') && fraud.includes('Attributes'), `span detail on click: ${fraud}`);

  // The service map.
  await page.click('header nav a[data-page=map]');
  await page.waitForSelector('svg.map g.edge');
  const edges = await page.$$eval('svg.map g.edge', (gs) =>
    gs.map((g) => ({ edge: `${g.dataset.from} -> ${g.dataset.to}`, label: g.textContent.replace(/\s+/g, ' ').trim() })),
  );
  const names = edges.map((e) => e.edge).sort();
  expect(
    JSON.stringify(names) ===
      JSON.stringify([
        'api-gateway -> billing',
        'api-gateway -> fraud-service',
        'api-gateway -> session-service',
        'fraud-service -> session-service',
      ]),
    `service map edges: ${JSON.stringify(names)}`,
  );
  const billing = edges.find((e) => e.edge === 'api-gateway -> billing');
  expect(/\d+ req · [1-9][\d.]*% err/.test(billing.label), `billing edge shows its errors: ${billing.label}`);
  const nodes = await page.$$eval('svg.map g.node', (gs) => gs.map((g) => g.textContent.replace(/\s+/g, ' ').trim()));
  expect(nodes.some((n) => n.includes('session-service') && n.includes('javascript')), `nodes: ${nodes}`);
  await page.screenshot({ path: join(shots, '3-map.png'), fullPage: true });

  // The service summary.
  await page.click('header nav a[data-page=summary]');
  await page.waitForSelector('#summary tbody tr');
  const summary = await page.$$eval('#summary tbody tr', (trs) => trs.map((t) => t.textContent.replace(/\s+/g, ' ')));
  expect(summary.some((r) => r.includes('billing') && r.includes('charge_card')), `summary rows: ${summary}`);
  await page.screenshot({ path: join(shots, '4-summary.png'), fullPage: true });

  // One colour per service on every view, whatever was drawn first: a fresh
  // page that opens the service map first and reaches the trace last, and
  // one that opens the trace first and the map after it.
  const drawn = new Map(); // service → "page / view" → colours drawn there
  const visit = {
    map: ['/map', 'svg.map g.node', drawnColours],
    summary: ['/summary', '#summary tbody tr', drawnColours],
    search: ['/search', '.result', drawnColours],
    trace: [`/trace/${traceId}`, '#waterfall .row', spanColours],
  };
  for (const order of [['map', 'summary', 'search', 'trace'], ['trace', 'search', 'map', 'summary']]) {
    const fresh = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    fresh.on('pageerror', (e) => errors.push(String(e)));
    for (const [i, view] of order.entries()) {
      const [path, ready, read] = visit[view];
      if (i === 0) await fresh.goto(`${ui}${path}`);
      else if (view === 'trace') await fresh.click(`.result[data-trace="${traceId}"]`);
      else await fresh.click(`header nav a[data-page=${view}]`);
      await fresh.waitForSelector(ready);
      for (const [where, service, colour] of await read(fresh)) {
        const views = drawn.get(service) ?? drawn.set(service, new Map()).get(service);
        const key = `${order[0]} first / ${where}`;
        views.set(key, [...new Set([...(views.get(key) ?? []), colour])]);
      }
    }
    await fresh.close();
  }
  const services = ['api-gateway', 'billing', 'fraud-service', 'session-service'];
  expect(
    JSON.stringify([...drawn.keys()].sort()) === JSON.stringify(services),
    `colours drawn for ${JSON.stringify([...drawn.keys()])}`,
  );
  const places = ['search chip', 'legend', 'waterfall dot', 'waterfall bar', 'span detail', 'map node', 'services table'];
  const colourOf = new Map();
  for (const [service, views] of drawn) {
    for (const first of ['map first', 'trace first']) {
      for (const place of places) expect(views.has(`${first} / ${place}`), `${service} drawn in the ${place} (${first})`);
    }
    const colours = new Set([...views.values()].flat());
    expect(colours.size === 1, `${service} has one colour everywhere: ${JSON.stringify(Object.fromEntries(views))}`);
    colourOf.set(service, [...colours][0]);
  }
  expect(
    new Set(colourOf.values()).size === services.length,
    `four services, four colours: ${JSON.stringify(Object.fromEntries(colourOf))}`,
  );
  // Names whose hashes collide still get distinct colours while the palette
  // lasts: in name order, the first keeps its hash slot and the others take
  // the next free ones, whatever order the names come in. These three share
  // the palette's last slot under the viewer's own hash (asserted, so a hash
  // that parts them fails here rather than leaving a check that cannot fail),
  // and the probe wraps round to the first.
  const collision = await page.evaluate(() => {
    const names = ['shipping', 'api-gateway', 'inventory'];
    const slot = (n) => nameHash(n) % PALETTE.length;
    const expected = [...names].sort().map((n, i) => [n, PALETTE[(slot(n) + i) % PALETTE.length]]);
    return {
      slots: names.map(slot),
      last: PALETTE.length - 1,
      expected: Object.fromEntries(expected),
      forward: Object.fromEntries(assignColours(names)),
      backward: Object.fromEntries(assignColours([...names].reverse())),
    };
  });
  expect(
    collision.slots.every((s) => s === collision.last),
    `the names share the palette's last slot under the plain hash: ${JSON.stringify(collision)}`,
  );
  expect(
    new Set(Object.values(collision.forward)).size === 3,
    `three colliding names, three colours: ${JSON.stringify(collision)}`,
  );
  for (const order of ['forward', 'backward']) {
    const names = Object.keys(collision.expected);
    expect(
      names.every((n) => collision[order][n] === collision.expected[n]) && Object.keys(collision[order]).length === names.length,
      `hash slot, then the next free slots in name order (${order}): ${JSON.stringify(collision)}`,
    );
  }

  // A failed or hung /api/services costs a view only the store's colour
  // assignment: it still draws, promptly, each service in its hash slot's
  // colour (the one a name has when the store does not list it). The search
  // form lists the store's services, so there the first answer comes through
  // and the one asked for the results' services fails.
  const rgb = (hex) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(', ')})`;
  const listing = (url) => new URL(url).pathname === '/api/services';
  const refuse = (route) =>
    route.fulfill({ status: 500, contentType: 'application/json', body: '{"data":null,"errors":[{"code":500,"msg":"store unavailable"}]}' });
  const answers = {
    failing: () => refuse,
    hanging: () => () => {}, // never answered
    'failing after the search form': () => {
      let asked = 0;
      return (route) => (asked++ === 0 ? route.fulfill({ json: { data: ['billing'] } }) : refuse(route));
    },
  };
  for (const [how, answer] of Object.entries(answers)) {
    const views = how === 'failing after the search form' ? ['search'] : ['map', 'summary', 'trace'];
    for (const view of views) {
      const fresh = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      fresh.on('pageerror', (e) => errors.push(String(e)));
      await fresh.route(listing, answer());
      const [path, ready, read] = visit[view];
      const started = Date.now();
      await fresh.goto(`${ui}${path}`);
      await fresh.waitForSelector(`${ready}, .panel.err`, { timeout: 5000 });
      const took = Date.now() - started;
      const failed = await fresh.$$eval('.panel.err', (panels) => panels.map((p) => p.textContent));
      expect(failed.length === 0, `no error panel on the ${view} with /api/services ${how}: ${failed}`);
      expect(took < 4000, `${view} drawn within 4 s with /api/services ${how}: ${took} ms`);
      const hashSlot = await fresh.evaluate(
        (names) => Object.fromEntries(names.map((n) => [n, PALETTE[nameHash(n) % PALETTE.length]])),
        services,
      );
      const drawnHere = await read(fresh);
      expect(drawnHere.length > 0, `the ${view} coloured its services with /api/services ${how}`);
      for (const [where, service, colour] of drawnHere) {
        expect(
          colour === rgb(hashSlot[service]),
          `${service} in its hash slot's colour ${hashSlot[service]} in the ${where} with /api/services ${how}: ${colour}`,
        );
      }
      await fresh.close();
    }
  }

  expect(errors.length === 0, `no script errors on the pages: ${errors}`);
  console.log('viewer: all expectations met');
} finally {
  await browser.close();
}

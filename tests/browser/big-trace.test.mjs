// A trace of ~5,000 spans in the viewer: the waterfall renders every row,
// and the page still answers clicks. Run by tests/tests/viewer.rs:
//
//   node big-trace.test.mjs UI_URL TRACE_ID SCREENSHOT_DIR
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [ui, traceId, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.goto(`${ui}/trace/${traceId}`);
  await page.waitForSelector('#waterfall .row', { timeout: 60000 });
  const rows = await page.$$eval('#waterfall .row', (rs) => rs.length);
  if (rows < 5000) throw new Error(`expected at least 5000 rows, got ${rows}`);
  // Still responsive: a click selects a row and opens its detail.
  await page.click('#waterfall .row:nth-of-type(3) .op', { timeout: 10000 });
  const detail = await page.textContent('#detail', { timeout: 10000 });
  if (!detail.includes('Attributes')) throw new Error(`no detail after a click: ${detail}`);
  // Collapsing the root hides the rest.
  await page.click('#waterfall .row:nth-of-type(2) .toggle', { timeout: 10000 });
  const collapsed = await page.$$eval('#waterfall .row', (rs) => rs.length);
  if (collapsed !== 1) throw new Error(`collapsing the root left ${collapsed} rows`);
  await page.screenshot({ path: join(shots, '5-big-trace.png') });
  console.log(`big trace: ${rows} rows rendered, page responsive`);
} finally {
  await browser.close();
}

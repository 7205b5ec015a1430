/**
 * The admin page at / on the admin listener, driven in a real browser
 * (Debian's chromium through playwright-core) against a real `keygate serve`
 * (with `keygate.key_header` renamed) and a real upstream: sign-in (one
 * request per attempt, in the configured header; wrong, non-admin and
 * throttled keys), the keys list as the CLI shows keys, groups with their
 * allow rules, the admin key's own use as last use, the page following the
 * file and other admins, relative times that tick (the page's clock is
 * playwright's), the layout at 375, 1024 and 1280 px in light and dark, the
 * key shown once (whole, copied, asked about before it is lost, focus
 * returned), edits, regenerate, delete, a failed reload kept on screen, and no
 * request leaving keygate.
 *
 * Screenshots: test-artifacts/screenshots/ at the repository's root, emptied
 * at the start of each run, so that CI can keep that one folder (.ci/run says
 * where it is). The `layout-<width>-<light|dark>.png` ones are the layout
 * checks; the others follow the flows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Locator, type Page, type Request } from 'playwright-core';
import { REPO } from './helpers/cli.ts';
import { startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';

// The browser's globals, for the functions that page.evaluate runs in the page (this project's lib has no DOM).
declare const sessionStorage: { length: number; getItem(key: string): string | null; setItem(key: string, value: string): void };
declare const localStorage: { length: number };
declare const navigator: { clipboard: { readText(): Promise<string> } };
interface PageElement {
  id: string;
  textContent: string | null;
  blur(): void;
  getAttribute(name: string): string | null;
  contains(other: PageElement | null): boolean;
}
declare const document: { activeElement: PageElement | null; body: PageElement; getElementById(id: string): PageElement | null };
declare function getComputedStyle(el: PageElement): { backgroundColor: string };
declare const window: { scrollY: number; innerHeight: number; scrollTo(x: number, y: number): void };

const CHROMIUM = '/usr/bin/chromium';
/** Where the screenshots land: one fixed folder, for CI to keep. */
const SHOTS = path.join(REPO, 'test-artifacts', 'screenshots');
const HEADER = 'x-gate-key';
const ADMIN_KEY = 'kg_ui_admin_key_0123456789abcdef';
const ANALYST_KEY = 'kg_ui_analyst_key_0123456789abcdef';
const EXPIRED_KEY = 'kg_ui_expired_key_0123456789abcdef';
const HASHED_KEY = 'kg_ui_hashed_key_0123456789abcdef';
/** A name without a single break opportunity: it must wrap inside its column. */
const LONG_NAME = 'nightly_export_of_every_dashboard_to_the_finance_teams_shared_drive_eu_west';

function config(upstream: string, extraKeys: string[] = []): string {
  return [
    'version: 1',
    'config:',
    '  keygate:',
    `    upstream: ${upstream}`,
    `    key_header: ${HEADER}`,
    // 60 a minute: a second's wait once spent, so that the page's "Try again in 1 second" can be seen.
    '    failed_auth_per_minute: 60',
    '  groups:',
    '    - name: analysts',
    '      description: Read-only cards',
    '      allow:',
    '        - methods: [GET]',
    '          paths: ["/api/card/**"]',
    '  api-keys:',
    '    - name: Admin API key',
    '      group: admin',
    `      key: ${ADMIN_KEY}`,
    '    - name: Analyst key',
    '      group: analysts',
    '      description: Dashboards robot',
    `      key: ${ANALYST_KEY}`,
    '    - name: Old key',
    '      group: analysts',
    '      expires_at: 2020-01-01T00:00:00Z',
    `      key: ${EXPIRED_KEY}`,
    '    - name: Finance export',
    '      group: analysts',
    `      key_hash: "sha256:${createHash('sha256').update(HASHED_KEY).digest('hex')}"`,
    ...extraKeys,
    '',
  ].join('\n');
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function call(method: string, url: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
const get = (url: string, headers: Record<string, string> = {}): Promise<Answer> => call('GET', url, headers);

/** What the layout check measures in the page (plain JS: the project's TypeScript lib has no DOM). */
interface Layout {
  scrollWidth: number;
  clientWidth: number;
  /** Tables wider than their box (scrolling sideways inside it). */
  overflowingTables: string[];
  /** Cells whose content is cut off or spills out of them. */
  clippedCells: string[];
  /** Row buttons not wholly on screen or not wholly inside their cell. */
  hiddenActions: string[];
  /** Keys-table rows: how many lines each cell's text takes. */
  rows: Array<{ name: string; lines: Record<string, number> }>;
  background: string;
}

const MEASURE = `(() => {
  const label = (cell) => (cell.closest('tr')?.getAttribute('data-name') ?? '?') + ' / ' + (cell.getAttribute('data-label') ?? '?');
  // The text of a cell, as line boxes: the vertical centres of its text rectangles, clustered.
  const lines = (cell) => {
    const centres = [];
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n !== null; n = walker.nextNode()) {
      if (n.textContent.trim() === '' || n.parentElement.closest('.visually-hidden') !== null) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      for (const r of range.getClientRects()) if (r.width > 0) centres.push(r.top + r.height / 2);
    }
    centres.sort((a, b) => a - b);
    const half = parseFloat(getComputedStyle(cell).lineHeight) / 2;
    let count = 0;
    let last = -Infinity;
    for (const c of centres) {
      if (c - last > half) count++;
      last = c;
    }
    return count;
  };
  const cells = [...document.querySelectorAll('#keys-body th, #keys-body td, #groups-body th, #groups-body td')];
  return {
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
    overflowingTables: [...document.querySelectorAll('.table-wrap')].filter((w) => w.scrollWidth > w.clientWidth).map((w) => w.querySelector('table').id),
    clippedCells: cells.filter((c) => c.scrollWidth > c.clientWidth + 1).map(label),
    hiddenActions: [...document.querySelectorAll('td.actions button')].filter((b) => {
      const r = b.getBoundingClientRect();
      const cell = b.closest('td').getBoundingClientRect();
      return r.width === 0 || r.left < 0 || r.right > document.documentElement.clientWidth || r.left < cell.left - 1 || r.right > cell.right + 1;
    }).map((b) => b.getAttribute('aria-label')),
    rows: [...document.querySelectorAll('#keys-body tr')].map((tr) => ({
      name: tr.getAttribute('data-name'),
      lines: Object.fromEntries([...tr.children].map((c) => [c.getAttribute('data-label'), lines(c)])),
    })),
    background: getComputedStyle(document.body).backgroundColor,
  };
})()`;


test('the admin page, in a real browser against a real keygate serve', { skip: !existsSync(CHROMIUM) && `${CHROMIUM} is not installed`, timeout: 240_000 }, async (t) => {
  const upstream = await startUpstream(t);
  const cfg = tempConfig(t, config(upstream.url));
  const kg = await startServe(t, cfg.config, { args: ['--db', cfg.db] });
  const proxyStatus = async (key: string): Promise<number> => (await get(`${kg.proxy}/api/card/1`, { [HEADER]: key })).status;
  /** Another admin, using the management API directly. */
  const otherAdmin = async (method: string, p: string, body?: unknown): Promise<unknown> => {
    const a = await call(method, kg.admin + p, { [HEADER]: ADMIN_KEY, 'content-type': 'application/json' }, body);
    assert.ok(a.status < 300, `${method} ${p}: ${a.status} ${a.text}`);
    return a.text === '' ? null : (JSON.parse(a.text) as unknown);
  };
  const invalidAuthFailures = async (): Promise<number> => {
    const m = /^keygate_auth_failures_total\{reason="invalid"\} (\d+)/m.exec((await get(`${kg.admin}/metrics`)).text);
    return m === null ? 0 : Number(m[1]);
  };

  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  const profile = mkdtempSync(path.join(os.tmpdir(), 'keygate-chromium-'));
  t.after(() => rmSync(profile, { recursive: true, force: true }));
  const context: BrowserContext = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  t.after(() => context.close());
  // The page's clock is playwright's: it runs as the real one does until the test moves it on.
  await context.clock.install();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: kg.admin });

  // Nothing but keygate's admin listener may be asked for anything.
  const elsewhere: string[] = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${kg.admin}/`)) return route.continue();
    elsewhere.push(url);
    return route.abort();
  });
  const page: Page = context.pages()[0] ?? (await context.newPage());
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // A refused key is a 401/403/429 answer, which chromium logs as a failed load: expected.
    if (/Failed to load resource/.test(msg.text())) return;
    if (msg.type() === 'error' || /Content Security Policy/i.test(msg.text())) problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  const apiRequests: Request[] = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/api/')) apiRequests.push(r);
  });
  const favicon: number[] = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/favicon.svg') favicon.push(r.status());
  });
  let n = 0;
  /** A screenshot of the whole page, or (`fullPage` false) of the window, as a dialog is seen. */
  const shot = async (name: string, fullPage = true): Promise<void> => {
    await page.screenshot({ path: path.join(SHOTS, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage });
  };
  const row = (name: string) => page.locator(`#keys-body tr[data-name="${name}"]`);
  const groupRow = (name: string) => page.locator(`#groups-body tr[data-name="${name}"]`);
  const cell = (name: string, label: string) => row(name).locator(`[data-label="${label}"]`);
  const modal = page.locator('#modal');
  const backdrop = page.locator('#modal-backdrop');
  const focused = (): Promise<string | null> => page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? document.activeElement?.id ?? null);
  /** Whether the element is wholly inside the window. */
  const inView = async (l: Locator): Promise<boolean> => {
    const box = await l.boundingBox();
    const size = page.viewportSize();
    return box !== null && size !== null && box.height > 0 && box.y >= 0 && box.y + box.height <= size.height;
  };
  const signInWith = async (key: string): Promise<void> => {
    await page.getByLabel('Admin API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
  };

  await t.test('the page, its files and its icon are served with no-store and a strict CSP; nothing else is', async () => {
    for (const [p, type] of [
      ['/', 'text/html'],
      ['/app.js', 'text/javascript'],
      ['/app.css', 'text/css'],
      ['/favicon.svg', 'image/svg+xml'],
    ] as const) {
      const a = await get(kg.admin + p);
      assert.equal(a.status, 200, p);
      assert.match(a.headers['content-type'] ?? '', new RegExp(`^${type.replace('+', '\\+')}`), p);
      assert.equal(a.headers['cache-control'], 'no-store', p);
      assert.match(String(a.headers['content-security-policy']), /default-src 'self'/, p);
      // SVG's namespace is a name, not an address anything is fetched from.
      assert.doesNotMatch(a.text.replaceAll('http://www.w3.org/2000/svg', ''), /https?:\/\//, `${p} names no other origin`);
    }
    for (const p of ['/ui/index.html', '/app.ts', '/../server.ts', '/%2e%2e/static.ts', '/static.ts', '/index.htm', '/favicon.svg/x']) {
      assert.equal((await get(kg.admin + p)).status, 404, p);
    }
  });

  await t.test('/status names the key header, so the page can use it', async () => {
    const s = JSON.parse((await get(`${kg.admin}/status`)).text) as { key_header: string; changes: number };
    assert.equal(s.key_header, HEADER);
    assert.equal(typeof s.changes, 'number');
  });

  await t.test('the tab has keygate\'s icon', async () => {
    const icon = page.waitForResponse((r) => new URL(r.url()).pathname === '/favicon.svg', { timeout: 30_000 });
    await page.goto(`${kg.admin}/`);
    await page.getByLabel('Admin API key').waitFor();
    await icon;
    assert.deepEqual(favicon, [200], 'the browser fetched the icon the page names');
    await shot('sign-in');
  });

  await t.test('a wrong key: one request, in the configured header, one failed-auth token, a clear message', async () => {
    const before = await invalidAuthFailures();
    apiRequests.length = 0;
    await signInWith('kg_not_a_real_key_at_all_000000');
    await page.locator('#login-error', { hasText: 'does not accept this key' }).waitFor();
    assert.equal(apiRequests.length, 1, `one request per attempt: ${apiRequests.map((r) => r.url()).join(', ')}`);
    const headers = apiRequests[0]!.headers();
    assert.equal(headers[HEADER], 'kg_not_a_real_key_at_all_000000', `the key goes in ${HEADER}`);
    assert.equal(headers['x-api-key'], undefined);
    assert.equal((await invalidAuthFailures()) - before, 1, 'one failed-auth token spent');
    await shot('sign-in-wrong-key');
  });

  await t.test('a non-admin key is told so', async () => {
    await signInWith(ANALYST_KEY);
    await page.locator('#login-error', { hasText: 'not in the admin group' }).waitFor();
    await shot('sign-in-non-admin-key');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  await t.test('too many failed attempts: "Try again in 1 second", in the singular', async () => {
    const error = page.locator('#login-error');
    let said = '';
    // Spend this address's failed-auth tokens (60 a minute), then try once from the page. A refill
    // between the two (a slow machine) makes the page's attempt a plain 401: spend again and retry.
    for (let round = 0; round < 5 && !said.includes('Too many'); round++) {
      for (let i = 0; i < 200 && (await get(`${kg.admin}/api/api-key`, { [HEADER]: 'kg_spent_0000000000000000' })).status !== 429; i++);
      await error.evaluate((el) => ((el as unknown as PageElement).textContent = ''));
      await signInWith('kg_not_a_real_key_at_all_000000');
      await page.waitForFunction(() => !['', 'Checking…'].includes(document.getElementById('login-error')?.textContent ?? ''));
      said = await error.innerText();
    }
    assert.match(said, /Too many failed attempts from this address\. Try again in 1 second\./);
    await shot('sign-in-throttled');
    // The bucket refills (a second at 60 a minute): the admin key is answered again.
    for (let i = 0; i < 600; i++) {
      if ((await get(`${kg.admin}/api/api-key/count`, { [HEADER]: ADMIN_KEY })).status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  const signedInAt = new Date(Date.now() - 1000).toISOString();
  await t.test('signing in does not scroll: the header and the banner stay in view', async () => {
    await signInWith(ADMIN_KEY);
    await row('Analyst key').waitFor();
    await groupRow('analysts').waitFor();
    assert.equal(await page.evaluate(() => window.scrollY), 0);
    assert.ok(await inView(page.locator('#status-banner')), 'the banner is on screen');
    await page.locator('#status-banner.banner-ok', { hasText: 'revision 1' }).waitFor();
    // The key lives in this tab's sessionStorage only.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keygate.adminKey')), ADMIN_KEY);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
  });

  await t.test('keys show as the CLI shows them; a hash-only key says so; config rows are read-only', async () => {
    assert.deepEqual(await page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-name'))), ['Admin API key', 'Analyst key', 'Finance export', 'Old key']);
    assert.equal(await cell('Admin API key', 'Key').innerText(), 'kg_ui_a…');
    assert.equal(await cell('Old key', 'Key').innerText(), 'kg_ui_e…');
    assert.equal(await cell('Finance export', 'Key').innerText(), 'hash only');
    assert.doesNotMatch(await page.locator('#keys-table').innerText(), /\*/, 'no stars anywhere');
    const analyst = await row('Analyst key').innerText();
    assert.match(analyst, /analysts/);
    assert.match(analyst, /config/);
    assert.match(analyst, /Dashboards robot/);
    assert.match(analyst, /Read-only \(config file\)/);
    assert.equal(await row('Analyst key').getByRole('button').count(), 0, 'no edit or delete for a config key');
    assert.match(await cell('Old key', 'Expires').innerText(), /expired/);
    assert.match(await page.locator('#config-note').innerText(), new RegExp(cfg.config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  });

  await t.test("the admin key's own use of the page counts as its last use", async () => {
    // The admin key has never been sent to the proxy: only the page has used it.
    const used = cell('Admin API key', 'Last used').locator('time');
    await used.waitFor();
    assert.ok(((await used.getAttribute('datetime')) ?? '') >= signedInAt, 'used when the page signed in');
    assert.match(await used.innerText(), /^(just now|\d+ seconds ago)$/);
    assert.ok(((await used.getAttribute('title')) ?? '').length > 0, 'exact time on hover');
    assert.equal(await cell('Analyst key', 'Last used').innerText(), 'never');
  });

  await t.test("a group's allow rules are shown", async () => {
    const analysts = groupRow('analysts');
    assert.equal(await analysts.locator('[data-label="Allows"]').innerText(), 'GET /api/card/**');
    assert.match(await analysts.innerText(), /Read-only \(config file\)/);
    assert.equal(await analysts.getByRole('button').count(), 0);
    assert.equal(await groupRow('Administrators').locator('[data-label="Allows"]').innerText(), 'Every route and the management API');
    assert.equal(await groupRow('All Users').locator('[data-label="Allows"]').innerText(), 'Every route');
    // The create dialog says what the chosen group allows.
    await page.getByRole('button', { name: 'Create API key' }).click();
    await modal.getByLabel('Group').selectOption({ label: 'analysts' });
    await modal.getByText('analysts allows GET on /api/card/**.').waitFor();
    await page.keyboard.press('Escape');
    await backdrop.waitFor({ state: 'hidden' });
    assert.equal(await focused(), 'create-key');
  });

  await t.test('filters: by text and by group', async () => {
    const names = (): Promise<Array<string | null>> => page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-name')));
    await page.getByLabel('Filter').fill('dashboards');
    assert.deepEqual(await names(), ['Analyst key']);
    await page.getByLabel('Filter').fill('hash only');
    assert.deepEqual(await names(), ['Finance export']);
    await page.getByLabel('Filter').fill('');
    await page.getByLabel('Group', { exact: true }).selectOption({ label: 'Administrators' });
    assert.deepEqual(await names(), ['Admin API key']);
    await page.getByLabel('Group', { exact: true }).selectOption({ label: 'All groups' });
  });

  await t.test("another admin's change shows without reloading the page", async () => {
    await otherAdmin('POST', '/api/api-key', { name: 'Deploy bot', group_id: 1, description: 'CI' });
    await row('Deploy bot').waitFor({ timeout: 15_000 });
    const made = (await otherAdmin('GET', '/api/api-key')) as Array<{ id: number; name: string }>;
    const id = made.find((k) => k.name === 'Deploy bot')!.id;
    // A rename changes no count: the page still sees it.
    await otherAdmin('PUT', `/api/api-key/${id}`, { name: LONG_NAME });
    await row(LONG_NAME).waitFor({ timeout: 15_000 });
    assert.equal(await row('Deploy bot').count(), 0);
  });

  await t.test('a new revision of the file shows without reloading the page', async () => {
    cfg.rewrite(config(upstream.url, ['    - name: Added in the file', '      group: analysts', '      description: Weekly report', '      key: kg_ui_added_key_0123456789abcdef']));
    await page.locator('#status-banner', { hasText: 'revision 2' }).waitFor({ timeout: 15_000 });
    await row('Added in the file').waitFor({ timeout: 15_000 });
    assert.equal(await cell('Added in the file', 'Key').innerText(), 'kg_ui_a…');
  });

  await t.test('layout: one line per row at 1280 px, nothing cut off or sideways at 1024 px, cards at 375 px; light and dark', async () => {
    await page.evaluate(() => document.activeElement?.blur());
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const width of [1280, 1024, 375]) {
        await page.setViewportSize({ width, height: 800 });
        const m = (await page.evaluate(MEASURE)) as Layout;
        await page.screenshot({ path: path.join(SHOTS, `layout-${width}-${scheme}.png`), fullPage: true });
        const where = `${width} px, ${scheme}`;
        assert.ok(m.scrollWidth <= m.clientWidth, `${where}: the page does not scroll sideways (${m.scrollWidth} > ${m.clientWidth})`);
        assert.deepEqual(m.overflowingTables, [], `${where}: no table scrolls sideways`);
        assert.deepEqual(m.clippedCells, [], `${where}: no cell is cut off`);
        assert.deepEqual(m.hiddenActions, [], `${where}: every row's buttons are on screen`);
        assert.equal(m.background, scheme === 'dark' ? 'rgb(20, 23, 28)' : 'rgb(246, 247, 249)', `${where}: background`);
        if (width === 1280) {
          for (const r of m.rows) {
            const wrapped = Object.entries(r.lines).filter(([, lines]) => lines > 1);
            if (r.name === LONG_NAME) {
              // The long name wraps inside its own column; the rest of its row does not.
              assert.deepEqual(
                wrapped.map(([label]) => label),
                ['Name'],
                `${where}: only the long name wraps`,
              );
            } else assert.deepEqual(wrapped, [], `${where}: "${r.name}" is one line`);
          }
        }
      }
    }
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  let minted = '';
  await t.test('create: the whole key is shown once; closing it uncopied asks first; copied, it closes', async () => {
    const opener = page.getByRole('button', { name: 'Create API key' });
    await opener.click();
    await modal.getByLabel('Key name').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.id), await modal.getByLabel('Key name').getAttribute('id'));
    // Focus stays in the modal.
    for (let i = 0; i < 8; i++) {
      await page.keyboard.press('Tab');
      assert.ok(await page.evaluate(() => document.getElementById('modal')?.contains(document.activeElement)), `Tab ${i} stays in the modal`);
    }
    await page.keyboard.press('Shift+Tab');
    assert.ok(await page.evaluate(() => document.getElementById('modal')?.contains(document.activeElement)));
    // An empty name is caught in the form, and the name field gets the focus back.
    await modal.getByRole('button', { name: 'Create' }).click();
    await modal.getByRole('alert').getByText('Enter a name for the key.').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.id), await modal.getByLabel('Key name').getAttribute('id'));
    await modal.getByLabel('Key name').fill('Reporting bot');
    await modal.getByLabel('Group').selectOption({ label: 'analysts' });
    await shot('create-key-modal', false);
    await modal.getByRole('button', { name: 'Create' }).click();
    const shown = page.locator('#new-key');
    await shown.waitFor();
    minted = await shown.innerText();
    assert.match(minted, /^kg_[A-Za-z0-9]{40,}$/, 'the whole key');
    assert.match(await modal.innerText(), /cannot be shown again/);
    // Shown whole: nothing of it is hidden or outside the dialog, on a wide screen and a narrow one.
    for (const width of [1280, 375]) {
      await page.setViewportSize({ width, height: 800 });
      const fits = await shown.evaluate((el) => {
        const e = el as unknown as { scrollWidth: number; clientWidth: number; scrollHeight: number; clientHeight: number; getBoundingClientRect(): { left: number; right: number }; closest(s: string): { getBoundingClientRect(): { left: number; right: number } } };
        const r = e.getBoundingClientRect();
        const box = e.closest('.modal').getBoundingClientRect();
        return e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight && r.left >= box.left && r.right <= box.right;
      });
      assert.ok(fits, `the key fits its box at ${width} px`);
      await shot(`key-shown-once-${width}`, false);
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    // Escape before copying: a question, and the key stays.
    await page.keyboard.press('Escape');
    const question = modal.locator('#close-question');
    await question.waitFor();
    assert.match(await question.innerText(), /The key has not been copied/);
    assert.equal(await focused(), 'keep-key', 'the safe answer has the focus');
    assert.equal(await shown.innerText(), minted);
    await shot('key-close-question', false);
    // Escape again goes back to the key.
    await page.keyboard.press('Escape');
    await question.waitFor({ state: 'hidden' });
    assert.equal(await focused(), 'copy-key');
    // A click on the backdrop asks too.
    await page.mouse.click(5, 5);
    await question.waitFor();
    await modal.getByRole('button', { name: 'Back to the key' }).click();
    await question.waitFor({ state: 'hidden' });
    assert.ok(await backdrop.isVisible());
    // Copied: Escape closes at once.
    await modal.getByRole('button', { name: 'Copy key' }).click();
    await modal.getByText('Copied to the clipboard.').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), minted);
    await page.keyboard.press('Escape');
    await backdrop.waitFor({ state: 'hidden' });
    assert.ok(!(await page.content()).includes(minted), 'the key is gone from the page once the dialog closes');
    assert.equal(await focused(), 'create-key', 'focus returns to the opener');
    await row('Reporting bot').waitFor();
    assert.match(await row('Reporting bot').innerText(), /api/);
    assert.equal(await proxyStatus(minted), 200);
  });

  await t.test('edit and regenerate: the old key is refused, the new one admitted; focus returns to Edit', async () => {
    await row('Reporting bot').getByRole('button', { name: 'Edit Reporting bot' }).click();
    await modal.getByLabel('Key name').fill('Reporting');
    await shot('edit-key-modal', false);
    await modal.getByRole('button', { name: 'Save' }).click();
    await row('Reporting').waitFor();
    assert.equal(await row('Reporting bot').count(), 0);
    assert.equal(await focused(), 'Edit Reporting', 'focus returns to the Edit button');
    const oldKey = await cell('Reporting', 'Key').innerText();
    await row('Reporting').getByRole('button', { name: 'Edit Reporting' }).click();
    await modal.getByRole('button', { name: 'Regenerate key…' }).click();
    await modal.getByText('Anything still using the current key is refused').waitFor();
    await shot('regenerate-confirm', false);
    await modal.getByRole('button', { name: 'Regenerate', exact: true }).click();
    await page.locator('#new-key').waitFor();
    const fresh = await page.locator('#new-key').innerText();
    assert.notEqual(fresh, minted);
    assert.match(await modal.innerText(), /cannot be shown again/);
    // Behind the dialog, the list has been reloaded (the row shows the new key's first characters).
    await page.locator(`#keys-body tr[data-name="Reporting"] [data-label="Key"]:not(:text-is("${oldKey}"))`).waitFor();
    await shot('regenerated-key-shown-once', false);
    // Done, uncopied: asked; closed without copying.
    await modal.getByRole('button', { name: 'Done' }).click();
    await modal.locator('#close-question').waitFor();
    await modal.getByRole('button', { name: 'Close without copying' }).click();
    await backdrop.waitFor({ state: 'hidden' });
    assert.ok(!(await page.content()).includes(fresh));
    assert.equal(await focused(), 'Edit Reporting', 'focus returns to the Edit button that opened the dialogs');
    assert.equal(await proxyStatus(minted), 401);
    assert.equal(await proxyStatus(fresh), 200);
    minted = fresh;
  });

  await t.test('delete: a confirmation names the key; then the key is refused', async () => {
    const del = row('Reporting').getByRole('button', { name: 'Delete Reporting' });
    await del.click();
    assert.match(await modal.locator('#modal-title').innerText(), /Delete API key “Reporting”\?/);
    await shot('delete-key-confirm', false);
    // Cancel returns focus to the Delete button.
    await modal.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await focused(), 'Delete Reporting');
    await del.click();
    await modal.getByRole('button', { name: 'Delete key' }).click();
    await backdrop.waitFor({ state: 'hidden' });
    await row('Reporting').waitFor({ state: 'detached' });
    assert.equal(await proxyStatus(minted), 401);
  });

  await t.test('groups: create one, see its member count and rules, rename it, delete it', async () => {
    await page.getByRole('button', { name: 'Create group' }).click();
    // A name that is taken: the API's 400 is shown in the form, which stays open.
    await modal.getByLabel('Group name').fill('analysts');
    await modal.getByRole('button', { name: 'Create' }).click();
    await modal.getByRole('alert').getByText('name: A group with that name already exists.').waitFor();
    await modal.getByLabel('Group name').fill('ops');
    await modal.getByRole('button', { name: 'Create' }).click();
    const ops = groupRow('ops');
    await ops.waitFor();
    assert.equal(await ops.locator('td.members').innerText(), '0');
    assert.equal(await ops.locator('[data-label="Allows"]').innerText(), 'Every route');
    assert.equal(await groupRow('analysts').locator('td.members').innerText(), '4');
    assert.match(await groupRow('Administrators').innerText(), /built in/i);
    await shot('groups');
    // Rename: a name taken ignoring case is refused in the form; a free one is saved.
    await ops.getByRole('button', { name: 'Edit group ops' }).click();
    await modal.getByLabel('Group name').fill('ANALYSTS');
    await modal.getByRole('button', { name: 'Save' }).click();
    await modal.getByRole('alert').getByText('name: A group with that name already exists.').waitFor();
    await modal.getByLabel('Group name').fill('Operations');
    await modal.getByRole('button', { name: 'Save' }).click();
    const operations = groupRow('Operations');
    await operations.waitFor();
    await ops.waitFor({ state: 'detached' });
    await operations.getByRole('button', { name: 'Delete group Operations' }).click();
    assert.match(await modal.innerText(), /It has no keys\./);
    await shot('delete-group-confirm', false);
    await modal.getByRole('button', { name: 'Delete group' }).click();
    await operations.waitFor({ state: 'detached' });
    // One key: the singular.
    const g = (await otherAdmin('POST', '/api/permissions/group', { name: 'Solo' })) as { id: number };
    await otherAdmin('POST', '/api/api-key', { name: 'Solo key', group_id: g.id });
    await groupRow('Solo').locator('td.members', { hasText: '1' }).waitFor({ timeout: 15_000 });
    await groupRow('Solo').getByRole('button', { name: 'Delete group Solo' }).click();
    assert.match(await modal.innerText(), /Its 1 key moves to All Users \(all-users\) and keeps working/);
    await modal.getByRole('button', { name: 'Cancel' }).click();
  });

  await t.test('a failed reload: its error in the banner, which stays on screen however far the page scrolls', async () => {
    cfg.rewrite(`${config(upstream.url)}  groups: [\n`);
    const banner = page.locator('#status-banner.banner-error');
    await banner.waitFor({ timeout: 15_000 });
    assert.match(await banner.innerText(), /The last reload of the config file failed/);
    assert.match(await page.locator('#reload-errors').innerText(), /config\.yml/);
    assert.equal(await banner.getAttribute('role'), 'alert');
    await page.setViewportSize({ width: 1280, height: 600 });
    await page.evaluate(() => window.scrollTo(0, 100_000));
    assert.ok((await page.evaluate(() => window.scrollY)) > 0, 'the page did scroll');
    assert.ok(await inView(banner), 'the banner is still on screen');
    await shot('config-broken-banner-scrolled', false);
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('config-broken-banner');
    // The last good config keeps serving.
    assert.equal(await proxyStatus(ANALYST_KEY), 200);
  });

  await t.test('relative times tick', async () => {
    const used = cell('Admin API key', 'Last used').locator('time');
    const minutes = async (l: Locator): Promise<number> => Number(/^(\d+) minutes? ago$/.exec(await l.innerText())?.[1] ?? 0);
    const before = await minutes(used);
    // Five minutes pass for the page (its clock is playwright's, which jumps and fires the timers
    // that fall due): the times it shows are rewritten, with no reload.
    await page.clock.fastForward('05:00');
    await used.filter({ hasText: /^\d+ minutes ago$/ }).waitFor({ timeout: 15_000 });
    assert.ok((await minutes(used)) >= before + 5, 'five minutes later');
    const applied = page.locator('#status-banner .applied time');
    await applied.filter({ hasText: /^\d+ minutes ago$/ }).waitFor({ timeout: 15_000 });
    assert.ok((await minutes(applied)) >= 5);
    await page.clock.setSystemTime(Date.now());
  });

  await t.test('a later 401 (the admin key no longer valid) signs out with a message', async () => {
    await page.evaluate(() => sessionStorage.setItem('keygate.adminKey', 'kg_revoked_0000000000000000000'));
    await page.reload();
    await page.locator('#login-error', { hasText: 'does not accept this key' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  assert.deepEqual(elsewhere, [], 'the page asked nothing of any other origin');
  assert.deepEqual(problems, [], 'no script errors and no CSP violations');
});

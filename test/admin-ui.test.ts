/**
 * The admin page at / on the admin listener, driven in a real browser
 * (Debian's chromium through playwright-core) against a real `keygate serve`
 * and a real upstream: sign-in (wrong, non-admin and admin keys), a key
 * created on the page and used through the proxy, regenerated (old key 401,
 * new 200) and deleted (401), config rows read-only, groups, a broken config
 * file shown in the banner, focus trapped in modals, narrow and dark layouts,
 * and no request leaving keygate. Screenshots go to test-artifacts/screenshots/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { REPO } from './helpers/cli.ts';
import { startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';

// The browser's globals, for the functions that page.evaluate runs in the page (this project's lib has no DOM).
declare const sessionStorage: { length: number; getItem(key: string): string | null; setItem(key: string, value: string): void };
declare const localStorage: { length: number };
declare const navigator: { clipboard: { readText(): Promise<string> } };
interface PageElement {
  id: string;
  getAttribute(name: string): string | null;
  contains(other: PageElement | null): boolean;
}
declare const document: { activeElement: PageElement | null; body: PageElement; getElementById(id: string): PageElement | null };
declare function getComputedStyle(el: PageElement): { backgroundColor: string };

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.join(REPO, 'test-artifacts', 'screenshots');
const ADMIN_KEY = 'kg_ui_admin_key_0123456789abcdef';
const ANALYST_KEY = 'kg_ui_analyst_key_0123456789abcdef';
const EXPIRED_KEY = 'kg_ui_expired_key_0123456789abcdef';

function config(upstream: string): string {
  return [
    'version: 1',
    'config:',
    '  keygate:',
    `    upstream: ${upstream}`,
    '    failed_auth_per_minute: 1000000',
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
    '',
  ].join('\n');
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
  });
}

test('the admin page, in a real browser against a real keygate serve', { skip: !existsSync(CHROMIUM) && `${CHROMIUM} is not installed`, timeout: 120_000 }, async (t) => {
  const upstream = await startUpstream(t);
  const cfg = tempConfig(t, config(upstream.url));
  const kg = await startServe(t, cfg.config, { args: ['--db', cfg.db] });
  const proxyStatus = async (key: string): Promise<number> => (await get(`${kg.proxy}/api/card/1`, { 'x-api-key': key })).status;

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
    viewport: { width: 1280, height: 900 },
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  t.after(() => context.close());
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
    // A refused key is a 401/403 answer, which chromium logs as a failed load: expected.
    if (/Failed to load resource/.test(msg.text())) return;
    if (msg.type() === 'error' || /Content Security Policy/i.test(msg.text())) problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  let n = 0;
  const shot = async (name: string): Promise<void> => {
    await page.screenshot({ path: path.join(SHOTS, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage: true });
  };
  const row = (name: string) => page.locator(`#keys-body tr[data-name="${name}"]`);
  const modal = page.locator('#modal');

  await t.test('the page and its files are served with no-store and a strict CSP; nothing else is', async () => {
    for (const [p, type] of [
      ['/', 'text/html'],
      ['/app.js', 'text/javascript'],
      ['/app.css', 'text/css'],
    ] as const) {
      const a = await get(kg.admin + p);
      assert.equal(a.status, 200, p);
      assert.match(a.headers['content-type'] ?? '', new RegExp(`^${type}`), p);
      assert.equal(a.headers['cache-control'], 'no-store', p);
      assert.match(String(a.headers['content-security-policy']), /default-src 'self'/, p);
      assert.doesNotMatch(a.text, /https?:\/\//, `${p} names no other origin`);
    }
    for (const p of ['/ui/index.html', '/app.ts', '/../server.ts', '/%2e%2e/static.ts', '/static.ts', '/index.htm']) {
      assert.equal((await get(kg.admin + p)).status, 404, p);
    }
  });

  await t.test('a wrong key and a non-admin key get a clear message', async () => {
    await page.goto(`${kg.admin}/`);
    await page.getByLabel('Admin API key').waitFor();
    await shot('sign-in');
    await page.getByLabel('Admin API key').fill('kg_not_a_real_key_at_all_000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#login-error', { hasText: 'does not accept this key' }).waitFor();
    await shot('sign-in-wrong-key');
    await page.getByLabel('Admin API key').fill(ANALYST_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#login-error', { hasText: 'not in the admin group' }).waitFor();
    await shot('sign-in-non-admin-key');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  await t.test('an admin key signs in; the keys list shows config keys read-only', async () => {
    await page.getByLabel('Admin API key').fill(ADMIN_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await row('Analyst key').waitFor();
    // The key lives in this tab's sessionStorage only.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keygate.adminKey')), ADMIN_KEY);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(await page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-name'))), ['Admin API key', 'Analyst key', 'Old key']);
    const analyst = row('Analyst key');
    assert.match(await analyst.innerText(), /kg_ui_a\*+/);
    assert.match(await analyst.innerText(), /analysts/);
    assert.match(await analyst.innerText(), /config/);
    assert.match(await analyst.innerText(), /Dashboards robot/);
    assert.match(await analyst.innerText(), /Read-only \(config file\)/);
    assert.equal(await analyst.getByRole('button').count(), 0, 'no edit or delete for a config key');
    assert.match(await row('Old key').innerText(), /expired/);
    assert.match(await page.locator('#config-note').innerText(), new RegExp(cfg.config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    // The banner: revision and time applied, no failure.
    await page.locator('#status-banner.banner-ok', { hasText: 'revision' }).waitFor();
    // Last used: relative, exact on hover.
    await proxyStatus(ANALYST_KEY);
    await page.reload();
    const used = row('Analyst key').locator('td[data-label="Last used"] time');
    await used.waitFor();
    assert.ok(((await used.getAttribute('title')) ?? '').length > 0, 'exact time in title');
    await shot('keys-list');
    // Filters: text and group.
    await page.getByLabel('Filter').fill('dashboards');
    assert.deepEqual(await page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-name'))), ['Analyst key']);
    await page.getByLabel('Filter').fill('');
    // The built-in groups carry Metabase's names.
    await page.getByLabel('Group', { exact: true }).selectOption({ label: 'Administrators' });
    assert.deepEqual(await page.locator('#keys-body tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-name'))), ['Admin API key']);
    await shot('keys-filtered-by-group');
    await page.getByLabel('Group', { exact: true }).selectOption({ label: 'All groups' });
    // Config groups are read-only too.
    const analysts = page.locator('#groups-body tr[data-name="analysts"]');
    assert.match(await analysts.innerText(), /Read-only \(config file\)/);
    assert.equal(await analysts.getByRole('button').count(), 0);
  });

  let minted = '';
  await t.test('create: the key is shown once, copied, and works through the proxy', async () => {
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
    await shot('create-key-modal');
    await modal.getByRole('button', { name: 'Create' }).click();
    const shown = page.locator('#new-key');
    await shown.waitFor();
    minted = await shown.inputValue();
    assert.match(minted, /^kg_[A-Za-z0-9]{20,}$/);
    assert.match(await modal.innerText(), /cannot be shown again/);
    await page.getByRole('button', { name: 'Copy' }).click();
    await modal.getByText('Copied to the clipboard.').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), minted);
    await shot('create-key-shown-once');
    await page.keyboard.press('Escape');
    await page.locator('#modal-backdrop').waitFor({ state: 'hidden' });
    assert.ok(!(await page.content()).includes(minted), 'the key is gone from the page once the modal closes');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'create-key', 'focus returns to the opener');
    await row('Reporting bot').waitFor();
    assert.match(await row('Reporting bot').innerText(), /api/);
    assert.equal(await proxyStatus(minted), 200);
  });

  await t.test('edit and regenerate: the old key is refused, the new one admitted', async () => {
    const edit = row('Reporting bot').getByRole('button', { name: 'Edit Reporting bot' });
    await edit.click();
    await modal.getByLabel('Key name').fill('Reporting');
    await shot('edit-key-modal');
    await modal.getByRole('button', { name: 'Save' }).click();
    await row('Reporting').waitFor();
    assert.equal(await row('Reporting bot').count(), 0);
    await row('Reporting').getByRole('button', { name: 'Edit Reporting' }).click();
    await modal.getByRole('button', { name: 'Regenerate key…' }).click();
    await modal.getByText('Anything still using the current key is refused').waitFor();
    await shot('regenerate-confirm');
    await modal.getByRole('button', { name: 'Regenerate', exact: true }).click();
    await page.locator('#new-key').waitFor();
    const fresh = await page.locator('#new-key').inputValue();
    assert.notEqual(fresh, minted);
    assert.match(await modal.innerText(), /cannot be shown again/);
    await shot('regenerated-key-shown-once');
    await modal.getByRole('button', { name: 'Done' }).click();
    await page.locator('#modal-backdrop').waitFor({ state: 'hidden' });
    assert.ok(!(await page.content()).includes(fresh));
    assert.equal(await proxyStatus(minted), 401);
    assert.equal(await proxyStatus(fresh), 200);
    minted = fresh;
  });

  await t.test('delete: a confirmation names the key; then the key is refused', async () => {
    const del = row('Reporting').getByRole('button', { name: 'Delete Reporting' });
    await del.click();
    assert.match(await modal.locator('#modal-title').innerText(), /Delete API key “Reporting”\?/);
    await shot('delete-key-confirm');
    // Cancel returns focus to the Delete button.
    await modal.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')), 'Delete Reporting');
    await del.click();
    await modal.getByRole('button', { name: 'Delete key' }).click();
    await page.locator('#modal-backdrop').waitFor({ state: 'hidden' });
    await row('Reporting').waitFor({ state: 'detached' });
    assert.equal(await proxyStatus(minted), 401);
    await shot('key-deleted');
  });

  await t.test('groups: create one, see its member count, rename it, delete it', async () => {
    await page.getByRole('button', { name: 'Create group' }).click();
    // A name that is taken: the API's 400 is shown in the form, which stays open.
    await modal.getByLabel('Group name').fill('analysts');
    await modal.getByRole('button', { name: 'Create' }).click();
    await modal.getByRole('alert').getByText('name: A group with that name already exists.').waitFor();
    await modal.getByLabel('Group name').fill('ops');
    await modal.getByRole('button', { name: 'Create' }).click();
    const ops = page.locator('#groups-body tr[data-name="ops"]');
    await ops.waitFor();
    assert.equal(await ops.locator('td.members').innerText(), '0');
    assert.equal(await page.locator('#groups-body tr[data-name="analysts"] td.members').innerText(), '2');
    assert.match(await page.locator('#groups-body tr[data-name="Administrators"]').innerText(), /Built in/);
    await shot('groups');
    // Rename: a name taken ignoring case is refused in the form; a free one is saved.
    await ops.getByRole('button', { name: 'Edit group ops' }).click();
    await modal.getByLabel('Group name').fill('ANALYSTS');
    await modal.getByRole('button', { name: 'Save' }).click();
    await modal.getByRole('alert').getByText('name: A group with that name already exists.').waitFor();
    await modal.getByLabel('Group name').fill('Operations');
    await modal.getByRole('button', { name: 'Save' }).click();
    const operations = page.locator('#groups-body tr[data-name="Operations"]');
    await operations.waitFor();
    await ops.waitFor({ state: 'detached' });
    await operations.getByRole('button', { name: 'Delete group Operations' }).click();
    assert.match(await modal.innerText(), /keys move to All Users/);
    await shot('delete-group-confirm');
    await modal.getByRole('button', { name: 'Delete group' }).click();
    await operations.waitFor({ state: 'detached' });
  });

  await t.test('narrow screen and dark mode', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('narrow-light');
    await page.emulateMedia({ colorScheme: 'dark' });
    await shot('narrow-dark');
    await page.setViewportSize({ width: 1280, height: 900 });
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(20, 23, 28)', 'dark background');
    await shot('wide-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  await t.test('a broken config file shows its error in the banner', async () => {
    cfg.rewrite(`${config(upstream.url)}  groups: [\n`);
    const banner = page.locator('#status-banner.banner-error');
    await banner.waitFor({ timeout: 15_000 });
    assert.match(await banner.innerText(), /The last reload of the config file failed/);
    assert.match(await page.locator('#reload-errors').innerText(), /config\.yml/);
    assert.equal(await banner.getAttribute('role'), 'alert');
    await shot('config-broken-banner');
    // The last good config keeps serving.
    assert.equal(await proxyStatus(ANALYST_KEY), 200);
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

/**
 * TLS on both listeners, with certificates the test makes: HTTPS through the
 * proxy (x-forwarded-proto says so), the admin page, /status, /metrics and the
 * management API over HTTPS, renewed certificate files put in place without a
 * restart (also in serving workers), a bad renewal leaving the old certificate
 * serving, TLS 1.2 at least, and clear errors at start.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import tls from 'node:tls';
import { copyFileSync, readFileSync, renameSync } from 'node:fs';
import { eventually, serveExpectingFailure, startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { makeCa, makeServerCert } from './helpers/tls.ts';

const KEY = 'kg_tls_admin_key_0123456789abcdef';

function config(upstream: string, tlsLines: string[]): string {
  return ['version: 1', 'config:', '  keygate:', `    upstream: ${upstream}`, ...tlsLines, '  api-keys:', '    - name: Admin API key', '      group: admin', `      key: ${KEY}`, ''].join('\n');
}

interface Answer {
  status: number;
  text: string;
  fingerprint: string;
  protocol: string | null;
}

function get(url: string, ca: string, opts: { method?: string; body?: string; key?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: opts.method ?? 'GET',
        ca,
        agent: false,
        headers: { ...(opts.key !== undefined ? { 'x-api-key': opts.key } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        const socket = res.socket as tls.TLSSocket;
        const fingerprint = socket.getPeerCertificate().fingerprint256;
        const protocol = socket.getProtocol();
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, fingerprint, protocol }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const https_ = (base: string): string => base.replace(/^http:/, 'https:');

test('HTTPS on the proxy and the admin listener, and a renewed certificate taken without a restart', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ proto: req.headers['x-forwarded-proto'], forwarded: req.headers.forwarded }));
  });
  const dir = tempConfig(t, '');
  const ca = makeCa(dir);
  const first = makeServerCert(dir, ca, 'first');
  copyFileSync(first.cert, dir.path('tls.crt'));
  copyFileSync(first.key, dir.path('tls.key'));
  // Relative paths: resolved against the config file's folder.
  dir.rewrite(config(up.url, ['    tls:', '      cert: tls.crt', '      key: tls.key']));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db, '--workers', '2'] });
  const proxy = https_(kg.proxy);
  const admin = https_(kg.admin);

  await t.test('the proxy answers over HTTPS, TLS 1.2 or later, and tells the upstream so', async () => {
    const r = await get(`${proxy}/api/x`, ca.pem, { key: KEY });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.fingerprint, first.fingerprint256);
    assert.ok(r.protocol === 'TLSv1.3' || r.protocol === 'TLSv1.2', String(r.protocol));
    const seen = JSON.parse(r.text) as { proto: string; forwarded: string };
    assert.equal(seen.proto, 'https');
    assert.match(seen.forwarded, /;proto=https;/);
    assert.equal((await get(`${proxy}/api/x`, ca.pem)).status, 401);
  });

  await t.test('a client offering only TLS 1.1, or plain HTTP, gets no answer', async () => {
    const u = new URL(proxy);
    const old = await new Promise<string>((resolve) => {
      // SECLEVEL=0: OpenSSL 3 would otherwise refuse TLS 1.1 on the client side, and the test would prove nothing about keygate.
      const s = tls.connect(
        { host: u.hostname, port: Number(u.port), ca: ca.pem, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' },
        () => resolve('connected'),
      );
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(old, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'keygate itself refuses TLS 1.1 with a protocol_version alert');
    const plain = await new Promise<string>((resolve) => {
      const req = http.get(`http://${u.host}/api/x`, { headers: { 'x-api-key': KEY } }, (res) => resolve(`status ${res.statusCode}`));
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.ok(!plain.startsWith('status 200'), `plain HTTP was served: ${plain}`);
  });

  await t.test('the admin page, /status, /metrics and the management API work over HTTPS', async () => {
    const page = await get(`${admin}/`, ca.pem);
    assert.equal(page.status, 200);
    assert.match(page.text, /<html/i);
    assert.equal((await get(`${admin}/status`, ca.pem)).status, 200);
    assert.match((await get(`${admin}/metrics`, ca.pem)).text, /^keygate_requests_total/m);
    const created = await get(`${admin}/api/api-key`, ca.pem, { method: 'POST', key: KEY, body: JSON.stringify({ name: 'over tls', group_id: 1 }) });
    assert.equal(created.status, 200, created.text);
    const made = (JSON.parse(created.text) as { unmasked_key: string }).unmasked_key;
    assert.equal((await get(`${proxy}/api/x`, ca.pem, { key: made })).status, 200);
  });

  await t.test('renewed files (a rename-over save, as cert-manager and certbot do) are served without a restart, by every worker', async () => {
    const second = makeServerCert(dir, ca, 'second');
    copyFileSync(second.key, dir.path('tls.key.new'));
    copyFileSync(second.cert, dir.path('tls.crt.new'));
    renameSync(dir.path('tls.key.new'), dir.path('tls.key'));
    renameSync(dir.path('tls.crt.new'), dir.path('tls.crt'));
    assert.ok(
      await eventually(async () => {
        const seen = new Set<string>();
        for (let i = 0; i < 12; i++) seen.add((await get(`${proxy}/api/x`, ca.pem, { key: KEY })).fingerprint);
        return seen.size === 1 && seen.has(second.fingerprint256);
      }),
      'the renewed certificate was never served by every worker',
    );
    assert.ok(await eventually(async () => (await get(`${admin}/healthz`, ca.pem)).fingerprint === second.fingerprint256), 'the admin listener kept the old certificate');
    assert.match(kg.stderr(), /"msg":"TLS certificate reloaded"/);
  });

  await t.test('a renewal whose key does not match its certificate changes nothing, and is reported', async () => {
    const third = makeServerCert(dir, ca, 'third');
    const fourth = makeServerCert(dir, ca, 'fourth');
    copyFileSync(third.cert, dir.path('tls.crt'));
    copyFileSync(fourth.key, dir.path('tls.key'));
    assert.ok(await eventually(() => /"msg":"TLS certificate reload failed: still serving the previous certificate"/.test(kg.stderr())));
    const r = await get(`${proxy}/api/x`, ca.pem, { key: KEY });
    assert.equal(r.status, 200);
    assert.notEqual(r.fingerprint, third.fingerprint256);
    // The key's contents never reach the log.
    const keyPem = readFileSync(fourth.key, 'utf8');
    const body = keyPem.split('\n').find((l) => l.length > 40) ?? '';
    assert.ok(body.length > 0 && !kg.stderr().includes(body), 'the private key reached the log');
    // Fixed: the matching key arrives, and the new pair is served.
    copyFileSync(third.key, dir.path('tls.key'));
    assert.ok(await eventually(async () => (await get(`${proxy}/api/x`, ca.pem, { key: KEY })).fingerprint === third.fingerprint256));
  });

  await t.test('stops cleanly', async () => {
    assert.equal(await kg.stop(), 0);
  });
});

test('admin_tls: false keeps the admin listener on plain HTTP while the proxy speaks TLS; --tls-cert/--tls-key set both', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, '');
  const ca = makeCa(dir);
  const pair = makeServerCert(dir, ca, 'pair');
  dir.rewrite(config(up.url, ['    tls:', `      cert: ${pair.cert}`, `      key: ${pair.key}`, '    admin_tls: false']));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  assert.equal((await get(`${https_(kg.proxy)}/x`, ca.pem, { key: KEY })).status, 200);
  assert.equal((await fetch(`${kg.admin}/healthz`)).status, 200);
  assert.equal(await kg.stop(), 0);

  const plainDir = tempConfig(t, config(up.url, []));
  const flagged = await startServe(t, plainDir.config, { args: ['--db', plainDir.db, '--tls-cert', pair.cert, '--tls-key', pair.key] });
  assert.equal((await get(`${https_(flagged.proxy)}/x`, ca.pem, { key: KEY })).status, 200);
  assert.equal((await get(`${https_(flagged.admin)}/healthz`, ca.pem)).status, 200);
  assert.equal(await flagged.stop(), 0);
});

test('a certificate that cannot be used stops serve at start, naming the file and never showing the key', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, '');
  const ca = makeCa(dir);
  const a = makeServerCert(dir, ca, 'a');
  const b = makeServerCert(dir, ca, 'b');
  dir.rewrite(config(up.url, ['    tls:', `      cert: ${a.cert}`, `      key: ${b.key}`]));
  const mismatch = await serveExpectingFailure(dir.config);
  assert.equal(mismatch.code, 1, mismatch.stderr);
  assert.match(mismatch.stderr, new RegExp(`${b.key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the key does not go with`));
  assert.doesNotMatch(mismatch.stderr, /PRIVATE KEY/);
  dir.rewrite(config(up.url, ['    tls:', `      cert: ${dir.path('missing.crt')}`, `      key: ${b.key}`]));
  const missing = await serveExpectingFailure(dir.config);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /missing\.crt: cannot read the TLS certificate \(file not found\)/);
});

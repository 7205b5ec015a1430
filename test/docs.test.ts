/**
 * The docs cannot drift from the code: docs/configuration.md is what the
 * generator makes of the schema today, and the hand-written pages name every
 * command, flag, environment variable, error code and metric that the code has.
 * Relative links between the pages resolve, anchors included.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { OUTPUT_FILE, readSchema, renderConfigDocs } from '../scripts/gen-config-docs.ts';
import { DEFAULT_SETTINGS } from '../src/config/defaults.ts';
import type { Settings } from '../src/config/types.ts';
import { Metrics } from '../src/admin/metrics.ts';
import { COMMANDS, commandHelp, HELP, keysHelp, type CommandName } from '../src/cli/help.ts';
import { REPO } from './helpers/cli.ts';

const doc = (name: string): string => readFileSync(path.join(REPO, 'docs', name), 'utf8');
const source = (file: string): string => readFileSync(path.join(REPO, file), 'utf8');

test('docs/configuration.md is what scripts/gen-config-docs.ts makes of the schema (run `npm run docs`)', () => {
  const expected = renderConfigDocs(readSchema());
  const actual = readFileSync(OUTPUT_FILE, 'utf8');
  if (actual !== expected) {
    const a = actual.split('\n');
    const e = expected.split('\n');
    const line = e.findIndex((l, i) => l !== a[i]);
    assert.fail(
      `docs/configuration.md is stale: regenerate it with \`npm run docs\`.\n` +
        `first difference at line ${line + 1}:\n  file:      ${JSON.stringify(a[line])}\n  generated: ${JSON.stringify(e[line])}`,
    );
  }
});

test('the defaults that the schema\'s descriptions state are the ones in src/config/defaults.ts', () => {
  const keygate = (readSchema().definitions?.keygate?.properties ?? {}) as Record<string, { description?: string }>;
  assert.ok(Object.keys(keygate).length > 0);
  for (const [name, s] of Object.entries(keygate)) {
    const value = DEFAULT_SETTINGS[name.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()) as keyof Settings];
    if (value === null || Array.isArray(value) || !/\bDefault\b/.test(s.description ?? '')) continue;
    assert.ok(s.description?.includes(`Default ${String(value)}`), `keygate.${name}: the schema says "${s.description}", defaults.ts says ${String(value)}`);
  }
});

test('docs/cli.md covers every command, flag and environment variable', () => {
  const cli = doc('cli.md');
  const commands = [...HELP.matchAll(/^ {2}(validate|plan|apply|serve|keys \w+|schema)\b/gm)].map((m) => m[1] as string);
  assert.ok(commands.length >= 8, commands.join(', '));
  for (const c of commands) assert.ok(cli.includes(`## \`keygate ${c}\``), `a section for keygate ${c}`);
  const helps = [HELP, keysHelp(), ...(Object.keys(COMMANDS) as CommandName[]).map(commandHelp)].join('\n');
  for (const flag of new Set([...helps.matchAll(/(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b/g)].map((m) => m[1] as string))) {
    assert.ok(cli.includes(`\`${flag}`) || cli.includes(` ${flag} `) || cli.includes(`${flag}]`), `docs/cli.md mentions ${flag}`);
  }
  const envVars = new Set<string>();
  for (const dir of ['src/cli', 'src/config', 'src/daemon']) {
    for (const f of readdirSync(path.join(REPO, dir)).filter((n) => n.endsWith('.ts'))) {
      for (const m of source(`${dir}/${f}`).matchAll(/\benv\.([A-Z][A-Z0-9_]+)/g)) envVars.add(m[1] as string);
    }
  }
  assert.ok(envVars.has('KEYGATE_CONFIG') && envVars.has('KEYGATE_DB'));
  for (const name of envVars) assert.ok(cli.includes(`\`${name}\``), `docs/cli.md documents ${name}`);
});

test('docs/cli.md shows each command\'s synopsis exactly as its --help does', () => {
  const cli = doc('cli.md');
  for (const name of Object.keys(COMMANDS) as CommandName[]) {
    const section = cli.indexOf(`## \`keygate ${name}\``);
    assert.ok(section !== -1, `a section for keygate ${name}`);
    const synopsis = /```text\n([^\n]*)\n```/.exec(cli.slice(section))?.[1];
    assert.equal(synopsis, COMMANDS[name].usage, `the synopsis of keygate ${name} in docs/cli.md`);
    assert.ok(commandHelp(name).startsWith(`Usage: ${COMMANDS[name].usage}\n`));
  }
});

test('the admin page is in the README\'s list of docs and in the migration guide\'s mapping table', () => {
  const readme = source('README.md');
  const docsList = readme.slice(readme.indexOf('## Documentation'), readme.indexOf('\n## ', readme.indexOf('## Documentation') + 1));
  assert.match(docsList, /\[docs\/admin\.md\]\(docs\/admin\.md\): the admin page/);
  const guide = doc('migrating-from-metabase.md');
  const row = guide.split('\n').find((l) => l.startsWith('| Admin → Settings → Authentication → API Keys |'));
  assert.match(row ?? '', /\[admin page\]\(admin\.md#the-admin-page\)/);
});

test('docs/http.md names every error code of the proxy, and their statuses', () => {
  const http = doc('http.md');
  const respond = source('src/proxy/respond.ts');
  const table = /const MESSAGES[^{]*\{([\s\S]*?)\n\};/.exec(respond)?.[1] ?? '';
  const codes = [...table.matchAll(/^\s+(\w+):/gm)].map((m) => m[1] as string);
  assert.ok(codes.length >= 9, codes.join(', '));
  const admin = doc('admin.md');
  for (const code of codes) {
    // not_ready is the admin listener's /readyz answer, not a proxy refusal.
    assert.ok(http.includes(`\`${code}\``) || admin.includes(`"${code}"`), `the docs name ${code}`);
  }
  for (const [status, code] of [
    [400, 'duplicate_api_key'],
    [400, 'bad_request'],
    [401, 'missing_api_key'],
    [401, 'invalid_api_key'],
    [403, 'forbidden'],
    [429, 'too_many_requests'],
    [502, 'bad_gateway'],
    [504, 'gateway_timeout'],
    [508, 'loop_detected'],
  ] as const) {
    assert.match(http, new RegExp(`^\\| ${status} \\| \`${code}\` \\|`, 'm'), `${status} ${code} in the table`);
  }
  assert.match(http, /WWW-Authenticate/);
  assert.match(http, /Retry-After/);
});

test('docs/admin.md names every metric, and the management API page every error of the admin listener', async () => {
  const admin = doc('admin.md');
  const metrics = new Metrics();
  const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
  assert.ok(names.includes('keygate_requests_total'));
  for (const name of names) assert.ok(admin.includes(`\`${name}\``), `docs/admin.md names ${name}`);
  const management = doc('management-api.md');
  for (const file of ['src/admin/management.ts', 'src/admin/server.ts', 'src/control/api.ts', 'src/control/plane.ts']) {
    for (const m of source(file).matchAll(/error: '([a-z_]+)'/g)) {
      const code = m[1] as string;
      assert.ok(management.includes(code) || admin.includes(code), `the docs name ${code} (${file})`);
    }
  }
});

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  const text = markdown.replace(/^```[\s\S]*?^```$/gm, '');
  for (const m of text.matchAll(/^#{1,6} (.+)$/gm)) {
    const base = (m[1] as string)
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

function markdownFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...markdownFiles(p));
    else if (e.name.endsWith('.md')) out.push(p);
  }
  return out;
}

test('relative links in README.md, docs/ and the examples\' READMEs resolve, anchors included', () => {
  const files = [
    path.join(REPO, 'README.md'),
    ...markdownFiles(path.join(REPO, 'docs')),
    ...['gitops', 'docker', 'kubernetes', 'systemd', 'metabase'].flatMap((d) => markdownFiles(path.join(REPO, 'examples', d))),
  ];
  const problems: string[] = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const link = m[1] as string;
      if (/^[a-z]+:/.test(link)) continue;
      const [target, anchor] = link.split('#') as [string, string | undefined];
      const resolved = target === '' ? file : path.resolve(path.dirname(file), target);
      if (!existsSync(resolved)) {
        problems.push(`${path.relative(REPO, file)}: ${link} (no such file)`);
        continue;
      }
      if (anchor !== undefined && resolved.endsWith('.md') && !anchors(readFileSync(resolved, 'utf8')).has(anchor)) {
        problems.push(`${path.relative(REPO, file)}: ${link} (no such heading)`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

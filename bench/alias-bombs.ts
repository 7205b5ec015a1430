/**
 * YAML alias bombs against the config loader: how long a refusal takes, and
 * the heap it needs. test/hostile-config.test.ts proves each is refused (a
 * clear error, no expansion); the time it takes is a figure for this machine,
 * measured here, never asserted in a test.
 *
 *   node --expose-gc --import tsx bench/alias-bombs.ts [--no-write]
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { loadConfigBytes } from '../src/config/load.ts';
import { updateResults } from './results.ts';
import { billionLaughs } from '../test/helpers/config.ts';

const { values } = parseArgs({ options: { 'no-write': { type: 'boolean' } } });

const BASE = `version: 1
config:
  keygate:
    upstream: http://127.0.0.1:3000
  settings:
    site-name: Bombs
  groups:
    - name: writers
  api-keys:
    - name: Admin API key
      group: admin
      key: mb_bombAdminKey0123456789
`;

const big = 'x'.repeat(1_000_000);
const BOMBS: Array<[string, string]> = [
  ['billion laughs, 9 levels × 9, at the top level', `${billionLaughs(9, 9)}\n${BASE}`],
  ["billion laughs in Metabase's settings section", BASE.replace('  settings:\n', `  settings:\n${billionLaughs(9, 9).replace(/^/gm, '    ')}\n`)],
  ['20,000 aliases of one list', `big: &big [1, 2, 3]\nwide: [${Array(20_000).fill('*big').join(', ')}]\n${BASE}`],
  ['5,000 aliases of a 1 MB scalar', BASE.replace('    - name: writers\n', `    - name: writers\n      description: &big ${big}\n${Array.from({ length: 5000 }, (_, i) => `    - name: copy-${i}\n      description: *big\n`).join('')}`)],
  ['2,000 aliases of 2,000 {{env}} templates', BASE.replace('    - name: writers\n', `    - name: writers\n      description: &t "${'{{env BIG}}'.repeat(2000)}"\n${Array.from({ length: 2000 }, (_, i) => `    - name: t${i}\n      description: *t\n`).join('')}`)],
];

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const rows: string[] = [];
for (const [label, text] of BOMBS) {
  const bytes = Buffer.from(text);
  const times: number[] = [];
  let heapPeak = 0;
  for (let run = 0; run < 5; run++) {
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const r = loadConfigBytes(bytes, '/bench/config.yml', { env: { BIG: 'b'.repeat(1000) }, displayName: 'config.yml' });
    times.push(performance.now() - t0);
    heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed - heap0);
    if (r.ok || !r.errors.some((d) => /alias/i.test(d.message))) throw new Error(`${label}: not refused for its aliases`);
  }
  times.sort((a, b) => a - b);
  rows.push(`| ${label} | ${Math.round(bytes.length / 1024).toLocaleString('en-US')} | ${times[2]?.toFixed(0)} | ${times[0]?.toFixed(0)} | ${(heapPeak / 1048576).toFixed(0)} |`);
  process.stderr.write(`${label}: median ${times[2]?.toFixed(0)} ms\n`);
}

const section = [
  '## Alias bombs',
  '',
  'Command: `node --expose-gc --import tsx bench/alias-bombs.ts`',
  '',
  `- Date: ${new Date().toISOString()}; \`nproc\` = ${os.availableParallelism()}, ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}`,
  '- Each bomb is loaded with `loadConfigBytes` 5 times; every one is refused with an error about aliases (the limit is 100 alias expansions per document). Heap: growth of the used heap right after the load, from a collected start (garbage included).',
  '',
  '| bomb | file KiB | median ms | best ms | heap growth MB |',
  '|---|---:|---:|---:|---:|',
  ...rows,
].join('\n');
process.stdout.write(`${section}\n`);
if (values['no-write'] !== true) updateResults(section);

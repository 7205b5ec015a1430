/**
 * Path normalisation and rule matching against long and adversarial paths:
 * the time per call should grow linearly with the path's length (the ns per
 * character column stays flat), whatever the path is made of. Before the
 * scanner in src/rules/path.ts, the "letters, then a character outside the
 * fast-path class" shape doubled with every extra letter (24 letters: 6.6 s).
 *
 *   node --import tsx bench/paths.ts [--max 8192] [--no-write]
 *
 * Each cell: best of 5 runs of enough calls to take ~40 ms. Figures are for
 * this machine; what matters is that ns per character stays flat along a row.
 * Writes its section of bench/RESULTS.md unless --no-write.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { updateResults } from './results.ts';
import { normalizeTarget } from '../src/rules/path.ts';
import { compileRules, rulesAllow } from '../src/rules/match.ts';

const { values } = parseArgs({ options: { max: { type: 'string', default: '8192' }, 'no-write': { type: 'boolean' } } });
const MAX = Number(values.max);

/** Builders of a path of about `n` characters. */
const SHAPES: Record<string, (n: number) => string> = {
  'plain letters': (n) => `/api/card/${'a'.repeat(n - 10)}`,
  'letters then "." (the old blow-up)': (n) => `/api/card/${'a'.repeat(n - 15)}.json`,
  'letters then \'"\' (the slow path)': (n) => `/api/card/${'a'.repeat(n - 11)}"`,
  'letters then a space (refused)': (n) => `/api/card/${'a'.repeat(n - 11)} `,
  'one-character segments': (n) => `/${'a/'.repeat(Math.floor(n / 2) - 1)}a`,
  'escapes %41': (n) => `/${'%41'.repeat(Math.floor(n / 3))}`,
  'dot segments ./ and x/../': (n) => `/${'x/../'.repeat(Math.floor(n / 10))}${'./'.repeat(Math.floor(n / 4) - 4)}end`,
  'empty segments //': (n) => `/${'a//'.repeat(Math.floor(n / 3))}`,
};

// A rule set with several ** (the worst case for matching): every path is checked against it.
const RULES = compileRules([{ methods: ['GET'], paths: ['/**/a/**/b/**/c/**/d', '/api/card/**', '/**/*/*/z'] }]);

function bestNsPerCall(fn: () => void): number {
  let calls = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    if (Number(process.hrtime.bigint() - t0) > 20e6) break;
    calls *= 2;
  }
  calls = Math.max(1, calls * 2);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / calls);
  }
  return best;
}

const lengths: number[] = [];
for (let n = 256; n <= MAX; n *= 2) lengths.push(n);

const out: string[] = [];
out.push(`| shape | ${lengths.map((n) => `${n} chars: µs (ns/char)`).join(' | ')} |`, `|---|${lengths.map(() => '---:').join('|')}|`);
process.stdout.write(`normalizeTarget + rulesAllow (3 rules, up to four ** each), best of 5\n\n${out.join('\n')}\n`);
for (const [name, build] of Object.entries(SHAPES)) {
  const cells = lengths.map((n) => {
    const path = build(n);
    const ns = bestNsPerCall(() => {
      const r = normalizeTarget(path);
      if (r.ok) rulesAllow(RULES, 'GET', r.segments);
    });
    return `${(ns / 1000).toFixed(2)} (${(ns / path.length).toFixed(1)})`;
  });
  const row = `| ${name} | ${cells.join(' | ')} |`;
  out.push(row);
  process.stdout.write(`${row}\n`);
}

if (values['no-write'] !== true) {
  updateResults(
    [
      '## Paths',
      '',
      'Command: `node --import tsx bench/paths.ts`',
      '',
      `- Date: ${new Date().toISOString()}`,
      `- Machine: \`nproc\` = ${os.cpus().length}, ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}`,
      '- `normalizeTarget` + `rulesAllow` on one path against three rules with up to four `**` each; best of 5. The time per call grows',
      '  linearly with the path (ns per character stays within the machine\'s noise along each row). Before the hand-written scanner, the',
      '  "letters then ." shape doubled with each extra letter (`/api/card/quarterly_revenue_report.json`: 6.6 s); 8192 characters is the',
      '  longest path keygate accepts (414 `uri_too_long` beyond).',
      '',
      ...out,
    ].join('\n'),
  );
}

/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self and total time
 * per function, and self time per file, so that hot spots can be named
 * without a browser.
 *
 *   node --import tsx bench/cpuprofile-top.ts FILE.cpuprofile [--top 40] [--filter src/] [--requests N]
 *
 * With --requests (how many requests the process served while profiled), each
 * row also shows µs per request. Functions are keyed by name and file: tsx's
 * output keeps no line numbers worth showing.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '40' }, filter: { type: 'string', default: '' }, requests: { type: 'string', default: '0' } },
});
const top = Number(values.top);
const prof = JSON.parse(readFileSync(positionals[0] as string, 'utf8')) as Profile;

const byId = new Map<number, Node>();
for (const n of prof.nodes) byId.set(n.id, n);
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Time per sample: the delta that follows it (V8's convention is the delta before; either is fine at this scale).
const selfUs = new Map<number, number>();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i] as number;
  const dt = prof.timeDeltas[i + 1] ?? 0;
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
}
const totalUs = prof.endTime - prof.startTime;

const short = (url: string): string => url.replace(/^file:\/\/.*?\/(node_modules|src|bench)\//, '$1/').replace(/^node:/, 'node:');
const label = (n: Node): string => {
  const f = n.callFrame;
  return `${f.functionName || '(anonymous)'} ${short(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
};

const self = new Map<string, number>();
const total = new Map<string, number>();
const fileSelf = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id) as Node;
  const l = label(n);
  self.set(l, (self.get(l) ?? 0) + us);
  const file = short(n.callFrame.url) || `(${n.callFrame.functionName})`;
  fileSelf.set(file, (fileSelf.get(file) ?? 0) + us);
  // Inclusive: each distinct function on the stack once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const cl = label(byId.get(cur) as Node);
    if (seen.has(cl)) continue;
    seen.add(cl);
    total.set(cl, (total.get(cl) ?? 0) + us);
  }
}

const requests = Number(values.requests);
const pct = (us: number): string =>
  `${((100 * us) / totalUs).toFixed(1).padStart(5)}%${requests > 0 ? `  ${(us / requests).toFixed(2).padStart(6)} µs/req` : ''}`;
const show = (title: string, m: Map<string, number>): void => {
  console.log(`\n== ${title} (of ${(totalUs / 1e6).toFixed(2)} s profiled)`);
  const rows = [...m].filter(([k]) => values.filter === '' || k.includes(values.filter)).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [k, us] of rows) console.log(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`);
};
show('self time by function', self);
show('total time by function', total);
show('self time by file', fileSelf);

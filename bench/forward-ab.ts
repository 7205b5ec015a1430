/**
 * Paired A/B of `src/proxy/forward.ts` from two checkouts, in one process: the
 * two `forward()` functions are alternated in batches (A B B A) through one
 * undici Pool to a keep-alive upstream running in a child process, and the
 * process's CPU time per request is compared. Only forwarding is measured
 * (undici and the handler), not Node's HTTP server or keygate's checks, so it
 * is steadier than the wrk runs on a busy machine.
 *
 *   node --import tsx bench/forward-ab.ts --old DIR [--new DIR] [--rounds 15] [--batch 4000]
 *
 * DIR: a checkout of the repository (a scratch copy with node_modules symlinked).
 */
import { fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values } = parseArgs({
  options: { old: { type: 'string' }, new: { type: 'string' }, rounds: { type: 'string', default: '15' }, batch: { type: 'string', default: '4000' } },
});
if (values.old === undefined) throw new Error('--old DIR is required');
const NEW = path.resolve(values.new ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const OLD = path.resolve(values.old);
const ROUNDS = Number(values.rounds);
const BATCH = Number(values.batch);
const IN_FLIGHT = 32;

type ForwardFn = (
  dispatcher: Pool,
  req: unknown,
  res: unknown,
  path: string,
  headers: string[],
  hasBody: boolean,
  via: string,
  timeoutMs: number,
  ctx: null,
  done: () => void,
) => void;

const load = async (root: string): Promise<ForwardFn> =>
  ((await import(pathToFileURL(path.join(root, 'src/proxy/forward.ts')).href)) as { forward: ForwardFn }).forward;

/** The upstream, in its own process so that its CPU time is not counted. */
const upstreamFile = path.join(os.tmpdir(), `keygate-forward-ab-upstream-${process.pid}.mjs`);
writeFileSync(
  upstreamFile,
  `import http from 'node:http';
const body = JSON.stringify({ id: 1, name: 'bench card', ok: true });
const s = http.createServer((req, res) => { req.resume(); res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }); res.end(body); });
s.keepAliveTimeout = 60000;
s.listen(0, '127.0.0.1', () => process.send(s.address().port));
`,
);
const child = fork(upstreamFile);
const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));

/** Just what forward() uses of a ServerResponse. */
class FakeResponse extends EventEmitter {
  statusCode = 200;
  headersSent = false;
  writableFinished = false;
  writeHead(status: number): this {
    this.statusCode = status;
    this.headersSent = true;
    return this;
  }
  write(): boolean {
    return true;
  }
  end(): void {
    this.writableFinished = true;
    this.emit('close');
  }
}

const pool = new Pool(`http://127.0.0.1:${port}`, { connections: IN_FLIGHT, pipelining: 1, keepAliveTimeout: 60_000 });
const req = { method: 'GET' };
const headers = ['host', '127.0.0.1', 'x-api-key-id', '42', 'x-api-key-name', 'bench', 'x-api-key-group', 'analysts', 'x-forwarded-for', '127.0.0.1', 'via', '1.1 keygate-ab'];

async function batch(forward: ForwardFn): Promise<number> {
  const c0 = process.cpuUsage();
  await new Promise<void>((resolve) => {
    let sent = 0;
    let done = 0;
    let inFlight = 0;
    const next = (): void => {
      while (inFlight < IN_FLIGHT && sent < BATCH) {
        sent++;
        inFlight++;
        forward(pool, req, new FakeResponse(), '/api/card/1', headers.slice(), false, '1.1 keygate-ab', 30_000, null, () => {
          inFlight--;
          if (++done === BATCH) resolve();
          else next();
        });
      }
    };
    next();
  });
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / BATCH;
}

try {
  const [oldForward, newForward] = [await load(OLD), await load(NEW)];
  for (let i = 0; i < 3; i++) {
    await batch(oldForward);
    await batch(newForward);
  }
  const ratios: number[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const a = await batch(oldForward);
    const b = await batch(newForward);
    const b2 = await batch(newForward);
    const a2 = await batch(oldForward);
    ratios.push((b + b2) / (a + a2));
    process.stdout.write(`round ${r}: old ${((a + a2) / 2).toFixed(1)} µs/req, new ${((b + b2) / 2).toFixed(1)} µs/req, new/old ${((b + b2) / (a + a2)).toFixed(3)}\n`);
  }
  ratios.sort((x, y) => x - y);
  process.stdout.write(`new (${NEW}) costs ${(ratios[Math.floor(ratios.length / 2)] as number).toFixed(3)}× old (${OLD}) CPU per forwarded request (median of ${ROUNDS} rounds)\n`);
} finally {
  await pool.close();
  child.kill();
  rmSync(upstreamFile, { force: true });
}

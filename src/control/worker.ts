/**
 * The control plane's worker thread: takes calls from the serving thread,
 * runs them on the one ControlPlane, and posts back replies, table updates and
 * log lines in one ordered stream. Polls the store's feed for writes made
 * elsewhere.
 */
import { getHeapStatistics } from 'node:v8';
import { parentPort } from 'node:worker_threads';
import { postingLog } from './log.ts';
import { ControlPlane } from './plane.ts';
import type { ApiArgs, FromControl, ReconcileArgs, StartArgs, ToControl } from './protocol.ts';

const port = parentPort;
if (port === null) throw new Error('control/worker.ts runs as a worker thread');

const post = (m: FromControl, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);
const plane = new ControlPlane({ log: postingLog(post), post });
let poll: NodeJS.Timeout | null = null;

async function run(msg: ToControl): Promise<{ value: unknown; transfer?: ArrayBuffer[] }> {
  switch (msg.name) {
    case 'start': {
      const a = msg.args as StartArgs;
      const value = await plane.start(a);
      if (value.kind === 'started' && a.feedPollMs > 0) poll = setInterval(() => void plane.pollFeed(), a.feedPollMs);
      return { value };
    }
    case 'reconcile':
      return { value: await plane.reconcile(msg.args as ReconcileArgs) };
    case 'api': {
      const value = await plane.runApi(msg.args as ApiArgs);
      return value.body === null ? { value } : { value, transfer: [value.body.buffer as ArrayBuffer] };
    }
    case 'table': {
      const value = await plane.wholeTable();
      return { value, transfer: value.slices.map((s) => s.buffer as ArrayBuffer) };
    }
    case 'lastUsed':
      return { value: await plane.lastUsed((msg.args as { uses: Array<[number, number]> }).uses) };
    case 'close':
      if (poll !== null) clearInterval(poll);
      return { value: await plane.close() };
  }
}

port.on('message', (msg: ToControl) => {
  void run(msg).then(
    ({ value, transfer }) => {
      post({ t: 'reply', id: msg.id, ok: true, value }, transfer);
      post({ t: 'heap', bytes: getHeapStatistics().used_heap_size });
      if (msg.name === 'close') port.close();
    },
    (err: unknown) => {
      const e = err as { code?: string; message?: string };
      post({ t: 'reply', id: msg.id, ok: false, error: { code: e.code ?? 'KG_ERR_CONTROL', message: e.message ?? String(err) } });
    },
  );
});

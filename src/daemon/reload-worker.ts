/**
 * The reload worker: reads, checks and reconciles the config off the serving
 * thread, with its own database connection, and posts the outcome back. The
 * first message (`start`) also finds the database, which the file may name.
 */
import { getHeapStatistics } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { loadConfigFile } from '../config/load.ts';
import { locateDatabase } from '../config/locate.ts';
import { openDatabase, type DB } from '../store/db.ts';
import { runReload } from './reload.ts';
import type { WorkerRequest, WorkerReply } from './reloader.ts';

let db: DB | null = (workerData as { dbFile: string | null }).dbFile === null ? null : openDatabase((workerData as { dbFile: string }).dbFile);

function handle(msg: WorkerRequest): WorkerReply['result'] {
  switch (msg.kind) {
    case 'start': {
      const loaded = loadConfigFile(msg.file, { env: msg.env });
      if (!loaded.ok) return { kind: 'invalid', diagnostics: loaded.errors };
      const dbFile = locateDatabase(msg.dbFlag, loaded.desired.settings.database, msg.file, msg.env, msg.cwd);
      db?.close();
      db = openDatabase(dbFile);
      return { kind: 'started', dbFile, outcome: runReload(db, { file: msg.file, skipIfSha256: null, env: msg.env }) };
    }
    case 'reload':
      if (db === null) throw new Error('reload before start');
      return { kind: 'reloaded', outcome: runReload(db, msg.request) };
  }
}

parentPort?.on('message', (msg: WorkerRequest | { kind: 'close' }) => {
  if (msg.kind === 'close') {
    db?.close();
    db = null;
    parentPort?.close();
    return;
  }
  let result: WorkerReply['result'];
  try {
    result = handle(msg);
  } catch (err) {
    result = { kind: 'crashed', error: (err as Error).message };
  }
  const reply: WorkerReply = { id: msg.id, result, heapBytes: getHeapStatistics().total_heap_size };
  parentPort?.postMessage(reply);
});

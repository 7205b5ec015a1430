/**
 * The reload worker: reads, checks and reconciles the config off the serving
 * thread, with its own database connection, and posts the outcome back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openDatabase } from '../store/db.ts';
import { runReload, type ReloadRequest } from './reload.ts';

interface Data {
  dbFile: string;
}

const { dbFile } = workerData as Data;
const db = openDatabase(dbFile);

parentPort?.on('message', (msg: { id: number; request: ReloadRequest } | { close: true }) => {
  if ('close' in msg) {
    db.close();
    parentPort?.close();
    return;
  }
  const outcome = runReload(db, msg.request);
  parentPort?.postMessage({ id: msg.id, outcome });
});

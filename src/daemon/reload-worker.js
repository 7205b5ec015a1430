// Entry of the reload worker thread: registers tsx for this thread, then runs the TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./reload-worker.ts');

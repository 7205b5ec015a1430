// Entry of a serving worker process when keygate runs from its TypeScript sources (tests,
// tsx): registers tsx for this process, then runs serve-worker.ts. A build compiles
// serve-worker.ts to serve-worker.js in this one's place.
import { register } from 'tsx/esm/api';

register();
await import('./serve-worker.ts');

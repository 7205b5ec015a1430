// Entry of the control plane's worker thread when keygate runs from its TypeScript sources
// (tests, tsx): registers tsx for this thread, then runs worker.ts. A build compiles
// worker.ts to worker.js in this one's place.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');

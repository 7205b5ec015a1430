import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { Reloader } from '../src/daemon/reloader.ts';
import { tempDir } from './helpers/tmp.ts';
import { eventually } from './helpers/serve.ts';

const file = (keys: string[]): string =>
  `version: 1\nconfig:\n  groups:\n    - name: readers\n  api-keys:\n${keys.map((k) => `    - name: ${k}\n      group: readers\n      key: kg_reloader_test_${k}_0123456789abcdef\n`).join('')}`;

test('the reload worker runs only while there is work: it closes when idle and the next reload starts a new one', async (t) => {
  const tmp = tempDir(t);
  const config = tmp.write('config.yml', file(['a']));
  const reloader = new Reloader(100);
  t.after(() => reloader.close());

  const started = await reloader.start(config, tmp.path('keygate.db'), {}, tmp.dir);
  assert.equal(started.kind, 'started');
  assert.equal(reloader.running, true, 'a worker did the first apply');
  assert.ok(await eventually(() => !reloader.running, 3000), 'the idle worker was not closed');

  // A later edit: a fresh worker, which knows the database from the first start.
  writeFileSync(config, file(['a', 'b']));
  const outcome = await reloader.run({ file: config, skipIfSha256: null, env: {} });
  assert.equal(outcome.kind, 'applied');
  assert.deepEqual(outcome.kind === 'applied' ? outcome.state.keys.map((k) => k.name).sort() : [], ['a', 'b']);
  assert.equal(reloader.running, true);

  // Reloads in quick succession share the running worker, one at a time, and each gets its own answer.
  writeFileSync(config, file(['a', 'b', 'c']));
  const [first, second] = await Promise.all([
    reloader.run({ file: config, skipIfSha256: null, env: {} }),
    reloader.run({ file: config, skipIfSha256: null, env: {} }),
  ]);
  assert.equal(first.kind, 'applied');
  assert.equal(second.kind, 'applied');
  assert.deepEqual([first.kind === 'applied' && first.changed, second.kind === 'applied' && second.changed], [['create key "c"'], []]);
  assert.ok(await eventually(() => !reloader.running, 3000));
});

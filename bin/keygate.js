#!/usr/bin/env node
// `npx keygate` needs no build step: the sources are compiled into build/ on
// the first run and whenever they change (bin/build.js). Where that cannot be
// done (a read-only install without a build, or KEYGATE_NO_BUILD=1), the
// TypeScript runs through tsx instead: slower, same behaviour.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function load() {
  if (process.env.KEYGATE_NO_BUILD !== '1') {
    try {
      const { ensureBuild } = await import('./build.js');
      return await import(pathToFileURL(await ensureBuild(root)).href);
    } catch (err) {
      if (process.env.KEYGATE_DEBUG_BUILD === '1') process.stderr.write(`keygate: running through tsx: ${err.message}\n`);
    }
  }
  const { register } = await import('tsx/esm/api');
  register();
  return import('../src/cli/main.ts');
}

const { main } = await load();
process.exitCode = await main(process.argv.slice(2));

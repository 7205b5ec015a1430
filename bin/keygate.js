#!/usr/bin/env node
// Runs keygate's compiled build: build/<id>/, made from the current sources by
// `npm install` (the `prepare` script runs bin/build.js) or shipped in the
// published package (`prepack`). Nothing is compiled here in an installed
// package, and nothing is ever removed here. In a git checkout, sources that
// were edited since the last build are compiled into a new build/<id>/ first,
// beside the ones that running processes still use. Where there is no build of
// the current sources and none can be made (an installed package whose sources
// were edited, or installed with scripts disabled; KEYGATE_NO_BUILD=1), the
// TypeScript runs through tsx instead: slower, same behaviour.
// docs/cli.md, "How keygate runs".
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function debug(message) {
  if (process.env.KEYGATE_DEBUG_BUILD === '1') process.stderr.write(`keygate: ${message}\n`);
}

async function load() {
  if (process.env.KEYGATE_NO_BUILD !== '1') {
    try {
      const { compileBuild, currentBuild, holdBuild, isCheckout } = await import('./build.js');
      const build = currentBuild(root);
      if (!build.exists && !isCheckout(root)) {
        throw new Error(`no build of these sources (${path.relative(root, build.dir)}): they were edited after the install, or install scripts were skipped (npm run build makes one)`);
      }
      if (!build.exists) {
        await compileBuild(root, build);
        debug(`compiled the edited sources into ${path.relative(root, build.dir)}`);
      }
      holdBuild(build);
      return await import(pathToFileURL(build.main).href);
    } catch (err) {
      debug(`running through tsx: ${err.message}`);
    }
  }
  const { register } = await import('tsx/esm/api');
  register();
  return import('../src/cli/main.ts');
}

const { main } = await load();
process.exitCode = await main(process.argv.slice(2));

// keygate's TypeScript, compiled once into build/<hash>/ so that the daemon
// and the CLI run plain JavaScript: no transpiler thread at run time (about
// 45 MB less RSS and about 5% less CPU per proxied request, bench/RESULTS.md),
// and faster start-up. There is no build step to remember: `ensureBuild` runs
// on every start, hashes the sources (a few milliseconds), and compiles them
// (with esbuild, file by file, about 0.3 s) only when build/<hash>/ is missing.
//
// A build directory is never changed once it exists: it is compiled into a
// temporary folder and renamed into place whole, so a process never sees half
// a build, and a running daemon keeps loading its reload worker from the same
// code it started with even after the sources change and another command
// compiles them anew. The newest KEEP builds are kept; older ones are removed.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** Bumped when the way files are compiled changes, so that old builds are redone. */
const FORMAT = 'keygate-build-2';
/** Builds kept: the current one and the ones before it that running daemons may still use. */
const KEEP = 4;

function sources(dir, out = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) sources(p, out);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(p);
  }
  return out.sort();
}

/** `./x.ts` → `./x.js` in import and export specifiers (esbuild leaves them as written). */
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"'\n]*?)\.ts\2/g;

function compile(transformSync, srcDir, files, texts, root, into) {
  files.forEach((file, i) => {
    const { code } = transformSync(texts[i].toString('utf8'), {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      sourcefile: path.relative(root, file),
      sourcemap: 'inline',
    });
    const target = path.join(into, path.relative(srcDir, file).replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, code.replace(SPECIFIER, '$1$2$3.js$2'));
  });
}

/** Removes all but the newest KEEP builds, and temporary folders left by a process that died. */
function prune(buildDir, current) {
  const now = Date.now();
  const builds = [];
  for (const name of readdirSync(buildDir)) {
    const p = path.join(buildDir, name);
    let mtime;
    try {
      mtime = statSync(p).mtimeMs;
    } catch {
      continue; // removed meanwhile by another process
    }
    if (name.startsWith('.tmp-')) {
      if (now - mtime > 3_600_000) rmSync(p, { recursive: true, force: true });
    } else if (/^[0-9a-f]{16}$/.test(name) && p !== current) builds.push({ p, mtime });
  }
  builds.sort((a, b) => b.mtime - a.mtime);
  for (const old of builds.slice(KEEP - 1)) rmSync(old.p, { recursive: true, force: true });
}

/**
 * Returns the path of build/<hash>/cli/main.js, compiling src/ first when
 * that build does not exist yet. Throws when it cannot (no esbuild, folder
 * not writable): the caller then runs the TypeScript through tsx instead.
 */
export async function ensureBuild(root) {
  const srcDir = path.join(root, 'src');
  const buildDir = path.join(root, 'build');
  const files = sources(srcDir);
  // Where npm put esbuild: this package's node_modules, or a parent's when keygate is a dependency.
  const esbuildPkg = createRequire(path.join(root, 'package.json')).resolve('esbuild/package.json');
  const hash = createHash('sha256').update(FORMAT).update(readFileSync(esbuildPkg));
  const texts = files.map((f) => {
    const text = readFileSync(f);
    hash.update(path.relative(srcDir, f)).update('\0').update(text).update('\0');
    return text;
  });
  const dir = path.join(buildDir, hash.digest('hex').slice(0, 16));
  const main = path.join(dir, 'cli', 'main.js');
  try {
    statSync(main);
    return main;
  } catch {
    // Not built yet.
  }
  const { transformSync } = await import('esbuild');
  mkdirSync(buildDir, { recursive: true });
  const tmp = path.join(buildDir, `.tmp-${path.basename(dir)}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  compile(transformSync, srcDir, files, texts, root, tmp);
  try {
    renameSync(tmp, dir);
  } catch (err) {
    // Another process renamed the same build into place first: theirs is identical.
    rmSync(tmp, { recursive: true, force: true });
    if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
  }
  prune(buildDir, dir);
  return main;
}

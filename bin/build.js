#!/usr/bin/env node
// keygate's TypeScript, compiled into build/<id>/ so that the daemon and the
// CLI run plain JavaScript: no transpiler thread at run time (about 45 MB less
// RSS and about 5% less CPU per proxied request, bench/RESULTS.md), and faster
// start-up. <id> is a hash of the sources.
//
// When it compiles (docs/cli.md, "How keygate runs"):
// - `node bin/build.js` (this file run as a script) compiles the current
//   sources, unless their build exists, and removes old builds no process uses.
//   npm runs it as `prepare` (after `npm install` / `npm ci` in keygate's own
//   folder, and when keygate is installed from git), as `prepack` (so that the
//   published package carries its build) and as `pretest`.
// - bin/keygate.js never compiles in an installed package: it runs the build
//   of its sources, and when there is none (the sources were edited in place,
//   or scripts were skipped at install) it runs them through tsx instead.
//   Only in a git checkout (a developer's), where the sources change, does it
//   compile an edited tree into a new build/<id>/ before running it.
//
// A build directory is never changed once it exists: it is compiled into a
// temporary folder and renamed into place whole, so a process never sees half
// a build, and a running daemon keeps loading its control plane worker from the code
// it started with. A process running a build keeps a file of it open;
// `node bin/build.js` removes only builds that no process has open (on Linux,
// through /proc; elsewhere it keeps the newest KEEP), and nothing else ever
// removes one.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Bumped when the way files are compiled changes, so that old builds are redone. */
const FORMAT = 'keygate-build-3';
/** Where processes cannot be inspected (no /proc): old builds kept besides the current one. */
const KEEP = 4;
const BUILD_NAME = /^[0-9a-f]{16}$/;

function sources(dir, out = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) sources(p, out);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(p);
  }
  return out.sort();
}

/**
 * The build of the package's current sources: its id (a hash of src/**.ts;
 * a few milliseconds), where it is, and whether it exists. esbuild's version is
 * not part of the id: an installed package must find the build it was shipped
 * with whatever esbuild the project around it has.
 */
export function currentBuild(root) {
  const srcDir = path.join(root, 'src');
  const files = sources(srcDir);
  const hash = createHash('sha256').update(FORMAT);
  const texts = files.map((f) => {
    const text = readFileSync(f);
    hash.update(path.relative(srcDir, f)).update('\0').update(text).update('\0');
    return text;
  });
  const id = hash.digest('hex').slice(0, 16);
  const dir = path.join(root, 'build', id);
  const main = path.join(dir, 'cli', 'main.js');
  return { id, dir, main, exists: existsSync(main), files, texts };
}

/** A git checkout (a developer's working tree), as opposed to an installed package. */
export function isCheckout(root) {
  return existsSync(path.join(root, '.git'));
}

/** `./x.ts` → `./x.js` in import and export specifiers (esbuild leaves them as written). */
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"'\n]*?)\.ts\2/g;

/**
 * Compiles the sources of `build` (from currentBuild) into build.dir, through a
 * temporary folder renamed into place whole. Returns build.main. Throws when it
 * cannot (no esbuild, folder not writable).
 */
export async function compileBuild(root, build) {
  // Found where npm put it: this package's node_modules, or a parent's when keygate is a dependency.
  const { transformSync } = await import('esbuild');
  const srcDir = path.join(root, 'src');
  const buildDir = path.dirname(build.dir);
  mkdirSync(buildDir, { recursive: true });
  const tmp = path.join(buildDir, `.tmp-${build.id}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  build.files.forEach((file, i) => {
    const { code } = transformSync(build.texts[i].toString('utf8'), {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      sourcefile: path.relative(root, file),
      sourcemap: 'inline',
    });
    const target = path.join(tmp, path.relative(srcDir, file).replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, code.replace(SPECIFIER, '$1$2$3.js$2'));
  });
  try {
    renameSync(tmp, build.dir);
  } catch (err) {
    // Another process renamed the same build into place first: theirs is identical.
    rmSync(tmp, { recursive: true, force: true });
    if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
  }
  return build.main;
}

/** File descriptors held for the life of the process: they mark builds as in use. */
const held = [];

/**
 * Keeps a file of the build open until the process exits, which tells
 * `node bin/build.js` (on any later day) that this build is in use and must
 * not be removed. Nothing is written.
 */
export function holdBuild(build) {
  try {
    held.push(openSync(build.main, 'r'));
  } catch {
    // Best effort: without it only the fallback rule (the newest KEEP) protects the build.
  }
}

/**
 * The builds that running processes hold open (Linux: /proc/PID/fd of every
 * process this user may inspect), or null where that cannot be known.
 */
export function buildsInUse(buildDir) {
  if (!existsSync('/proc/self/fd')) return null;
  const prefix = realpathSync(buildDir) + path.sep;
  const used = new Set();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let fds;
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or another user's
    }
    for (const fd of fds) {
      let target;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target.startsWith(prefix)) used.add(target.slice(prefix.length).split(path.sep)[0]);
    }
  }
  return used;
}

/**
 * Removes the builds other than `keepId` that no process holds open, and
 * temporary folders left by a process that died. Returns what it removed and
 * what it kept because a process uses it.
 */
export function pruneBuilds(root, keepId) {
  const buildDir = path.join(root, 'build');
  const removed = [];
  const inUse = [];
  if (!existsSync(buildDir)) return { removed, inUse };
  const using = buildsInUse(buildDir);
  const now = Date.now();
  const old = [];
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
    } else if (BUILD_NAME.test(name) && name !== keepId) {
      if (using === null) old.push({ name, p, mtime });
      else if (using.has(name)) inUse.push(name);
      else {
        rmSync(p, { recursive: true, force: true });
        removed.push(name);
      }
    }
  }
  old.sort((a, b) => b.mtime - a.mtime);
  for (const { name, p } of old.slice(KEEP)) {
    rmSync(p, { recursive: true, force: true });
    removed.push(name);
  }
  return { removed, inUse };
}

/** `node bin/build.js`: compile the current sources unless built, then prune. */
async function main() {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const build = currentBuild(root);
  const compiled = !build.exists;
  if (compiled) await compileBuild(root, build);
  const { removed, inUse } = pruneBuilds(root, build.id);
  const rel = path.relative(process.cwd(), build.dir) || '.';
  const notes = [
    removed.length > 0 ? `removed ${removed.length} old build${removed.length === 1 ? '' : 's'}` : '',
    inUse.length > 0 ? `kept ${inUse.length} that running processes use` : '',
  ].filter((n) => n !== '');
  process.stdout.write(`keygate: ${compiled ? `compiled ${build.files.length} files into ${rel}` : `${rel} is up to date`}${notes.length > 0 ? `; ${notes.join(', ')}` : ''}\n`);
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`keygate: build failed: ${err.stack ?? err}\n`);
    process.exitCode = 1;
  });
}

// keygate's TypeScript, compiled once into build/ so that the daemon and the
// CLI run plain JavaScript: no transpiler thread at run time (about 45 MB less
// RSS and about 5% less CPU per proxied request, bench/RESULTS.md), and faster
// start-up. There is no build step to remember: `ensureBuild` runs on every
// start, compares a SHA-256 of the sources with build/.stamp, and recompiles
// (with esbuild, file by file, about 0.3 s) only when they differ.
//
// build/ mirrors src/ one level down from the package root, as src/ is, so
// that the few paths the code resolves from its own location (schemas/,
// package.json, the admin page's files, the reload worker) hold in both trees.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Bumped when the way files are compiled changes, so that old builds are redone. */
const FORMAT = 'keygate-build-1';

function sources(dir, out = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) sources(p, out);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(p);
  }
  return out.sort();
}

function writeAtomically(file, text) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** `./x.ts` → `./x.js` in import and export specifiers (esbuild leaves them as written). */
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"'\n]*?)\.ts\2/g;

/**
 * Returns the file URL path of build/cli/main.js, compiling src/ first when
 * build/ is missing or stale. Throws when it cannot (no esbuild, folder not
 * writable): the caller then runs the TypeScript through tsx instead.
 */
export async function ensureBuild(root) {
  const srcDir = path.join(root, 'src');
  const outDir = path.join(root, 'build');
  const files = sources(srcDir);
  const esbuildPkg = path.join(root, 'node_modules', 'esbuild', 'package.json');
  const hash = createHash('sha256').update(FORMAT).update(readFileSync(esbuildPkg));
  const texts = files.map((f) => {
    const text = readFileSync(f);
    hash.update(path.relative(srcDir, f)).update('\0').update(text).update('\0');
    return text;
  });
  const stamp = hash.digest('hex');
  const stampFile = path.join(outDir, '.stamp');
  const main = path.join(outDir, 'cli', 'main.js');
  try {
    if (readFileSync(stampFile, 'utf8') === stamp) return main;
  } catch {
    // No build yet.
  }
  const { transformSync } = await import('esbuild');
  files.forEach((file, i) => {
    const rel = path.relative(srcDir, file);
    const { code } = transformSync(texts[i].toString('utf8'), {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      sourcefile: path.relative(root, file),
      sourcemap: 'inline',
    });
    const js = code.replace(SPECIFIER, '$1$2$3.js$2');
    const target = path.join(outDir, rel.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeAtomically(target, js);
  });
  // Last: a build is only used once every file of it is in place.
  writeAtomically(stampFile, stamp);
  return main;
}

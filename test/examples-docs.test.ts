/**
 * The shipped examples and the configs shown in the docs: every keygate config
 * validates, and the examples that can run here do run (the container
 * entrypoint, the CI workflow's steps, the Kubernetes init container's apply).
 * What needs Docker, Kubernetes or systemd to run is checked for the facts
 * the docs promise (non-root, health checks, probes, reload on SIGHUP).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { hasValidChecksum } from '../src/keys/material.ts';
import { BIN, REPO, runCli, shown } from './helpers/cli.ts';
import { eventually, freePort } from './helpers/serve.ts';
import { tempDir, type TempDir } from './helpers/tmp.ts';

const EXAMPLES = path.join(REPO, 'examples');
const at = (...parts: string[]): string => path.join(REPO, ...parts);
const read = (...parts: string[]): string => readFileSync(at(...parts), 'utf8');

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const isKeygateConfig = (v: unknown): boolean => isObj(v) && 'version' in v && isObj(v.config);

function filesUnder(dir: string, keep: (file: string) => boolean): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(p, keep));
    else if (keep(p)) out.push(p);
  }
  return out.sort();
}

/** The variables that the `{{env NAME}}` templates of a YAML config name (in values, not comments). */
function templateNames(text: string): string[] {
  const names = new Set<string>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      for (const m of v.matchAll(/\{\{\s*env\s+([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) names.add(m[1] as string);
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (isObj(v)) Object.values(v).forEach(walk);
  };
  walk(parseYaml(text));
  return [...names];
}

/** A value for every template variable of a config: a URL where the name asks for one, else a well-formed key. */
function placeholders(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of templateNames(text)) {
    env[name] = name.endsWith('_URL') ? 'http://127.0.0.1:3000' : `kg_placeholder_${name.toLowerCase()}_0123456789`;
  }
  return env;
}

/** A keygate `shell` for example scripts: `keygate` and `npx keygate` run this repository's bin. */
function shims(tmp: TempDir): string {
  const bin = tmp.path('bin');
  mkdirSync(bin, { recursive: true });
  const keygate = `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`;
  const npx = `#!/bin/sh\nif [ "$1" = keygate ]; then shift; exec "${process.execPath}" "${BIN}" "$@"; fi\necho "unexpected: npx $*" >&2\nexit 127\n`;
  writeFileSync(path.join(bin, 'keygate'), keygate);
  writeFileSync(path.join(bin, 'npx'), npx);
  chmodSync(path.join(bin, 'keygate'), 0o755);
  chmodSync(path.join(bin, 'npx'), 0o755);
  return `${bin}${path.delimiter}${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], opts: { cwd: string; env: Record<string, string>; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { LANG: 'C.UTF-8', HOME: process.env.HOME ?? opts.cwd, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const runShown = (r: Run): string => `exit ${String(r.code)}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

/** Configs to validate: `label` for messages, the text, and where it must be written (null: validate in place). */
interface ConfigCase {
  label: string;
  text: string;
  file: string | null;
}

function exampleConfigs(): ConfigCase[] {
  const cases: ConfigCase[] = [];
  for (const file of filesUnder(EXAMPLES, (f) => /\.ya?ml$/.test(f))) {
    const text = readFileSync(file, 'utf8');
    const label = path.relative(REPO, file);
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [docs];
    for (const doc of list) {
      const value: unknown = doc.toJS();
      if (isKeygateConfig(value)) cases.push({ label, text, file });
      // A keygate config inside a Kubernetes ConfigMap.
      if (isObj(value) && value.kind === 'ConfigMap' && isObj(value.data)) {
        for (const [name, embedded] of Object.entries(value.data)) {
          if (typeof embedded === 'string' && isKeygateConfig(parseYaml(embedded))) {
            cases.push({ label: `${label} (data.${name})`, text: embedded, file: null });
          }
        }
      }
    }
  }
  return cases;
}

/** ```yaml blocks of the docs and READMEs that are whole keygate configs. */
function docConfigs(): ConfigCase[] {
  const markdown = [
    at('README.md'),
    ...filesUnder(at('docs'), (f) => f.endsWith('.md')),
    ...filesUnder(EXAMPLES, (f) => f.endsWith('.md')),
  ];
  const cases: ConfigCase[] = [];
  for (const file of markdown) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^```ya?ml\n([\s\S]*?)^```$/gm)) {
      const block = m[1] as string;
      let value: unknown;
      try {
        value = parseYaml(block);
      } catch {
        continue;
      }
      if (isKeygateConfig(value)) {
        const line = text.slice(0, m.index).split('\n').length;
        cases.push({ label: `${path.relative(REPO, file)}:${line}`, text: block, file: null });
      }
    }
  }
  return cases;
}

async function validateAll(t: Parameters<typeof tempDir>[0], cases: readonly ConfigCase[]): Promise<void> {
  const tmp = tempDir(t);
  const results = await Promise.all(
    cases.map(async (c, i) => {
      const file = c.file ?? tmp.write(`config-${i}.yml`, c.text);
      return { c, r: await runCli(['validate', '-c', file], { env: placeholders(c.text) }) };
    }),
  );
  for (const { c, r } of results) {
    assert.equal(r.code, 0, `${c.label} does not validate:\n${shown(r)}`);
    assert.match(r.stdout, /: valid \(/, `${c.label}:\n${shown(r)}`);
  }
}

test('every keygate config in examples/ validates, with the variables its templates name', async (t) => {
  const cases = exampleConfigs();
  const labels = cases.map((c) => c.label);
  for (const expected of [
    'examples/gitops/config.yml',
    'examples/docker/config.yml',
    'examples/metabase/config/config.yml',
    'examples/metabase-config-file.yml',
    'examples/kubernetes/configmap.yaml (data.config.yml)',
    'examples/kubernetes/fleet/configmap.yaml (data.config.yml)',
  ]) {
    assert.ok(labels.includes(expected), `${expected} is not found as a keygate config (found: ${labels.join(', ')})`);
  }
  await validateAll(t, cases);
});

test('every whole config shown in README.md, docs/ and the examples\' READMEs validates', async (t) => {
  const cases = docConfigs();
  assert.ok(cases.some((c) => c.label.startsWith('docs/configuration.md')), 'configuration.md shows a complete config');
  await validateAll(t, cases);
});

test('every documented way of taking a new key from `keys generate --json` runs as written and gives a well-formed key', async (t) => {
  const markdown = [at('README.md'), ...filesUnder(at('docs'), (f) => f.endsWith('.md')), ...filesUnder(EXAMPLES, (f) => f.endsWith('.md'))];
  const found: Array<{ label: string; command: string }> = [];
  for (const file of markdown) {
    const text = readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /keys generate[^\n]*\| *sed /, `${path.relative(REPO, file)} scrapes keys generate's text with sed`);
    for (const m of text.matchAll(/"\$\((npx keygate keys generate[^\n]*?)\)"/g)) {
      found.push({ label: `${path.relative(REPO, file)}:${text.slice(0, m.index).split('\n').length}`, command: m[1] as string });
    }
  }
  const labels = found.map((f) => f.label.replace(/:\d+$/, ''));
  for (const expected of ['docs/cli.md', 'examples/docker/README.md', 'examples/kubernetes/README.md']) {
    assert.ok(labels.includes(expected), `${expected} shows how to take a key from keys generate (found: ${labels.join(', ')})`);
  }
  const tmp = tempDir(t);
  for (const { label, command } of found) {
    assert.match(command, /--json/, `${label} uses --json`);
    const r = await run('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', command], { cwd: tmp.dir, env: { PATH: shims(tmp) } });
    assert.equal(r.code, 0, `${label}: ${runShown(r)}`);
    const key = r.stdout.trim();
    assert.match(key, /^kg_[0-9A-Za-z]{49}$/, `${label} prints the key alone:\n${runShown(r)}`);
    assert.ok(hasValidChecksum(key), label);
  }
});

// ---------------------------------------------------------------------------
// GitOps

test('the GitOps workflow validates on pull requests and plans the change against the base branch', async (t) => {
  const workflow = parseYaml(read('examples/gitops/.github/workflows/keygate.yml')) as {
    on: Obj;
    jobs: Record<string, { env?: Record<string, string>; steps: Array<{ name?: string; run?: string; uses?: string }> }>;
  };
  assert.ok(isObj(workflow.on) && 'pull_request' in workflow.on, 'runs on pull requests');
  const job = Object.values(workflow.jobs)[0];
  assert.ok(job !== undefined);
  const runs = job.steps.filter((s) => s.run !== undefined && s.name !== 'Install keygate');
  const all = runs.map((s) => s.run).join('\n');
  assert.match(all, /npx keygate validate/);
  assert.match(all, /npx keygate plan .*--json/);

  const config = read('examples/gitops/config.yml');
  const env = job.env ?? {};
  for (const name of templateNames(config)) {
    assert.ok(name in env, `the workflow sets ${name}, which config.yml's templates need`);
  }

  // A config repository: main holds the example, the pull request adds one key and removes another.
  const tmp = tempDir(t);
  const repo = tmp.path('repo');
  mkdirSync(repo);
  const git = async (...args: string[]): Promise<void> => {
    const r = await run('git', ['-c', 'user.name=CI', '-c', 'user.email=ci@example.com', ...args], { cwd: repo, env: { PATH: process.env.PATH ?? '' } });
    assert.equal(r.code, 0, runShown(r));
  };
  await git('init', '-q', '-b', 'main');
  writeFileSync(path.join(repo, 'config.yml'), config);
  await git('add', 'config.yml');
  await git('commit', '-q', '-m', 'keys of production');
  await git('update-ref', 'refs/remotes/origin/main', 'main');
  await git('checkout', '-q', '-b', 'nightly-export');
  const changed = config
    .replace(/ {4}- name: "Dashboard sync"[\s\S]*$/, '')
    .concat(
      '    - name: "Nightly export"\n      group: reporting\n',
      `      key_hash: "sha256:${'ab'.repeat(32)}"\n`,
    );
  writeFileSync(path.join(repo, 'config.yml'), changed);
  await git('commit', '-q', '-am', 'nightly export key');

  const summary = tmp.write('summary.md', '');
  const runnerTemp = tmp.path('runner');
  mkdirSync(runnerTemp);
  const stepEnv = { ...env, PATH: shims(tmp), GITHUB_BASE_REF: 'main', RUNNER_TEMP: runnerTemp, GITHUB_STEP_SUMMARY: summary };
  let planOutput = '';
  for (const step of runs) {
    // GitHub runs `run:` steps with `bash --noprofile --norc -eo pipefail {0}`.
    const r = await run('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', step.run as string], { cwd: repo, env: stepEnv, timeoutMs: 25_000 });
    assert.equal(r.code, 0, `step "${step.name ?? step.run}" failed:\n${runShown(r)}`);
    if (step.name === 'Plan') planOutput = r.stdout;
  }
  assert.match(planOutput, /^\+ create key "Nightly export" \(group reporting, key \(hash only\)\)$/m);
  assert.match(planOutput, /^- delete key "Dashboard sync" \(group reporting, key \(hash only\)\)$/m);
  assert.match(planOutput, /^Plan: 1 to create, 0 to update, 1 to delete\.$/m);
  const plan = JSON.parse(readFileSync(path.join(repo, 'plan.json'), 'utf8')) as { summary: Obj; changes: Array<{ action: string; name: string }> };
  assert.deepEqual(plan.summary, { create: 1, update: 0, delete: 1, unchanged: 7 });
  assert.deepEqual(plan.changes.map((c) => `${c.action} ${c.name}`).sort(), ['create Nightly export', 'delete Dashboard sync']);
  assert.match(readFileSync(summary, 'utf8'), /### keygate plan\n```\n[\s\S]*\+ create key "Nightly export"/);
});

test('the GitOps workflow fails a pull request whose config is invalid', async (t) => {
  const workflow = parseYaml(read('examples/gitops/.github/workflows/keygate.yml')) as {
    jobs: Record<string, { env?: Record<string, string>; steps: Array<{ name?: string; run?: string }> }>;
  };
  const job = Object.values(workflow.jobs)[0];
  const validate = job?.steps.find((s) => s.name === 'Validate');
  assert.ok(validate?.run !== undefined);
  const tmp = tempDir(t);
  tmp.write('config.yml', read('examples/gitops/config.yml').replace('group: ci', 'group: cl'));
  const r = await run('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', validate.run], {
    cwd: tmp.dir,
    env: { ...job?.env, PATH: shims(tmp) },
  });
  assert.equal(r.code, 1, runShown(r));
  assert.match(r.stdout, /api-keys\[1\]\.group: unknown group "cl"/);
});

// ---------------------------------------------------------------------------
// Docker

interface Dockerfile {
  stages: string[][];
}

function dockerfile(): Dockerfile {
  const text = read('examples/docker/Dockerfile').replace(/\\\n/g, ' ');
  const stages: string[][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (/^FROM\s/i.test(line)) stages.push([]);
    stages[stages.length - 1]?.push(line);
  }
  return { stages };
}

test('the container image is multi-stage, runs as a non-root user and checks /healthz on the admin port', async () => {
  const { stages } = dockerfile();
  assert.ok(stages.length >= 2, 'a build stage and a runtime stage');
  const final = stages[stages.length - 1] as string[];
  const user = final.filter((l) => /^USER\s/.test(l)).pop();
  assert.ok(user !== undefined && !/^USER\s+(root|0)(:|\s|$)/.test(user), `the runtime stage drops root (${String(user)})`);
  const health = final.find((l) => /^HEALTHCHECK\s/.test(l));
  assert.ok(health !== undefined && health.includes('/healthz') && health.includes(':8081'), String(health));
  assert.ok(final.some((l) => /^ENTRYPOINT\s.*keygate-entrypoint/.test(l)));
  // The image's default database lives in its volume, without overriding a keygate.database in the
  // mounted config (KEYGATE_DB would: a fleet's postgres:// URL in the file would be ignored).
  const env = final.filter((l) => /^ENV\s/.test(l)).join(' ');
  assert.ok(!/\bKEYGATE_DB=/.test(env), `the image sets no KEYGATE_DB (${env})`);
  const dataDir = /\bKEYGATE_DATA_DIR=(\S+)/.exec(env)?.[1];
  const volume = final.find((l) => /^VOLUME\s/.test(l)) ?? '';
  assert.ok(dataDir !== undefined && volume.includes(JSON.stringify(dataDir)), `KEYGATE_DATA_DIR (${String(dataDir)}) is the image's volume (${volume})`);
  // Every file the build copies from the context exists.
  for (const line of stages.flat().filter((l) => /^COPY\s/.test(l) && !l.includes('--from='))) {
    const sources = line.split(/\s+/).slice(1, -1);
    for (const s of sources) assert.ok(existsSync(at(s)), `${line}: ${s} is not in the repository`);
  }
  // The CMD's flags are `keygate serve`'s.
  const cmd = final.find((l) => /^CMD\s/.test(l));
  const args = JSON.parse((cmd as string).replace(/^CMD\s+/, '')) as string[];
  const r = await runCli(['serve', ...args, '--help']);
  assert.equal(r.code, 0, shown(r));
  assert.ok(statSync(at('examples/docker/entrypoint.sh')).mode & 0o111, 'entrypoint.sh is executable');
});

test('the container entrypoint applies the config, then execs keygate serve, which answers /healthz and stops on SIGTERM', async (t) => {
  const tmp = tempDir(t);
  const proxyPort = await freePort();
  let adminPort = await freePort();
  while (adminPort === proxyPort) adminPort = await freePort();
  const adminKey = 'kg_entrypoint_test_admin_key_0123456789';
  const child = spawn('sh', [at('examples/docker/entrypoint.sh'), '--listen', `127.0.0.1:${proxyPort}`, '--admin-listen', `127.0.0.1:${adminPort}`], {
    cwd: tmp.dir,
    env: {
      LANG: 'C.UTF-8',
      HOME: tmp.dir,
      PATH: shims(tmp),
      KEYGATE_CONFIG: at('examples/docker/config.yml'),
      // As the image sets it: the default database's folder.
      KEYGATE_DATA_DIR: tmp.path('data'),
      KEYGATE_ADMIN_KEY: adminKey,
    },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });

  const admin = `http://127.0.0.1:${adminPort}`;
  const healthy = await eventually(async () => (await fetch(`${admin}/healthz`).catch(() => null))?.status === 200, 20_000, 100);
  assert.ok(healthy, `no /healthz:\n${stdout}\n${stderr}`);
  assert.match(stdout, /^Applied revision 1 to .*keygate\.db\.$/m, 'keygate apply ran first');
  assert.ok(stdout.includes(`Applied revision 1 to ${tmp.path('data/keygate.db')}.`), `the database is in KEYGATE_DATA_DIR:\n${stdout}`);
  const count = await fetch(`${admin}/api/api-key/count`, { headers: { 'x-api-key': adminKey } });
  assert.equal(await count.text(), '2');

  // The image's HEALTHCHECK command, pointed at this admin port.
  const health = dockerfile().stages.flat().find((l) => l.startsWith('HEALTHCHECK')) as string;
  const cmd = JSON.parse(health.replace(/^.*\bCMD\s+/, '')) as string[];
  const check = await run(cmd[0] === 'node' ? process.execPath : (cmd[0] as string), cmd.slice(1).map((a) => a.replace(':8081', `:${adminPort}`)), {
    cwd: tmp.dir,
    env: {},
  });
  assert.equal(check.code, 0, runShown(check));

  // exec: the entrypoint's process is keygate itself, so SIGTERM stops it cleanly.
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /"msg":"stopped"/);
});

// ---------------------------------------------------------------------------
// Kubernetes

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
}

interface Deployment {
  kind: string;
  spec: { template: { spec: { initContainers?: Container[]; containers: Container[]; volumes: Array<{ name: string; configMap?: { name: string } }> } } };
}

function manifests(file: string): Obj[] {
  return parseAllDocuments(read('examples/kubernetes', file)).map((d) => d.toJS() as Obj);
}

function portOf(c: Container, port: string | number): number | undefined {
  return typeof port === 'number' ? port : c.ports?.find((p) => p.name === port)?.containerPort;
}

test('the Kubernetes Deployments mount the config folder from a ConfigMap and probe /readyz and /healthz on the admin port', async () => {
  const configMap = manifests('configmap.yaml')[0] as { kind: string; metadata: { name: string } };
  assert.equal(configMap.kind, 'ConfigMap');
  for (const file of ['deployment.yaml', 'deployment-init-container.yaml', 'fleet/deployment.yaml']) {
    const d = manifests(file)[0] as unknown as Deployment;
    assert.equal(d.kind, 'Deployment', file);
    const pod = d.spec.template.spec;
    const c = pod.containers[0] as Container;
    assert.equal(c.readinessProbe?.httpGet?.path, '/readyz', file);
    assert.equal(c.livenessProbe?.httpGet?.path, '/healthz', file);
    assert.equal(portOf(c, c.readinessProbe?.httpGet?.port ?? ''), 8081, file);
    assert.equal(portOf(c, c.livenessProbe?.httpGet?.port ?? ''), 8081, file);
    const configVolume = pod.volumes.find((v) => v.configMap?.name === configMap.metadata.name);
    assert.ok(configVolume !== undefined, `${file}: a volume from the ConfigMap`);
    for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
      const mount: { mountPath: string; subPath?: string } | undefined = container.volumeMounts?.find((m) => m.name === configVolume.name);
      assert.ok(mount !== undefined && mount.subPath === undefined, `${file}: ${container.name} mounts the config folder, not a subPath`);
      const config = container.env?.find((e) => e.name === 'KEYGATE_CONFIG')?.value;
      assert.equal(path.posix.dirname(config ?? ''), mount.mountPath, `${file}: KEYGATE_CONFIG is in the mounted folder`);
    }
    // The flags given to serve are serve's: the image's entrypoint passes args on; the variant calls keygate itself.
    const serveArgs = c.command !== undefined ? c.command.slice(2) : (c.args ?? []);
    if (c.command !== undefined) assert.deepEqual(c.command.slice(0, 2), ['keygate', 'serve'], file);
    const r = await runCli(['serve', ...serveArgs, '--help']);
    assert.equal(r.code, 0, `${file}: ${shown(r)}`);
  }
  for (const dir of ['examples/kubernetes', 'examples/kubernetes/fleet']) {
    const kustomization = parseYaml(read(dir, 'kustomization.yaml')) as { resources: string[] };
    for (const r of kustomization.resources) assert.ok(existsSync(at(dir, r)), `${dir}: ${r}`);
  }
  // The fleet: several replicas, each taking the database from a Secret through keygate.database's template.
  const fleet = manifests('fleet/deployment.yaml')[0] as unknown as { spec: { replicas: number } } & Deployment;
  assert.ok(fleet.spec.replicas >= 2, 'the fleet runs several replicas');
  const fleetEnv = ((fleet.spec.template.spec.containers[0] as unknown as { env?: Array<{ name: string; valueFrom?: { secretKeyRef?: unknown } }> }).env ?? []);
  assert.ok(fleetEnv.some((e) => e.name === 'DATABASE_URL' && e.valueFrom?.secretKeyRef !== undefined), 'DATABASE_URL comes from a Secret');
  assert.ok(!fleetEnv.some((e) => e.name === 'KEYGATE_DB'), 'no KEYGATE_DB: it would win over keygate.database');
  const fleetConfig = parseYaml((manifests('fleet/configmap.yaml')[0] as { data: Record<string, string> }).data['config.yml'] as string) as { config: { keygate: { database: string } } };
  assert.equal(fleetConfig.config.keygate.database, '{{env DATABASE_URL}}');
});

test('the Kubernetes init container\'s keygate apply applies the ConfigMap\'s config', async (t) => {
  const d = manifests('deployment-init-container.yaml')[0] as unknown as Deployment;
  const init = d.spec.template.spec.initContainers?.[0];
  assert.ok(init !== undefined, 'an init container');
  assert.deepEqual(init.command, ['keygate', 'apply']);
  const data = (manifests('configmap.yaml')[0] as { data: Record<string, string> }).data;
  const tmp = tempDir(t);
  // The pod's paths, moved into a temp folder.
  const env: Record<string, string> = {};
  for (const e of init.env ?? []) env[e.name] = tmp.path((e.value ?? '').replace(/^\//, ''));
  const configFile = env.KEYGATE_CONFIG as string;
  mkdirSync(path.dirname(configFile), { recursive: true });
  writeFileSync(configFile, data[path.basename(configFile)] as string);
  const r = await run('sh', ['-c', 'exec "$@"', 'sh', ...init.command], {
    cwd: tmp.dir,
    env: { ...env, ...placeholders(readFileSync(configFile, 'utf8')), PATH: shims(tmp) },
  });
  assert.equal(r.code, 0, runShown(r));
  assert.match(r.stdout, /^Applied revision 1 to /m);
});

// ---------------------------------------------------------------------------
// systemd and Metabase

test('the systemd unit runs keygate serve as its own user and reloads with SIGHUP', async () => {
  const unit = read('examples/systemd/keygate.service');
  const value = (key: string): string | undefined => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];
  assert.equal(value('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.match(value('ExecStart') ?? '', /keygate\.js serve$/);
  assert.ok(!['root', '0', undefined].includes(value('User')), 'not root');
  const stop = /^(\d+)s?$/.exec(value('TimeoutStopSec') ?? '');
  assert.ok(stop !== null && Number(stop[1]) > 10, 'longer than the default shutdown grace of 10 s');
  // Where systemd's own checker is installed, the unit must pass it without a warning.
  const analyze = await run('systemd-analyze', ['verify', '--man=no', at('examples/systemd/keygate.service')], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '' },
  }).catch(() => null);
  if (analyze !== null && analyze.code !== 127) {
    assert.doesNotMatch(analyze.stderr, /keygate\.service:/, analyze.stderr);
  }
});

test('the systemd README installs only files a checkout has, and says which Node it needs', () => {
  const readme = read('examples/systemd/README.md');
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
  const needed = /^>=(\d+\.\d+)/.exec(engines)?.[1];
  assert.ok(needed !== undefined, engines);
  assert.match(readme, new RegExp(`Node\\.js ${needed.replace('.', '\\.')} or later`), `says keygate needs Node ${needed}`);
  assert.match(read('examples/systemd/keygate.service'), new RegExp(`Node\\.js ${needed.replace('.', '\\.')} or later`));
  const script = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  assert.match(script, /^cd \/opt\/keygate\b/m, 'the commands run in the checkout');
  let installs = 0;
  for (const line of script.split('\n')) {
    const m = /^sudo install (?:-[a-z] \S+ )*(\S+) (\/etc\/keygate\/\S+)/.exec(line.replace(/\s+#.*$/, ''));
    if (m === null) continue;
    installs++;
    const source = m[1] as string;
    assert.ok(source === '/dev/null' || existsSync(at(source)), `${line}: ${source} is not in a checkout of keygate`);
  }
  assert.ok(installs >= 2, 'installs the config and the environment file');
});

test('the migration guide\'s steps 1 and 3 run as written in one shell: plan and apply find the file step 1 named', async (t) => {
  const guide = read('docs/migrating-from-metabase.md');
  const section = (title: string): string => {
    const start = guide.indexOf(`## ${title}`);
    assert.ok(start !== -1, title);
    const end = guide.indexOf('\n## ', start + 1);
    return guide.slice(start, end === -1 ? undefined : end);
  };
  const commands = [section('Step 1'), section('Step 3')].flatMap((text) =>
    [...text.matchAll(/```console\n([\s\S]*?)```/g)].flatMap((m) => (m[1] as string).split('\n').filter((l) => l.startsWith('$ ')).map((l) => l.slice(2))),
  );
  assert.ok(commands.some((c) => /npx keygate plan/.test(c)) && commands.some((c) => /npx keygate apply/.test(c)), commands.join('\n'));
  // Metabase's folder, moved into a temp folder, holding Metabase's documented example.
  const tmp = tempDir(t);
  const folder = tmp.path('etc/metabase');
  mkdirSync(folder, { recursive: true });
  writeFileSync(path.join(folder, 'config.yml'), read('examples/metabase-config-file.yml'));
  const script = commands.map((c, i) => `${c.replaceAll('/etc/metabase', folder)}\necho "@@${i} exit $?"`).join('\n');
  const r = await run('bash', ['--noprofile', '--norc', '-c', script], {
    cwd: tmp.dir,
    env: { PATH: shims(tmp), API_KEY_FROM_ENV: 'mb_thirdtestapikeyfromenv' },
  });
  const exits = [...r.stdout.matchAll(/^@@(\d+) exit (\d+)$/gm)].map((m) => [commands[Number(m[1])], Number(m[2])] as const);
  for (const [command, code] of exits) {
    assert.equal(code, /keygate plan/.test(command ?? '') ? 2 : 0, `"${command}" failed:\n${runShown(r)}`);
  }
  assert.match(r.stdout, /^\+ create key "ENV API Key" \(group admin, key mb_thir…\)$/m, runShown(r));
  assert.match(r.stdout, new RegExp(`^Applied revision 1 to ${folder}/keygate\\.db\\.$`, 'm'), runShown(r));
});

test('the Kubernetes manifests say nothing of tsx: the image runs its compiled build', () => {
  for (const file of ['deployment.yaml', 'deployment-init-container.yaml', 'README.md']) {
    assert.doesNotMatch(read('examples/kubernetes', file), /\btsx\b/, file);
  }
});

test('the Metabase example shares one config file between Metabase and keygate', () => {
  const compose = parseYaml(read('examples/metabase/docker-compose.yml')) as {
    services: Record<string, { environment?: Record<string, string>; volumes?: string[] }>;
  };
  const config = read('examples/metabase/config/config.yml');
  const { metabase, keygate } = compose.services;
  assert.equal(metabase?.environment?.MB_CONFIG_FILE_PATH, '/config/config.yml');
  assert.equal(keygate?.environment?.KEYGATE_CONFIG, '/config/config.yml');
  // The README puts every secret in .env beside docker-compose.yml: no container may mount that folder.
  assert.match(read('examples/metabase/README.md'), /> \.env\n/);
  for (const [name, service] of Object.entries(compose.services)) {
    for (const volume of service.volumes ?? []) {
      const host = volume.split(':')[0] as string;
      if (!host.startsWith('.')) continue; // a named volume
      const folder = path.resolve(at('examples/metabase'), host);
      assert.notEqual(folder, at('examples/metabase'), `${name} mounts the folder that holds .env (${volume})`);
      if (volume.split(':')[1] === '/config') assert.ok(existsSync(path.join(folder, 'config.yml')), `${name}: ${volume} holds config.yml`);
    }
  }
  for (const name of templateNames(config)) {
    if (name === 'MB_ADMIN_PASSWORD') continue; // users[].password is Metabase's, not keygate's
    assert.ok(name in (keygate?.environment ?? {}), `keygate gets ${name}`);
  }
  const parsed = parseYaml(config) as { config: { keygate: Obj; 'api-keys': Obj[] } };
  assert.equal(parsed.config.keygate.forward_key, true, 'Metabase authenticates the forwarded key');
  for (const k of parsed.config['api-keys']) {
    assert.ok(k.group === 'admin' || k.group === 'all-users', `${String(k.name)}: a group Metabase's config file knows`);
    assert.ok(typeof k.key === 'string' && typeof k.creator === 'string', `${String(k.name)}: key and creator, as Metabase requires`);
  }
});

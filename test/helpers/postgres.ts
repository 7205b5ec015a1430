/**
 * PostgreSQL for tests: a real server at $KEYGATE_TEST_POSTGRES_URL, else
 * postgres://127.0.0.1:5432/test (trust authentication, as on the project's
 * machines and CI). Each test gets a database of its own, created fresh and
 * dropped when the test ends; and, where it needs to lose the server, a TCP
 * relay of its own between keygate and PostgreSQL that it can cut and
 * restore, so that the machine's shared server is never stopped.
 *
 * Without a server, the PostgreSQL tests are skipped with one line saying how
 * to run them (`.ci/run` checks that the server answers, so CI never skips).
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import pg from 'pg';

export const TEST_POSTGRES_URL = process.env.KEYGATE_TEST_POSTGRES_URL ?? 'postgres://127.0.0.1:5432/test';

const HOW = `start PostgreSQL on 127.0.0.1:5432 with trust authentication, or set KEYGATE_TEST_POSTGRES_URL=postgres://USER@HOST:PORT/DB (a role that may create databases and roles)`;

async function tryConnect(url: string): Promise<string | null> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('SELECT 1');
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * The URL tests use to administer the server: the one given, or, when it names no user and the OS
 * user has no role there, the same as `postgres`. Null when no server answers.
 */
async function findAdminUrl(): Promise<{ url: string | null; why: string }> {
  const first = await tryConnect(TEST_POSTGRES_URL);
  if (first === null) return { url: TEST_POSTGRES_URL, why: '' };
  const u = new URL(TEST_POSTGRES_URL);
  if (u.username === '' && process.env.PGUSER === undefined) {
    u.username = 'postgres';
    if ((await tryConnect(u.toString())) === null) return { url: u.toString(), why: '' };
  }
  return { url: null, why: first };
}

const admin = await findAdminUrl();

/** The admin URL, or null when no PostgreSQL answers (then the tests are skipped). */
export const ADMIN_URL: string | null = admin.url;

let announced = false;
/**
 * True when PostgreSQL answers. Otherwise registers, once per test run file that asks first with
 * `announce`, one skipped test whose line says how to run the PostgreSQL tests.
 */
export function postgresAvailable(announce: boolean): boolean {
  if (ADMIN_URL !== null) return true;
  if (announce && !announced) {
    announced = true;
    test('PostgreSQL store, CLI and fleet tests (test/store-postgres, cli-postgres, fleet)', { skip: `no PostgreSQL at ${redact(TEST_POSTGRES_URL)} (${admin.why}): ${HOW}` }, () => undefined);
  }
  return false;
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '****';
    return u.toString();
  } catch {
    return url;
  }
}

async function adminQuery(sql: string, values: unknown[] = []): Promise<pg.QueryResult> {
  if (ADMIN_URL === null) throw new Error('no PostgreSQL for tests');
  const c = new pg.Client({ connectionString: ADMIN_URL });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await c.query(sql, values);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** A URL for database `name` on the test server, as user `user` (default: the admin URL's) with `password`. */
export function urlFor(name: string, opts: { user?: string; password?: string; host?: string; port?: number } = {}): string {
  const u = new URL(ADMIN_URL as string);
  u.pathname = `/${name}`;
  if (opts.user !== undefined) u.username = opts.user;
  if (opts.password !== undefined) u.password = opts.password;
  if (opts.host !== undefined) u.hostname = opts.host;
  if (opts.port !== undefined) u.port = String(opts.port);
  return u.toString();
}

export interface TestDatabase {
  name: string;
  /** A URL for the database as the admin user. */
  url: string;
  /** Runs SQL on the database as the admin user (for checks: what keygate wrote). */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<R[]>;
}

async function dropDatabase(name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await adminQuery('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
      await adminQuery(`DROP DATABASE IF EXISTS "${name}"`);
      return;
    } catch (err) {
      // A connection that arrived between the two statements: terminate it too.
      if (attempt >= 20 || (err as { code?: string }).code !== '55006') throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A fresh, empty database (kg_test_<random>) for one test, dropped when the test ends. */
export async function testDatabase(t: TestContext): Promise<TestDatabase> {
  const name = `kg_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE "${name}"`);
  t.after(() => dropDatabase(name));
  const url = urlFor(name);
  return {
    name,
    url,
    query: async (sql, values = []) => {
      const c = new pg.Client({ connectionString: url });
      c.on('error', () => undefined);
      await c.connect();
      try {
        return (await c.query(sql, values)).rows;
      } finally {
        await c.end().catch(() => undefined);
      }
    },
  };
}

/**
 * A login role with a password that owns `db` (trust authentication lets it in anyway; the point is
 * a URL that carries a password). Dropped after the test, after the database (hooks run in the order
 * they were added, and the database's was added first).
 */
export async function testRole(t: TestContext, db: TestDatabase, password: string): Promise<string> {
  const name = `kg_role_${randomBytes(5).toString('hex')}`;
  await adminQuery(`CREATE ROLE "${name}" LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
  t.after(() => adminQuery(`DROP ROLE IF EXISTS "${name}"`));
  await adminQuery(`ALTER DATABASE "${db.name}" OWNER TO "${name}"`);
  return name;
}

/**
 * A TCP relay to PostgreSQL that a test controls: `cut()` drops every relayed connection and refuses
 * new ones (as a server that went away would), `restore()` relays again.
 */
export interface Relay {
  port: number;
  cut(): void;
  restore(): void;
  /** Connections relayed now. */
  open(): number;
}

export async function startRelay(t: TestContext): Promise<Relay> {
  const target = new URL(ADMIN_URL as string);
  const host = target.hostname === '' ? '127.0.0.1' : target.hostname;
  const port = Number(target.port === '' ? 5432 : target.port);
  let down = false;
  const pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  const server = net.createServer((client) => {
    client.on('error', () => undefined);
    if (down) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(port, host);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const pair = { a: client, b: upstream };
    pairs.add(pair);
    const done = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', done);
    upstream.on('close', done);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const cutAll = (): void => {
    for (const p of pairs) {
      p.a.resetAndDestroy();
      p.b.destroy();
    }
    pairs.clear();
  };
  t.after(
    () =>
      new Promise<void>((resolve) => {
        cutAll();
        server.close(() => resolve());
      }),
  );
  return {
    port: (server.address() as net.AddressInfo).port,
    cut: () => {
      down = true;
      cutAll();
    },
    restore: () => {
      down = false;
    },
    open: () => pairs.size,
  };
}

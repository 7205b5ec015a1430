/**
 * The CLI on a PostgreSQL store: the database chosen by `--db`, `$KEYGATE_DB`
 * or `keygate.database: "{{env DATABASE_URL}}"`; and `serve` with the server
 * unreachable at start, which exits 1 naming host:port (an orchestrator
 * restarts it), never with the URL's password.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, shown } from './helpers/cli.ts';
import { yaml } from './helpers/config.ts';
import { freePort, serveExpectingFailure } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { postgresAvailable, testDatabase, testRole, urlFor } from './helpers/postgres.ts';

const PASSWORD = 'Cli-db-pw-51e0a9';

const CONFIG = yaml`
  version: 1
  config:
    keygate:
      database: "{{env DATABASE_URL}}"
    api-keys:
      - name: Admin API key
        group: admin
        key: mb_cliPostgresAdminKey0123456789
      - name: Reader
        group: all-users
        key: kg_cli_postgres_reader_0123456789
`;

if (postgresAvailable(false)) {
  test('plan, apply and keys list use a postgres:// URL from keygate.database ({{env DATABASE_URL}}), --db or $KEYGATE_DB', async (t) => {
    const db = await testDatabase(t);
    const role = await testRole(t, db, PASSWORD);
    const url = urlFor(db.name, { user: role, password: PASSWORD });
    const dir = tempConfig(t, CONFIG);
    const runs = [];

    const plan = await runCli(['plan', '-c', dir.config], { env: { DATABASE_URL: url } });
    runs.push(plan);
    assert.equal(plan.code, 2, shown(plan));
    assert.match(plan.stdout, /Plan: 2 to create/);
    assert.deepEqual(await db.query(`SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'keygate'`), [], 'plan wrote nothing');

    // --db wins over the file's keygate.database (which names a server that is not there).
    const apply = await runCli(['apply', '-c', dir.config, '--db', url], { env: { DATABASE_URL: 'postgres://127.0.0.1:1/nowhere' } });
    runs.push(apply);
    assert.equal(apply.code, 0, shown(apply));
    assert.match(apply.stdout, new RegExp(`Applied revision 1 to postgres://${role}:\\*\\*\\*\\*@`));

    const again = await runCli(['apply', '-c', dir.config, '--json'], { env: { DATABASE_URL: url } });
    runs.push(again);
    assert.equal(again.code, 0, shown(again));
    assert.deepEqual((JSON.parse(again.stdout) as { applied: boolean }).applied, false);

    const list = await runCli(['keys', 'list', '--json'], { env: { KEYGATE_DB: url } });
    runs.push(list);
    assert.equal(list.code, 0, shown(list));
    assert.deepEqual((JSON.parse(list.stdout) as { keys: Array<{ name: string }> }).keys.map((k) => k.name), ['Admin API key', 'Reader']);

    const everything = runs.map(shown).join('\n');
    assert.ok(everything.includes(`${role}:****@`), 'positive control: the database is shown');
    assert.equal(everything.includes(PASSWORD), false, 'the password was shown');
  });

  test('serve with PostgreSQL unreachable at start exits 1 with an error naming host:port, never the password', async (t) => {
    const port = await freePort();
    const dir = tempConfig(t, CONFIG);
    const url = urlFor('kg_nowhere', { user: 'keygate', password: PASSWORD, host: '127.0.0.1', port });
    const r = await serveExpectingFailure(dir.config, { DATABASE_URL: url });
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`error: PostgreSQL at 127\\.0\\.0\\.1:${port} is unreachable: ECONNREFUSED`));
    assert.equal(`${r.stdout}${r.stderr}`.includes(PASSWORD), false, 'the password was shown');

    const apply = await runCli(['apply', '-c', dir.config], { env: { DATABASE_URL: url } });
    assert.equal(apply.code, 1, shown(apply));
    assert.match(apply.stderr, new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${port} is unreachable`));
    assert.equal(shown(apply).includes(PASSWORD), false, 'the password was shown');
  });
}

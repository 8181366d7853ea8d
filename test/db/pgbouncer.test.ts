import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { migrateToLatest, migrationList } from '../../src/db/migrator.js';
import { createDatabase } from '../../src/infra/database.js';
import { parseIni } from '../../src/lib/ini.js';
import { readShipped, serverConnectionCeiling } from '../../src/ops/pgbouncer.js';
import { pgbouncerBinary, type RunningPgbouncer, startPgbouncer } from '../harness/pgbouncer.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../harness/postgres.js';
import { createRoles, prepareDatabase, psqlFile, roleNames, rolePasswords } from '../harness/roles.js';
import { inCi } from '../harness/services.js';

/**
 * The shipped PgBouncer 1.18 config (deploy/pgbouncer/pgbouncer.ini, pgbouncer-hba.conf), started
 * for real in front of a PostgreSQL of our own with the production roles (deploy/postgres/): the
 * service's timeouts hold through it, session state is shown to leak (why it is banned), the
 * migrations' lock is released, and a subset of the suite — orders under concurrency, idempotency,
 * auth — passes through it as shipshape_app.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
const missing =
  pgbouncerBinary() === undefined ? 'pgbouncer is not installed: scripts/install-ops-tools.sh' : false;
if (missing && inCi) throw new Error(`CI requires ${missing}`);

const admin = { name: 'pgbouncer_admin', password: 'admin-test-password' };

function quiet() {
  return pino({ level: 'silent' });
}

describe('the shipped pgbouncer.ini', () => {
  const ini = parseIni(readShipped('pgbouncer.ini'), 'pgbouncer.ini');
  const settings = ini.pgbouncer ?? {};

  test('transaction pooling, a bounded wait, and no startup parameter dropped silently', () => {
    assert.equal(settings.pool_mode, 'transaction');
    const ignored = (settings.ignore_startup_parameters ?? '').split(',').map((p) => p.trim());
    for (const parameter of [
      'statement_timeout',
      'options',
      'lock_timeout',
      'idle_in_transaction_session_timeout',
    ])
      assert.ok(!ignored.includes(parameter), `${parameter} would be dropped without a word`);
    const wait = Number(settings.query_wait_timeout);
    assert.ok(wait > 0 && wait <= 10, `query_wait_timeout ${wait}: a client must not wait 120 s`);
    assert.equal(settings.server_reset_query_always, '0');
    assert.equal(settings.auth_type, 'hba');
  });

  test('its server connections fit the primary, with room for everything else', () => {
    // max_connections 100 − 3 superuser slots; keep 20 for migrations, backups, monitoring, ops.
    const ceiling = serverConnectionCeiling(ini);
    assert.ok(ceiling > 0 && ceiling <= 97 - 20, `PgBouncer may open ${ceiling} server connections`);
    // 3 app servers × 2 workers × DATABASE_POOL_MAX 10 clients, with headroom for a rolling reload.
    assert.ok(Number(settings.max_client_conn) >= 3 * 2 * 10 * 2);
  });
});

describe('through a real PgBouncer 1.18 in transaction mode', { skip: missing }, () => {
  let cluster: ThrowawayPostgres;
  let bouncer: RunningPgbouncer;
  const database = 'shipshape_bouncer';

  before(async () => {
    cluster = await startThrowawayPostgres();
    createRoles(cluster.url);
    const adminDb = new pg.Client({ connectionString: cluster.url });
    await adminDb.connect();
    await adminDb.query(`CREATE DATABASE ${database}`);
    await adminDb.end();
    bouncer = await startPgbouncer({
      upstream: { host: '127.0.0.1', port: cluster.port },
      users: [
        admin,
        { name: roleNames.owner, password: rolePasswords.owner },
        { name: roleNames.app, password: rolePasswords.app },
      ],
    });
    await prepareDatabase(
      cluster.url.replace(/\/postgres$/, `/${database}`),
      bouncer.url(roleNames.owner, database),
    );
  });

  after(async () => {
    await bouncer?.stop();
    cluster?.destroy();
  });

  test('the shipped file is the one running', async () => {
    const rows = await bouncer.admin<{ key: string; value: string }>('SHOW CONFIG');
    const config = new Map(rows.map((r) => [r.key, r.value]));
    assert.equal(config.get('pool_mode'), 'transaction');
    assert.equal(config.get('query_wait_timeout'), '5');
    assert.equal(config.get('max_db_connections'), '40');
  });

  test('statement_timeout as a startup parameter (how pg sends it) is refused', async () => {
    const client = new pg.Client({
      connectionString: bouncer.url(roleNames.app, database),
      statement_timeout: 1000,
    } as pg.ClientConfig);
    await assert.rejects(client.connect(), /unsupported startup parameter: statement_timeout/);
    await client.end().catch(() => {});
  });

  test('the service’s timeouts hold: the role’s outside transactions, SET LOCAL inside, nothing left behind', async () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      JWT_SECRET: 'x'.repeat(48),
      DATABASE_URL: bouncer.url(roleNames.app, database),
      DATABASE_STATEMENT_TIMEOUT_MS: '1234',
    });
    const handle = createDatabase(config.database, quiet());
    try {
      const show = async (db: Kysely<unknown>) =>
        (await sql<{ statement_timeout: string }>`show statement_timeout`.execute(db)).rows[0]
          ?.statement_timeout;
      assert.equal(
        await show(handle.db as unknown as Kysely<unknown>),
        '10s',
        'ALTER ROLE shipshape_app SET',
      );
      const inside = await handle.db.transaction().execute(async (trx) => {
        const idle = await sql<{
          v: string;
        }>`select current_setting('idle_in_transaction_session_timeout') as v`.execute(trx);
        return { statement: await show(trx as unknown as Kysely<unknown>), idle: idle.rows[0]?.v };
      });
      assert.deepEqual(inside, { statement: '1234ms', idle: '10s' });
      await assert.rejects(
        handle.db.transaction().execute(async (trx) => sql`select pg_sleep(5)`.execute(trx)),
        (err: { code?: string }) => err.code === '57014',
      );
      // Every server connection PgBouncer has is back on the role's value.
      for (let i = 0; i < 20; i++) assert.equal(await show(handle.db as unknown as Kysely<unknown>), '10s');
    } finally {
      await handle.close();
    }
  });

  test('control: a session SET leaks to the next client through PgBouncer (why it is banned)', async () => {
    const url = bouncer.url(roleNames.app, database);
    const first = new pg.Client({ connectionString: url });
    await first.connect();
    await first.query("SET statement_timeout = '7s'");
    await first.end();
    const second = new pg.Client({ connectionString: url });
    await second.connect();
    try {
      // server_round_robin = 0: the server connection just released is the next one handed out.
      const { rows } = await second.query('show statement_timeout');
      assert.equal(rows[0]?.statement_timeout, '7s');
      await second.query('RESET statement_timeout');
    } finally {
      await second.end();
    }
  });

  test('migrations through PgBouncer: applied once by concurrent runs, and no lock left behind', async () => {
    const fresh = 'shipshape_bouncer_migrate';
    const direct = cluster.url.replace(/\/postgres$/, `/${fresh}`);
    const adminDb = new pg.Client({ connectionString: cluster.url });
    await adminDb.connect();
    try {
      await adminDb.query(`CREATE DATABASE ${fresh}`);
      psqlFile(direct, `${root}deploy/postgres/database.sql`);
      const config = loadConfig({
        NODE_ENV: 'test',
        JWT_SECRET: 'x'.repeat(48),
        DATABASE_URL: bouncer.url(roleNames.owner, fresh),
      });
      const handles = [createDatabase(config.database, quiet()), createDatabase(config.database, quiet())];
      try {
        const applied = await Promise.all(handles.map((h) => migrateToLatest(h.db, h.engine)));
        assert.deepEqual(
          applied.flat(),
          migrationList().map((m) => m.name),
          'exactly one run applied them',
        );
      } finally {
        await Promise.all(handles.map((h) => h.close()));
      }
      const locks = await adminDb.query(
        "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = $1",
        [fresh],
      );
      assert.equal(locks.rows[0]?.n, 0);
    } finally {
      await adminDb.query(`DROP DATABASE IF EXISTS ${fresh} WITH (FORCE)`).catch(() => {});
      await adminDb.end();
    }
  });

  test('the suites of every repository pass through it as shipshape_app', async () => {
    // One suite per repository, on PostgreSQL only: orders (concurrency on the last units,
    // idempotency, listing), auth and sessions, products, users, feature flags, and the job queue
    // (its FOR UPDATE SKIP LOCKED claim and the clean-up jobs).
    const files = [
      'test/orders/concurrency.test.ts',
      'test/orders/idempotency.test.ts',
      'test/orders/orders.test.ts',
      'test/auth/auth.test.ts',
      'test/products/products.test.ts',
      'test/users/users.test.ts',
      'test/flags/flags.test.ts',
      'test/jobs/queue.test.ts',
      'test/jobs/maintenance.test.ts',
    ];
    const before = await bouncer.admin<{ database: string; total_xact_count: string }>('SHOW STATS');
    const xacts = (rows: typeof before) => rows.reduce((n, r) => n + Number(r.total_xact_count), 0);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=2', ...files],
      {
        cwd: root,
        env: {
          // Not as a child of this runner (which would take its report): a run of its own.
          ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT')),
          NODE_ENV: 'test',
          TEST_ENGINES: 'postgres',
          TEST_DATABASE_URL: cluster.url,
          TEST_DATABASE_APP_URL: bouncer.url(roleNames.app, 'postgres'),
          TEST_DATABASE_OWNER_URL: bouncer.url(roleNames.owner, 'postgres'),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 480_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(killer);
    const passed = Number(/ℹ pass (\d+)/.exec(output)?.[1] ?? 0);
    const failed = Number(/ℹ fail (\d+)/.exec(output)?.[1] ?? -1);
    assert.equal(code, 0, output.slice(-6000));
    assert.equal(failed, 0, output.slice(-6000));
    const skipped = Number(/ℹ skipped (\d+)/.exec(output)?.[1] ?? 0);
    console.log(`through PgBouncer: ${files.length} files, ${passed} passed, ${skipped} skipped`);
    // Every file ran its PostgreSQL tests: 78 on 2026-12-07; a file whose service went missing
    // would skip them, and one that did not run at all would take its share away.
    assert.equal(skipped, 0, output.slice(-3000));
    assert.ok(passed >= 70, `only ${passed} tests ran:\n${output.slice(-3000)}`);
    const afterStats = await bouncer.admin<{ database: string; total_xact_count: string }>('SHOW STATS');
    const suite = (rows: typeof before) => rows.filter((r) => r.database.startsWith('shipshape_test_'));
    assert.ok(suite(afterStats).length >= 5, 'each suite’s databases were reached through PgBouncer');
    assert.ok(
      xacts(suite(afterStats)) - xacts(suite(before)) > 300,
      `the suite’s transactions went through PgBouncer: ${JSON.stringify(suite(afterStats))}`,
    );
  });
});

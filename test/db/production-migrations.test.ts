import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { type MigrationPhase, migrationNames } from '../../src/db/migrator.js';
import {
  migrateProduction,
  migratorLockKey,
  ProductionMigrationError,
} from '../../src/db/production-migrator.js';
import { ensureBuilt } from '../harness/pm2.js';
import { skipUnless } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';

/**
 * `npm run db:migrate:production` on real PostgreSQL 15: a migration blocked by an open
 * transaction gives up after lock_timeout (writers are not queued behind it for the length of that
 * transaction, as a plain ALTER would queue them), retries, then fails; two migrators → one waits;
 * a contract migration waits until every retained release knows it; the CLI applies the service's
 * migrations and reports the head.
 */

describe('db:migrate:production (PostgreSQL)', { skip: await skipUnless('postgres') }, () => {
  let database: TestDatabaseEnv;
  let url: string;
  let admin: pg.Client;
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);

  const m = (name: string, phase: MigrationPhase, up: (db: Kysely<unknown>) => Promise<void>) => ({
    name,
    phase,
    up,
  });
  const base = [
    m('001_accounts', 'expand', async (db) => {
      await sql`create table accounts (id serial primary key, email text, legacy_name text)`.execute(db);
    }),
  ];
  const options = (over: Partial<Parameters<typeof migrateProduction>[1]> = {}) => ({
    lockTimeoutMs: 300,
    statementTimeoutMs: 10_000,
    retries: 2,
    lockWaitMs: 30_000,
    contractAllowed: new Set<string>(),
    log,
    migrations: base,
    ...over,
  });

  before(async () => {
    database = await testDatabaseEnv('postgres');
    url = database.env.DATABASE_URL as string;
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  after(async () => {
    await admin?.end();
    await database?.cleanup();
  });

  test('applies in order and reports the head', async () => {
    const result = await migrateProduction(url, options());
    assert.deepEqual(result, { applied: ['001_accounts'], deferred: [], head: '001_accounts' });
    assert.deepEqual((await migrateProduction(url, options())).applied, []);
  });

  test('blocked by an open transaction: gives up after lock_timeout (and its retries) instead of queueing writers', async () => {
    const holder = new pg.Client({ connectionString: url });
    const writer = new pg.Client({ connectionString: url });
    await holder.connect();
    await writer.connect();
    try {
      // A long report holds ACCESS SHARE on the table for as long as its transaction lasts.
      await holder.query('BEGIN');
      await holder.query('SELECT count(*) FROM accounts');
      const addColumn = m('002_add_column', 'expand', async (db) => {
        await sql`alter table accounts add column nickname text`.execute(db);
      });
      const started = Date.now();
      const migrating = migrateProduction(url, options({ migrations: [...base, addColumn] })).catch(
        (e: unknown) => e,
      );
      // A writer arriving while the ALTER waits for its lock: without lock_timeout it would queue
      // behind the ALTER until the report ends; here it waits at most one lock_timeout.
      await waitUntil(
        async () =>
          (
            await admin.query(
              `SELECT 1 FROM pg_stat_activity WHERE application_name = 'shipshape-migrate' AND wait_event_type = 'Lock'`,
            )
          ).rowCount === 1,
        { what: 'the ALTER to wait for its lock', intervalMs: 5 },
      );
      const writeStarted = Date.now();
      await writer.query(`INSERT INTO accounts (email) VALUES ('w@example.com')`);
      const writeMs = Date.now() - writeStarted;
      const err = await migrating;
      const tookMs = Date.now() - started;
      console.log(
        `blocked migration: failed after ${tookMs} ms (3 attempts of 300 ms + pauses); a concurrent INSERT waited ${writeMs} ms`,
      );
      assert.ok(err instanceof ProductionMigrationError, String(err));
      assert.match(
        err.message,
        /migration 002_add_column failed: could not get its lock within 300 ms, 3 times/,
      );
      assert.ok(writeMs < 3_000, `the writer waited ${writeMs} ms (the report was still open)`);
      assert.equal(
        logs.filter((l) => /002_add_column: could not get its lock/.test(l)).length,
        2,
        'two retries',
      );
      const cols = await admin.query(
        `SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'nickname'`,
      );
      assert.equal(cols.rowCount, 0, 'rolled back');
      // The report ends: the same migration goes through.
      await holder.query('COMMIT');
      assert.deepEqual(
        (await migrateProduction(url, options({ migrations: [...base, addColumn] }))).applied,
        ['002_add_column'],
      );
    } finally {
      await holder.end();
      await writer.end();
    }
  });

  test('two migrators at once: the second waits for the first, says so, then finds nothing to do', async () => {
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    try {
      await locker.query('SELECT pg_advisory_lock($1)', [migratorLockKey]);
      const slow = m('003_slow', 'expand', async (db) => {
        await sql`select pg_sleep(0.5)`.execute(db);
        await sql`create table audit_log (id serial primary key)`.execute(db);
      });
      const list = [...base, m('002_add_column', 'expand', async () => {}), slow];
      const first = migrateProduction(
        url,
        options({ migrations: list, log: (l) => logs.push(`first: ${l}`) }),
      );
      await waitUntil(() => logs.some((l) => /^first: waiting for another migrator \(backend \d+/.test(l)), {
        what: 'the first migrator to wait',
      });
      const second = migrateProduction(
        url,
        options({ migrations: list, log: (l) => logs.push(`second: ${l}`) }),
      );
      await waitUntil(() => logs.some((l) => /^second: waiting for another migrator/.test(l)), {
        what: 'the second migrator to wait',
      });
      await locker.query('SELECT pg_advisory_unlock($1)', [migratorLockKey]);
      const [a, b] = await Promise.all([first, second]);
      assert.deepEqual([...a.applied, ...b.applied], ['003_slow'], 'applied once');
    } finally {
      await locker.end();
    }
  });

  test('a contract migration is deferred until every retained release knows it', async () => {
    const list = [
      ...base,
      m('002_add_column', 'expand', async () => {}),
      m('003_slow', 'expand', async () => {}),
      m('004_drop_legacy_name', 'contract', async (db) => {
        await sql`alter table accounts drop column legacy_name`.execute(db);
      }),
    ];
    const deferred = await migrateProduction(url, options({ migrations: list }));
    assert.deepEqual(deferred, { applied: [], deferred: ['004_drop_legacy_name'], head: '003_slow' });
    const done = await migrateProduction(
      url,
      options({ migrations: list, contractAllowed: new Set(['004_drop_legacy_name']) }),
    );
    assert.deepEqual(done.applied, ['004_drop_legacy_name']);
  });

  /** The built CLI (`npm run db:migrate:production`) with these database variables. */
  const cli = (env: Record<string, string | undefined>, ...args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      const child = spawn(process.execPath, ['dist/cli/migrate-production.js', ...args], {
        env: { ...process.env, NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(48), ...env },
      });
      let out = '';
      child.stdout.on('data', (c) => {
        out += c;
      });
      child.stderr.on('data', (c) => {
        out += c;
      });
      child.once('close', (code) => resolve({ code: code ?? 1, out }));
    });

  test('npm run db:migrate:production applies the service migrations; --status reports the head', async () => {
    await ensureBuilt();
    const fresh = await testDatabaseEnv('postgres');
    try {
      const run = (...args: string[]) => cli({ DATABASE_URL: fresh.env.DATABASE_URL }, ...args);
      const applied = await run();
      assert.equal(applied.code, 0, applied.out);
      const names = migrationNames();
      const head = names.at(-1);
      assert.ok(applied.out.includes(`applied ${names.join(', ')}; head ${head}`), applied.out);
      const status = await run('--status');
      assert.equal(status.code, 0, status.out);
      assert.deepEqual(JSON.parse(status.out.split('\n').find((l) => l.startsWith('{')) ?? ''), {
        head,
        applied: names,
        contract: [],
      });
      assert.equal((await run('--retries', 'x')).code, 2);
    } finally {
      await fresh.cleanup();
    }
  });

  test('DATABASE_MIGRATION_URL: the migrations run there (the owner, past PgBouncer), not at the service’s DATABASE_URL', async () => {
    await ensureBuilt();
    const [owned, service] = [await testDatabaseEnv('postgres'), await testDatabaseEnv('postgres')];
    const tables = async (databaseUrl: string | undefined) => {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        const { rows } = await client.query<{ n: string }>(
          "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'",
        );
        return Number(rows[0]?.n);
      } finally {
        await client.end();
      }
    };
    try {
      const before = await tables(service.env.DATABASE_URL);
      const result = await cli({
        DATABASE_URL: service.env.DATABASE_URL,
        DATABASE_MIGRATION_URL: owned.env.DATABASE_URL,
      });
      assert.equal(result.code, 0, result.out);
      assert.match(
        result.out,
        new RegExp(`database: postgres database ${new URL(owned.env.DATABASE_URL ?? '').pathname.slice(1)} `),
      );
      assert.ok(result.out.includes(`head ${migrationNames().at(-1)}`), result.out);
      assert.ok((await tables(owned.env.DATABASE_URL)) > 3, 'migrated where DATABASE_MIGRATION_URL points');
      assert.equal(await tables(service.env.DATABASE_URL), before, 'DATABASE_URL untouched');
      // Without DATABASE_URL there is no PostgreSQL service to migrate for: refused, said plainly.
      const alone = await cli({ DATABASE_URL: undefined, DATABASE_MIGRATION_URL: owned.env.DATABASE_URL });
      assert.equal(alone.code, 1, alone.out);
      assert.match(alone.out, /DATABASE_MIGRATION_URL needs DATABASE_URL/);
    } finally {
      await owned.cleanup();
      await service.cleanup();
    }
  });
});

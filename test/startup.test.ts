import assert from 'node:assert/strict';
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseEnv } from 'node:util';
import { sql } from 'kysely';
import { loadConfig } from '../src/config.js';
import { migrateToLatest } from '../src/db/migrator.js';
import { createDatabase, type DatabaseHandle } from '../src/infra/database.js';
import { ensureBuilt } from './harness/pm2.js';
import { freePort } from './harness/ports.js';
import { startServerProcess } from './harness/process.js';
import { skipUnless } from './harness/services.js';
import { buildTestApp, captureLogs, type TestDatabaseEnv, testConfig, testDatabaseEnv } from './helper.js';
import { send } from './support/load.js';

// The built service, as npm start and PM2 run it (and no TypeScript compile per process).
const mainEntry = new URL('../dist/main.js', import.meta.url).pathname;
await ensureBuilt();
const envExample = new URL('../.env.example', import.meta.url).pathname;

/** Runs src/main.ts to its exit; for start-ups that must fail. */
function runToExit(
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [mainEntry], {
      env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'info', HOST: '127.0.0.1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('exit', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function eventually<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await probe();
  while (!accept(value) && Date.now() < deadline) {
    await sleep(200);
    value = await probe();
  }
  return value;
}

describe('readiness follows the schema (PostgreSQL)', { skip: await skipUnless('postgres') }, () => {
  test('unmigrated: /ready is 503 naming the pending migration', async () => {
    const app = await buildTestApp({ engine: 'postgres', env: { DATABASE_MIGRATE_ON_START: 'false' } });
    try {
      const res = await app.inject({ url: '/ready' });
      assert.equal(res.statusCode, 503);
      assert.deepEqual(res.json(), {
        status: 'unavailable',
        checks: { database: 'up', cache: 'up' },
        reason:
          'schema behind: pending migrations (001_initial, 002_feature_flags, 003_accounts_and_jobs); run `npm run db:migrate`',
      });
    } finally {
      await app.close();
    }
  });

  test('half-migrated: tables gone behind the migrator’s back, or a migration unrecorded → 503 with the reason', async () => {
    const app = await buildTestApp({ engine: 'postgres' });
    try {
      assert.equal((await app.inject({ url: '/ready' })).statusCode, 200);
      await sql`DROP TABLE order_items, idempotency_keys`.execute(app.database.db);
      const missing = await eventually(
        () => app.inject({ url: '/ready' }),
        (r) => r.statusCode === 503,
      );
      assert.equal(missing.statusCode, 503);
      assert.equal(
        missing.json().reason,
        'schema incomplete: missing tables (order_items, idempotency_keys) although every migration is recorded',
      );
      await sql`DELETE FROM kysely_migration`.execute(app.database.db);
      const behind = await eventually(
        () => app.inject({ url: '/ready' }),
        (r) => /schema behind/.test(r.json().reason ?? ''),
      );
      assert.match(
        behind.json().reason,
        /^schema behind: pending migrations \(001_initial, 002_feature_flags, 003_accounts_and_jobs\)/,
      );
    } finally {
      await app.close();
    }
  });

  describe('the real process on an unmigrated database', () => {
    let database: TestDatabaseEnv;
    let child: ChildProcess | undefined;
    before(async () => {
      database = await testDatabaseEnv('postgres');
    });
    after(async () => {
      child?.kill('SIGKILL');
      await database?.cleanup();
    });

    test('does not send ready to PM2 until the schema is migrated, and says why while it waits', async () => {
      const port = await freePort();
      const messages: unknown[] = [];
      const lines: string[] = [];
      child = fork(mainEntry, [], {
        env: {
          ...process.env,
          ...database.env,
          DATABASE_MIGRATE_ON_START: 'false',
          NODE_ENV: 'test',
          LOG_LEVEL: 'info',
          HOST: '127.0.0.1',
          PORT: String(port),
        },
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      });
      child.on('message', (m) => messages.push(m));
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => lines.push(...chunk.split('\n')));
      const waiting = await eventually(
        async () => lines.find((l) => l.includes('not ready yet, waiting: schema behind')),
        (l) => l !== undefined,
        90_000,
      );
      assert.ok(waiting, 'logs why it waits');
      const ready = await send(port, { method: 'GET', path: '/ready' });
      assert.equal(ready.status, 503);
      assert.match(
        JSON.parse(ready.body).reason,
        /pending migrations \(001_initial, 002_feature_flags, 003_accounts_and_jobs\)/,
      );
      assert.deepEqual(messages, [], 'no ready message while the schema is behind');

      const handle: DatabaseHandle = createDatabase(testConfig(database.env).database, captureLogs().logger);
      try {
        await migrateToLatest(handle.db, handle.engine);
      } finally {
        await handle.close();
      }
      await eventually(
        async () => messages.length,
        (n) => n > 0,
        60_000,
      );
      assert.deepEqual(messages, ['ready']);
      assert.equal((await send(port, { method: 'GET', path: '/ready' })).status, 200);
      child.kill('SIGTERM');
      await once(child, 'exit');
      child = undefined;
    });
  });
});

const postgresSkip = await skipUnless('postgres');

describe('start-up failures say what to do, in one line', () => {
  test('port in use', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const result = await runToExit({ PORT: String(port), SQLITE_PATH: ':memory:' });
      assert.equal(result.code, 1);
      assert.equal(
        result.stderr.trim(),
        `Start-up failed: PORT ${port} is in use on 127.0.0.1 (another Shipshape, or another program): stop it or set PORT to a free port`,
      );
    } finally {
      blocker.close();
    }
  });

  test('PostgreSQL: no such database; nobody listening (after DATABASE_WAIT_SECONDS, with progress)', {
    skip: postgresSkip,
  }, async () => {
    const missing = await runToExit({
      PORT: '0',
      DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/shipshape_test_no_such_database',
    });
    assert.equal(missing.code, 1);
    assert.equal(
      missing.stderr.trim(),
      'Start-up failed: database "shipshape_test_no_such_database" does not exist on 127.0.0.1:5432: create it (createdb -h 127.0.0.1 -p 5432 -U postgres shipshape_test_no_such_database) or fix DATABASE_URL',
    );

    const closed = await freePort();
    const down = await runToExit({
      PORT: '0',
      DATABASE_URL: `postgres://postgres@127.0.0.1:${closed}/shipshape`,
      DATABASE_WAIT_SECONDS: '3',
      DATABASE_CONNECT_TIMEOUT_MS: '500',
    });
    assert.equal(down.code, 1);
    assert.match(
      down.stderr.trim(),
      new RegExp(
        `^Start-up failed: database not reachable \\(postgres database shipshape on 127\\.0\\.0\\.1:${closed}\\): .*; gave up after \\d+ s \\(DATABASE_WAIT_SECONDS\\): check that the database runs and DATABASE_URL points at it$`,
      ),
    );
    assert.match(down.stdout, /not ready yet, waiting: database not reachable/);
  });
});

describe('.env.example', () => {
  test('every line loads as it is: through loadConfig, and through node --env-file into a running service', async () => {
    const parsed = parseEnv(readFileSync(envExample, 'utf8'));
    assert.ok(Object.keys(parsed).length > 10);
    loadConfig(parsed);
    // The file's values apply where the environment sets nothing; the test keeps its own port and
    // database (node --env-file never overrides the environment).
    const server = await startServerProcess(mainEntry, { SQLITE_PATH: ':memory:' }, 90_000, [
      `--env-file=${envExample}`,
    ]);
    try {
      assert.equal((await send(server.port, { method: 'GET', path: '/health' })).status, 200);
      const ready = server.logs.find((l) => l.msg === 'ready');
      assert.equal(ready?.engine, 'sqlite');
    } finally {
      server.child.kill('SIGTERM');
      await server.exited();
    }
  });
});

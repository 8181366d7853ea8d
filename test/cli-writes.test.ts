import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type ServerProcess, startServerProcess } from './harness/process.js';
import { redisUrl } from './harness/services.js';
import { waitUntil } from './harness/wait.js';
import { deleteKeys, skipEngine, testDatabaseEnv, testKeyPrefix } from './helper.js';

/**
 * A write made by the real CLI reaches an already-running service (a real process) at its next
 * read: on SQLite with the in-process cache (PRAGMA data_version), and on PostgreSQL with Redis
 * (the CLI replaces the shared cache generation). And `npm run demo` shows the product.
 */

const root = new URL('..', import.meta.url).pathname;
const mainEntry = join(root, 'src', 'main.ts');
const jwtSecret = 'cli-writes-test-secret-0123456789abcdef';

interface Result {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a real command-line entry point (through tsx); a generous deadline for a loaded machine. */
function cli(script: string, env: Record<string, string>, input = '', ...args: string[]): Promise<Result> {
  const entry = join(root, 'src', 'cli', `${script}.ts`);
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', entry, ...args],
      { env: { ...process.env, NODE_ENV: 'test', ...env }, encoding: 'utf8', timeout: 300_000 },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input);
  });
}

async function get(server: ServerProcess, path: string) {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`);
  return { status: res.status, body: await res.text() };
}

async function login(server: ServerProcess, loginName: string, password: string) {
  const res = await fetch(`http://127.0.0.1:${server.port}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ login: loginName, password }),
  });
  return { status: res.status, body: (await res.json()) as { user?: { role: string } } };
}

async function stop(server: ServerProcess | undefined): Promise<void> {
  if (server === undefined || server.child.exitCode !== null) return;
  server.child.kill('SIGTERM');
  await server.exited();
}

/** Hits of the product-list cache so far, from the service's own metrics. */
async function listHits(server: ServerProcess): Promise<number> {
  const { body } = await get(server, '/metrics');
  const line = body
    .split('\n')
    .find((l) => /^cache_requests_total\{.*cache="product_list".*result="hit"/.test(l));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

const stages = [
  { name: 'SQLite with the in-process cache', engine: 'sqlite' as const, redis: false },
  { name: 'PostgreSQL with the Redis cache', engine: 'postgres' as const, redis: true },
];

for (const stage of stages) {
  describe(`CLI writes reach a running service: ${stage.name}`, {
    skip: await skipEngine(stage.engine, ...(stage.redis ? (['redis'] as const) : [])),
  }, () => {
    let server: ServerProcess | undefined;
    const cleanups: Array<() => Promise<void>> = [];
    after(async () => {
      await stop(server);
      for (const cleanup of cleanups.reverse()) await cleanup();
    });

    test('db:seed while serving: the next read shows the catalog; create-admin while serving: log in', async () => {
      const database = await testDatabaseEnv(stage.engine);
      cleanups.push(() => database.cleanup());
      const prefix = testKeyPrefix('cliwrites');
      const env: Record<string, string> = {
        ...database.env,
        JWT_SECRET: jwtSecret,
        ...(stage.redis ? { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix } : {}),
      };
      if (stage.redis) cleanups.push(() => deleteKeys(redisUrl, prefix));
      server = await startServerProcess(mainEntry, env);

      // The empty first page, read twice: the second answer comes from the cache.
      const hitsBefore = await listHits(server);
      for (let i = 0; i < 2; i++) {
        const empty = await get(server, '/api/products?limit=5');
        assert.equal(empty.status, 200, empty.body);
        assert.deepEqual(JSON.parse(empty.body).items, []);
      }
      assert.ok((await listHits(server)) > hitsBefore, 'the empty page was served from the cache');

      // What an operator runs in a second terminal (migrations were applied by the service).
      const seeded = await cli('seed', { ...env, DATABASE_MIGRATE_ON_START: 'false' });
      assert.equal(seeded.status, 0, seeded.stderr);
      assert.match(seeded.stdout, /seeded 1000 new demo products/);
      assert.match(seeded.stdout, stage.redis ? /shared cache \(Redis\) is invalidated/ : /next read/);

      // The very next read, no waiting.
      const page = await get(server, '/api/products?limit=5');
      assert.equal(page.status, 200, page.body);
      assert.deepEqual(
        JSON.parse(page.body).items.map((p: { sku: string }) => p.sku),
        ['DEMO-0001', 'DEMO-0002', 'DEMO-0003', 'DEMO-0004', 'DEMO-0005'],
      );

      const password = 'admin password made by the cli';
      const username = `cliadmin${process.pid}`;
      const created = await cli(
        'create-admin',
        env,
        `${password}\n`,
        '--email',
        `${username}@example.com`,
        '--username',
        username,
      );
      assert.equal(created.status, 0, created.stderr);
      const loggedIn = await login(server, username, password);
      assert.equal(loggedIn.status, 200, JSON.stringify(loggedIn.body));
      assert.equal(loggedIn.body.user?.role, 'admin');
    });
  });
}

describe('npm run demo', { skip: await skipEngine('sqlite') }, () => {
  let server: ServerProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-demo-'));
  after(async () => {
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('refused with NODE_ENV=production, and with a DATABASE_URL', async () => {
    const production = await cli('demo', { NODE_ENV: 'production', SQLITE_PATH: join(dir, 'no.db') });
    assert.equal(production.status, 1);
    assert.match(production.stderr, /Refused with NODE_ENV=production/);
    assert.doesNotMatch(production.stdout, /password/);
    const postgres = await cli('demo', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    assert.equal(postgres.status, 1);
    assert.match(postgres.stderr, /unset DATABASE_URL/);
  });

  test('the demo catalog, a customer and an admin whose printed passwords log in', async () => {
    server = await startServerProcess(join(root, 'src', 'cli', 'demo.ts'), {
      NODE_ENV: 'development',
      SQLITE_PATH: join(dir, 'demo.db'),
    });
    const running = server;
    await waitUntil(() => /login: demo-admin\s+password: \S+/.test(running.stdout()), {
      what: 'the demo accounts printed',
    });
    const output = running.stdout();
    assert.match(output, /Demo catalog: 1000 products added/);
    const password = (name: string) =>
      output.match(new RegExp(`login: ${name}\\s+password: (\\S+)`))?.[1] ?? '';

    const customer = await login(running, 'demo', password('demo'));
    assert.equal(customer.status, 200, JSON.stringify(customer.body));
    assert.equal(customer.body.user?.role, 'customer');
    const admin = await login(running, 'demo-admin', password('demo-admin'));
    assert.equal(admin.status, 200, JSON.stringify(admin.body));
    assert.equal(admin.body.user?.role, 'admin');

    const page = await get(running, '/api/products?limit=3');
    assert.equal(JSON.parse(page.body).items.length, 3, 'the first run shows the product');
  });
});

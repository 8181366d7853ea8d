import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { describeTarget, type Manifest, readManifest } from '../../src/ops/backup.js';
import { freePort } from '../harness/ports.js';
import { createTestDatabase, startThrowawayPostgres, type TestDatabase } from '../harness/postgres.js';
import { createRoles, databaseSql, psqlFile, roleNames, withCredentials } from '../harness/roles.js';
import { inCi } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, skipEngine, testDatabaseEnv } from '../helper.js';
import { placeOrder } from '../orders/support.js';
import { createProduct } from '../products/support.js';
import { type Account, createAdmin, registerUser } from '../support/accounts.js';

/**
 * The restore drill for `npm run db:backup` / `npm run db:restore` (decision 0072), run through
 * the real commands: orders placed, a backup, more orders; the backup restored into a scratch
 * database has exactly the rows of backup time (counts and checksums per table), a wrong key and a
 * damaged file are refused with a clear message, a non-empty target needs --force, and the success
 * time reaches Prometheus through node-exporter's textfile collector. Restored into a cluster with
 * the production roles (roles.sql, database.sql), the tables belong to shipshape_owner whoever
 * restores them, so the service's role writes them and reporting reads them.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
const missingTool = [
  'age',
  'age-keygen',
  'pg_dump',
  'pg_restore',
  'promtool',
  'prometheus-node-exporter',
].find((tool) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
});
const missing =
  missingTool === undefined ? false : `${missingTool} is not installed: scripts/install-ops-tools.sh`;
if (missing && inCi) throw new Error(`CI requires ${missing}`);

interface Cli {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

function cli(name: 'db-backup' | 'db-restore', args: string[], env: Record<string, string>): Promise<Cli> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'src', 'cli', `${name}.ts`), ...args],
      {
        env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'silent', ...env },
        encoding: 'utf8',
        timeout: 300_000,
      },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

function keypair(dir: string, name: string): { identity: string; recipient: string } {
  const identity = join(dir, `${name}.key`);
  execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim();
  return { identity, recipient };
}

async function orderIds(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ id: string }>('SELECT id FROM orders ORDER BY id')).rows.map((r) => r.id);
  } finally {
    await client.end();
  }
}

describe('db:backup and db:restore on PostgreSQL', {
  skip: missing || (await skipEngine('postgres')),
}, () => {
  let app: FastifyInstance;
  let sourceUrl: string;
  let cleanupSource: () => Promise<void>;
  let scratch: TestDatabase;
  let dir: string;
  let keys: { identity: string; recipient: string };
  let manifestPath: string;
  let atBackup: string[];
  let customer: Account;
  let productId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-backup-test-'));
    keys = keypair(dir, 'backup');
    const database = await testDatabaseEnv('postgres');
    cleanupSource = database.cleanup;
    sourceUrl = database.env.DATABASE_URL ?? '';
    app = await buildTestApp({ engine: 'postgres', env: database.env });
    const admin = await createAdmin(app);
    customer = await registerUser(app);
    productId = (await createProduct(app, admin, { stock: 1000 })).id;
    for (let i = 0; i < 20; i++) {
      const placed = await placeOrder(app, customer, [{ productId, quantity: 1 + (i % 3) }]);
      assert.equal(placed.statusCode, 201, placed.body);
    }
    scratch = await createTestDatabase();
  });

  after(async () => {
    await app?.close();
    await cleanupSource?.();
    await scratch?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the backup: encrypted, with a manifest of checksums, and the success time for node-exporter', async () => {
    atBackup = await orderIds(sourceUrl);
    const textfile = join(dir, 'textfile', 'shipshape_backup.prom');
    const run = await cli(
      'db-backup',
      ['--recipient', keys.recipient, '--out', join(dir, 'out'), '--textfile', textfile],
      { DATABASE_URL: sourceUrl },
    );
    assert.equal(run.status, 0, run.stderr);
    manifestPath = /manifest: (.+)/.exec(run.stdout)?.[1]?.trim() ?? '';
    const manifest: Manifest = readManifest(manifestPath);
    assert.equal(manifest.tables.orders?.rows, 20);
    assert.equal(manifest.tables.products?.rows, 1);
    assert.doesNotMatch(
      JSON.stringify(manifest),
      /password|postgres:\/\//i,
      'no credentials in the manifest',
    );
    const encrypted = readFileSync(join(dir, 'out', manifest.file));
    assert.match(encrypted.subarray(0, 40).toString('latin1'), /^age-encryption\.org\/v1/);
    assert.ok(!encrypted.includes(Buffer.from(customer.user.email)), 'no plaintext in the backup file');

    // More orders after the backup: they must not come back in the restore.
    for (let i = 0; i < 5; i++)
      assert.equal((await placeOrder(app, customer, [{ productId, quantity: 1 }])).statusCode, 201);

    // The metric the BackupTooOld alert reads: valid exposition, and scraped by node-exporter.
    execFileSync('promtool', ['check', 'metrics'], { input: readFileSync(textfile) });
    const port = await freePort();
    const exporter = spawn(
      'prometheus-node-exporter',
      [
        `--web.listen-address=127.0.0.1:${port}`,
        '--collector.disable-defaults',
        '--collector.textfile',
        `--collector.textfile.directory=${join(dir, 'textfile')}`,
      ],
      { stdio: 'ignore' },
    );
    try {
      let body = '';
      await waitUntil(
        async () => {
          body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          return body.includes('backup_last_success_timestamp_seconds');
        },
        { what: 'node-exporter serving the textfile' },
      );
      const value = Number(/^backup_last_success_timestamp_seconds\{[^}]*\} (\S+)$/m.exec(body)?.[1]);
      assert.ok(Math.abs(value - Date.now() / 1000) < 600, `timestamp ${value}`);
    } finally {
      exporter.kill('SIGKILL');
    }
  });

  test('restored into a scratch database: the rows of backup time, table by table, and its time', async () => {
    const run = await cli(
      'db-restore',
      ['--from', manifestPath, '--into', scratch.url, '--identity', keys.identity],
      {},
    );
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /every table matches the manifest/);
    const seconds = Number(/in ([\d.]+) s/.exec(run.stdout)?.[1]);
    assert.ok(seconds > 0);
    console.log(`restore drill: ${run.stdout.trim()}`);
    const restored = await orderIds(scratch.url);
    assert.deepEqual(restored, atBackup, 'exactly the orders placed before the backup');
    assert.equal((await orderIds(sourceUrl)).length, 25);
    // The machine's server has no production roles: restored as the connecting role, and said so.
    assert.match(run.stdout, /note: no role shipshape_owner in .*granted to nobody/);
  });

  test('restored into a cluster with the production roles: owned by shipshape_owner, the app writes, reporting reads', async () => {
    // Roles are cluster-wide: a cluster of our own (trust on loopback, so role passwords do not matter).
    const cluster = await startThrowawayPostgres();
    try {
      createRoles(cluster.url);
      const admin = new pg.Client({ connectionString: cluster.url });
      await admin.connect();
      for (const name of ['shipshape', 'unprepared', 'other']) await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      const db = (name: string, role = 'postgres') => withCredentials(cluster.url, role, 'unused', name);
      psqlFile(db('shipshape'), databaseSql);
      psqlFile(db('other'), databaseSql);

      // Without database.sql the restored tables would be granted to nobody: refused, nothing restored.
      const unprepared = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', db('unprepared'), '--identity', keys.identity],
        {},
      );
      assert.equal(unprepared.status, 1);
      assert.match(
        unprepared.stderr,
        /has the role shipshape_owner but not its default privileges: run deploy\/postgres\/database\.sql/,
      );
      assert.equal(await tableCount(db('unprepared')), 0);
      // A role that cannot become the owner is refused too (its tables would be its own).
      const asApp = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', db('other', roleNames.app), '--identity', keys.identity],
        {},
      );
      assert.equal(asApp.status, 1);
      assert.match(asApp.stderr, /shipshape_app cannot act as shipshape_owner/);
      assert.equal(await tableCount(db('other')), 0);

      // The runbook's order: roles, database.sql, then the restore, here as the superuser.
      const run = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', db('shipshape'), '--identity', keys.identity],
        {},
      );
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /every table matches the manifest/);
      assert.match(run.stdout, /the restored tables belong to shipshape_owner/);
      assert.doesNotMatch(run.stdout, /note:/);
      const superuser = new pg.Client({ connectionString: db('shipshape') });
      await superuser.connect();
      const { rows: owners } = await superuser.query<{ owner: string }>(
        "SELECT DISTINCT tableowner AS owner FROM pg_tables WHERE schemaname = 'public'",
      );
      await superuser.end();
      assert.deepEqual(owners, [{ owner: roleNames.owner }]);

      const app = new pg.Client({ connectionString: db('shipshape', roleNames.app) });
      const reporting = new pg.Client({ connectionString: db('shipshape', roleNames.reporting) });
      await app.connect();
      await reporting.connect();
      try {
        assert.deepEqual(
          (await app.query<{ id: string }>('SELECT id FROM orders ORDER BY id')).rows.map((r) => r.id),
          atBackup,
        );
        await app.query(
          `INSERT INTO products (id, sku, name, description, price, stock)
           VALUES ('00000000-0000-4000-8000-00000000b001', 'RESTORED-1', 'n', 'd', '1.00', 1)`,
        );
        await app.query("UPDATE products SET stock = stock + 1 WHERE sku = 'RESTORED-1'");
        await app.query("DELETE FROM products WHERE sku = 'RESTORED-1'");
        // Still only rows: the tables are the owner's, not the app's.
        await assert.rejects(app.query('DROP TABLE order_items'), /must be owner/);
        const tables = (
          await reporting.query<{ name: string }>(
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
          )
        ).rows.map((r) => r.name);
        assert.ok(tables.length >= 4, tables.join());
        for (const table of tables) await reporting.query(`SELECT * FROM ${table} LIMIT 1`);
        assert.equal(
          (await reporting.query<{ n: number }>('SELECT count(*)::int AS n FROM orders')).rows[0]?.n,
          atBackup.length,
        );
        await reporting.query('SET default_transaction_read_only = off');
        await assert.rejects(reporting.query('DELETE FROM orders'), /permission denied/);
      } finally {
        await app.end();
        await reporting.end();
      }
    } finally {
      cluster.destroy();
    }
  });

  test('a non-empty target is refused unless --force', async () => {
    const refused = await cli(
      'db-restore',
      ['--from', manifestPath, '--into', scratch.url, '--identity', keys.identity],
      {},
    );
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /is not empty \(\d+ tables\).*--force/);
    const client = new pg.Client({ connectionString: scratch.url });
    await client.connect();
    await client.query('DELETE FROM order_items');
    await client.query('DELETE FROM orders');
    await client.end();
    const forced = await cli(
      'db-restore',
      ['--from', manifestPath, '--into', scratch.url, '--identity', keys.identity, '--force'],
      {},
    );
    assert.equal(forced.status, 0, forced.stderr);
    assert.deepEqual(await orderIds(scratch.url), atBackup);
  });

  test('a wrong key and a damaged file are refused, saying which', async () => {
    const other = keypair(dir, 'other');
    const empty = await createTestDatabase();
    try {
      const wrong = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', empty.url, '--identity', other.identity],
        {},
      );
      assert.equal(wrong.status, 1);
      assert.match(
        wrong.stderr,
        /^wrong key: the identity in .*other\.key is not one this backup was encrypted to/m,
      );
      const manifest = readManifest(manifestPath);
      const file = join(dir, 'out', manifest.file);
      const bytes = readFileSync(file);
      bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 0xff;
      writeFileSync(file, bytes);
      const damaged = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', empty.url, '--identity', keys.identity],
        {},
      );
      assert.equal(damaged.status, 1);
      assert.match(damaged.stderr, /does not match its manifest's sha256: damaged or altered, not restored/);
      assert.deepEqual(await tableCount(empty.url), 0, 'nothing was restored');
    } finally {
      await empty.drop();
    }
  });

  test('with DATABASE_MIGRATION_URL set, the dump reads there (the owner, straight to PostgreSQL), not DATABASE_URL', async () => {
    // A server's DATABASE_URL is the app role through PgBouncer; here it points at a closed port,
    // so the backup succeeds only by the migrations' connection (decision 0111).
    const run = await cli('db-backup', ['--recipient', keys.recipient, '--out', join(dir, 'owner')], {
      DATABASE_URL: `postgres://shipshape_nobody@127.0.0.1:${await freePort()}/nothing`,
      DATABASE_MIGRATION_URL: sourceUrl,
    });
    assert.equal(run.status, 0, run.stderr);
    const manifest = readManifest(/manifest: (.+)/.exec(run.stdout)?.[1]?.trim() ?? '');
    assert.equal(manifest.tables.orders?.rows, (await orderIds(sourceUrl)).length);
    assert.equal(manifest.source, describeTarget(sourceUrl));
  });
});

async function tableCount(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'",
    );
    return rows[0]?.n ?? -1;
  } finally {
    await client.end();
  }
}

describe('db:backup and db:restore on SQLite', { skip: missing }, () => {
  test('a round trip through age, checked against the manifest; an existing file needs --force', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-backup-sqlite-'));
    const database = await testDatabaseEnv('sqlite');
    const app = await buildTestApp({ engine: 'sqlite', env: database.env });
    try {
      const admin = await createAdmin(app);
      const customer = await registerUser(app);
      const product = await createProduct(app, admin, { stock: 100 });
      for (let i = 0; i < 5; i++)
        assert.equal(
          (await placeOrder(app, customer, [{ productId: product.id, quantity: 1 }])).statusCode,
          201,
        );
      const keys = keypair(dir, 'sqlite');
      const source = database.env.SQLITE_PATH ?? '';
      const made = await cli('db-backup', ['--recipient', keys.recipient, '--out', join(dir, 'out')], {
        SQLITE_PATH: source,
      });
      assert.equal(made.status, 0, made.stderr);
      const manifestPath = /manifest: (.+)/.exec(made.stdout)?.[1]?.trim() ?? '';
      assert.equal(readManifest(manifestPath).tables.orders?.rows, 5);
      const into = join(dir, 'restored.db');
      const restored = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', into, '--identity', keys.identity],
        {},
      );
      assert.equal(restored.status, 0, restored.stderr);
      const again = await cli(
        'db-restore',
        ['--from', manifestPath, '--into', into, '--identity', keys.identity],
        {},
      );
      assert.equal(again.status, 1);
      assert.match(again.stderr, /exists: restore to a new path, or pass --force/);
    } finally {
      await app.close();
      await database.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without a recipient nothing is written', async () => {
    const run = await cli('db-backup', ['--out', join(tmpdir(), 'never')], { SQLITE_PATH: ':memory:' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /no age recipient/);
  });
});

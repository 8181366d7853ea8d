import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pgbouncerBinary, startPgbouncer } from '../harness/pgbouncer.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../harness/postgres.js';
import {
  createRoles,
  prepareDatabase,
  roleNames,
  rolePasswords,
  rolesSql,
  withCredentials,
} from '../harness/roles.js';
import { selfSignedCertificate } from '../harness/tls.js';

/**
 * deploy/postgres/roles.sql, database.sql and pg_hba.conf on a cluster of our own (decision 0071):
 * the service's role has DML and nothing more, reporting reads every table (also one a later
 * migration creates) and writes none, and the shipped pg_hba.conf admits only the named roles, with
 * SCRAM, refusing the rest — the superuser over TCP included — and from other hosts over TLS only
 * (the cluster has `ssl = on` with a self-signed certificate, as Debian's has its snakeoil one).
 * The VPC is a stand-in that is not loopback's line: 127.0.0.2/32, connected to from that address;
 * 127.0.0.3 is a host outside it, 127.0.0.1 this host (PgBouncer, the ops tools).
 */

const shippedHba = fileURLToPath(new URL('../../deploy/postgres/pg_hba.conf', import.meta.url));
const database = 'shipshape';
const vpcHost = '127.0.0.2';
const outsideHost = '127.0.0.3';

/** A socket that connects from `localAddress` (any 127/8 address is this machine's on Linux). */
function from(localAddress: string): () => Socket {
  return () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket);
    // node-postgres calls connect(port, host); the source address needs the options form.
    socket.connect = ((port: number, host: string) =>
      connect({ port, host, localAddress })) as Socket['connect'];
    return socket;
  };
}

async function connect(url: string, source?: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    ...(source === undefined ? {} : { stream: from(source) }),
  });
  await client.connect();
  return client;
}

/** Whether a connection is admitted, and with TLS: 'tls', 'clear', or the server's refusal. */
async function admitted(url: string, source?: string): Promise<string> {
  let client: pg.Client;
  try {
    client = await connect(url, source);
  } catch (err) {
    return (err as Error).message;
  }
  try {
    const { rows } = await client.query<{ ssl: boolean; addr: string }>(
      'SELECT ssl, host(client_addr) AS addr FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()',
    );
    assert.equal(rows[0]?.addr, source ?? '127.0.0.1', 'the server saw the intended source address');
    return rows[0]?.ssl === true ? 'tls' : 'clear';
  } finally {
    await client.end();
  }
}

async function sqlState(client: pg.Client, text: string): Promise<string> {
  try {
    await client.query(text);
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

describe('database roles and pg_hba.conf', () => {
  let cluster: ThrowawayPostgres;
  let certificates: string;
  /** A role's URL, over TLS unless told (the certificate is self-signed: not verified here). */
  const as = (role: keyof typeof roleNames, db = database, tls = true) =>
    `${withCredentials(cluster.url, roleNames[role], rolePasswords[role], db)}${tls ? '?sslmode=no-verify' : ''}`;
  let tables: string[];
  /** A column of each table (an UPDATE must name one that exists to reach the privilege check). */
  const firstColumn = new Map<string, string>([['later_reports', 'note']]);

  before(async () => {
    // A server certificate the postgres user can read (the key only it).
    certificates = mkdtempSync(join(tmpdir(), 'shipshape-pg-tls-'));
    chmodSync(certificates, 0o755);
    const [crt, key] = [join(certificates, 'server.crt'), join(certificates, 'server.key')];
    selfSignedCertificate({ certPath: crt, keyPath: key, subject: '/CN=127.0.0.1', days: 2 });
    chmodSync(key, 0o600);
    if (process.getuid?.() === 0) {
      const postgres = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
      chownSync(key, postgres, 0);
      chownSync(crt, postgres, 0);
    }
    cluster = await startThrowawayPostgres({
      conf: ['ssl = on', `ssl_cert_file = '${crt}'`, `ssl_key_file = '${key}'`],
    });
    createRoles(cluster.url);
    createRoles(cluster.url); // rerunnable
    const admin = await connect(cluster.url);
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.end();
    // Migrated as the owner, as production does (the default privileges follow the creating role).
    await prepareDatabase(cluster.url.replace(/\/postgres$/, `/${database}`), as('owner'));
    const owner = await connect(as('owner'));
    tables = (
      await owner.query<{ tablename: string }>(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
      )
    ).rows.map((r) => r.tablename);
    const columns = await owner.query<{ table_name: string; column_name: string }>(
      "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' AND ordinal_position = 1",
    );
    for (const row of columns.rows) firstColumn.set(row.table_name, row.column_name);
    await owner.end();
    // From here on the shipped rules, with the VPC as one loopback address other than this host's
    // 127.0.0.1, so that a loopback line and a VPC line never stand in for each other.
    const shipped = readFileSync(shippedHba, 'utf8');
    assert.match(shipped, /10\.20\.0\.0\/20/);
    writeFileSync(join(cluster.dir, 'pg_hba.conf'), shipped.replaceAll('10.20.0.0/20', `${vpcHost}/32`));
    const superuser = await connect(cluster.url);
    await superuser.query(`ALTER SYSTEM SET hba_file = '${join(cluster.dir, 'pg_hba.conf')}'`);
    await superuser.end();
    // hba_file takes effect at a restart.
    cluster.stop();
    cluster.start();
  });

  after(() => {
    cluster?.destroy();
    if (certificates !== undefined) rmSync(certificates, { recursive: true, force: true });
  });

  test('the migrations made the tables the roles are checked on', () => {
    for (const table of ['users', 'products', 'orders', 'order_items'])
      assert.ok(tables.includes(table), table);
  });

  test('pg_hba.conf: SCRAM or reject only, and the superuser never over the network', async () => {
    const text = readFileSync(shippedHba, 'utf8');
    const methods = text
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
      .map((l) => l.trim().split(/\s+/).at(-1));
    assert.ok(methods.length >= 5);
    for (const method of methods)
      assert.ok(['scram-sha-256', 'reject', 'peer'].includes(method ?? ''), method);
    await assert.rejects(connect(cluster.url), /pg_hba\.conf rejects connection|no pg_hba\.conf entry/);
    await assert.rejects(
      connect(withCredentials(cluster.url, roleNames.app, 'wrong', database)),
      /password authentication failed/,
    );
    // A role only where its line names it: the app into another database, reporting into postgres.
    await assert.rejects(connect(as('app', 'postgres')), /pg_hba\.conf rejects connection/);
    await assert.rejects(connect(as('reporting', 'postgres')), /pg_hba\.conf rejects connection/);
    await assert.rejects(connect(as('replication', database)), /pg_hba\.conf rejects connection/);
  });

  test('pg_hba.conf: the VPC over TLS only (app, reporting, the owner), other hosts never, this host without TLS', async () => {
    // Every line that admits an address beyond this host is hostssl.
    for (const line of readFileSync(shippedHba, 'utf8').split('\n')) {
      const [type, , , address, method] = line.trim().split(/\s+/);
      if (!type || type.startsWith('#') || type === 'local' || method === 'reject') continue;
      if (address === '127.0.0.1/32' || address === '::1/128') assert.equal(type, 'host', line);
      else assert.equal(type, 'hostssl', line);
    }
    const refused = /pg_hba\.conf rejects connection|no pg_hba\.conf entry/;
    // From the VPC, over TLS: the service (replica reads), reporting, and the owner — the deploy's
    // migrations and db:backup run from the app servers straight to PostgreSQL (decision 0111).
    for (const role of ['app', 'reporting', 'owner'] as const) {
      assert.equal(await admitted(as(role), vpcHost), 'tls', `${role} from the VPC over TLS`);
      assert.match(
        await admitted(as(role, database, false), vpcHost),
        refused,
        `${role} from the VPC in clear`,
      );
    }
    // Nothing else from the VPC: the monitor and the superuser are for this host only.
    assert.match(await admitted(as('monitor'), vpcHost), refused);
    assert.match(await admitted(as('monitor', 'postgres'), vpcHost), refused);
    assert.match(await admitted(`${cluster.url}?sslmode=no-verify`, vpcHost), refused);
    // A host outside the VPC: nobody, TLS or not.
    for (const role of ['app', 'reporting', 'owner', 'monitor'] as const)
      for (const tls of [true, false])
        assert.match(
          await admitted(as(role, database, tls), outsideHost),
          /pg_hba\.conf rejects connection for host "127\.0\.0\.3"/,
          `${role} from outside (tls ${tls})`,
        );
    // This host (PgBouncer's pools, the ops tools): no TLS needed — reporting included, its pool
    // in PgBouncer logs in from here.
    for (const role of ['app', 'reporting', 'owner'] as const)
      assert.equal(await admitted(as(role, database, false)), 'clear', `${role} on loopback`);
    assert.equal(await admitted(as('monitor', 'postgres', false)), 'clear');
  });

  test('reporting through the shipped PgBouncer, on this host: its own pool logs in', {
    skip:
      pgbouncerBinary() === undefined ? 'pgbouncer is not installed: scripts/install-ops-tools.sh' : false,
  }, async () => {
    const bouncer = await startPgbouncer({
      upstream: { host: '127.0.0.1', port: cluster.port },
      users: [
        { name: 'pgbouncer_admin', password: 'admin-test-password' },
        { name: roleNames.reporting, password: rolePasswords.reporting },
        { name: roleNames.app, password: rolePasswords.app },
      ],
    });
    try {
      for (const role of [roleNames.reporting, roleNames.app]) {
        const client = await connect(bouncer.url(role, database));
        try {
          const { rows } = await client.query<{ who: string; addr: string }>(
            'SELECT current_user AS who, host(inet_client_addr()) AS addr',
          );
          assert.deepEqual(rows[0], { who: role, addr: '127.0.0.1' });
          assert.equal(await sqlState(client, 'SELECT count(*) FROM orders'), 'ok');
        } finally {
          await client.end();
        }
      }
    } finally {
      await bouncer.stop();
    }
  });

  test('the service’s role: reads and writes rows, and nothing else', async () => {
    const app = await connect(as('app'));
    try {
      const { rows } = await app.query<{ su: boolean; db: boolean; role: boolean; timeout: string }>(
        `SELECT rolsuper AS su, rolcreatedb AS db, rolcreaterole AS role, current_setting('statement_timeout') AS timeout
           FROM pg_roles WHERE rolname = current_user`,
      );
      assert.deepEqual(rows[0], { su: false, db: false, role: false, timeout: '10s' });
      assert.equal(await sqlState(app, 'SELECT count(*) FROM products'), 'ok');
      assert.equal(
        await sqlState(
          app,
          `INSERT INTO products (id, sku, name, description, price, stock) VALUES ('00000000-0000-4000-8000-000000000001', 'ROLE-1', 'n', 'd', '1.00', 1)`,
        ),
        'ok',
      );
      assert.equal(await sqlState(app, "UPDATE products SET stock = 2 WHERE sku = 'ROLE-1'"), 'ok');
      assert.equal(await sqlState(app, "DELETE FROM products WHERE sku = 'ROLE-1'"), 'ok');
      // 42501 insufficient_privilege; 42P01/42704 would mean the test hit the wrong object.
      assert.equal(await sqlState(app, 'DROP TABLE orders'), '42501');
      assert.equal(await sqlState(app, 'TRUNCATE products'), '42501');
      assert.equal(await sqlState(app, 'ALTER TABLE products ADD COLUMN x int'), '42501');
      assert.equal(await sqlState(app, 'CREATE TABLE mine (id int)'), '42501');
      assert.equal(await sqlState(app, 'CREATE TEMP TABLE mine (id int)'), '42501');
      assert.equal(await sqlState(app, `CREATE DATABASE app_made`), '42501');
      assert.equal(await sqlState(app, 'CREATE ROLE app_made'), '42501');
    } finally {
      await app.end();
    }
  });

  test('reporting reads every table and writes none, also a table a later migration creates', async () => {
    // A later migration, as the owner (after every grant was made).
    const owner = await connect(as('owner'));
    await owner.query('CREATE TABLE later_reports (id int PRIMARY KEY, note text)');
    await owner.query("INSERT INTO later_reports VALUES (1, 'from a migration')");
    await owner.end();
    const reporting = await connect(as('reporting'));
    const app = await connect(as('app'));
    try {
      assert.equal(
        (await reporting.query("SELECT current_setting('default_transaction_read_only') AS ro")).rows[0]?.ro,
        'on',
      );
      // The read-only default is a guard rail only: the grants must hold without it.
      await reporting.query('SET default_transaction_read_only = off');
      for (const table of [...tables, 'later_reports']) {
        assert.equal(await sqlState(reporting, `SELECT * FROM ${table} LIMIT 1`), 'ok', `SELECT ${table}`);
        assert.equal(await sqlState(reporting, `DELETE FROM ${table}`), '42501', `DELETE ${table}`);
        assert.equal(
          await sqlState(
            reporting,
            `UPDATE ${table} SET ${firstColumn.get(table)} = ${firstColumn.get(table)}`,
          ),
          '42501',
          `UPDATE ${table}`,
        );
        assert.equal(
          await sqlState(reporting, `INSERT INTO ${table} DEFAULT VALUES`),
          '42501',
          `INSERT ${table}`,
        );
      }
      assert.equal(
        (await reporting.query<{ note: string }>('SELECT note FROM later_reports')).rows[0]?.note,
        'from a migration',
      );
      assert.equal(await sqlState(reporting, 'CREATE TABLE mine (id int)'), '42501');
      // The service's role gets the new table's rows too, and still not its definition.
      assert.equal(await sqlState(app, "INSERT INTO later_reports VALUES (2, 'app')"), 'ok');
      assert.equal(await sqlState(app, 'DROP TABLE later_reports'), '42501');
    } finally {
      await reporting.end();
      await app.end();
    }
  });

  test('roles.sql is the file these roles came from', () => {
    const text = readFileSync(rolesSql, 'utf8');
    for (const role of Object.values(roleNames))
      assert.match(text, new RegExp(`ALTER ROLE ${role} NOSUPERUSER`));
  });
});

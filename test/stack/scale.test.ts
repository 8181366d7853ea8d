import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { daemonClusterPolicy } from '../../src/cli/pm2-policy.js';
import { pm2, serverPids } from '../../stack/components/app-servers.js';
import { lastDecision } from '../../stack/components/autoscaler.js';
import { envValue } from '../../stack/secrets.js';
import { readState, serverAction } from '../../stack/stack.js';
import type { StackStatus } from '../../stack/types.js';
import { waitFor } from '../../stack/util.js';
import { skipUnlessNginx } from '../harness/nginx.js';
import { pgbouncerBinary } from '../harness/pgbouncer.js';
import { inCi, skipUnless } from '../harness/services.js';
import { createStackAdmin, scaleStack, sumMetric } from '../support/scale-stack.js';
import { edgeRequest, sharedStacksDir, type TestStack } from '../support/stack.js';
import { assertNothingLeft } from '../support/stack-leaks.js';
import { monitoringSkip } from './growth-monitoring.js';

/**
 * The scale stage, for real (decision 0092): the growth stage on a primary of the stack's own with
 * a streaming replica made by pg_basebackup, PgBouncer (the shipped config, transaction mode) in
 * front of the primary, and an autoscaler on every PM2 server. One bring-up, shared with the
 * replica bench's smoke test (test/support/scale-stack.ts).
 */
const noPgbouncer = pgbouncerBinary() === undefined ? 'pgbouncer is not installed' : false;
if (noPgbouncer && inCi) throw new Error(`CI requires pgbouncer: scripts/install-ops-tools.sh`);
const skip = skipUnlessNginx() || (await skipUnless('postgres', 'redis')) || noPgbouncer;
const withMonitoring = monitoringSkip() === false;

interface Replica {
  role: string;
  url: string;
  replication?: { up: boolean; streaming: string | null; lagBytes: number | null; lagSeconds: number | null };
}

async function rows<T extends pg.QueryResultRow>(url: string, text: string, password?: string): Promise<T[]> {
  const target = new URL(url);
  if (password !== undefined) target.password = encodeURIComponent(password);
  const client = new pg.Client({ connectionString: target.toString() });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

describe('scale stage: replica, PgBouncer, autoscaler behind nginx', { skip }, () => {
  let stack: TestStack;
  let status: StackStatus;
  let ca: string;
  let https: string;
  let metricsUrls: string[];

  before(async () => {
    stack = await scaleStack(withMonitoring);
    status = stack.status();
    ca = readFileSync(status.caFile ?? '', 'utf8');
    https = (status.entry as { https: string }).https;
    metricsUrls = status.servers.flatMap((s) => s.metricsUrls);
  });

  after(async () => {
    if (stack === undefined) return;
    const last = stack.status();
    await stack.release();
    if (sharedStacksDir === undefined) await assertNothingLeft(last);
  });

  const api = (path: string, options: Parameters<typeof edgeRequest>[1] = {}) =>
    edgeRequest(`${https}${path}`, { ca, ...options });

  test('status --json: the replica streams with its lag, PgBouncer pools in transaction mode', () => {
    assert.equal(status.stage, 'scale');
    assert.ok(status.running);
    const replicas = status.databases.filter((d) => d.role === 'replica') as Replica[];
    assert.equal(replicas.length, 1);
    const r = replicas[0]?.replication;
    assert.ok(r?.up, JSON.stringify(r));
    assert.equal(r.streaming, 'streaming');
    assert.equal(typeof r.lagBytes, 'number');
    assert.equal(typeof r.lagSeconds, 'number');
    const pools = (status.components.pgbouncer as { pools: { user: string; mode: string }[] }).pools;
    assert.ok(
      pools.some((p) => p.user === 'shipshape_app' && p.mode === 'transaction'),
      JSON.stringify(pools),
    );
    // No password in what status prints.
    for (const d of status.databases) assert.equal(new URL(d.url).password, '', d.url);
  });

  test('the servers write through PgBouncer (SHOW CLIENTS) and read the replica directly', async () => {
    const state = readState(stack.stateDir);
    assert.ok(state !== null);
    const bouncer = status.components.pgbouncer as {
      port: number;
      console: string;
      consolePasswordFile: string;
    };
    const replicaPort = (status.components.replication as { replicas: { port: number }[] }).replicas[0]?.port;
    for (const server of state.servers) {
      // As production passes them: in files (the wrapper refuses a plain secret; PM2 would dump it).
      assert.equal(server.env.DATABASE_URL, undefined);
      assert.equal(server.env.DATABASE_MIGRATION_URL_FILE, undefined, 'the owner’s credentials stay out');
      assert.equal(
        new URL(envValue(server.env, 'DATABASE_URL') ?? '').port,
        String(bouncer.port),
        server.name,
      );
      assert.equal(
        new URL(envValue(server.env, 'DATABASE_REPLICA_URLS') ?? '').port,
        String(replicaPort),
        server.name,
      );
    }
    const password = readFileSync(bouncer.consolePasswordFile, 'utf8');
    // Every worker holds a pool of clients on PgBouncer as shipshape_app; PgBouncer's own server
    // connections are the only shipshape_app sessions on the primary.
    const clients = await rows<{ user: string; database: string }>(bouncer.console, 'SHOW CLIENTS', password);
    const app = clients.filter((c) => c.user === 'shipshape_app' && c.database === 'shipshape');
    assert.ok(app.length >= status.servers.length, `${app.length} shipshape_app clients on PgBouncer`);
    const servers = await rows<{ user: string; port: number }>(bouncer.console, 'SHOW SERVERS', password);
    assert.ok(
      servers.some((s) => s.user === 'shipshape_app'),
      JSON.stringify(servers),
    );
  });

  test('a write through nginx, then an immediate read by the same client, sees it (30 of 30)', async () => {
    const username = `scaleadmin${process.pid}`;
    const password = 'scale stage admin password';
    await createStackAdmin(stack, username, password);
    const login = await api('/api/auth/login', {
      method: 'POST',
      body: JSON.stringify({ login: username, password }),
      localAddress: '127.0.21.1',
    });
    assert.equal(login.status, 200, login.body);
    const auth = {
      authorization: `Bearer ${(JSON.parse(login.body) as { accessToken: string }).accessToken}`,
    };
    const created = await api('/api/products', {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ sku: `SCALE-${process.pid}`, name: 'Replica mug', price: '1.00', stock: 5 }),
      localAddress: '127.0.21.1',
    });
    assert.equal(created.status, 201, created.body);
    const id = (JSON.parse(created.body) as { id: string }).id;
    const gated = () =>
      Promise.all([
        sumMetric(metricsUrls, 'db_replica_reads_total', 'reason="caught_up"'),
        sumMetric(metricsUrls, 'db_replica_reads_total', 'reason="behind"'),
      ]);
    const [caughtUp0, behind0] = await gated();
    let stale = 0;
    for (let i = 1; i <= 30; i++) {
      const price = `${i + 1}.00`;
      const write = await api(`/api/products/${id}`, {
        method: 'PATCH',
        headers: auth,
        body: JSON.stringify({ price }),
        localAddress: '127.0.21.1',
      });
      assert.equal(write.status, 200, write.body);
      const token = write.headers['shipshape-read-after'];
      assert.equal(typeof token, 'string', 'the write returns its WAL position');
      // The same client, at once: it sends its position back (as an API client does).
      const read = await api(`/api/products/${id}`, {
        headers: { 'shipshape-read-after': token as string },
        localAddress: '127.0.21.1',
      });
      assert.equal(read.status, 200, read.body);
      if ((JSON.parse(read.body) as { price: string }).price !== price) stale += 1;
    }
    assert.equal(stale, 0, 'stale reads');
    const [caughtUp1, behind1] = await gated();
    // Each read carried a position: the gate decided every one (replica caught up, or the primary).
    // The cache may answer some reads itself (stamped loads), so at least one, not all 30.
    const decided = caughtUp1 - caughtUp0 + (behind1 - behind0);
    assert.ok(
      decided >= 1,
      `gate decisions: caught_up +${caughtUp1 - caughtUp0}, behind +${behind1 - behind0}`,
    );
    console.log(
      `read-your-writes: 30/30 fresh; replica caught up ${caughtUp1 - caughtUp0}, primary (behind) ${behind1 - behind0}`,
    );
  });

  test('catalog reads are served by the replica: db_replica_reads_total and its pg_stat_activity', async () => {
    const before = await sumMetric(metricsUrls, 'db_replica_reads_total', 'target="replica"');
    // Distinct queries, so the cache cannot answer them all; anonymous, so no position to wait for.
    for (let limit = 1; limit <= 40; limit++) {
      const res = await api(`/api/products?limit=${limit}`, { localAddress: '127.0.21.2' });
      assert.equal(res.status, 200, res.body);
    }
    await waitFor('replica reads in the metrics', async () => {
      const now = await sumMetric(metricsUrls, 'db_replica_reads_total', 'target="replica"');
      return now > before;
    });
    const serving = await sumMetric(metricsUrls, 'db_replica_serving');
    assert.equal(serving, metricsUrls.length, 'every worker uses the replica');
    const replica = status.databases.find((d) => d.role === 'replica') as Replica;
    const sessions = await rows<{ n: string }>(
      replica.url,
      "SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'shipshape_app'",
    );
    assert.ok(Number(sessions[0]?.n) >= 1, 'the workers hold connections on the replica');
  });

  test('--autoscale: every server shows its workers and its monitor’s last decision', async () => {
    // The state and the monitors' status files only (a full status also asks PostgreSQL and PgBouncer).
    await waitFor('a decision of every monitor', () => {
      const state = readState(stack.stateDir);
      if (state === null) return false;
      return state.servers.every((s) => lastDecision(state, s.name) !== null && serverPids(s).length >= 1);
    });
    for (const s of stack.status().servers) {
      const d = s.autoscale as { action: string; current: number; desired: number; at: number };
      assert.ok(['hold', 'scale-up', 'scale-down'].includes(d.action), `${s.name}: ${d.action}`);
      assert.ok(d.desired >= 1 && d.desired <= 2, `${s.name}: desired ${d.desired}`);
      assert.ok(Date.now() - d.at < 120_000, `${s.name}: a recent decision`);
    }
  });

  test('server app-1 reload: the wrapper takes the stack’s environment (secrets in files), new workers; the daemon lets workers accept (NODE_CLUSTER_SCHED_POLICY=none)', async () => {
    const state = readState(stack.stateDir);
    const server = state?.servers[0];
    assert.ok(state !== null && server !== undefined && server.pm2Home !== null);
    for (const s of state.servers)
      assert.equal(daemonClusterPolicy(join(s.pm2Home ?? '', 'pm2.pid')), 'none', s.name);
    const before = serverPids(server);
    await serverAction(stack.stateDir, server.name, 'reload');
    const after = serverPids(server);
    assert.equal(after.length, before.length);
    for (const pid of after) assert.ok(!before.includes(pid), `worker ${pid} is new`);
  });

  test('--monitoring: Prometheus scrapes each monitor’s own /metrics', {
    skip: withMonitoring ? false : 'the Debian monitoring tools are not installed',
  }, async () => {
    const prometheus = (status.components.monitoring as { prometheus: string }).prometheus;
    const query = encodeURIComponent('autoscaler_instances_current');
    await waitFor(
      'autoscaler_instances_current from every monitor',
      async () => {
        const body = (await (await fetch(`${prometheus}/api/v1/query?query=${query}`)).json()) as {
          data: { result: { metric: Record<string, string> }[] };
        };
        const servers = new Set(
          body.data.result.filter((r) => r.metric.job === 'autoscaler').map((r) => r.metric.server),
        );
        return status.servers.every((s) => servers.has(s.name));
      },
      60_000,
    );
  });

  test('--monitoring: every worker slot up to the autoscaler’s max is listed (above its min as autoscaled="true"); a worker added later is scraped', {
    skip: withMonitoring ? false : 'the Debian monitoring tools are not installed',
  }, async () => {
    const prometheus = (status.components.monitoring as { prometheus: string }).prometheus;
    const query = async (q: string) =>
      (
        (await (await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as {
          data: { result: { metric: Record<string, string>; value: [number, string] }[] };
        }
      ).data.result;
    const state = readState(stack.stateDir);
    const server = state?.servers[0];
    assert.ok(state !== null && server !== undefined);
    const slot = `${server.host}:${server.metricsPort + 1}`;
    await waitFor(
      `the empty slot ${slot} listed and scraped (down)`,
      async () =>
        (await query(`up{job="shipshape",instance="${slot}"}`)).some(
          (r) => r.value[1] === '0' && r.metric.autoscaled === 'true' && r.metric.server === server.name,
        ),
      60_000,
    );
    assert.deepEqual(
      await query('up{job="shipshape",autoscaled!="true"} == 0'),
      [],
      'an empty slot is not what TargetDown reads',
    );
    // The server's monitor is paused meanwhile, so that it cannot scale the worker back in first.
    const monitor = (
      state.components.autoscaler as { monitors: { server: string; pid: number }[] }
    ).monitors.find((m) => m.server === server.name);
    assert.ok(monitor !== undefined);
    process.kill(monitor.pid, 'SIGSTOP');
    try {
      await pm2(state.root, server, 'scale', server.name, '2');
      await waitFor(
        `the added worker scraped at ${slot}`,
        async () => (await query(`up{job="shipshape",instance="${slot}"}`)).some((r) => r.value[1] === '1'),
        90_000,
      );
      const sum = await query(`sum by (server) (up{job="shipshape",server="${server.name}"})`);
      assert.equal(sum[0]?.value[1], '2', 'both workers of the server answer scrapes');
    } finally {
      await pm2(state.root, server, 'scale', server.name, '1');
      process.kill(monitor.pid, 'SIGCONT');
    }
  });
});

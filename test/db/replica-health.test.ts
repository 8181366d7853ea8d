import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { tellRunningServices } from '../../src/cli/running-services.js';
import type { Database } from '../../src/db/database.js';
import { createPostgresPool } from '../../src/infra/database.js';
import { lsnKeyOf, primaryOnlyLsn } from '../../src/infra/lsn.js';
import { createReadRouting, readAfterHeader, readAfterTokens } from '../../src/infra/read-your-writes.js';
import { createRedis } from '../../src/infra/redis.js';
import {
  assessReplica,
  createPrimaryHistory,
  type PrimaryObservation,
  type ReplicaObservation,
} from '../../src/infra/replica-health.js';
import { createReplicaRouter, type ReplicaRouter } from '../../src/infra/replicas.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { freePort } from '../harness/ports.js';
import { startThrowawayPostgres } from '../harness/postgres.js';
import { type ReplicatedPostgres, startReplicatedPostgres } from '../harness/replication.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { deleteKeys, testConfig, testKeyPrefix } from '../helper.js';

/**
 * The replica health check against a real primary and a real streaming standby (decision 0119): a
 * standby whose WAL receiver stopped, one whose receiver looks connected but gets nothing, one on
 * another history than the primary's, and read-your-writes when the position of a write cannot be
 * read. The rules themselves are tested first with exact inputs.
 */

const limits = { maxLagBytes: 16_777_216, maxLagSeconds: 10 };
const streamingReplica: ReplicaObservation = {
  recovery: true,
  replay: '0000000003000100',
  receive: '0000000003000100',
  paused: false,
  sinceLastReplay: 120,
  streaming: true,
};
const primaryAt = (flush: string, unreplayedSeconds = 0): PrimaryObservation => ({
  flush,
  unreplayedSeconds,
});

describe('assessReplica: the rules, with exact inputs', () => {
  test('caught up and streaming: up, 0 s, even when the last transaction is old (an idle primary)', () => {
    const v = assessReplica(streamingReplica, primaryAt('0000000003000100'), 'up', limits);
    assert.deepEqual([v.state, v.lagBytes, v.lagSeconds], ['up', 0, 0]);
  });

  test('no WAL receiver streaming while the primary answers: not_streaming, whatever the lag says', () => {
    const v = assessReplica(
      { ...streamingReplica, streaming: false },
      primaryAt('0000000003000100'),
      'up',
      limits,
    );
    assert.equal(v.state, 'not_streaming');
  });

  test('replayed all it received, but a primary position older than the limit is missing: lagging', () => {
    // The receive position stopped moving with the stream: replay ≥ receive says nothing.
    const v = assessReplica(streamingReplica, primaryAt('0000000003000200', 12.5), 'up', limits);
    assert.deepEqual([v.state, v.lagBytes, v.lagSeconds], ['lagging', 256, 12.5]);
  });

  test('ahead of the primary: diverged, and it stays so even once the primary is further on', () => {
    const ahead = assessReplica(streamingReplica, primaryAt('0000000003000000'), 'up', limits);
    assert.equal(ahead.state, 'diverged');
    const later = assessReplica(streamingReplica, primaryAt('0000000009000000'), 'diverged', limits);
    assert.equal(later.state, 'diverged');
    // Seen down (rebuilt and restarted): judged afresh.
    assert.equal(assessReplica(streamingReplica, primaryAt('0000000003000100'), 'down', limits).state, 'up');
  });

  test('the primary unreachable: a replica in use keeps serving, a skipped one stays skipped', () => {
    const notStreaming = { ...streamingReplica, streaming: false };
    assert.equal(assessReplica(notStreaming, undefined, 'up', limits).state, 'up');
    assert.equal(assessReplica(notStreaming, undefined, 'not_streaming', limits).state, 'not_streaming');
    assert.equal(assessReplica(notStreaming, undefined, 'lagging', limits).state, 'lagging');
    assert.equal(assessReplica(notStreaming, undefined, 'diverged', limits).state, 'diverged');
  });

  test('not in recovery: not_standby', () => {
    const v = assessReplica(
      { ...streamingReplica, recovery: false },
      primaryAt('0000000003000100'),
      'up',
      limits,
    );
    assert.equal(v.state, 'not_standby');
  });
});

describe('createPrimaryHistory', () => {
  test('the age of the earliest sampled position not replayed', () => {
    const history = createPrimaryHistory(60_000);
    history.record('0000000000000100', 1_000);
    history.record('0000000000000100', 2_000); // the same position: the earlier time counts
    history.record('0000000000000200', 3_000);
    assert.equal(history.unreplayedSeconds('0000000000000100', 10_000), 7);
    assert.equal(history.unreplayedSeconds('00000000000000ff', 10_000), 9);
    assert.equal(history.unreplayedSeconds('0000000000000200', 10_000), 0);
  });

  test('pruning keeps the newest sample older than the horizon, so a replica behind it stays late', () => {
    const history = createPrimaryHistory(10_000);
    history.record('0000000000000100', 0);
    history.record('0000000000000200', 100_000);
    history.record('0000000000000300', 100_500);
    assert.equal(history.unreplayedSeconds('0000000000000000', 101_000), 101);
  });

  test('a position below the last one (a concurrent check read the primary earlier) changes nothing', () => {
    const history = createPrimaryHistory(60_000);
    history.record('0000000000000200', 1_000);
    history.record('0000000000000100', 1_001);
    assert.equal(history.unreplayedSeconds('0000000000000100', 11_000), 10);
    assert.equal(history.unreplayedSeconds('0000000000000200', 11_000), 0);
  });
});

async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

interface TestRouter {
  readonly router: ReplicaRouter;
  readonly primary: Kysely<Database>;
  readonly registry: Registry;
  readonly logs: Array<Record<string, unknown>>;
  state(): string | undefined;
  /** The port of the server a read without a freshness requirement ran on. */
  readPort(): Promise<number | undefined>;
  close(): Promise<void>;
}

function startRouter(
  primaryUrl: string,
  replicaUrl: string,
  options: { maxLagSeconds: number; poolMax?: number; connectTimeoutMs?: number },
): TestRouter {
  const database = testConfig({ DATABASE_URL: primaryUrl }).database;
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const registry = new Registry();
  const { db: primary } = createPostgresPool(
    {
      ...database,
      poolMax: options.poolMax ?? database.poolMax,
      connectTimeoutMs: options.connectTimeoutMs ?? database.connectTimeoutMs,
    },
    primaryUrl,
    logger,
  );
  const router = createReplicaRouter(
    primary,
    database,
    {
      urls: [replicaUrl],
      maxLagBytes: 16_777_216,
      maxLagSeconds: options.maxLagSeconds,
      checkIntervalMs: 100,
      waitMs: 30,
    },
    { logger, registry },
  );
  router.start();
  return {
    router,
    primary,
    registry,
    logs,
    state: () => router.status()[0]?.state,
    async readPort() {
      return router.read(undefined, async (db) => {
        const { rows } = await sql<{ port: number }>`select inet_server_port() as port`.execute(db);
        return rows[0]?.port;
      });
    },
    async close() {
      await router.stop();
      await primary.destroy();
    },
  };
}

/** One autocommitted statement on a server. */
async function run(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

describe('the health check against a real standby', () => {
  let cluster: ReplicatedPostgres;
  let standby: pg.Client;
  let conninfo: string;

  const setConninfo = async (value: string) => {
    await standby.query(`ALTER SYSTEM SET primary_conninfo = ${standby.escapeLiteral(value)}`);
    await standby.query('SELECT pg_reload_conf()');
  };
  const receiver = async () =>
    (
      await standby.query<{ status: string; port: number; applied: boolean }>(
        `SELECT status, sender_port AS port,
                pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS applied
           FROM pg_stat_wal_receiver`,
      )
    ).rows[0];
  const hasRow = async (table: string, id: number) =>
    (await standby.query(`SELECT 1 FROM ${table} WHERE id = $1`, [id])).rows.length > 0;

  before(async () => {
    cluster = await startReplicatedPostgres();
    standby = new pg.Client({ connectionString: cluster.standby.url() });
    standby.on('error', () => {});
    await standby.connect();
    const shown = (await standby.query<{ primary_conninfo: string }>('SHOW primary_conninfo')).rows[0];
    assert.ok(shown?.primary_conninfo, 'the standby streams from the primary');
    conninfo = shown.primary_conninfo;
    await run(cluster.primaryUrl(), 'CREATE TABLE marks (id int PRIMARY KEY)');
    await cluster.waitForCatchUp();
  });

  after(async () => {
    await standby?.end().catch(() => {});
    cluster?.destroy();
  });

  test('WAL receiver stopped (primary_conninfo to a closed port): skipped while the primary answers, then back', async () => {
    // A time-lag limit far away: only "not streaming" can skip it within this test.
    const r = startRouter(cluster.primaryUrl(), cluster.standby.url(), { maxLagSeconds: 600 });
    try {
      await waitFor('the replica in use', async () => r.state() === 'up');
      assert.equal(await r.readPort(), cluster.standby.port, 'reads go to the replica');
      const started = Date.now();
      await setConninfo(conninfo.replace(/port=\d+/, `port=${await freePort()}`));
      await waitFor('the WAL receiver to stop', async () => (await receiver()) === undefined);
      const stopped = Date.now();
      await run(cluster.primaryUrl(), 'INSERT INTO marks VALUES (1)');
      await waitFor(
        'the replica skipped as not streaming',
        async () => r.state() === 'not_streaming',
        30_000,
      );
      console.log(
        `# not streaming: receiver gone ${stopped - started} ms after the reload, replica skipped ${Date.now() - stopped} ms after that (checks every 100–150 ms)`,
      );
      assert.equal(await hasRow('marks', 1), false, 'the standby really misses the write');
      assert.equal(await r.readPort(), cluster.primary.port, 'reads go to the primary');
      const metrics = await r.registry.metrics();
      assert.match(metrics, /^db_replica_state\{replica="127\.0\.0\.1:\d+",state="not_streaming"\} 1$/m);
      assert.match(metrics, /^db_replica_up\{replica="127\.0\.0\.1:\d+"\} 0$/m);
      assert.match(metrics, /^db_replica_serving 0$/m);
      assert.ok(
        r.logs.some((l) => l.msg === 'replica skipped for reads' && l.state === 'not_streaming'),
        'the log says why it is skipped',
      );
    } finally {
      await setConninfo(conninfo);
    }
    try {
      await waitFor('the replica back in use', async () => r.state() === 'up');
      assert.equal(await hasRow('marks', 1), true);
      assert.equal(await r.readPort(), cluster.standby.port, 'reads go to the replica again');
    } finally {
      await r.close();
    }
  });

  test('the stream silently stalls (receiver still "streaming", replay = receive): lagging after the time limit, then back', async () => {
    const proxy = await startFaultProxy({ name: 'walsender', target: { port: cluster.primary.port } });
    const r = startRouter(cluster.primaryUrl(), cluster.standby.url(), { maxLagSeconds: 2 });
    try {
      await setConninfo(conninfo.replace(/port=\d+/, `port=${proxy.port}`));
      await waitFor('the standby streaming through the proxy', async () => {
        const now = await receiver();
        return now?.status === 'streaming' && now.port === proxy.port;
      });
      await cluster.waitForCatchUp();
      await waitFor('the replica in use', async () => r.state() === 'up');
      // A partition: nothing reaches the standby, its connection stays open (until
      // wal_receiver_timeout, 60 s), so its receive position simply stops.
      proxy.add({ type: 'timeout', timeoutMs: 0 }, 'downstream');
      await run(cluster.primaryUrl(), 'INSERT INTO marks VALUES (2)');
      const started = Date.now();
      await waitFor('the replica skipped as lagging', async () => r.state() === 'lagging', 45_000);
      console.log(`# stalled stream: skipped ${Date.now() - started} ms after the write (limit 2 s)`);
      const seen = await receiver();
      assert.equal(seen?.status, 'streaming', 'the receiver still looks connected');
      assert.equal(seen?.applied, true, 'it has replayed all it received: the old rule reported 0 s');
      assert.equal(await hasRow('marks', 2), false);
      assert.ok((r.router.status()[0]?.lagSeconds ?? 0) >= 2, 'lag seconds from the primary positions');
      assert.equal(await r.readPort(), cluster.primary.port, 'reads go to the primary');
      // The connection is cut while the toxic drops its data, so no corrupted stream ever passes.
      proxy.cutAll();
      proxy.clear();
      await setConninfo(conninfo);
      await waitFor('the replica back in use', async () => r.state() === 'up');
      assert.equal(await hasRow('marks', 2), true);
    } finally {
      await setConninfo(conninfo);
      await r.close();
      await proxy.close();
    }
  });

  test('a standby ahead of the primary (another history, as after a PITR): diverged, never read', async () => {
    const other = await startThrowawayPostgres();
    let r: TestRouter | undefined;
    try {
      const position = async (url: string, fn: string) => {
        const client = new pg.Client({ connectionString: url });
        await client.connect();
        try {
          return (await client.query<{ lsn: string }>(`SELECT ${fn}::text AS lsn`)).rows[0]?.lsn ?? '';
        } finally {
          await client.end();
        }
      };
      const ahead = async () => {
        const { rows } = await standby.query<{ ahead: boolean }>(
          `SELECT pg_last_wal_replay_lsn() > $1::pg_lsn AS ahead`,
          [await position(other.url, 'pg_current_wal_flush_lsn()')],
        );
        return rows[0]?.ahead === true;
      };
      // The standby's history moves on (segment switches) until it is past the other server's.
      for (let i = 0; i < 20 && !(await ahead()); i++) {
        await run(cluster.primaryUrl(), `INSERT INTO marks VALUES (${100 + i}); SELECT pg_switch_wal()`);
        await cluster.waitForCatchUp();
      }
      assert.ok(await ahead(), 'the standby is ahead of the other primary');
      r = startRouter(other.url, cluster.standby.url(), { maxLagSeconds: 600 });
      const router = r;
      await waitFor('the replica seen as diverged', async () => router.state() === 'diverged');
      assert.equal(await r.readPort(), other.port, 'reads go to the primary');
      assert.ok(r.logs.some((l) => l.msg === 'replica skipped for reads' && l.state === 'diverged'));
      assert.match(await r.registry.metrics(), /^db_replica_state\{[^}]*state="diverged"\} 1$/m);
    } finally {
      await r?.close();
      other.destroy();
    }
  });

  test('control: a replica on the primary\u2019s timeline is never seen ahead, under a stream of writes', async () => {
    const r = startRouter(cluster.primaryUrl(), cluster.standby.url(), { maxLagSeconds: 600 });
    const writer = new pg.Client({ connectionString: cluster.primaryUrl() });
    await writer.connect();
    try {
      await waitFor('the replica in use', async () => r.state() === 'up');
      await writer.query('CREATE TABLE IF NOT EXISTS churn (n int)');
      // Writes until 30 checks have seen the replay move, however slow the machine.
      const deadline = Date.now() + 60_000;
      let replayed = 0;
      let last = r.router.status()[0]?.replayLsn;
      while (replayed < 30 && Date.now() < deadline) {
        await writer.query('INSERT INTO churn SELECT generate_series(1, 50)');
        const now = r.router.status()[0]?.replayLsn;
        if (now !== undefined && now !== last) replayed += 1;
        last = now ?? last;
        assert.notEqual(r.state(), 'diverged');
      }
      assert.ok(replayed >= 30, `checks saw the replay move ${replayed} times`);
      assert.ok(!r.logs.some((l) => l.state === 'diverged'), 'never diverged');
    } finally {
      await writer.end();
      await r.close();
    }
  });
});

describe('positions after a write: read-your-writes without one, command-line invalidations', {
  skip: await skipUnless('redis'),
}, () => {
  let cluster: ReplicatedPostgres;
  const keyPrefix = testKeyPrefix('replica-rw');
  const secrets = ['replica-health-test-secret-0123456789abcdef'];

  before(async () => {
    cluster = await startReplicatedPostgres();
    await run(cluster.primaryUrl(), 'CREATE TABLE notes (id int PRIMARY KEY)');
    await cluster.waitForCatchUp();
  });

  after(async () => {
    cluster?.destroy();
    await deleteKeys(redisUrl, keyPrefix);
  });

  test('the pool exhausted after a write, or a write answered 5xx: a signed "primary" token and user key; that user reads the primary', async () => {
    // One primary connection, held by the test while the write's position is read: pool pressure.
    const r = startRouter(cluster.primaryUrl(), cluster.standby.url(), {
      maxLagSeconds: 600,
      poolMax: 1,
      connectTimeoutMs: 300,
    });
    const config = testConfig({
      DATABASE_URL: cluster.primaryUrl(),
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: keyPrefix,
    });
    const logger = pino({ level: 'silent' });
    const redis = createRedis(config.redis, redisUrl, logger);
    const writer = new pg.Client({ connectionString: cluster.primaryUrl() });
    await writer.connect();
    const reads = createReadRouting({
      router: r.router,
      primary: r.primary,
      redis,
      secrets,
      ttlSeconds: 30,
      logger,
    });
    const app = Fastify();
    app.decorateRequest('auth', null);
    app.addHook('onRequest', async (request) => {
      const user = request.headers['x-user'];
      request.auth = typeof user === 'string' ? { userId: user, sessionId: 's', role: 'customer' } : null;
    });
    reads.hooks(app);
    app.post<{ Body: { id: number } }>('/notes', async (request) => {
      await writer.query('INSERT INTO notes VALUES ($1)', [request.body.id]);
      return { ok: true };
    });
    // A write that then fails (a 5xx): it may have committed, and the database may be why it failed.
    app.post<{ Body: { id: number } }>('/notes-then-fail', async (request, reply) => {
      await writer.query('INSERT INTO notes VALUES ($1)', [request.body.id]);
      return reply.code(503).send({ code: 'SERVICE_UNAVAILABLE' });
    });
    app.get<{ Params: { id: string } }>('/notes/:id', async (request) =>
      reads.read(request, async (db) => {
        const { rows } = await sql<{ port: number; found: boolean }>`
          select inet_server_port() as port,
                 exists (select 1 from notes where id = ${Number(request.params.id)}) as found`.execute(db);
        return rows[0];
      }),
    );
    let release: () => void = () => {};
    try {
      await waitFor('the replica in use', async () => r.state() === 'up');
      await waitFor('Redis connected', async () => redis.client.status === 'ready');
      // The standby streams but applies nothing for now (still in use): a replica read misses the note.
      await run(cluster.standby.url(), "ALTER SYSTEM SET recovery_min_apply_delay = '1h'");
      await run(cluster.standby.url(), 'SELECT pg_reload_conf()');
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      const holding = new Promise<void>((acquired) => {
        void r.primary.connection().execute(async () => {
          acquired();
          await held;
        });
      });
      await holding;
      const write = await app.inject({
        method: 'POST',
        url: '/notes',
        headers: { 'x-user': 'u1' },
        payload: { id: 1 },
      });
      release();
      assert.equal(write.statusCode, 200, write.body);
      const token = write.headers[readAfterHeader];
      assert.equal(typeof token, 'string', 'a token although the position could not be read');
      assert.equal(readAfterTokens(secrets).verify(String(token)), primaryOnlyLsn, 'it means "the primary"');
      assert.match(
        String(write.headers['set-cookie']),
        /^shipshape-read-after=[0-9a-f]{16}\.[\w-]{22}; Max-Age=30;/,
      );
      assert.equal(await redis.run((c) => c.get('rw:u1')), primaryOnlyLsn, "the user's key says the same");

      const requiredBefore = await readsBy(r.registry, 'primary', 'required');
      // This device (its token) and another of the same user (its key): both from the primary, at once.
      for (const headers of [{ [readAfterHeader]: String(token) }, { 'x-user': 'u1' }]) {
        const read = await app.inject({ method: 'GET', url: '/notes/1', headers });
        assert.equal(read.statusCode, 200, read.body);
        assert.deepEqual(read.json(), { port: cluster.primary.port, found: true });
      }
      assert.equal((await readsBy(r.registry, 'primary', 'required')) - requiredBefore, 2);

      // Control: with a connection free, the token is the real position, and a reader without
      // one is served by the replica, which has not applied the notes.
      const second = await app.inject({
        method: 'POST',
        url: '/notes',
        headers: { 'x-user': 'u2' },
        payload: { id: 2 },
      });
      const real = readAfterTokens(secrets).verify(String(second.headers[readAfterHeader]));
      assert.ok(real !== undefined && real !== primaryOnlyLsn, `a real position (${real})`);
      const anonymous = await app.inject({ method: 'GET', url: '/notes/2' });
      assert.deepEqual(anonymous.json(), { port: cluster.standby.port, found: false });

      // A 5xx after a write, with a connection free: no position is asked for (a second wait on a
      // database that may be why it failed); the token says "the primary" at once.
      const failed = await app.inject({
        method: 'POST',
        url: '/notes-then-fail',
        headers: { 'x-user': 'u3' },
        payload: { id: 30 },
      });
      assert.equal(failed.statusCode, 503);
      assert.equal(readAfterTokens(secrets).verify(String(failed.headers[readAfterHeader])), primaryOnlyLsn);
      const own = await app.inject({
        method: 'GET',
        url: '/notes/30',
        headers: { [readAfterHeader]: String(failed.headers[readAfterHeader]) },
      });
      assert.deepEqual(own.json(), { port: cluster.primary.port, found: true });
    } finally {
      release();
      await run(cluster.standby.url(), 'ALTER SYSTEM RESET recovery_min_apply_delay');
      await run(cluster.standby.url(), 'SELECT pg_reload_conf()');
      await app.close();
      await writer.end();
      await redis.close();
      await r.close();
    }
  });

  test('a command-line write (seed) invalidates the shared cache with the primary position as its floor', async () => {
    await run(cluster.primaryUrl(), 'INSERT INTO notes VALUES (3)');
    const [committed] = await (async () => {
      const client = new pg.Client({ connectionString: cluster.primaryUrl() });
      await client.connect();
      try {
        return (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows;
      } finally {
        await client.end();
      }
    })();
    const after = lsnKeyOf(committed?.lsn);
    assert.ok(after);
    const line = await tellRunningServices(
      testConfig({
        DATABASE_URL: cluster.primaryUrl(),
        DATABASE_REPLICA_URLS: cluster.standby.url(),
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: keyPrefix,
      }),
    );
    assert.match(line, /the shared cache \(Redis\) is invalidated: running services see it/);
    const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    try {
      // Every generation made from now on starts with the floor: `<floor>~<id>`.
      const generation = await client.get(`${keyPrefix}cache:gen`);
      const floor = generation?.split('~')[0] ?? '';
      assert.ok(floor >= after, `the floor ${floor} covers the write (${after})`);
      assert.equal(await client.get(`${keyPrefix}cache:floor`), floor);
    } finally {
      client.disconnect();
    }
  });
});

async function readsBy(registry: Registry, target: string, reason: string): Promise<number> {
  const metric = registry.getSingleMetric('db_replica_reads_total');
  assert.ok(metric);
  const { values } = await metric.get();
  return values
    .filter((v) => v.labels.target === target && v.labels.reason === reason)
    .reduce((sum, v) => sum + v.value, 0);
}

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { createDatabase } from '../../src/infra/database.js';
import { createPasswordHasher } from '../../src/modules/auth/passwords.js';
import { createUser } from '../../src/modules/users/users.service.js';
import { serverAction } from '../../stack/stack.js';
import type { StackStatus } from '../../stack/types.js';
import { waitFor } from '../../stack/util.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { nginxBin, proxySeconds } from '../harness/nginx.js';
import { captureLogs, testConfig } from '../helper.js';
import { type EdgeClient, failed, type Outcome, orderBody, startEdgeLoad } from '../support/edge-load.js';
import { edgeRequest } from '../support/stack.js';

export interface GrowthEnv {
  readonly status: StackStatus;
  readonly ca: string;
  readonly https: string;
}

interface AccessLine {
  request_id: string;
  status: number;
  upstream_addr: string;
  time: string;
}

/** nginx's JSON access log, by request id. */
function accessLog(status: StackStatus): Map<string, AccessLine> {
  const byId = new Map<string, AccessLine>();
  for (const line of readFileSync(status.nginx?.accessLog ?? '', 'utf8').split('\n')) {
    if (line === '') continue;
    const entry = JSON.parse(line) as AccessLine;
    byId.set(entry.request_id, entry);
  }
  return byId;
}

const run = promisify(execFile);

/** nginx's proxy_read_timeout as shipped (the stack renders the same snippet), ms. */
const readTimeoutMs = proxySeconds('proxy_read_timeout') * 1000;

/** The server that finally answered (nginx lists every one it tried: "a:1, b:2"). */
const lastUpstream = (line: AccessLine | undefined) => line?.upstream_addr.split(',').at(-1)?.trim() ?? '';

const addressOf = (status: StackStatus, name: string) =>
  new URL(status.servers.find((s) => s.name === name)?.url ?? '').host;

function summary(outcomes: readonly Outcome[]) {
  const byKind: Record<string, number> = {};
  for (const o of outcomes) {
    const kind = `${o.method} ${o.status ?? o.error}`;
    byKind[kind] = (byKind[kind] ?? 0) + 1;
  }
  return byKind;
}

/**
 * Failover under load through the edge: kill -9 of a primary, both primaries down, a rolling PM2
 * reload. Registered into the growth file's suite so they share its stack; each leaves every
 * server up and back in nginx's rotation.
 */
export function failoverSuites(env: () => GrowthEnv): void {
  describe('failover under load', () => {
    let productId = '';
    let databaseUrl = '';
    const figures: string[] = [];

    /** Customers for one scenario, each registered from (and later loading from) its own address. */
    async function customers(tag: string, count: number, firstOctet: number): Promise<EdgeClient[]> {
      const { https, ca } = env();
      return Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const localAddress = `127.0.${firstOctet}.${i + 1}`;
          const name = `${tag}${i}${randomBytes(4).toString('hex')}`;
          const res = await edgeRequest(`${https}/api/auth/register`, {
            method: 'POST',
            ca,
            localAddress,
            body: JSON.stringify({
              email: `${name}@example.com`,
              username: name,
              password: 'failover password 1',
            }),
          });
          assert.equal(res.status, 201, res.body);
          return { localAddress, accessToken: JSON.parse(res.body).accessToken as string };
        }),
      );
    }

    /** Retries each failed POST with its own key until it has a definitive answer (as a client would). */
    async function retryFailedPosts(outcomes: readonly Outcome[], clients: readonly EdgeClient[]) {
      const { https, ca } = env();
      const acknowledged = new Map<string, string>();
      for (const o of outcomes)
        if (o.orderId !== undefined) acknowledged.set(o.idempotencyKey ?? '', o.orderId);
      let replayed = 0;
      for (const o of outcomes.filter((x) => x.method === 'POST' && failed(x))) {
        const client = clients[o.client] as EdgeClient;
        for (let attempt = 0; ; attempt++) {
          const res = await edgeRequest(`${https}/api/orders`, {
            method: 'POST',
            ca,
            localAddress: client.localAddress,
            headers: {
              authorization: `Bearer ${client.accessToken}`,
              'idempotency-key': o.idempotencyKey ?? '',
            },
            body: orderBody(productId),
          });
          if (res.status === 201) {
            if (res.headers['idempotent-replayed'] === 'true') replayed++;
            acknowledged.set(o.idempotencyKey ?? '', JSON.parse(res.body).id);
            break;
          }
          assert.ok(res.status === 409 || res.status >= 500, `retry answered ${res.status} ${res.body}`);
          assert.ok(attempt < 60, `retry of ${o.idempotencyKey} never completed`);
          await sleep(500);
        }
      }
      return { acknowledged, replayed };
    }

    /** Every POST key has one order; the database holds exactly those orders for these customers. */
    async function assertOrdersExactlyOnce(
      acknowledged: Map<string, string>,
      posts: number,
      tokens: string[],
    ) {
      assert.equal(acknowledged.size, posts, 'every POST ended with a 201 (first answer or retry)');
      assert.equal(new Set(acknowledged.values()).size, acknowledged.size, 'one order id per key');
      const userIds = tokens.map(
        (t) => JSON.parse(Buffer.from(t.split('.')[1] ?? '', 'base64url').toString()).sub,
      );
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        const { rows } = await client.query<{ id: string }>(
          'SELECT id FROM orders WHERE user_id = ANY($1::uuid[])',
          [userIds],
        );
        assert.deepEqual(
          rows.map((r) => r.id).sort(),
          [...acknowledged.values()].sort(),
          'no order lost, none extra',
        );
      } finally {
        await client.end();
      }
    }

    /** Retries the failed POSTs as a client would, then checks each POST's key has one stored order. */
    async function retryAndCheckOrders(outcomes: readonly Outcome[], clients: readonly EdgeClient[]) {
      const { acknowledged, replayed } = await retryFailedPosts(outcomes, clients);
      const posts = outcomes.filter((o) => o.method === 'POST').length;
      await assertOrdersExactlyOnce(
        acknowledged,
        posts,
        clients.map((c) => c.accessToken),
      );
      return { replayed, posts };
    }

    /** Sends GETs until nginx has routed one to each address (it retries a failed server after fail_timeout). */
    async function waitUntilRouted(addresses: string[]): Promise<void> {
      const { status, https, ca } = env();
      const wanted = new Set(addresses);
      const seen = new Set<string>();
      await waitFor(
        `nginx to route to ${addresses.join(', ')}`,
        async () => {
          const id = `route-${randomBytes(6).toString('hex')}`;
          const res = await edgeRequest(`${https}/api/products/${productId}`, {
            ca,
            headers: { 'x-request-id': id },
          });
          assert.equal(res.status, 200);
          await sleep(100);
          const up = lastUpstream(accessLog(status).get(id));
          if (wanted.has(up)) seen.add(up);
          return seen.size === wanted.size;
        },
        90_000,
      );
    }

    before(async () => {
      const { status, https, ca } = env();
      databaseUrl = status.databases[0]?.url ?? '';
      // An admin made the way the CLI makes one, then a product the load cannot sell out.
      const config = testConfig({ DATABASE_URL: databaseUrl });
      const handle = createDatabase(config.database, captureLogs().logger);
      const name = `edgeadmin${randomBytes(4).toString('hex')}`;
      try {
        await createUser(handle.db, createPasswordHasher(config.auth), {
          email: `${name}@example.com`,
          username: name,
          password: 'edge admin password',
          role: 'admin',
        });
      } finally {
        await handle.close();
      }
      const login = await edgeRequest(`${https}/api/auth/login`, {
        method: 'POST',
        ca,
        localAddress: '127.0.0.50',
        body: JSON.stringify({ login: name, password: 'edge admin password' }),
      });
      assert.equal(login.status, 200, login.body);
      const created = await edgeRequest(`${https}/api/products`, {
        method: 'POST',
        ca,
        localAddress: '127.0.0.50',
        headers: { authorization: `Bearer ${JSON.parse(login.body).accessToken}` },
        body: JSON.stringify({
          sku: `EDGE-${randomBytes(4).toString('hex')}`,
          name: 'Failover',
          price: '9.99',
          stock: 1e9,
        }),
      });
      assert.equal(created.status, 201, created.body);
      productId = JSON.parse(created.body).id;
    });

    test('kill -9 of a primary: no GET fails; only POSTs in flight on it fail; every 201 order is in the database once', async () => {
      const { status, https, ca } = env();
      const clients = await customers('kill', 8, 10);
      const victim = addressOf(status, 'app-1');
      const load = startEdgeLoad({ baseUrl: https, ca, clients, productId, tag: 'kill' });
      await waitFor('warm-up traffic', () => load.count() >= 80, 60_000);
      const killAt = load.now();
      await serverAction(status.stateDir, 'app-1', 'kill');
      const before = load.count();
      await waitFor(
        'traffic after the kill',
        () => load.count() >= before + 150 && load.now() > killAt + 3000,
        90_000,
      );
      const outcomes = await load.stop();
      const log = accessLog(status);

      const getFailures = outcomes.filter((o) => o.method === 'GET' && failed(o));
      const postFailures = outcomes.filter((o) => o.method === 'POST' && failed(o));
      assert.deepEqual(getFailures, [], 'no GET failed');
      for (const o of postFailures) {
        assert.ok(o.at >= killAt, `a POST failed before the kill: ${JSON.stringify(o)}`);
        assert.equal(o.status, 502, JSON.stringify(o));
        assert.equal(lastUpstream(log.get(o.requestId)), victim, 'it had been sent to the killed server');
      }
      assert.ok(postFailures.length <= clients.length, 'at most one request in flight per client');
      assert.equal(new Set(postFailures.map((o) => o.client)).size, postFailures.length);
      const afterKill = outcomes.filter((o) => o.at > killAt);
      const lastFailure = Math.max(killAt, ...postFailures.map((o) => o.at));
      const firstPostOk = afterKill.find((o) => o.method === 'POST' && o.status === 201)?.at ?? Number.NaN;

      const { replayed, posts } = await retryAndCheckOrders(outcomes, clients);
      figures.push(
        `kill -9 app-1: ${outcomes.length} requests (${posts} POST) ${JSON.stringify(summary(outcomes))}; ` +
          `failed GETs 0, failed POSTs ${postFailures.length} (all 502, all sent to app-1, answered ` +
          `${postFailures.map((o) => o.at - killAt).join('/')} ms after the kill; ${replayed} of their retries were replays of an order the server had committed); ` +
          `last failure ${lastFailure - killAt} ms after the kill, first 201 after it at +${firstPostOk - killAt} ms`,
      );
      console.log(figures.at(-1));

      // app-1 stays down: the next test takes the other primary down too.
    });

    test('then the other primary too: the backup serves every GET; when both return, traffic returns to them', async () => {
      const { status, https, ca } = env();
      const clients = await customers('both', 8, 11);
      const backup = addressOf(status, 'app-3');
      const primaries = new Set([addressOf(status, 'app-1'), addressOf(status, 'app-2')]);
      const load = startEdgeLoad({ baseUrl: https, ca, clients, productId, tag: 'both' });
      await waitFor('warm-up traffic', () => load.count() >= 80, 60_000);
      const killAt = load.now();
      await serverAction(status.stateDir, 'app-2', 'kill');
      const killed = load.now();
      let count = load.count();
      await waitFor(
        'traffic on the backup',
        () => load.count() >= count + 100 && load.now() > killed + 2000,
        90_000,
      );
      const restartAt = load.now();
      await Promise.all(['app-1', 'app-2'].map((n) => serverAction(status.stateDir, n, 'start')));
      const restarted = load.now();
      // Traffic comes back once nginx retries them (fail_timeout after their last failure).
      let returnedAt = Number.NaN;
      await waitFor(
        'traffic to return to the primaries',
        () => {
          const log = accessLog(status);
          const back = load
            .outcomes()
            .find(
              (o) =>
                o.at > restarted && o.status === 200 && primaries.has(lastUpstream(log.get(o.requestId))),
            );
          if (back !== undefined) returnedAt = back.at;
          return back !== undefined;
        },
        90_000,
      );
      count = load.count();
      const quietFrom = load.now() + 1000;
      await waitFor(
        'traffic after the return',
        () => load.count() >= count + 150 && load.now() > quietFrom + 2000,
        90_000,
      );
      const outcomes = await load.stop();
      const log = accessLog(status);

      assert.deepEqual(
        outcomes.filter((o) => o.method === 'GET' && failed(o)),
        [],
        'no GET failed',
      );
      const postFailures = outcomes.filter((o) => o.method === 'POST' && failed(o));
      for (const o of postFailures) {
        assert.ok(o.at >= killAt, JSON.stringify(o));
        assert.ok(primaries.has(lastUpstream(log.get(o.requestId))), 'only POSTs sent to a killed primary');
      }
      assert.ok(postFailures.length <= clients.length);
      const outage = outcomes.filter((o) => o.at > killed + 500 && o.at < restartAt && !failed(o));
      assert.ok(outage.length > 50, `requests during the outage: ${outage.length}`);
      assert.ok(
        outage.every((o) => lastUpstream(log.get(o.requestId)) === backup),
        'the backup served them',
      );
      const quiet = outcomes.filter((o) => o.at > quietFrom);
      assert.ok(quiet.length > 50);
      const onBackup = quiet.filter((o) => lastUpstream(log.get(o.requestId)) === backup).length;
      assert.equal(onBackup, 0, 'once the primaries are back, the backup gets nothing');

      await retryAndCheckOrders(outcomes, clients);
      figures.push(
        `app-2 killed too (app-1 down since the previous test), both primaries down: ${outcomes.length} requests ${JSON.stringify(summary(outcomes))}; failed GETs 0, ` +
          `failed POSTs ${postFailures.length} (in flight on the killed primaries); ${outage.length} answered by the backup during the outage; ` +
          `primaries restarted in ${restarted - restartAt} ms, traffic back on them ${returnedAt - restarted} ms after they were up`,
      );
      console.log(figures.at(-1));
      await waitUntilRouted(['app-1', 'app-2'].map((n) => addressOf(status, n)));
    });

    test('a rolling PM2 reload of every server, one at a time, under load: no request fails', async () => {
      const { status, https, ca } = env();
      const clients = await customers('roll', 8, 12);
      const pidsBefore = status.servers.map((s) => s.pids);
      const load = startEdgeLoad({ baseUrl: https, ca, clients, productId, tag: 'roll' });
      await waitFor('warm-up traffic', () => load.count() >= 80, 60_000);
      const timings: string[] = [];
      for (const server of status.servers) {
        const started = Date.now();
        await serverAction(status.stateDir, server.name, 'reload');
        timings.push(`${server.name} ${Date.now() - started} ms`);
      }
      const count = load.count();
      await waitFor('traffic after the reloads', () => load.count() >= count + 80, 60_000);
      const outcomes = await load.stop();
      const after = (await import('../../stack/stack.js')).status(status.stateDir);
      assert.notDeepEqual(
        after?.servers.map((s) => s.pids),
        pidsBefore,
        'every server got new workers',
      );
      for (const [i, s] of (after?.servers ?? []).entries())
        assert.notDeepEqual(s.pids, pidsBefore[i], `${s.name} was reloaded`);
      assert.deepEqual(outcomes.filter(failed), [], 'no request failed');
      assert.deepEqual([...new Set(outcomes.map((o) => o.status))].sort(), [200, 201]);
      await retryAndCheckOrders(outcomes, clients);
      figures.push(
        `rolling reload (${timings.join(', ')}): ${outcomes.length} requests ${JSON.stringify(summary(outcomes))}, 0 failed`,
      );
      console.log(figures.at(-1));
    });
    test('a fault proxy between nginx and app-1 — slow, sliced, reset, refused, hung: a request fails only when the fault cut it on app-1 or a POST met the hang (504 after the read timeout), and a POST’s retry is answered once', async () => {
      const { status, https, ca } = env();
      const config = status.nginx?.config ?? '';
      const original = readFileSync(config, 'utf8');
      const direct = addressOf(status, 'app-1');
      const [host, port] = direct.split(':');
      const proxy = await startFaultProxy({
        name: 'app-1',
        target: { host: host ?? '', port: Number(port) },
      });
      const reload = async (text: string) => {
        writeFileSync(config, text);
        await run(nginxBin, ['-t', '-q', '-c', config]);
        await run(nginxBin, ['-s', 'reload', '-c', config]);
      };
      const phases: Array<{ name: string; from: number; to: number }> = [];
      try {
        // nginx reaches app-1 through the proxy: the same rendered config with that one address changed.
        const line = new RegExp(`(\\bserver ${direct.replace(/\./g, '\\.')})\\b`);
        assert.match(original, line, 'the rendered upstream block names app-1');
        await reload(original.replace(line, `server ${proxy.address}`));
        await waitUntilRouted([proxy.address]);

        const clients = await customers('edge', 8, 14);
        const load = startEdgeLoad({ baseUrl: https, ca, clients, productId, tag: 'edge' });
        await waitFor('warm-up traffic', () => load.count() >= 80, 60_000);
        /** Holds a fault for at least `ms` of load and 60 more answers, then lifts it. */
        const hold = async (name: string, ms: number, lift: () => Promise<void> | void) => {
          const from = load.now();
          const count = load.count();
          await waitFor(name, () => load.now() >= from + ms && load.count() >= count + 60, 90_000);
          await lift();
          phases.push({ name, from, to: load.now() });
        };
        const slow = proxy.add({ type: 'latency', latencyMs: 300, jitterMs: 100 });
        await hold('app-1 answers 300 ± 100 ms late', 3000, () => proxy.remove(slow));
        const sliced = proxy.add({ type: 'slicer', averageSize: 16, sizeVariation: 8, delayUs: 2000 });
        await hold('app-1 answers in 16-byte slices', 3000, () => proxy.remove(sliced));
        const reset = proxy.add({ type: 'reset_peer', timeoutMs: 0 });
        await hold('connections to app-1 reset', 3000, () => proxy.remove(reset));
        // nginx skips app-1 for fail_timeout (10 s) after max_fails: wait until it is back.
        await waitUntilRouted([proxy.address]);
        await proxy.down();
        await hold('app-1 refuses connections', 3000, () => proxy.up());
        await waitUntilRouted([proxy.address]);
        // Hung: app-1 accepts and never answers (stopped, its event loop stuck), held past nginx's
        // proxy_read_timeout so that nginx gives up on what it sent there.
        const hung = proxy.add({ type: 'timeout', timeoutMs: 0 });
        await hold('app-1 hung (accepts, never answers)', readTimeoutMs + 3000, () => proxy.remove(hung));
        await waitUntilRouted([proxy.address]);
        const count = load.count();
        await waitFor('traffic after the faults', () => load.count() >= count + 60, 60_000);
        const outcomes = await load.stop();
        const log = accessLog(status);

        // nginx sends a request on to another server when app-1 refused or failed it before
        // answering. It cannot once app-1 had its POST (never resent: it may have been placed) or had
        // begun an answer (nginx passes the headers on as soon as it has them): the fault cutting such
        // a connection — reset, or closed as app-1 starts refusing — is the only way a request fails.
        // Cut before app-1's headers, nginx answers 502; cut after them (an answer still coming in
        // slices when the reset came: CI saw a POST so), nginx can only close the client's
        // connection, and its log holds the status it had passed on.
        const cutting = phases.filter((p) => p.name.includes('reset') || p.name.includes('refuses'));
        const hungPhase = phases.find((p) => p.name.includes('hung'));
        // Sent while app-1 was hung (or just before, still in flight when the fault came).
        const startedInHang = (o: Outcome) =>
          hungPhase !== undefined && o.at - o.ms >= hungPhase.from - 2000 && o.at - o.ms <= hungPhase.to;
        const firstUpstream = (o: Outcome) => log.get(o.requestId)?.upstream_addr.split(',')[0]?.trim() ?? '';
        // nginx gave up on the hung app-1 after its read timeout, and never later than that: a GET
        // went on to another server (answered), a POST it had sent there is a 504 (never resent).
        const metHang = outcomes.filter(
          (o) => startedInHang(o) && firstUpstream(o) === proxy.address && o.ms >= readTimeoutMs - 1000,
        );
        assert.ok(metHang.length > 0, "no request waited for nginx's read timeout on the hung app-1");
        for (const o of outcomes.filter(startedInHang))
          assert.ok(o.ms <= readTimeoutMs + 10_000, `waited past nginx's read timeout: ${JSON.stringify(o)}`);
        const failures = outcomes.filter(failed);
        const hangFailures = failures.filter(startedInHang);
        const cutFailures = failures.filter((o) => !startedInHang(o));
        for (const o of hangFailures) {
          const logged = log.get(o.requestId)?.status ?? 0;
          assert.ok(
            (o.method === 'POST' && o.status === 504) || (o.status === null && logged > 0 && logged < 500),
            `only a POST sent to the hung app-1 fails (504), or an answer it had begun: ${JSON.stringify(o)}`,
          );
          assert.equal(lastUpstream(log.get(o.requestId)), proxy.address, JSON.stringify(o));
        }
        for (const o of cutFailures) {
          assert.ok(o.status === 502 || o.status === null, JSON.stringify(o));
          if (o.status === null) {
            const logged = log.get(o.requestId)?.status ?? 0;
            assert.ok(
              logged > 0 && logged < 500,
              `cut without an answer: nginx logged ${logged} for ${JSON.stringify(o)}`,
            );
          }
          assert.equal(
            lastUpstream(log.get(o.requestId)),
            proxy.address,
            `it had reached app-1: ${JSON.stringify(o)}`,
          );
          assert.ok(
            cutting.some((p) => o.at >= p.from && o.at <= p.to + 2000),
            `a request failed while app-1 was only slow: ${JSON.stringify(o)} ${JSON.stringify(phases)}`,
          );
        }
        assert.ok(
          cutFailures.length <= 2 * clients.length,
          `${cutFailures.length} failed: at most one per client per cut`,
        );
        const postFailures = failures.filter((o) => o.method === 'POST');
        const getFailures = failures.filter((o) => o.method === 'GET');
        // Through app-1 under every fault that only slows it: the proxy carried real traffic.
        const viaProxy = outcomes.filter((o) => lastUpstream(log.get(o.requestId)) === proxy.address);
        assert.ok(viaProxy.length > 50, `requests answered through the proxy: ${viaProxy.length}`);
        const { replayed } = await retryAndCheckOrders(outcomes, clients);
        const perPhase = phases.map((p) => {
          const during = outcomes.filter((o) => o.at >= p.from && o.at <= p.to);
          const onApp1 = during.filter((o) => lastUpstream(log.get(o.requestId)) === proxy.address).length;
          return `${p.name}: ${during.length} requests (${onApp1} answered by app-1), ${during.filter(failed).length} failed`;
        });
        const hangGets = metHang.filter((o) => o.method === 'GET');
        const hangPosts = metHang.filter((o) => o.method === 'POST');
        perPhase.push(
          `sent to the hung app-1: ${hangGets.length} GETs (${hangGets.filter((o) => o.status === 200).length} answered by another server, after ${hangGets.map((o) => o.ms).join(', ')} ms), ` +
            `${hangPosts.length} POSTs (${hangPosts.filter((o) => o.status === 504).length} × 504)`,
        );
        figures.push(
          `faults between nginx and app-1: ${outcomes.length} requests ${JSON.stringify(summary(outcomes))}; ` +
            `${perPhase.join('; ')}; failed GETs ${getFailures.length}, failed POSTs ${postFailures.length}, ${failures.filter((o) => o.status === null).length} of all failures cut mid-answer (in flight on app-1 ` +
            `when the fault cut their connection; ${replayed} of the POSTs' retries were replays of an order app-1 had committed)`,
        );
        console.log(figures.at(-1));
      } finally {
        await reload(original);
        await proxy.close();
      }
      await waitUntilRouted([direct]);
    });
  });
}

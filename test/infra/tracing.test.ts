import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { type ReplicatedPostgres, startReplicatedPostgres } from '../harness/replication.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, captureLogs, skipEngine, testConfig } from '../helper.js';
import { createAdmin } from '../support/accounts.js';

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

describe('OpenTelemetry traces (in-memory exporter)', { skip: await skipEngine('postgres', 'redis') }, () => {
  const exporter = new InMemorySpanExporter();
  const logs = captureLogs('info', { traceIds: true });
  let app: FastifyInstance;
  let base: string;
  let productId: string;
  before(async () => {
    app = await buildTestApp({
      engine: 'postgres',
      redis: true,
      logger: logs.logger,
      spanExporter: exporter,
      env: { TRACING_ENABLED: 'true', JOBS_POLL_INTERVAL_MS: '100' },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
    const admin = await createAdmin(app);
    const created = await fetch(`${base}/api/products`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${admin.accessToken}` },
      body: JSON.stringify({
        sku: `TRACE-${randomBytes(3).toString('hex')}`,
        name: 'Traced',
        price: '1.00',
        stock: 5,
      }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    productId = ((await created.json()) as { id: string }).id;
  });
  after(async () => {
    await app?.close();
  });

  test('one request: a server span continuing the caller’s traceparent, with PostgreSQL and Redis spans under it; its log line carries the trace id', async () => {
    exporter.reset();
    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const res = await fetch(`${base}/api/products/${productId}`, {
      headers: { traceparent: `00-${traceId}-${callerSpan}-01` },
    });
    assert.equal(res.status, 200);
    await waitUntil(() => exporter.getFinishedSpans().some((s) => s.name === 'GET /api/products/:id'), {
      what: 'the server span',
    });
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    const server = spans.find((s) => s.name === 'GET /api/products/:id');
    assert.ok(server, spans.map((s) => s.name).join(', '));
    assert.equal(parentOf(server), callerSpan, 'the server span is a child of the caller’s');
    assert.equal(server.attributes['http.route'], '/api/products/:id');
    assert.equal(server.attributes['http.response.status_code'], 200);
    const children = spans.filter((s) => parentOf(s) === server.spanContext().spanId);
    const database = children.filter((s) => s.attributes['db.system.name'] === 'postgresql');
    const redis = children.filter((s) => s.attributes['db.system.name'] === 'redis');
    assert.ok(database.length >= 1, `database spans: ${children.map((s) => s.name).join(', ')}`);
    assert.ok(redis.length >= 1, `redis spans: ${children.map((s) => s.name).join(', ')}`);
    assert.match(String(database[0]?.attributes['db.query.text']), /select .* from "products"/i);
    assert.ok(!String(database[0]?.attributes['db.query.text']).includes(productId), 'no parameter values');
    // The request's log line names the same trace.
    await waitUntil(() => logs.lines.some((l) => l.msg === 'request completed' && l.traceId === traceId), {
      what: 'the request log line with the trace id',
    });
    const line = logs.lines.find((l) => l.msg === 'request completed' && l.traceId === traceId);
    assert.equal(line?.spanId, server.spanContext().spanId);
  });

  test('a job continues the trace of the request that enqueued it', async () => {
    exporter.reset();
    const traceId = randomBytes(16).toString('hex');
    const res = await fetch(`${base}/api/auth/password-reset`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01`,
      },
      body: JSON.stringify({ email: 'nobody@example.test' }),
    });
    assert.equal(res.status, 202);
    await waitUntil(
      () =>
        exporter
          .getFinishedSpans()
          .some((s) => s.name === 'job account.password-reset' && s.spanContext().traceId === traceId),
      { what: 'the job span' },
    );
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    const server = spans.find((s) => s.name === 'POST /api/auth/password-reset');
    const job = spans.find((s) => s.name === 'job account.password-reset');
    assert.ok(server && job);
    // The INSERT of the job is inside the request; the job's span hangs off that request's trace.
    assert.ok(spans.some((s) => parentOf(s) === server.spanContext().spanId && /^INSERT/.test(s.name)));
    assert.ok(
      spans.some(
        (s) => parentOf(s) === job.spanContext().spanId && s.attributes['db.system.name'] === 'postgresql',
      ),
    );
    await waitUntil(
      () => logs.lines.some((l) => l.event === 'password_reset_requested' && l.traceId === traceId),
      {
        what: 'the job log line with the trace id',
      },
    );
  });

  test('background work outside any request makes no root spans (revocation polling, queue polling)', async () => {
    exporter.reset();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const roots = exporter.getFinishedSpans().filter((s) => parentOf(s) === undefined);
    assert.deepEqual(
      roots.map((s) => s.name),
      [],
    );
  });
});

describe('OpenTelemetry traces of a read served by a replica', () => {
  const exporter = new InMemorySpanExporter();
  let cluster: ReplicatedPostgres;
  let app: FastifyInstance;
  before(async () => {
    // A real primary and streaming standby of our own (test/harness/replication.ts).
    cluster = await startReplicatedPostgres();
    app = await buildApp(
      testConfig({
        DATABASE_URL: cluster.primaryUrl(),
        DATABASE_MIGRATE_ON_START: 'true',
        DATABASE_REPLICA_URLS: cluster.standby.url(),
        CACHE_ENABLED: 'false',
        TRACING_ENABLED: 'true',
      }),
      { spanExporter: exporter },
    );
    await app.ready();
    await cluster.waitForCatchUp();
    await waitUntil(async () => (await app.inject({ url: '/ready' })).json().checks.replicas === 'up', {
      what: 'the replica in use',
      timeoutMs: 60_000,
    });
  });
  after(async () => {
    await app?.close();
    cluster?.destroy();
  });

  test('the catalog read on the replica has its database span, named as the replica, under the request', async () => {
    exporter.reset();
    const traceId = randomBytes(16).toString('hex');
    // Over HTTP: the server span is the HTTP server's (app.inject bypasses it).
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const res = await fetch(`http://127.0.0.1:${port}/api/products`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    });
    assert.equal(res.status, 200, await res.text());
    await waitUntil(() => exporter.getFinishedSpans().some((s) => s.name === 'GET /api/products'), {
      what: 'the server span',
    });
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    const server = spans.find((s) => s.name === 'GET /api/products');
    assert.ok(server, spans.map((s) => s.name).join(', '));
    const onReplica = spans.filter((s) => s.attributes['shipshape.db.replica'] !== undefined);
    assert.ok(
      onReplica.some(
        (s) =>
          parentOf(s) === server.spanContext().spanId &&
          /from "products"/i.test(String(s.attributes['db.query.text'])),
      ),
      `spans: ${spans.map((s) => `${s.name} ${JSON.stringify(s.attributes['shipshape.db.replica'] ?? null)}`).join(', ')}`,
    );
  });
});

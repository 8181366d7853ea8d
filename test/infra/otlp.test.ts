import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../harness/otlp.js';
import { type ServerProcess, startServerProcess } from '../harness/process.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { deleteKeys, type TestDatabaseEnv, testDatabaseEnv, testKeyPrefix } from '../helper.js';

const entry = new URL('../../src/main.ts', import.meta.url).pathname;
const SERVER = 2;
const CLIENT = 3;
const CONSUMER = 5;

/**
 * The service as a real process exporting over OTLP/HTTP with the official exporter to a real
 * receiver (test/harness/otlp.ts decodes what it sends: OTLP/JSON). Default: off, nothing is sent.
 */
describe('OTLP export to a real OTLP/HTTP receiver', { skip: await skipUnless('postgres', 'redis') }, () => {
  let receiver: OtlpReceiver;
  let smtp: TestSmtpServer;
  let database: TestDatabaseEnv;
  const keyPrefix = testKeyPrefix('otlp');
  const started: ServerProcess[] = [];

  const start = (env: Record<string, string>) =>
    startServerProcess(entry, {
      ...database.env,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: keyPrefix,
      JWT_SECRET: randomBytes(48).toString('base64'),
      MAIL_SMTP_URL: smtp.url,
      JOBS_POLL_INTERVAL_MS: '100',
      CACHE_WARM_UP_PAGES: '0',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url,
      ...env,
    }).then((server) => {
      started.push(server);
      return server;
    });
  const stop = async (server: ServerProcess) => {
    server.child.kill('SIGTERM');
    assert.equal(await server.exited(), 0);
  };
  const call = (server: ServerProcess, path: string, init: RequestInit = {}) =>
    fetch(`http://127.0.0.1:${server.port}${path}`, {
      ...init,
      headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
    });
  const register = async (server: ServerProcess) => {
    const name = `otlp${randomBytes(5).toString('hex')}`;
    const res = await call(server, '/api/auth/register', {
      method: 'POST',
      body: JSON.stringify({ email: `${name}@example.com`, username: name, password: 'a password for otlp' }),
    });
    assert.equal(res.status, 201, await res.text());
    return `${name}@example.com`;
  };

  before(async () => {
    receiver = await startOtlpReceiver();
    smtp = await startSmtpServer();
    database = await testDatabaseEnv('postgres');
  });
  after(async () => {
    for (const s of started)
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
    await Promise.all(started.map((s) => s.exited()));
    await receiver?.close();
    await smtp?.close();
    await database?.cleanup();
    await deleteKeys(redisUrl, keyPrefix);
  });

  test('off (the default), with an endpoint configured: nothing is exported, even at shutdown', async () => {
    const server = await start({});
    const email = await register(server);
    await smtp.waitForMail(email, { subject: /^Confirm/ });
    const res = await call(server, '/api/products?limit=1', {
      headers: { traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01` },
    });
    assert.equal(res.status, 200);
    // A graceful stop flushes every span processor there is: after it, nothing can still come.
    await stop(server);
    assert.deepEqual(receiver.requests, []);
    assert.ok(!server.logs.some((l) => 'traceId' in l), 'no trace ids on log lines');
  });

  test('on: a request’s server span continues the caller’s traceparent, with PostgreSQL and Redis spans under it; its log line carries the trace id; the jobs it enqueued continue its trace', async () => {
    const server = await start({ TRACING_ENABLED: 'true' });
    const email = await register(server);
    await smtp.waitForMail(email, { subject: /^Confirm/ });
    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const since = smtp.received.length;
    const res = await call(server, '/api/auth/password-reset', {
      method: 'POST',
      headers: { traceparent: `00-${traceId}-${callerSpan}-01` },
      body: JSON.stringify({ email }),
    });
    assert.equal(res.status, 202);
    await smtp.waitForMail(email, { since, subject: /^Reset/ });
    const inTrace = () => receiver.spans.filter((s) => s.traceId === traceId);
    const named = (name: string) => inTrace().find((s) => s.name === name);
    // Batched export: the spans arrive within the batch delay (5 s) of their end.
    await waitUntil(() => named('job mail.account') !== undefined, {
      timeoutMs: 60_000,
      what: `the trace exported (have: ${inTrace()
        .map((s) => s.name)
        .join(', ')})`,
    });
    const spans = inTrace();
    const describeSpans = spans.map((s) => `${s.name} (${s.spanId} ← ${s.parentSpanId})`).join('\n');
    const server_ = named('POST /api/auth/password-reset') as ReceivedSpan;
    assert.ok(server_, describeSpans);
    assert.equal(server_.kind, SERVER);
    assert.equal(server_.parentSpanId, callerSpan, 'the caller’s span is the parent');
    assert.equal(server_.attributes['http.route'], '/api/auth/password-reset');
    assert.equal(server_.attributes['http.response.status_code'], 202);
    assert.equal(server_.resource['service.name'], 'shipshape');
    assert.ok(server_.endTimeUnixNano > server_.startTimeUnixNano);
    const under = (parent: ReceivedSpan) => spans.filter((s) => s.parentSpanId === parent.spanId);
    const postgres = under(server_).filter((s) => s.attributes['db.system.name'] === 'postgresql');
    const redis = under(server_).filter((s) => s.attributes['db.system.name'] === 'redis');
    assert.ok(postgres.length >= 1, `PostgreSQL spans under the request:\n${describeSpans}`);
    assert.ok(redis.length >= 1, `Redis spans under the request:\n${describeSpans}`);
    assert.ok(postgres.every((s) => s.kind === CLIENT));
    assert.ok(
      postgres.some((s) => /insert into "jobs"/i.test(String(s.attributes['db.query.text']))),
      'the enqueue is a span of the request',
    );
    assert.ok(!spans.some((s) => String(s.attributes['db.query.text'] ?? '').includes(email)), 'no values');
    // The job the request enqueued, and the mail job that one enqueued, in the same trace.
    const resetJob = named('job account.password-reset') as ReceivedSpan;
    const mailJob = named('job mail.account') as ReceivedSpan;
    assert.ok(resetJob && mailJob, describeSpans);
    assert.equal(resetJob.kind, CONSUMER);
    assert.equal(resetJob.parentSpanId, server_.spanId, 'the job continues the request’s span');
    assert.equal(mailJob.parentSpanId, resetJob.spanId);
    assert.ok(under(resetJob).some((s) => s.attributes['db.system.name'] === 'postgresql'));
    // The request's log line names the trace and its span.
    const line = server.logs.find((l) => l.msg === 'request completed' && l.traceId === traceId);
    assert.ok(line, 'the request log line carries the trace id');
    assert.equal(line.spanId, server_.spanId);
    assert.ok(server.logs.some((l) => l.event === 'mail_sent' && l.traceId === traceId));
    assert.ok(receiver.requests.every((r) => r.contentType === 'application/json' && r.status === 200));
    await stop(server);
  });
});

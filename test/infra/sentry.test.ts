import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { createErrorReporter } from '../../src/infra/sentry.js';
import { waitFor } from '../harness/monitoring.js';
import { startServerProcess } from '../harness/process.js';
import { buildTestApp, captureLogs, testConfig } from '../helper.js';

// Sentry (@sentry/node 11) against a local HTTP endpoint that receives envelopes, as Sentry's
// ingest does: one event per 5xx with release, environment, request id and route; none for a 4xx;
// and nothing secret in anything sent.

interface Envelope {
  readonly url: string;
  readonly raw: string;
  readonly items: Array<{ header: { type: string }; payload: Record<string, unknown> }>;
}

async function startSink(): Promise<{ server: Server; dsn: string; envelopes: Envelope[] }> {
  const envelopes: Envelope[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const raw = body.toString('utf8');
      const lines = raw.split('\n').filter((l) => l.length > 0);
      const items: Envelope['items'] = [];
      for (let i = 1; i + 1 < lines.length; i += 2) {
        items.push({ header: JSON.parse(lines[i] as string), payload: JSON.parse(lines[i + 1] as string) });
      }
      envelopes.push({ url: req.url ?? '', raw, items });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { server, dsn: `http://publickey@127.0.0.1:${port}/1`, envelopes };
}

const events = (envelopes: Envelope[]) =>
  envelopes.flatMap((e) => e.items.filter((i) => i.header.type === 'event').map((i) => i.payload));

const secrets = {
  token: 'Bearer eyJhbGciOiJIUzI1NiJ9.sentry-test-token-7f3a',
  cookie: 'refresh_token=sentry-test-cookie-91bd',
  password: 'sentry-test-password-c0ffee',
};

describe('Sentry error reporting (SENTRY_DSN set)', () => {
  let sink: Awaited<ReturnType<typeof startSink>>;
  let app: FastifyInstance;

  before(async () => {
    sink = await startSink();
    app = await buildTestApp({
      env: { SENTRY_DSN: sink.dsn, SENTRY_ENVIRONMENT: 'ci', SENTRY_RELEASE: 'shipshape@0.0.0-test' },
      extendApi: (api) => {
        api.post('/test/boom', async () => {
          throw new Error('boom in a handler');
        });
      },
    });
  });

  after(async () => {
    await app?.close();
    sink?.server.close();
  });

  test('a 5xx sends one event with release, environment, request id and route; a 4xx sends none', async () => {
    const failed = await app.inject({
      method: 'POST',
      url: '/api/test/boom?api_key=sentry-test-query-55aa',
      headers: { authorization: secrets.token, cookie: secrets.cookie, 'content-type': 'application/json' },
      payload: JSON.stringify({ email: 'someone@example.com', password: secrets.password }),
    });
    assert.equal(failed.statusCode, 500);
    const requestId = failed.headers['x-request-id'];
    assert.equal(typeof requestId, 'string');

    const bad = await app.inject({
      method: 'POST',
      url: '/api/auth/login',
      headers: { authorization: secrets.token, 'content-type': 'application/json' },
      payload: JSON.stringify({ login: 'x', password: secrets.password, extra: true }),
    });
    assert.equal(bad.statusCode, 400);
    const missing = await app.inject({ method: 'GET', url: '/api/nowhere' });
    assert.equal(missing.statusCode, 404);

    const [event] = await waitFor('the event of the 500', async () => {
      const found = events(sink.envelopes);
      return found.length > 0 ? found : undefined;
    });
    // Everything queued is sent by close(): then count exactly.
    await app.errorReporter?.close();
    const all = events(sink.envelopes);
    assert.equal(all.length, 1, JSON.stringify(all, null, 2));
    assert.ok(event);
    assert.equal(event.environment, 'ci');
    assert.equal(event.release, 'shipshape@0.0.0-test');
    const tags = event.tags as Record<string, string>;
    assert.equal(tags.request_id, requestId);
    assert.equal(tags.route, '/api/test/boom');
    assert.equal(tags.method, 'POST');
    assert.equal(tags.status_code, '500');
    const exception = (event.exception as { values: Array<{ type: string; value: string }> }).values[0];
    assert.equal(exception?.value, 'boom in a handler');
    assert.equal(event.request, undefined);
    assert.equal(event.user, undefined);
    assert.ok(sink.envelopes.every((e) => e.url.startsWith('/api/1/envelope/')));

    const everything = sink.envelopes.map((e) => e.raw).join('\n');
    for (const secret of [...Object.values(secrets), 'sentry-test-query-55aa', 'someone@example.com']) {
      assert.ok(!everything.includes(secret), `sent to Sentry: ${secret}`);
    }
    assert.doesNotMatch(everything, /authorization|cookie/i);
  });
});

test('with SENTRY_DSN unset the SDK is never loaded', async () => {
  const config = testConfig();
  assert.equal(config.sentry.dsn, undefined);
  assert.equal(await createErrorReporter(config.sentry, captureLogs().logger), undefined);
  const app = await buildTestApp();
  try {
    assert.equal(app.errorReporter, undefined);
  } finally {
    await app.close();
  }
});

test('an uncaught exception is reported, flushed, and the process exits 1', async () => {
  const sink = await startSink();
  try {
    const server = await startServerProcess('test/fixtures/server.ts', {
      SENTRY_DSN: sink.dsn,
      SENTRY_RELEASE: 'shipshape@0.0.0-crash',
      JWT_SECRET: 'test-secret-test-secret-test-secret-0123456789',
    });
    const exited = server.exited();
    const res = await fetch(`http://127.0.0.1:${server.port}/test/crash`);
    assert.equal(res.status, 200);
    assert.equal(await exited, 1);
    const found = events(sink.envelopes);
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.equal(found[0]?.level, 'fatal');
    assert.equal(((found[0]?.tags ?? {}) as Record<string, string>).mechanism, 'uncaughtException');
    assert.equal(found[0]?.release, 'shipshape@0.0.0-crash');
  } finally {
    sink.server.close();
  }
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Type } from 'typebox';
import { buildTestApp, captureLogs } from '../helper.js';

const problemKeys = ['code', 'detail', 'requestId', 'status', 'title', 'type'];

/** Asserts a problem+json answer with exactly the documented keys, the security headers and an id. */
function assertProblem(res: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  assertSecurityHeaders(res);
  const body = res.json() as Record<string, unknown>;
  const keys = Object.keys(body)
    .filter((k) => k !== 'errors')
    .sort();
  assert.deepEqual(keys, problemKeys);
  assert.equal(body.status, status);
  assert.equal(body.code, code);
  assert.equal(body.requestId, res.headers['x-request-id']);
  assert.match(String(body.type), /^urn:shipshape:problem:/);
  return body;
}

function assertSecurityHeaders(res: LightMyRequestResponse): void {
  assert.match(String(res.headers['x-request-id']), /\S+/);
  assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/);
  assert.equal(res.headers['x-content-type-options'], 'nosniff');
  assert.equal(res.headers['x-frame-options'], 'DENY');
  assert.equal(res.headers['referrer-policy'], 'no-referrer');
  assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'none'/);
  assert.equal(res.headers['x-powered-by'], undefined);
}

/** Routes that exist only in these tests, to exercise validation and failures. */
function testRoutes(app: FastifyInstance): void {
  app.post(
    '/test/echo',
    {
      schema: {
        body: Type.Object(
          { name: Type.String({ minLength: 1 }), count: Type.Optional(Type.Integer()) },
          {
            additionalProperties: false,
          },
        ),
      },
    },
    async (request) => request.body,
  );
  app.get('/test/boom', async () => {
    throw new Error('SELECT secret FROM users WHERE 1 = 1 exploded');
  });
  app.get('/test/slow', async () => {
    await sleep(30);
    return { ok: true };
  });
  app.get('/test/log-secrets', async (request) => {
    request.log.info(
      {
        body: { password: 'hunter2', refreshToken: 'rt-secret' },
        headers: { authorization: 'Bearer abc.def' },
      },
      'about to leak',
    );
    return { ok: true };
  });
}

describe('HTTP platform', () => {
  let app: FastifyInstance;
  const logs = captureLogs('info');

  before(async () => {
    app = await buildTestApp({ logger: logs.logger, extend: testRoutes, env: { SLOW_REQUEST_MS: '20' } });
  });
  after(() => app?.close());

  test('security headers and a request id on a success', async () => {
    const res = await app.inject({ method: 'GET', url: '/health' });
    assert.equal(res.statusCode, 200);
    assertSecurityHeaders(res);
    assert.equal(res.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'");
    assert.equal(res.headers['cross-origin-resource-policy'], 'same-origin');
    // Document-only headers are for HTML pages, not JSON.
    assert.equal(res.headers['permissions-policy'], undefined);
    assert.deepEqual(Object.keys(res.json()).sort(), ['status', 'timestamp', 'uptime']);
  });

  test('a sane caller request id is kept; anything else is replaced', async () => {
    const kept = await app.inject({ url: '/health', headers: { 'x-request-id': 'abc-123.DEF:4_5' } });
    assert.equal(kept.headers['x-request-id'], 'abc-123.DEF:4_5');
    for (const bad of ['has space', 'x'.repeat(129), 'new\u2028line', '<script>']) {
      const res = await app.inject({ url: '/health', headers: { 'x-request-id': bad } });
      assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/, bad);
    }
  });

  test('unknown route → 404 problem', async () => {
    assertProblem(await app.inject({ url: '/no/such/thing' }), 404, 'NOT_FOUND');
  });

  test('wrong method on a known path → 405 with Allow', async () => {
    const res = await app.inject({ method: 'DELETE', url: '/health' });
    assertProblem(res, 405, 'METHOD_NOT_ALLOWED');
    assert.equal(res.headers.allow, 'GET, HEAD');
  });

  test('malformed JSON → 400', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/test/echo',
      headers: { 'content-type': 'application/json' },
      payload: '{"name": ',
    });
    assertProblem(res, 400, 'VALIDATION_FAILED');
  });

  test('empty JSON body, prototype poisoning → 400', async () => {
    const json = { 'content-type': 'application/json' };
    assertProblem(
      await app.inject({ method: 'POST', url: '/test/echo', headers: json, payload: '' }),
      400,
      'VALIDATION_FAILED',
    );
    assertProblem(
      await app.inject({
        method: 'POST',
        url: '/test/echo',
        headers: json,
        payload: '{"name":"a","__proto__":{"x":1}}',
      }),
      400,
      'VALIDATION_FAILED',
    );
    assertProblem(
      await app.inject({
        method: 'POST',
        url: '/test/echo',
        headers: json,
        payload: '{"name":"a","constructor":{"prototype":{"x":1}}}',
      }),
      400,
      'VALIDATION_FAILED',
    );
  });

  test('schema violations → 400 with the offending paths', async () => {
    const missing = assertProblem(
      await app.inject({ method: 'POST', url: '/test/echo', payload: {} }),
      400,
      'VALIDATION_FAILED',
    );
    assert.deepEqual(missing.errors, [{ path: '/body/name', message: "must have required property 'name'" }]);
    const extra = assertProblem(
      await app.inject({ method: 'POST', url: '/test/echo', payload: { name: 'a', role: 'admin' } }),
      400,
      'VALIDATION_FAILED',
    );
    assert.deepEqual(extra.errors, [{ path: '/body/role', message: 'is not an allowed property' }]);
    // Bodies are not coerced: a string is not a number.
    const typed = assertProblem(
      await app.inject({ method: 'POST', url: '/test/echo', payload: { name: 'a', count: '5' } }),
      400,
      'VALIDATION_FAILED',
    );
    assert.equal((typed.errors as Array<{ path: string }>)[0]?.path, '/body/count');
    const ok = await app.inject({ method: 'POST', url: '/test/echo', payload: { name: 'a', count: 5 } });
    assert.deepEqual(ok.json(), { name: 'a', count: 5 });
  });

  test('wrong content type → 415', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
      const res = await app.inject({
        method: 'POST',
        url: '/test/echo',
        headers: { 'content-type': type },
        payload: 'name=a',
      });
      assertProblem(res, 415, 'UNSUPPORTED_MEDIA_TYPE');
    }
  });

  test('body over the limit → 413', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/test/echo',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'x'.repeat(200 * 1024) }),
    });
    assertProblem(res, 413, 'PAYLOAD_TOO_LARGE');
  });

  test('a malformed URL → 400 with the same headers', async () => {
    assertProblem(await app.inject({ url: '/%zz' }), 400, 'VALIDATION_FAILED');
  });

  test('an unexpected error → 500 that reveals nothing; the cause is logged', async () => {
    const res = await app.inject({ url: '/test/boom', headers: { 'x-request-id': 'boom-1' } });
    const body = assertProblem(res, 500, 'INTERNAL');
    assert.doesNotMatch(res.body, /SELECT|exploded|at |\.ts/);
    assert.equal(body.detail, 'An unexpected error occurred.');
    const logged = logs.lines.find((l) => l.requestId === 'boom-1' && l.msg === 'unhandled error');
    assert.ok(logged, 'the error is logged with the request id');
    assert.match(String((logged.err as { message: string }).message), /exploded/);
  });

  test('one log line per request, with route, status, duration and request id', async () => {
    await app.inject({
      method: 'POST',
      url: '/test/echo',
      payload: { name: 'a' },
      headers: { 'x-request-id': 'log-line-1' },
    });
    const lines = logs.lines.filter((l) => l.requestId === 'log-line-1');
    assert.equal(lines.length, 1);
    const [line] = lines;
    // SLOW_REQUEST_MS is 20 here: on a loaded machine even this request can be slow (then warn).
    const slow = Number(line?.durationMs) >= 20;
    assert.equal(line?.msg, slow ? 'slow request' : 'request completed');
    assert.equal(line?.level, slow ? 'warn' : 'info');
    assert.equal(line?.method, 'POST');
    assert.equal(line?.route, '/test/echo');
    assert.equal(line?.status, 200);
    assert.equal(typeof line?.durationMs, 'number');
    assert.equal(line?.clientIp, '127.0.0.1', 'the client address (inject is 127.0.0.1)');
  });

  test('slow requests are logged at warn', async () => {
    await app.inject({ url: '/test/slow', headers: { 'x-request-id': 'slow-1' } });
    const line = logs.lines.find((l) => l.requestId === 'slow-1');
    assert.equal(line?.level, 'warn');
    assert.equal(line?.slow, true);
  });

  test('secrets are redacted from logs', async () => {
    await app.inject({
      url: '/test/log-secrets',
      headers: { authorization: 'Bearer abc.def', cookie: 'sid=1' },
    });
    const text = logs.text();
    assert.doesNotMatch(text, /hunter2|rt-secret|abc\.def|sid=1/);
    assert.match(text, /\[REDACTED\]/);
  });

  test('OpenAPI 3 from the route schemas, and Swagger UI', async () => {
    const spec = (await app.inject({ url: '/docs/openapi.json' })).json() as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, unknown> };
    };
    assert.match(spec.openapi, /^3\./);
    assert.ok(spec.paths['/health']);
    assert.ok(spec.paths['/ready']);
    assert.ok(spec.components.schemas.Problem);
    const ui = await app.inject({ url: '/docs' });
    assert.equal(ui.statusCode, 200);
    assert.match(String(ui.headers['content-type']), /text\/html/);
    assert.match(String(ui.headers['content-security-policy']), /script-src 'self'/);
  });
});

describe('generated bad input never causes a 5xx', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp({ extend: testRoutes });
  });
  after(() => app?.close());

  test('1,000 random requests', async () => {
    const fc = (await import('fast-check')).default;
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD');
    const path = fc.oneof(
      fc.constantFrom(
        '/health',
        '/ready',
        '/test/echo',
        '/docs/openapi.json',
        '/api/anything',
        '/',
        '/metrics',
      ),
      fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)),
      fc.string().map((s) => `/${encodeURIComponent(s)}`),
      fc.string({ unit: 'binary' }).map((s) => `/x/${s.replace(/[\s?#]/g, '')}`),
    );
    const contentType = fc.constantFrom(
      undefined,
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'multipart/form-data; boundary=x',
      'application/json; charset=latin1',
      'garbage',
    );
    const body = fc.oneof(
      fc.constant(undefined),
      fc.json(),
      fc.string(),
      fc.jsonValue().map((v) => JSON.stringify(v)),
    );
    await fc.assert(
      fc.asyncProperty(method, path, contentType, body, async (m, url, type, payload) => {
        const res = await app.inject({
          method: m as 'GET',
          url,
          headers: type === undefined ? {} : { 'content-type': type },
          ...(payload === undefined || m === 'GET' || m === 'HEAD' ? {} : { payload }),
        });
        return res.statusCode < 500;
      }),
      { numRuns: 1000 },
    );
  });
});

describe('production 5xx', () => {
  test('no stack trace or SQL in the body', async () => {
    const app = await buildTestApp({
      extend: testRoutes,
      env: { NODE_ENV: 'production', ARGON2_MEMORY_KIB: '19456', ARGON2_ITERATIONS: '2', BCRYPT_COST: '12' },
    });
    try {
      const res = await app.inject({ url: '/test/boom' });
      assertProblem(res, 500, 'INTERNAL');
      assert.doesNotMatch(res.body, /SELECT|stack|exploded/);
    } finally {
      await app.close();
    }
  });
});

describe('CORS', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp({ env: { CORS_ORIGINS: 'https://shop.example.com' } });
  });
  after(() => app?.close());

  test('a listed origin gets credentialed CORS for its own origin, never *', async () => {
    const res = await app.inject({ url: '/health', headers: { origin: 'https://shop.example.com' } });
    assert.equal(res.headers['access-control-allow-origin'], 'https://shop.example.com');
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
    assert.match(String(res.headers.vary), /Origin/);
    assert.match(String(res.headers['access-control-expose-headers']), /X-Request-Id/);
  });

  test('other origins, and the null origin, get no CORS headers at all', async () => {
    for (const origin of [
      'https://evil.example.com',
      'null',
      'https://shop.example.com.evil.com',
      'http://shop.example.com',
    ]) {
      const res = await app.inject({ url: '/health', headers: { origin } });
      assert.equal(res.headers['access-control-allow-origin'], undefined, origin);
      assert.equal(res.headers['access-control-allow-credentials'], undefined, origin);
      assert.match(String(res.headers.vary), /Origin/);
    }
  });

  test('preflight from a listed origin → 204 with the allowed methods and headers', async () => {
    const res = await app.inject({
      method: 'OPTIONS',
      url: '/api/orders',
      headers: {
        origin: 'https://shop.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type, idempotency-key',
      },
    });
    assert.equal(res.statusCode, 204);
    assert.match(String(res.headers['access-control-allow-methods']), /POST/);
    assert.match(String(res.headers['access-control-allow-headers']), /Idempotency-Key/);
    assertSecurityHeaders(res);
  });

  test('preflight from another origin is not approved', async () => {
    const res = await app.inject({
      method: 'OPTIONS',
      url: '/api/orders',
      headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' },
    });
    assert.equal(res.headers['access-control-allow-origin'], undefined);
    assert.equal(res.headers['access-control-allow-methods'], undefined);
  });

  test('CORS_ORIGINS=* allows any origin but never with credentials', async () => {
    const open = await buildTestApp({ env: { CORS_ORIGINS: '*' } });
    try {
      const res = await open.inject({ url: '/health', headers: { origin: 'https://anyone.example' } });
      assert.equal(res.headers['access-control-allow-origin'], '*');
      assert.equal(res.headers['access-control-allow-credentials'], undefined);
    } finally {
      await open.close();
    }
  });
});

describe('static files', () => {
  let app: FastifyInstance;
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-static-'));
  before(async () => {
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
    writeFileSync(join(dir, 'assets', 'app.3f9a1c2b.js'), 'console.log(1)');
    writeFileSync(join(dir, 'assets', 'logo.svg'), '<svg/>');
    app = await buildTestApp({ env: { STATIC_DIR: dir } });
  });
  after(async () => {
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('HTML: no-cache, an ETag, the page CSP, and 304 on revalidation', async () => {
    const res = await app.inject({ url: '/' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.match(String(res.headers['content-security-policy']), /default-src 'self'/);
    assert.equal(res.headers['cross-origin-opener-policy'], 'same-origin');
    assert.match(String(res.headers['permissions-policy']), /camera=\(\)/);
    assertSecurityHeaders(res);
    const etag = String(res.headers.etag);
    assert.ok(etag.length > 2);
    const again = await app.inject({ url: '/index.html', headers: { 'if-none-match': etag } });
    assert.equal(again.statusCode, 304);
  });

  test('content-hashed assets are immutable; other assets cache for a day', async () => {
    const hashed = await app.inject({ url: '/assets/app.3f9a1c2b.js' });
    assert.equal(hashed.headers['cache-control'], 'public, max-age=31536000, immutable');
    const plain = await app.inject({ url: '/assets/logo.svg' });
    assert.equal(plain.headers['cache-control'], 'public, max-age=86400');
    assertProblem(await app.inject({ url: '/assets/missing.js' }), 404, 'NOT_FOUND');
  });
});

describe('metrics', () => {
  test('requests are counted by route template; unmatched URLs share one series (guide correction 8)', async () => {
    const app = await buildTestApp();
    try {
      for (let i = 0; i < 3; i++) await app.inject({ url: '/health' });
      for (let i = 0; i < 25; i++) await app.inject({ url: `/random/${i}/path` });
      const text = (await app.inject({ url: '/metrics' })).body;
      assert.match(text, /http_requests_total\{method="GET",route="\/health",status_code="200"\} 3/);
      assert.match(text, /http_requests_total\{method="GET",route="unmatched",status_code="404"\} 25/);
      assert.doesNotMatch(text, /random\/\d/);
      assert.match(
        text,
        /http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/health",status_code="200"\}/,
      );
      assert.match(text, /http_requests_in_flight 1/);
      assert.match(text, /process_cpu_user_seconds_total/);
      assert.match(text, /nodejs_eventloop_lag_seconds/);
    } finally {
      await app.close();
    }
  });

  test('a configured token guards /metrics, compared in constant time', async () => {
    const app = await buildTestApp({ env: { METRICS_TOKEN: 'metrics-secret-token' } });
    try {
      assertProblem(await app.inject({ url: '/metrics' }), 401, 'UNAUTHENTICATED');
      assertProblem(
        await app.inject({ url: '/metrics', headers: { authorization: 'Bearer wrong' } }),
        401,
        'UNAUTHENTICATED',
      );
      const ok = await app.inject({
        url: '/metrics',
        headers: { authorization: 'Bearer metrics-secret-token' },
      });
      assert.equal(ok.statusCode, 200);
      assert.match(String(ok.headers['content-type']), /text\/plain/);
    } finally {
      await app.close();
    }
  });
});

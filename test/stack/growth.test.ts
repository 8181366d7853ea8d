import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StackStatus } from '../../stack/types.js';
import { skipUnlessNginx } from '../harness/nginx.js';
import { skipUnless } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { edgeRequest, ownStack, type TestStack } from '../support/stack.js';
import { assertNothingLeft } from '../support/stack-leaks.js';
import { acmeSuites } from './growth-acme.js';
import { failoverSuites } from './growth-failover.js';
import { monitoringSkip, monitoringSuites } from './growth-monitoring.js';
import { tlsScanSuites } from './growth-tls-scan.js';

/**
 * The growth stage, for real: nginx (the shipped config, rendered by the production renderer) with
 * TLS from the local CA, in front of two weighted primaries and a backup, each a PM2 cluster, on
 * PostgreSQL and Redis. One stack serves every suite in this file (bringing one up costs most of a
 * minute on a busy machine); the last hook takes it down and proves nothing is left.
 */
const skip = skipUnlessNginx() || (await skipUnless('postgres', 'redis'));

describe('growth stage: nginx + TLS + three app servers', { skip }, () => {
  let stack: TestStack;
  let status: StackStatus;
  let ca: string;
  let https: string;
  let http: string;
  let publicDir: string;

  before(async () => {
    // Static files of the shape a build produces: a page, a content-hashed bundle, a plain asset.
    publicDir = mkdtempSync(join(tmpdir(), 'shipshape-public-'));
    // nginx serves these itself: its workers (nobody, as root) must be able to read them.
    chmodSync(publicDir, 0o755);
    writeFileSync(
      join(publicDir, 'index.html'),
      '<!doctype html><title>Shop</title><script src="/app.3f9a1c2b.js"></script>',
    );
    writeFileSync(join(publicDir, 'app.3f9a1c2b.js'), `console.log(${JSON.stringify('x'.repeat(4000))});\n`);
    writeFileSync(join(publicDir, 'robots.txt'), 'User-agent: *\n');
    // The load tests send thousands of requests per client address: the app's per-client limit
    // (300 a minute by default) would answer 429 long before the failover is done.
    // A POST killed between claiming its Idempotency-Key and committing leaves the key locked until
    // IDEMPOTENCY_LOCK_SECONDS (default 60): the failover tests' retries (about 30 s) must outlast it.
    // And the edge's per-client API rate (50 r/s in production): on a quiet machine the failover
    // load outran it and got 429s (seen in CI). The auth zone, tested below, keeps its limit.
    process.env.STACK_NGINX_API_RATE = '100000';
    stack = await ownStack('growth', [
      '--public-dir',
      publicDir,
      '--env',
      'RATE_LIMIT_MAX=1000000',
      '--env',
      'IDEMPOTENCY_LOCK_SECONDS=5',
      // Prometheus, Alertmanager and the exporters on the same stack (one bring-up for every suite).
      ...(monitoringSkip() === false ? ['--monitoring'] : []),
    ]);
    status = stack.status();
    ca = readFileSync(status.caFile ?? '', 'utf8');
    assert.equal(typeof status.entry, 'object');
    ({ https, http } = status.entry as { https: string; http: string });
  });

  after(async () => {
    if (stack !== undefined) {
      const last = stack.status();
      await stack.release();
      await assertNothingLeft(last);
    }
    rmSync(publicDir, { recursive: true, force: true });
  });

  const get = (path: string, options: Parameters<typeof edgeRequest>[1] = {}) =>
    edgeRequest(`${https}${path}`, { ca, ...options });

  describe('npm run stack -- status --json', () => {
    test('names the edge, the CA, three servers, the database and Redis, all on loopback', async () => {
      const printed = JSON.parse((await stack.cli('status', '--json')).stdout) as StackStatus;
      assert.equal(printed.stage, 'growth');
      assert.equal(printed.running, true);
      assert.match(https, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.match(http, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(existsSync(printed.caFile ?? ''));
      assert.deepEqual(
        printed.servers.map((s) => [s.name, s.role, s.weight]),
        [
          ['app-1', 'primary', 3],
          ['app-2', 'primary', 2],
          ['app-3', 'backup', 1],
        ],
      );
      for (const server of printed.servers) {
        assert.match(server.url, /^http:\/\/127\.0\.0\.\d+:\d+$/);
        assert.equal(server.pids.length, 1);
        assert.equal(server.metricsUrls.length, 1);
        assert.equal((await edgeRequest(server.metricsUrls[0] ?? '')).status, 200);
      }
      assert.deepEqual(
        printed.databases.map((d) => d.role),
        ['primary'],
      );
      assert.match(printed.redis?.url ?? '', /^redis:\/\/127\.0\.0\.1:\d+$/);
      assert.ok((printed.nginx?.pid ?? 0) > 0);
    });
  });

  describe('TLS and redirects', () => {
    test('a client trusting only the local CA completes the handshake; one trusting nothing does not', async () => {
      const ready = await get('/ready');
      assert.equal(ready.status, 200, ready.body);
      await assert.rejects(edgeRequest(`${https}/ready`), /self[- ]signed|unable to verify|certificate/i);
    });

    test('HTTP → HTTPS is a 308 that keeps the path and query', async () => {
      const res = await edgeRequest(`${http}/api/products?limit=5&q=a%20b#frag`);
      assert.equal(res.status, 308);
      assert.equal(res.headers.location, `${https}/api/products?limit=5&q=a%20b`);
    });

    test('the ACME challenge path is served over HTTP, not redirected', async () => {
      const res = await edgeRequest(`${http}/.well-known/acme-challenge/missing-token`);
      assert.equal(res.status, 404);
    });

    test('exactly one HSTS header (≥ 1 year, includeSubDomains) on every kind of response', async () => {
      const responses = {
        'API 200': await get('/api/products'),
        'app 404': await get('/api/no-such-route'),
        'edge 404 (/metrics)': await get('/metrics'),
        'edge 413': await get('/api/auth/login', {
          method: 'POST',
          body: JSON.stringify({ p: 'x'.repeat(200_000) }),
        }),
        'static asset': await get('/robots.txt'),
        'page (app)': await get('/'),
      };
      for (const [name, res] of Object.entries(responses)) {
        const hsts = res.headers['strict-transport-security'];
        assert.equal(typeof hsts, 'string', `${name}: one HSTS header, got ${JSON.stringify(hsts)}`);
        const maxAge = Number(/max-age=(\d+)/.exec(hsts as string)?.[1]);
        assert.ok(maxAge >= 31_536_000, `${name}: ${hsts}`);
        assert.match(hsts as string, /includeSubDomains/, name);
      }
      assert.equal(responses['edge 413'].status, 413);
      assert.equal(JSON.parse(responses['edge 413'].body).code, 'PAYLOAD_TOO_LARGE');
      assert.equal(responses['edge 404 (/metrics)'].status, 404);
      assert.equal(JSON.parse(responses['edge 404 (/metrics)'].body).code, 'NOT_FOUND');
    });

    test('/metrics and /docs are not reachable through the edge', async () => {
      for (const path of ['/metrics', '/docs', '/docs/', '/docs/openapi.json']) {
        const res = await get(path);
        assert.equal(res.status, 404, path);
        assert.match(String(res.headers['content-type']), /application\/problem\+json/, path);
      }
    });
  });

  describe('the real client address', () => {
    /**
     * The app's request log line. PM2 should write each worker's stdout to the server's out.log;
     * today the buffered logger bypasses PM2's capture and the lines land in PM2's own pm2.log
     * (issue 21 fixes that), so both are read.
     */
    function appLogLine(requestId: string): Record<string, unknown> | undefined {
      const files = status.servers.flatMap((server) => [
        join(status.stateDir, 'servers', server.name, 'logs', 'out.log'),
        join(status.stateDir, 'servers', server.name, 'pm2', 'pm2.log'),
      ]);
      for (const file of files) {
        if (!existsSync(file)) continue;
        for (const line of readFileSync(file, 'utf8').split('\n')) {
          if (!line.includes(requestId) || !line.includes('{')) continue;
          const json = JSON.parse(line.slice(line.indexOf('{')));
          if (json.msg === 'request completed') return json;
        }
      }
      return undefined;
    }

    test('the app logs the client address nginx saw; a spoofed X-Forwarded-For changes nothing', async () => {
      const requestId = `xff-${randomBytes(6).toString('hex')}`;
      const res = await get('/api/products', {
        localAddress: '127.0.0.9',
        headers: { 'x-forwarded-for': '203.0.113.7', 'x-request-id': requestId },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers['x-request-id'], requestId, 'the request id passes through');
      let line: Record<string, unknown> | undefined;
      for (let i = 0; i < 100 && line === undefined; i++) {
        line = appLogLine(requestId);
        if (line === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(line?.clientIp, '127.0.0.9', JSON.stringify(line));
      const access = readFileSync(status.nginx?.accessLog ?? '', 'utf8')
        .split('\n')
        .filter((l) => l.includes(requestId))
        .map((l) => JSON.parse(l));
      assert.equal(access.length, 1);
      assert.equal(access[0].remote_addr, '127.0.0.9');
      assert.match(access[0].upstream_addr, /^127\.0\.0\.[234]:\d+$/);
      assert.notEqual(access[0].upstream_response_time, '');
    });

    test('the app rate-limits per real client: spoofing X-Forwarded-For does not get a fresh budget', async () => {
      const remaining = async (from: string, spoof: string) => {
        const res = await get('/api/products', { localAddress: from, headers: { 'x-forwarded-for': spoof } });
        assert.equal(res.status, 200);
        return Number(res.headers['ratelimit-remaining']);
      };
      // One shared budget in Redis across the three servers, keyed by the real address. Each server
      // sends its hits to Redis in batches (decision 0105), so a server may not yet know the hits
      // another one took: the count is checked once it had time to arrive, never exactly at once.
      const first = await remaining('127.0.0.21', '198.51.100.1');
      let latest = first;
      let spoofs = 0;
      await waitUntil(
        async () => {
          // A new spoofed address every time: counted apart, none would reach the threshold.
          spoofs += 1;
          latest = await remaining('127.0.0.21', `10.${(spoofs >> 8) & 255}.${spoofs & 255}.1`);
          return latest <= first - 3;
        },
        { what: "the spoofed requests counted in the first one's budget", timeoutMs: 60_000 },
      );
      // A fresh budget per spoofed header would answer limit - 1 every time.
      const other = await remaining('127.0.0.22', '198.51.100.1');
      assert.ok(other > latest, `another client: its own budget (${other} > ${latest})`);
    });

    test('the edge answers 429 (problem+json, Retry-After) beyond the auth burst', async () => {
      // A fresh login per request: the app's per-account lockout must not be what answers 429.
      const body = () =>
        JSON.stringify({ login: `nobody${randomBytes(6).toString('hex')}`, password: 'not it' });
      const results = await Promise.all(
        Array.from({ length: 60 }, () =>
          get('/api/auth/login', { method: 'POST', body: body(), localAddress: '127.0.0.31' }),
        ),
      );
      // The edge's own 429 never reached an app server: no app rate-limit headers on it.
      const edge = results.filter((r) => r.status === 429 && r.headers['ratelimit-limit'] === undefined);
      const passed = results.filter((r) => r.status !== 429 || r.headers['ratelimit-limit'] !== undefined);
      assert.ok(edge.length > 0, `statuses: ${results.map((r) => r.status).join(',')}`);
      assert.ok(passed.length >= 1, 'the burst itself passes');
      for (const r of edge) {
        assert.equal(JSON.parse(r.body).code, 'RATE_LIMITED');
        assert.equal(r.headers['retry-after'], '1');
      }
      // Another client is unaffected.
      const other = await get('/api/auth/login', {
        method: 'POST',
        body: body(),
        localAddress: '127.0.0.32',
      });
      assert.equal(other.status, 401, other.body);
    });
  });

  describe('static files through nginx', () => {
    test('a content-hashed asset is immutable for a year and revalidates to 304', async () => {
      const requestId = `static-${randomBytes(6).toString('hex')}`;
      const res = await get('/app.3f9a1c2b.js', { headers: { 'x-request-id': requestId } });
      assert.equal(res.status, 200);
      // nginx served it from public/ itself: no upstream in its access log line.
      const line = readFileSync(status.nginx?.accessLog ?? '', 'utf8')
        .split('\n')
        .find((l) => l.includes(requestId));
      assert.equal(JSON.parse(line ?? '{}').upstream_addr, '', line);
      assert.equal(res.headers['cache-control'], 'public, max-age=31536000, immutable');
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      const etag = String(res.headers.etag);
      const again = await get('/app.3f9a1c2b.js', { headers: { 'if-none-match': etag } });
      assert.equal(again.status, 304);
      const since = await get('/app.3f9a1c2b.js', {
        headers: { 'if-modified-since': String(res.headers['last-modified']) },
      });
      assert.equal(since.status, 304);
      const gz = await get('/app.3f9a1c2b.js', { headers: { 'accept-encoding': 'gzip' } });
      assert.equal(gz.headers['content-encoding'], 'gzip');
    });

    test('HTML is no-cache (from the app, with its page CSP) and revalidates to 304', async () => {
      const res = await get('/');
      assert.equal(res.status, 200);
      assert.match(res.body, /<title>Shop<\/title>/, 'the same public/ as nginx');
      assert.equal(res.headers['cache-control'], 'no-cache');
      assert.match(String(res.headers['content-security-policy']), /script-src 'self'/);
      const again = await get('/', { headers: { 'if-none-match': String(res.headers.etag) } });
      assert.equal(again.status, 304);
    });

    test('other assets are cached for a day; an unknown path is the app’s 404', async () => {
      const res = await get('/robots.txt');
      assert.equal(res.status, 200);
      assert.equal(res.headers['cache-control'], 'public, max-age=86400');
      const missing = await get('/no-such-file.css');
      assert.equal(missing.status, 404);
      assert.equal(JSON.parse(missing.body).code, 'NOT_FOUND');
    });
  });

  describe('monitoring', { skip: monitoringSkip() }, () => {
    monitoringSuites(() => ({
      status,
      ca,
      https,
      printed: async () => JSON.parse((await stack.cli('status', '--json')).stdout) as StackStatus,
    }));
  });
  tlsScanSuites(() => ({ status, https }));
  acmeSuites(() => ({ status, https }));
  failoverSuites(() => ({ status, ca, https }));
});

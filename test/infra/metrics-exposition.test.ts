import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { eventLoopDelayBuckets } from '../../src/infra/runtime-metrics.js';
import { quantile } from '../../src/lib/histogram.js';
import { bucketDelta, parseHistogramBuckets } from '../../src/scaling/samplers.js';
import { skipUnlessTools, tools } from '../harness/monitoring.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, skipEngine, testConfig } from '../helper.js';

// /metrics of the running service, as Prometheus scrapes it: it passes `promtool check metrics`
// (allow-listing only what prom-client forces), carries the runtime metrics the alerts and the
// dashboard read, and stays bounded in cardinality whatever URLs clients send.

/**
 * prom-client 15's default metrics name three gauges `_total` (nodejs_active_handles_total,
 * nodejs_active_requests_total, nodejs_active_resources_total). Renaming them would break every
 * public Node.js dashboard that reads them (grafana.com 11159 among them); they are the only
 * findings allowed.
 */
const allowed = [
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
];

function seriesOf(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

describe('/metrics exposition', { skip: await skipEngine('postgres') }, () => {
  let app: FastifyInstance;
  const scrape = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body;

  before(async () => {
    // No job worker: its series appear when its first jobs run, in the middle of the cardinality count.
    app = await buildTestApp({
      engine: 'postgres',
      env: { BUILD_COMMIT: 'abc123def456', JOBS_IN_PROCESS: 'false' },
    });
    await app.inject({ method: 'GET', url: '/api/products' });
    await app.inject({ method: 'GET', url: '/health' });
  });
  after(() => app?.close());

  test('promtool check metrics finds nothing but what prom-client forces', {
    skip: skipUnlessTools('promtool'),
  }, async () => {
    const text = await scrape();
    const result = spawnSync(tools.promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const findings = `${result.stdout}${result.stderr}`
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
    assert.deepEqual(
      findings.filter((f) => !allowed.includes(f)),
      [],
      'promtool findings beyond the allow-list',
    );
    // promtool exits 3 for lint findings only; anything else is a parse error.
    assert.ok(result.status === 0 || result.status === 3, `promtool exited ${result.status}`);
  });

  test('build info, event-loop delay and utilisation, pool gauges, SLO histogram buckets', async () => {
    const text = await scrape();
    const { version } = testConfig().build;
    assert.deepEqual(seriesOf(text, 'shipshape_build_info'), [
      `shipshape_build_info{version="${version}",commit="abc123def456",node_version="${process.version}"} 1`,
    ]);
    const delayBounds = seriesOf(text, 'shipshape_eventloop_delay_seconds_bucket').map(
      (l) => /le="([^"]+)"/.exec(l)?.[1],
    );
    assert.deepEqual(delayBounds, [...eventLoopDelayBuckets.map(String), '+Inf']);
    assert.equal(seriesOf(text, 'shipshape_eventloop_busy_seconds_total').length, 1);
    // prom-client's own, reset at every collect: still there for the dashboards that read them.
    for (const name of [
      'nodejs_eventloop_lag_p50_seconds',
      'nodejs_eventloop_lag_p90_seconds',
      'nodejs_eventloop_lag_p99_seconds',
    ]) {
      assert.equal(seriesOf(text, name).length, 1, name);
    }
    assert.deepEqual(seriesOf(text, 'db_pool_connections_max'), [
      `db_pool_connections_max ${app.config.database.poolMax}`,
    ]);
    for (const name of [
      'db_pool_connections_in_use',
      'db_pool_connections_idle',
      'db_pool_waiting_requests',
    ]) {
      assert.equal(seriesOf(text, name).length, 1, name);
    }
    // The latency SLO counts requests over 0.5 s; HighResponseTime compares p95 with 1 s.
    const buckets = seriesOf(text, 'http_request_duration_seconds_bucket').filter((l) =>
      l.includes('route="/api/products"'),
    );
    assert.ok(buckets.some((l) => l.includes('le="0.5"')));
    assert.ok(buckets.some((l) => l.includes('le="1"')));
  });

  test('a blocked event loop shows in the delay histogram and the busy counter, whoever else scrapes in between', async () => {
    const delay = (t: string) => parseHistogramBuckets(t, 'shipshape_eventloop_delay_seconds');
    const busy = (t: string) =>
      Number(seriesOf(t, 'shipshape_eventloop_busy_seconds_total')[0]?.split(' ')[1]);
    const over = (t: string, bound: number) => {
      const buckets = delay(t);
      return (buckets.at(-1)?.[1] ?? 0) - (buckets.find(([le]) => le >= bound)?.[1] ?? 0);
    };
    const first = await scrape();
    // 400 ms of synchronous work: the 20 ms timer due inside it fires at least 380 ms late.
    const blockedUntil = performance.now() + 400;
    while (performance.now() < blockedUntil) {}
    await waitUntil(async () => over(await scrape(), 0.25) > over(first, 0.25), {
      what: 'the late firing is observed',
    });
    await scrape(); // another reader (Prometheus, the autoscaler): takes nothing from the next one
    const last = await scrape();
    const window = bucketDelta(delay(first), delay(last));
    assert.ok(window !== undefined, 'the counts only grow');
    const max = quantile(
      1,
      window.map(([le]) => le),
      window.map(([, count]) => count),
    );
    assert.ok((max ?? 0) > 0.25, JSON.stringify(window));
    assert.ok(busy(last) - busy(first) >= 0.35, `busy ${busy(last) - busy(first)} s`);
  });

  test('cardinality stays bounded: 300 distinct URLs add at most a handful of series', async () => {
    await app.inject({ method: 'GET', url: `/api/products/${randomUUID()}` });
    await app.inject({ method: 'GET', url: `/nowhere/${randomUUID()}` });
    // Only the request series can grow with URLs; the runtime's own (a first GC of a new kind, a
    // new kind of active handle) may appear at any scrape and are bounded by Node, not by clients.
    const requestSeries = (t: string) => t.split('\n').filter((l) => l.startsWith('http_')).length;
    const before = requestSeries(await scrape());
    for (let i = 0; i < 100; i++) {
      await app.inject({ method: 'GET', url: `/api/products/${randomUUID()}` });
      await app.inject({ method: 'GET', url: `/nowhere/${randomUUID()}?q=${i}` });
      await app.inject({ method: 'GET', url: `/api/products?cursor=${randomUUID()}` });
    }
    const text = await scrape();
    const added = requestSeries(text) - before;
    assert.ok(added <= 2 * 17, `${added} new lines in /metrics`);
    const routes = new Set(
      seriesOf(text, 'http_requests_total').map((l) => /route="([^"]*)"/.exec(l)?.[1] ?? '?'),
    );
    assert.ok(routes.has('unmatched'));
    assert.ok(
      [...routes].every((r) => r === 'unmatched' || !/[0-9a-f]{8}-[0-9a-f]{4}/.test(r)),
      [...routes].join(' '),
    );
  });
});

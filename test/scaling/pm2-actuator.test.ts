import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { pm2Actuator } from '../../src/scaling/pm2-actuator.js';
import { metricsSampler } from '../../src/scaling/samplers.js';
import { type Pm2Cluster, startPm2Cluster } from '../harness/pm2.js';
import { freePort } from '../harness/ports.js';
import { skipUnless } from '../harness/services.js';
import { type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { startLoad } from '../support/load.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
/** The CLI from its source (no dist/ build shared with other test files running at the same time). */
const cli = ['--import', 'tsx', join(root, 'src', 'cli', 'autoscale.ts')];
const maxWorkers = 3;

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** `count` consecutive free ports: one metrics port per worker the autoscaler may start. */
async function freeRange(count: number): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base + count > 65535) continue;
    let ok = true;
    for (let i = 1; i < count && ok; i++) ok = await isFree(base + i);
    if (ok) return base;
  }
}

describe('PM2 actuator (real PM2 and PostgreSQL)', { skip: await skipUnless('postgres') }, () => {
  let database: TestDatabaseEnv;
  let cluster: Pm2Cluster;
  const app = 'shipshape-test';

  before(async () => {
    database = await testDatabaseEnv('postgres');
    cluster = await startPm2Cluster({
      instances: 1,
      port: await freePort(),
      metricsPort: await freeRange(maxWorkers),
      env: {
        ...database.env,
        JWT_SECRET: randomBytes(48).toString('base64'),
        LOG_LEVEL: 'warn',
        SHUTDOWN_GRACE_MS: '500',
        SHUTDOWN_TIMEOUT_MS: '8000',
        RATE_LIMIT_MAX: '1000000',
      },
    });
  });
  after(async () => {
    await cluster?.destroy();
    await database?.cleanup();
  });

  test('absolute counts up and down under load: every worker ready before it counts, no request lost', async () => {
    const actuator = pm2Actuator({
      pm2Home: cluster.home,
      app,
      metricsHost: '127.0.0.1',
      metricsPort: cluster.metricsPort,
      readyTimeoutMs: 120_000,
    });
    try {
      const load = startLoad({
        port: cluster.port,
        connections: 4,
        next: () => ({ method: 'GET', path: '/health' }),
      });
      const steps: string[] = [];
      for (const want of [3, 1, 2, 2, 1]) {
        const started = Date.now();
        await actuator.scaleTo(want, await actuator.instances());
        const instances = await actuator.instances();
        assert.equal(instances.length, want);
        steps.push(`→${want} ${Date.now() - started} ms`);
      }
      const result = await load.stop();
      console.log(
        `pm2 actuator: ${steps.join(', ')}; ${result.answered} requests, ${result.failures.length} failed`,
      );
      assert.deepEqual(result.failures, [], 'no request failed across five scale changes');
      assert.ok(result.answered > 100);
      // Each worker serves its metrics on METRICS_PORT + its instance number: the sampler reads them.
      const instances = await actuator.instances();
      const sampler = metricsSampler({ cpu: 'workers' });
      await sampler.sample(instances, Date.now());
      // A real second between the scrapes: the event-loop p99 is of the difference of the two
      // scrapes of the worker's delay histogram (about 50 firings), never of the first alone.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const sample = await sampler.sample(instances, Date.now());
      const metrics = sample.instances[0]?.metrics;
      assert.ok(metrics?.cpu !== undefined && metrics.cpu >= 0, JSON.stringify(sample));
      assert.ok(metrics.eventLoopP99 !== undefined && metrics.inFlight !== undefined);
      assert.ok(metrics.poolWaiting !== undefined, 'PostgreSQL: the pool reports its waiting requests');
    } finally {
      await actuator.close?.();
    }
  });

  test('npm run autoscale -- --actuator pm2 --once: dry run reports, a real run scales', async () => {
    const args = [
      ...cli,
      '--actuator',
      'pm2',
      '--pm2-home',
      cluster.home,
      '--app',
      app,
      '--worker-metrics-port',
      String(cluster.metricsPort),
      '--max',
      '2',
      '--warmup',
      '0',
      // Any event-loop delay is far above this: the policy wants more workers.
      '--target-event-loop-p99',
      '0.000001',
      '--once',
    ];
    const current = (await cluster.workers()).length;
    assert.equal(current, 1);
    const decide = async (extra: string[]) =>
      JSON.parse(
        (await run(process.execPath, [...args, ...extra], { cwd: root, timeout: 180_000 })).stdout
          .trim()
          .split('\n')
          .at(-1) ?? '',
      );
    // A window in which the worker's delay histogram recorded no firing is missing and the policy
    // holds (a worker busy starting, on a loaded machine). Ask again until there is a reading.
    let dry = await decide(['--dry-run']);
    const deadline = Date.now() + 60_000;
    while (dry.action === 'hold' && !(dry.metrics?.eventLoopP99?.value > 0) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      dry = await decide(['--dry-run']);
    }
    assert.deepEqual(
      [dry.action, dry.reason, dry.desired, dry.applied, dry.dryRun],
      ['scale-up', 'eventLoopP99', 2, false, true],
      JSON.stringify(dry),
    );
    assert.equal((await cluster.workers()).length, 1, 'dry run changed nothing');
    let real = await decide([]);
    while (
      real.action === 'hold' &&
      !(real.metrics?.eventLoopP99?.value > 0) &&
      Date.now() < deadline + 60_000
    ) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      real = await decide([]);
    }
    assert.deepEqual([real.action, real.desired, real.applied], ['scale-up', 2, true]);
    assert.ok(real.metrics.eventLoopP99.value > 0);
    const workers = await cluster.workers();
    assert.equal(workers.filter((w) => w.status === 'online').length, 2);
  });

  test('refuses to start a PM2 daemon of its own', async () => {
    const actuator = pm2Actuator({
      pm2Home: join(cluster.home, 'nowhere'),
      app,
      metricsHost: '127.0.0.1',
      metricsPort: 1,
    });
    await assert.rejects(actuator.instances(), /no PM2 daemon/);
  });
});

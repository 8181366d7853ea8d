import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import {
  type Actuator,
  createAutoscaler,
  type Instance,
  type Sampler,
} from '../../src/scaling/autoscaler.js';
import { onlineWorkers, type Pm2Process } from '../../src/scaling/pm2-actuator.js';
import { defaultPolicy, type PolicyConfig } from '../../src/scaling/policy.js';

function fakeActuator(start: number, delayMs = 0) {
  let instances: Instance[] = Array.from({ length: start }, (_, i) => ({ id: `w${i}`, startedAt: 0 }));
  let active = 0;
  let maxActive = 0;
  const calls: number[] = [];
  const actuator: Actuator & { calls: number[]; maxActive: () => number } = {
    name: 'fake',
    calls,
    maxActive: () => maxActive,
    async instances() {
      return instances;
    },
    async scaleTo(desired) {
      active++;
      maxActive = Math.max(maxActive, active);
      calls.push(desired);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      instances = Array.from({ length: desired }, (_, i) => instances[i] ?? { id: `w${i}`, startedAt: 0 });
      active--;
    },
  };
  return actuator;
}

const busy: Sampler = {
  async sample(instances) {
    return {
      instances: instances.map((i) => ({ ...i, metrics: { cpu: 3 / instances.length } })),
      memoryUsed: 0.2,
    };
  },
};

function collectLog() {
  const lines: { level: string; fields: object; message: string }[] = [];
  return {
    lines,
    info: (fields: object, message: string) => lines.push({ level: 'info', fields, message }),
    error: (fields: object, message: string) => lines.push({ level: 'error', fields, message }),
  };
}

const policy: PolicyConfig = { ...defaultPolicy, max: 8, targets: { cpu: 0.8 }, periodMs: 20, warmupMs: 0 };

describe('autoscaler loop', () => {
  it('never runs two decisions at once, even when the actuator is slower than the period', async () => {
    const actuator = fakeActuator(1, 120);
    let calls = 0;
    const sampler: Sampler = {
      async sample(instances) {
        calls++;
        // Demand keeps rising, so every decision wants to scale up.
        return {
          instances: instances.map((i) => ({ ...i, metrics: { cpu: (calls * 2) / instances.length } })),
        };
      },
    };
    const scaler = createAutoscaler({
      target: 'app',
      policy: { ...policy, scaleUp: { ...policy.scaleUp, cooldownMs: 0 } },
      actuator,
      sampler,
      log: collectLog(),
    });
    const controller = new AbortController();
    const run = scaler.run(controller.signal);
    // A second caller during a decision gets the same decision.
    const [a, b] = await Promise.all([scaler.tick(), scaler.tick()]);
    assert.equal(a, b);
    await new Promise((resolve) => setTimeout(resolve, 600));
    controller.abort();
    await run;
    assert.ok(actuator.calls.length >= 2, `it kept deciding: ${actuator.calls}`);
    assert.equal(actuator.maxActive(), 1, 'one change at a time');
  });

  it('logs every decision with its inputs and exports it as metrics', async () => {
    const registry = new Registry();
    const log = collectLog();
    const actuator = fakeActuator(1);
    const scaler = createAutoscaler({ target: 'app-1', policy, actuator, sampler: busy, log, registry });
    const record = await scaler.tick();
    assert.equal(record.action, 'scale-up');
    assert.equal(record.desired, 4, 'ceil(1 × 3 / 0.8)');
    assert.ok(record.applied);
    assert.deepEqual(actuator.calls, [4]);
    const logged = log.lines[0];
    assert.ok(logged);
    assert.ok(logged.message.includes('scale-up 1 → 4 (cpu)'));
    const fields = (logged.fields as { autoscale: typeof record }).autoscale;
    assert.equal(fields.metrics.cpu?.value, 3);
    assert.equal(fields.metrics.cpu?.target, 0.8);
    assert.equal(fields.memoryUsed, 0.2);
    const text = await registry.metrics();
    assert.match(text, /autoscaler_instances_current\{target="app-1"\} 1/);
    assert.match(text, /autoscaler_instances_desired\{target="app-1"\} 4/);
    assert.match(text, /autoscaler_decisions_total\{target="app-1",action="scale-up",reason="cpu"\} 1/);
    assert.match(text, /autoscaler_metric_ratio\{target="app-1",metric="cpu"\} 3\.75/);
    assert.match(text, /autoscaler_dry_run\{target="app-1"\} 0/);
  });

  it('dry run: decides and reports, never calls the actuator', async () => {
    const log = collectLog();
    const actuator = fakeActuator(1);
    const scaler = createAutoscaler({
      target: 'app',
      policy: { ...policy, dryRun: true },
      actuator,
      sampler: busy,
      log,
    });
    const record = await scaler.tick();
    assert.equal(record.action, 'scale-up');
    assert.equal(record.applied, false);
    assert.deepEqual(actuator.calls, []);
    assert.match(log.lines[0]?.message ?? '', /\[dry run\]/);
  });

  it('a failed change is logged and counted, and starts no cooldown', async () => {
    const registry = new Registry();
    const log = collectLog();
    let attempts = 0;
    const actuator: Actuator = {
      name: 'broken',
      instances: async () => [{ id: 'a', startedAt: 0 }],
      async scaleTo() {
        attempts++;
        if (attempts === 1) throw new Error('API said no');
      },
    };
    const scaler = createAutoscaler({
      target: 'app',
      policy: { ...policy, scaleUp: { ...policy.scaleUp, cooldownMs: 3_600_000 } },
      actuator,
      sampler: busy,
      log,
      registry,
    });
    const first = await scaler.tick();
    assert.equal(first.applied, false);
    assert.equal(first.error, 'API said no');
    assert.equal(log.lines[0]?.level, 'error');
    // The change did not happen, so no cooldown holds the retry.
    const second = await scaler.tick();
    assert.equal(second.action, 'scale-up');
    assert.ok(second.applied);
    assert.match(await registry.metrics(), /autoscaler_actuation_failures_total\{target="app"\} 1/);
  });
});

/**
 * An actuator that takes `takesMs` of a fake clock per change, like PM2 waiting for /ready or a
 * droplet booting. New instances carry the time the change began as their start (a droplet's
 * created_at), and `fail` makes it throw after it has moved the count (a worker missed /ready).
 */
function slowActuator(clock: { now: number }, takesMs: number, options: { fail?: string } = {}) {
  let instances: Instance[] = [{ id: 'w0', startedAt: -1e9 }];
  let next = 1;
  let unreadable = false;
  const calls: number[] = [];
  return {
    name: 'slow',
    calls,
    /** The next instances() call fails (the count cannot be read right after the change). */
    unreadableOnce() {
      unreadable = true;
    },
    async instances() {
      if (unreadable) {
        unreadable = false;
        throw new Error('list failed');
      }
      return instances;
    },
    async scaleTo(desired: number) {
      calls.push(desired);
      const began = clock.now;
      clock.now += takesMs;
      instances =
        desired > instances.length
          ? [
              ...instances,
              ...Array.from({ length: desired - instances.length }, () => ({
                id: `w${next++}`,
                startedAt: began,
              })),
            ]
          : instances.slice(instances.length - desired);
      if (options.fail !== undefined) throw new Error(options.fail);
    },
  } satisfies Actuator & { calls: number[]; unreadableOnce(): void };
}

/** Total demand in cores, shared evenly: each instance reads demand / count. */
function demandSampler(demand: { cores: number }): Sampler {
  return {
    async sample(instances) {
      return {
        instances: instances.map((i) => ({ ...i, metrics: { cpu: demand.cores / instances.length } })),
      };
    },
  };
}

const minute: PolicyConfig = {
  ...defaultPolicy,
  max: 8,
  targets: { cpu: 0.8 },
  warmupMs: 0,
  scaleUp: { ...defaultPolicy.scaleUp, cooldownMs: 60_000 },
  scaleDown: { maxPods: 8, stabilisationMs: 0, cooldownMs: 60_000 },
};

describe('autoscaler timing: cooldowns and warm-up run from the end of a change', () => {
  it('a slow change starts its scale-down cooldown when it completes, not when it was decided', async () => {
    const clock = { now: 0 };
    const demand = { cores: 3 };
    const actuator = slowActuator(clock, 90_000);
    const scaler = createAutoscaler({
      target: 'app',
      policy: minute,
      actuator,
      sampler: demandSampler(demand),
      log: collectLog(),
      now: () => clock.now,
    });
    const up = await scaler.tick();
    assert.deepEqual([up.action, up.desired, up.applied], ['scale-up', 4, true]);
    // 100 s after the decision, 10 s after the four serve, the demand drops.
    clock.now = 100_000;
    demand.cores = 0.8;
    const held = await scaler.tick();
    assert.deepEqual([held.action, held.reason], ['hold', 'scale-down-cooldown'], held.detail);
    assert.deepEqual([up.reached, up.completedAt], [4, 90_000], 'the record says when it completed');
    clock.now = 150_001;
    const down = await scaler.tick();
    assert.deepEqual([down.action, down.desired], ['scale-down', 1]);
    assert.deepEqual(actuator.calls, [4, 1]);
  });

  it('a slow scale-up starts its scale-up cooldown when it completes', async () => {
    const clock = { now: 0 };
    const demand = { cores: 3 };
    const scaler = createAutoscaler({
      target: 'app',
      policy: minute,
      actuator: slowActuator(clock, 90_000),
      sampler: demandSampler(demand),
      log: collectLog(),
      now: () => clock.now,
    });
    assert.equal((await scaler.tick()).desired, 4);
    clock.now = 100_000;
    demand.cores = 6;
    const held = await scaler.tick();
    assert.deepEqual([held.action, held.reason], ['hold', 'scale-up-cooldown'], held.detail);
    clock.now = 150_001;
    assert.deepEqual([(await scaler.tick()).action, scaler.last?.desired], ['scale-up', 8]);
  });

  it('instances a change added warm up from its completion, not from their own start time', async () => {
    const clock = { now: 0 };
    const demand = { cores: 3 };
    const scaler = createAutoscaler({
      target: 'app',
      policy: { ...minute, warmupMs: 60_000, scaleDown: { ...minute.scaleDown, cooldownMs: 0 } },
      actuator: slowActuator(clock, 90_000),
      sampler: demandSampler(demand),
      log: collectLog(),
      now: () => clock.now,
    });
    assert.equal((await scaler.tick()).desired, 4);
    // The three new ones "started" at 0 (created_at) but have served only since 90 s.
    clock.now = 100_000;
    demand.cores = 0;
    const held = await scaler.tick();
    assert.deepEqual([held.action, held.reason, held.warming], ['hold', 'warming-up', 3], held.detail);
    clock.now = 150_001;
    assert.equal((await scaler.tick()).action, 'scale-down');
  });

  it('a failed change that moved the count is recorded, and its cooldown holds the next period', async () => {
    const clock = { now: 0 };
    const demand = { cores: 3 };
    const registry = new Registry();
    const log = collectLog();
    const actuator = slowActuator(clock, 60_000, { fail: 'shipshape: 4 workers not ready in time' });
    const scaler = createAutoscaler({
      target: 'app',
      policy: minute,
      actuator,
      sampler: demandSampler(demand),
      log,
      registry,
      now: () => clock.now,
    });
    const failed = await scaler.tick();
    assert.deepEqual(
      [failed.action, failed.applied, failed.error],
      ['scale-up', false, 'shipshape: 4 workers not ready in time'],
    );
    // 30 s after the four came up, the demand doubles: the cooldown holds (it would have scaled again).
    clock.now = 90_000;
    demand.cores = 6;
    const held = await scaler.tick();
    assert.deepEqual([held.current, held.action, held.reason], [4, 'hold', 'scale-up-cooldown'], held.detail);
    assert.deepEqual(actuator.calls, [4]);
    // The record says what happened and when; the failure is still a failure.
    assert.deepEqual([failed.reached, failed.completedAt], [4, 60_000]);
    assert.match(log.lines[0]?.message ?? '', /scale-up failed after reaching 4 \(cooldown started\)/);
    assert.match(await registry.metrics(), /autoscaler_actuation_failures_total\{target="app"\} 1/);
  });

  it('a failed change whose result cannot be read starts the cooldown as if it moved', async () => {
    const clock = { now: 0 };
    const demand = { cores: 3 };
    const actuator = slowActuator(clock, 1000, { fail: 'timed out' });
    const scaler = createAutoscaler({
      target: 'app',
      policy: minute,
      actuator,
      sampler: demandSampler(demand),
      log: collectLog(),
      now: () => clock.now,
    });
    const original = actuator.scaleTo.bind(actuator);
    actuator.scaleTo = async (desired: number) => {
      actuator.unreadableOnce();
      await original(desired);
    };
    const failed = await scaler.tick();
    clock.now = 30_000;
    demand.cores = 6;
    const held = await scaler.tick();
    assert.deepEqual([held.action, held.reason], ['hold', 'scale-up-cooldown'], held.detail);
    assert.deepEqual([failed.applied, failed.reached], [false, null]);
  });
});

describe('what the PM2 actuator counts', () => {
  it('online workers only: the ones a change waits for, the ones that serve', () => {
    const proc = (instance: number, status: string): Pm2Process => ({
      name: 'shipshape',
      pid: 100 + instance,
      pm_id: instance,
      pm2_env: { status, NODE_APP_INSTANCE: instance, pm_uptime: 1000 + instance },
    });
    const workers = onlineWorkers(
      [proc(0, 'online'), proc(1, 'launching'), proc(2, 'online'), proc(3, 'errored'), proc(4, 'stopping')],
      '127.0.0.1',
      9464,
    );
    assert.deepEqual(workers, [
      { id: '0:100', startedAt: 1000, metricsUrl: 'http://127.0.0.1:9464/metrics' },
      { id: '2:102', startedAt: 1002, metricsUrl: 'http://127.0.0.1:9466/metrics' },
    ]);
  });
});

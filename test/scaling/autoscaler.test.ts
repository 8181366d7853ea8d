import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import {
  type Actuator,
  createAutoscaler,
  type Instance,
  type Sampler,
} from '../../src/scaling/autoscaler.js';
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

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  afterChange,
  type Decision,
  decide,
  defaultPolicy,
  type InstanceSample,
  initialState,
  type PolicyConfig,
  policyProblems,
} from '../../src/scaling/policy.js';

/** A seeded PRNG (mulberry32), so the noisy traces are the same on every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs the policy over a load trace: `load(t)` is the total demand in "instance-CPUs", spread
 * evenly, so each instance reads load / count (plus noise). Decisions are applied at once, as a
 * lossless actuator would; new instances start warming up from then.
 */
function simulate(
  config: PolicyConfig,
  options: { start: number; durationMs: number; load: (t: number) => number; noise?: () => number },
) {
  const decisions: Decision[] = [];
  let state = initialState(0);
  let instances: InstanceSample[] = Array.from({ length: options.start }, (_, i) => ({
    id: `i${i}`,
    startedAt: -3_600_000,
    metrics: {},
  }));
  let nextId = options.start;
  const counts: { at: number; count: number }[] = [];
  for (let at = config.periodMs; at <= options.durationMs; at += config.periodMs) {
    const perInstance = options.load(at) / instances.length;
    const observed = instances.map((i) => ({
      ...i,
      metrics: { cpu: Math.max(0, perInstance * (1 + (options.noise?.() ?? 0))) },
    }));
    const result = decide(config, state, { at, instances: observed, memoryUsed: 0.3 });
    decisions.push(result.decision);
    state = result.state;
    if (result.decision.action !== 'hold' && !config.dryRun) {
      state = afterChange(state, result.decision, at);
      const want = result.decision.desired;
      if (want > instances.length)
        for (let k = instances.length; k < want; k++)
          instances.push({ id: `i${nextId++}`, startedAt: at, metrics: {} });
      else instances = instances.slice(instances.length - want);
    }
    counts.push({ at, count: instances.length });
  }
  return { decisions, counts, final: instances.length };
}

function directionChanges(decisions: readonly Decision[]): number {
  const moves = decisions.filter((d) => d.action !== 'hold').map((d) => d.action);
  return moves.slice(1).filter((m, i) => m !== moves[i]).length;
}

const cpuOnly: PolicyConfig = { ...defaultPolicy, min: 1, max: 20, targets: { cpu: 0.8 } };
const inst = (id: string, cpu: number | undefined, startedAt = -3_600_000): InstanceSample => ({
  id,
  startedAt,
  metrics: cpu === undefined ? {} : { cpu },
});

describe('scaling policy over traces', () => {
  it('a noisy flat trace: no more than one direction change in ten minutes, over many seeds', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const rnd = random(seed);
      const { decisions } = simulate(cpuOnly, {
        start: 4,
        durationMs: 600_000,
        load: () => 2.6, // 4 instances at 0.65 each: below target, inside what noise reaches
        noise: () => (rnd() - 0.5) * 0.5, // ±25 % per sample
      });
      const changes = directionChanges(decisions);
      assert.ok(changes <= 1, `seed ${seed}: ${changes} direction changes`);
    }
  });

  it("where the guide's threshold band flaps, the policy does not", () => {
    // One instance at 55 % ± 60 %: the guide's band (up above 80 %, down below 30 %, every 30 s,
    // no cooldown, no window) goes 1 → 2 → 1 → 2 …; the policy settles.
    const rnd = random(7);
    let count = 1;
    const moves: string[] = [];
    for (let at = 30_000; at <= 600_000; at += 30_000) {
      const cpu = (0.55 / count) * (1 + (rnd() - 0.5) * 1.2);
      if (cpu > 0.8) {
        count++;
        moves.push('up');
      } else if (cpu < 0.3 && count > 1) {
        count--;
        moves.push('down');
      }
    }
    const guideChanges = moves.slice(1).filter((m, i) => m !== moves[i]).length;
    assert.ok(guideChanges > 1, `guide band: ${guideChanges} direction changes`);
    const rnd2 = random(7);
    const { decisions } = simulate(cpuOnly, {
      start: 1,
      durationMs: 600_000,
      load: () => 0.55,
      noise: () => (rnd2() - 0.5) * 1.2,
    });
    assert.ok(directionChanges(decisions) <= 1, `policy: ${directionChanges(decisions)}`);
  });

  it('a 3× step is answered within two decision periods', () => {
    const stepAt = 300_001; // just after a decision: the next one is the first to see it
    const { counts, decisions } = simulate(cpuOnly, {
      start: 2,
      durationMs: 600_000,
      load: (t) => (t < stepAt ? 1.6 : 4.8), // 2 at target → 3× the demand
    });
    const needed = Math.ceil(4.8 / 0.8 / (1 + cpuOnly.tolerance));
    const answered = counts.find((c) => c.at >= stepAt && c.count >= needed);
    assert.ok(answered, `never reached ${needed}: ${JSON.stringify(counts)}`);
    assert.ok(answered.at - stepAt <= 2 * cpuOnly.periodMs, `answered after ${answered.at - stepAt} ms`);
    const first = decisions.find((d) => d.at > stepAt && d.action === 'scale-up');
    assert.equal(first?.reason, 'cpu');
    assert.equal(first?.desired, 6, 'ceil(2 × 2.4 / 0.8)');
  });

  it('scale-up is limited per decision (100 % or 4, whichever is more)', () => {
    const { decisions } = simulate(cpuOnly, { start: 1, durationMs: 120_000, load: () => 15 });
    const ups = decisions.filter((d) => d.action === 'scale-up').map((d) => [d.current, d.desired]);
    assert.deepEqual(ups[0], [1, 5], '1 + max(4, 1)');
    assert.deepEqual(ups[1], [5, 10], '5 + max(4, 5)');
  });

  it('scale-down waits for the stabilisation window and the highest recommendation in it wins', () => {
    const config = { ...cpuOnly, scaleDown: { ...cpuOnly.scaleDown, maxPods: 10 } };
    const dropAt = 600_000;
    // A short burst inside the window after the drop: the window must keep the higher count.
    const { counts, decisions } = simulate(config, {
      start: 6,
      durationMs: 1_500_000,
      load: (t) => (t < dropAt ? 4.5 : t >= 720_000 && t < 750_000 ? 3.2 : 0.8),
    });
    const firstDown = decisions.find((d) => d.at > dropAt && d.action === 'scale-down');
    assert.ok(firstDown, 'it scales down eventually');
    // The last recommendation of 6 was made at 570 s: nothing goes before it leaves the window …
    assert.ok(firstDown.at >= 570_000 + config.scaleDown.stabilisationMs, `first down at ${firstDown.at}`);
    // … and then only to the burst's 4 (made at 720 s), the highest left in the window, not to 1.
    assert.equal(firstDown.desired, 4);
    const toOne = decisions.find((d) => d.action === 'scale-down' && d.desired === 1);
    assert.ok(toOne && toOne.at >= 720_000 + config.scaleDown.stabilisationMs, `to 1 at ${toOne?.at}`);
    assert.ok(
      decisions.some((d) => d.reason === 'stabilising' && d.recommended < d.current),
      'holds while the window remembers a higher recommendation',
    );
    assert.equal(counts.at(-1)?.count, 1, 'down to the load (0.8 → 1) in the end');
    // The very start: no scale-down before one full window of observation.
    assert.ok(
      decisions
        .filter((d) => d.at < config.scaleDown.stabilisationMs)
        .every((d) => d.action !== 'scale-down'),
    );
  });

  it('scale-down is one instance per decision by default, and honours its cooldown', () => {
    const { decisions } = simulate(cpuOnly, { start: 5, durationMs: 900_000, load: () => 0.5 });
    const downs = decisions.filter((d) => d.action === 'scale-down');
    assert.ok(downs.length >= 2);
    for (const d of downs) assert.equal(d.current - d.desired, 1);
    for (let i = 1; i < downs.length; i++)
      assert.ok((downs[i]?.at ?? 0) - (downs[i - 1]?.at ?? 0) >= cpuOnly.scaleDown.cooldownMs);
    assert.ok(decisions.some((d) => d.reason === 'scale-down-cooldown'));
  });

  it('min and max are honoured, whatever the metric says', () => {
    const config = { ...cpuOnly, min: 2, max: 3 };
    const high = simulate(config, { start: 2, durationMs: 300_000, load: () => 40 });
    assert.ok(high.counts.every((c) => c.count <= 3));
    assert.equal(high.final, 3);
    const low = simulate(config, { start: 3, durationMs: 1_200_000, load: () => 0 });
    assert.ok(low.counts.every((c) => c.count >= 2));
    assert.equal(low.final, 2);
    const below = decide(config, initialState(0), { at: 1, instances: [inst('a', 0.1)] });
    assert.equal(below.decision.action, 'scale-up');
    assert.equal(below.decision.reason, 'below-min');
  });

  it('scale-up cooldown holds a second scale-up', () => {
    const config = { ...cpuOnly, scaleUp: { ...cpuOnly.scaleUp, cooldownMs: 90_000 } };
    const { decisions } = simulate(config, { start: 1, durationMs: 300_000, load: () => 12 });
    const ups = decisions.filter((d) => d.action === 'scale-up');
    for (let i = 1; i < ups.length; i++) assert.ok((ups[i]?.at ?? 0) - (ups[i - 1]?.at ?? 0) >= 90_000);
    assert.ok(decisions.some((d) => d.reason === 'scale-up-cooldown'));
  });

  it("warm-up: new instances' samples are ignored, they count as capacity, and nothing is removed", () => {
    const config = { ...cpuOnly, warmupMs: 60_000 };
    const at = 1_000_000;
    let state = { ...initialState(0) };
    // Two old instances at 1.2 and two new ones that read 0 while booting.
    const instances = [inst('a', 1.2), inst('b', 1.2), inst('c', 0, at - 10_000), inst('d', 0, at - 10_000)];
    const d = decide(config, state, { at, instances }).decision;
    assert.equal(d.warming, 2);
    assert.equal(d.metrics.cpu?.value, 0.6, 'warming instances count as capacity (0), not as samples');
    assert.equal(d.action, 'hold', 'no second scale-up for what is still booting');
    // Low load while one is warming: no scale-in.
    state = { ...initialState(0) };
    const low = decide({ ...config, scaleDown: { ...config.scaleDown, stabilisationMs: 0 } }, state, {
      at,
      instances: [inst('a', 0.1), inst('b', 0.1), inst('c', 0, at - 10_000)],
    }).decision;
    assert.equal(low.action, 'hold');
    assert.equal(low.reason, 'warming-up');
  });

  it('missing metrics never cause a scale-down', () => {
    const config = { ...cpuOnly, scaleDown: { ...cpuOnly.scaleDown, stabilisationMs: 0, cooldownMs: 0 } };
    // One instance reports 0.1, three did not answer: the three count as at target.
    const d = decide(config, initialState(0), {
      at: 1,
      instances: [inst('a', 0.1), inst('b', undefined), inst('c', undefined), inst('d', undefined)],
    }).decision;
    assert.notEqual(d.action, 'scale-down');
    const none = decide(config, initialState(0), { at: 1, instances: [inst('a', undefined)] }).decision;
    assert.equal(none.reason, 'no-metrics');
  });

  it('several metrics: the highest proposal wins, and each is reported', () => {
    const config = { ...cpuOnly, targets: { cpu: 0.8, eventLoopP99: 0.1, inFlight: 32 } };
    const d = decide(config, initialState(0), {
      at: 1,
      instances: [
        { id: 'a', startedAt: -1e9, metrics: { cpu: 0.4, eventLoopP99: 0.35, inFlight: 10 } },
        { id: 'b', startedAt: -1e9, metrics: { cpu: 0.4, eventLoopP99: 0.25, inFlight: 10 } },
      ],
    }).decision;
    assert.equal(d.reason, 'eventLoopP99');
    assert.equal(d.desired, 6, 'ceil(2 × 0.3 / 0.1)');
    assert.deepEqual(Object.keys(d.metrics).sort(), ['cpu', 'eventLoopP99', 'inFlight']);
    assert.equal(d.metrics.cpu?.desired, 1);
  });

  it('on a tie the reason is the metric nearest its target (not the first one listed)', () => {
    const config = {
      ...cpuOnly,
      targets: { cpu: 0.8, poolWaiting: 2 },
      scaleDown: { ...cpuOnly.scaleDown, stabilisationMs: 0, cooldownMs: 0 },
    };
    const d = decide(config, initialState(0), {
      at: 1,
      instances: [
        { id: 'a', startedAt: -1e9, metrics: { cpu: 0.2, poolWaiting: 0 } },
        { id: 'b', startedAt: -1e9, metrics: { cpu: 0.2, poolWaiting: 0 } },
      ],
    }).decision;
    assert.equal(d.action, 'scale-down');
    assert.equal(
      d.reason,
      'cpu',
      'both propose 1; CPU at 25 % of target is what is there, pool waiting 0 is not',
    );
  });

  it('within the tolerance nothing changes (HPA worked example: 2 at 65 % of a 60 % target)', () => {
    const config = { ...cpuOnly, targets: { cpu: 0.6 } };
    const hold = decide(config, initialState(0), { at: 1, instances: [inst('a', 0.65), inst('b', 0.65)] });
    assert.equal(hold.decision.reason, 'within-tolerance');
    const up = decide(config, initialState(0), { at: 1, instances: [inst('a', 0.9), inst('b', 0.9)] });
    assert.equal(up.decision.desired, 3, 'ceil(2 × 0.9 / 0.6)');
  });

  it('the memory guard blocks adding, and never adds by itself', () => {
    const d = decide(cpuOnly, initialState(0), { at: 1, instances: [inst('a', 1.6)], memoryUsed: 0.9 });
    assert.equal(d.decision.action, 'hold');
    assert.equal(d.decision.reason, 'memory-guard');
    const idle = decide(cpuOnly, initialState(0), { at: 1, instances: [inst('a', 0.8)], memoryUsed: 0.99 });
    assert.notEqual(idle.decision.action, 'scale-up');
  });

  it('dry run: decisions are made and reported, nothing changes', () => {
    const { decisions, final } = simulate(
      { ...cpuOnly, dryRun: true },
      { start: 1, durationMs: 120_000, load: () => 3 },
    );
    assert.equal(final, 1);
    assert.ok(decisions.every((d) => d.dryRun));
    assert.ok(decisions.some((d) => d.action === 'scale-up' && d.desired > 1));
  });

  it('rejects an unusable configuration', () => {
    assert.deepEqual(policyProblems(defaultPolicy), []);
    const problems = policyProblems({ ...defaultPolicy, min: 0, max: -1, tolerance: 1, targets: {} });
    assert.ok(problems.length >= 4, problems.join('; '));
  });
});

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { skipUnless } from '../harness/services.js';
import { ownStack, type TestStack } from '../support/stack.js';

/**
 * The spike test, live: the growth stack behind nginx with an autoscaler on every PM2 server
 * (min 1, max 3, windows shortened by configuration), an open-loop load through the HTTPS edge
 * stepping 1× → 5× → 1×. The monitor scales up within its window and back down after the
 * stabilisation window; not one request may fail across any scale change. Prints the timeline.
 */

const baseRate = 50; // requests/s; 5× = 250/s puts app-1's one worker at about 0.18 CPU here
const clients = 20; // source addresses: nginx limits each to 50 r/s
const policy = [
  'period=2',
  'stabilisation=20',
  'warmup=4',
  'scale-up-cooldown=2',
  'scale-down-cooldown=6',
  'target-cpu=0.1',
  'target-event-loop-p99=0.25',
  'target-in-flight=0',
].join(' ');

interface Outcome {
  at: number;
  ms: number;
  status: number | null;
}

describe('autoscaling spike test through nginx', { skip: await skipUnless('postgres') }, () => {
  let stack: TestStack;
  before(async () => {
    stack = await ownStack('growth', [
      ...['--env', 'RATE_LIMIT_MAX=100000000', '--autoscale', '--autoscale-min', '1', '--autoscale-max', '3'],
      ...['--autoscale-options', policy],
    ]);
  });
  after(async () => {
    await stack?.release();
  });

  test('1× → 5× → 1×: scales up, back down after the window, 0 failed requests', async () => {
    const status = stack.status();
    assert.ok(status.running);
    assert.ok(typeof status.entry !== 'string' && status.caFile !== null);
    const entry = status.entry.https;
    const ca = readFileSync(status.caFile);
    const agents = Array.from(
      { length: clients },
      (_, i) => new Agent({ keepAlive: true, maxSockets: 8, ca, localAddress: `127.0.13.${i + 1}` }),
    );
    const outcomes: Outcome[] = [];
    const started = Date.now();
    let rate = baseRate;
    let sent = 0;
    let credit = 0;
    let last = Date.now();
    let stop = false;
    const inFlight = new Set<Promise<void>>();
    const fire = () => {
      const t = Date.now();
      const p = new Promise<void>((resolve) => {
        const req = request(`${entry}/api/products?limit=20`, { agent: agents[sent % clients] }, (res) => {
          res.resume();
          res.on('end', () => {
            outcomes.push({ at: t - started, ms: Date.now() - t, status: res.statusCode ?? 0 });
            resolve();
          });
        });
        req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
        req.on('error', () => {
          outcomes.push({ at: t - started, ms: Date.now() - t, status: null });
          resolve();
        });
        req.end();
      });
      sent++;
      inFlight.add(p);
      p.finally(() => inFlight.delete(p));
    };
    const generator = (async () => {
      while (!stop) {
        const now = Date.now();
        credit += ((now - last) / 1000) * rate;
        last = now;
        for (; credit >= 1; credit--) fire();
        await sleep(10);
      }
    })();

    type Row = { t: number; rate: number; workers: string; p99: number; decisions: string[] };
    const timeline: Row[] = [];
    const seen = new Map<string, number>();
    const sample = () => {
      const s = stack.status();
      const decisions: string[] = [];
      for (const server of s.servers) {
        const d = server.autoscale as {
          at: number;
          action: string;
          current: number;
          desired: number;
          reason: string;
        } | null;
        if (d !== null && d.action !== 'hold' && seen.get(server.name) !== d.at) {
          seen.set(server.name, d.at);
          decisions.push(`${server.name} ${d.action} ${d.current}→${d.desired} (${d.reason})`);
        }
      }
      const t = Date.now() - started;
      const recent = outcomes
        .filter((o) => o.at >= t - 5000 && o.at < t)
        .map((o) => o.ms)
        .sort((a, b) => a - b);
      timeline.push({
        t,
        rate,
        workers: s.servers.map((x) => x.workers).join('/'),
        p99: recent[Math.floor(recent.length * 0.99)] ?? 0,
        decisions,
      });
      return s.servers.map((x) => x.workers);
    };
    const phase = async (r: number, ms: number, until?: (w: number[]) => boolean) => {
      rate = r;
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const workers = sample();
        if (until?.(workers)) return true;
        await sleep(2000);
      }
      return false;
    };

    try {
      await phase(baseRate, 12_000);
      const spikeAt = Date.now() - started;
      const scaledUp = await phase(baseRate * 5, 60_000, (w) => (w[0] ?? 0) >= 2);
      // Keep the spike a little longer once scaled up, to see p99 settle on the new capacity.
      await phase(baseRate * 5, 16_000);
      const dropAt = Date.now() - started;
      // Back down after the window: every server below its count at the drop (or at 1). Not all at
      // 1 at once: the policy reads the host's CPU, which other processes on a shared machine raise
      // (with two `yes` hogs a server went 1→2→1 at the base load; seen in CI).
      const atDrop = sample();
      const lowest = [...atDrop];
      const scaledDown = await phase(baseRate, 120_000, (w) => {
        for (const [i, n] of w.entries()) lowest[i] = Math.min(lowest[i] ?? n, n);
        return lowest.every((n, i) => n === 1 || n < (atDrop[i] ?? 0));
      });
      await phase(baseRate, 4000);
      stop = true;
      await generator;
      await Promise.all(inFlight);
      const failed = outcomes.filter((o) => o.status !== 200);
      const byStatus: Record<string, number> = {};
      for (const o of outcomes) byStatus[String(o.status)] = (byStatus[String(o.status)] ?? 0) + 1;
      console.log(
        'autoscale spike timeline (s, load rps, workers app-1/app-2/app-3, p99 ms of the last 5 s, decisions):',
      );
      for (const r of timeline)
        console.log(
          `  ${(r.t / 1000).toFixed(0).padStart(4)}  ${String(r.rate).padStart(4)} rps  ${r.workers.padEnd(6)} p99 ${String(Math.round(r.p99)).padStart(5)} ms  ${r.decisions.join('; ')}`,
        );
      // Every change each monitor made, from its decision log (a status sample sees only the last one).
      const monitors = (
        stack.status().components.autoscaler as { monitors: { server: string; log: string }[] }
      ).monitors;
      console.log('decisions (s since the load started):');
      const records: { server: string; at: number; recommended: number; desired: number; action: string }[] =
        [];
      const downs: typeof records = [];
      for (const m of monitors)
        for (const line of readFileSync(m.log, 'utf8').split('\n')) {
          if (!line.startsWith('{')) continue;
          const r = (
            JSON.parse(line) as {
              autoscale?: { at: number; recommended: number; desired: number; action: string };
            }
          ).autoscale;
          if (r !== undefined) {
            records.push({ server: m.server, ...r });
            if (r.action === 'scale-down') downs.push({ server: m.server, ...r });
          }
          const d = (
            JSON.parse(line) as {
              autoscale?: {
                at: number;
                action: string;
                current: number;
                desired: number;
                reason: string;
                applied: boolean;
              };
            }
          ).autoscale;
          if (d === undefined || d.action === 'hold' || d.at < started) continue;
          console.log(
            `  ${((d.at - started) / 1000).toFixed(1).padStart(5)}  ${m.server} ${d.action} ${d.current}→${d.desired} (${d.reason})${d.applied ? '' : ' NOT APPLIED'}`,
          );
        }
      // How long p99 took to come back under the SLO (300 ms, decision 0035) after the first
      // scale-up, under continued 5× load. Printed, not asserted: on two shared cores it follows
      // whatever else runs (p99 stayed ~1.5 s once with other suites running).
      const upAt = timeline.find((r) => r.t > spikeAt && Number(r.workers.split('/')[0]) >= 2)?.t;
      const backAt = timeline.find(
        (r) => upAt !== undefined && r.t >= upAt && r.t <= dropAt && r.p99 <= 300,
      )?.t;
      const slo =
        upAt === undefined
          ? 'no scale-up seen'
          : backAt === undefined
            ? `p99 not back under 300 ms before the load dropped (${((dropAt - upAt) / 1000).toFixed(0)} s after the scale-up)`
            : `p99 under 300 ms ${((backAt - spikeAt) / 1000).toFixed(0)} s after the step, ${((backAt - upAt) / 1000).toFixed(0)} s after the first scale-up was seen`;
      console.log(
        `autoscale spike: ${outcomes.length} requests, ${failed.length} failed (${JSON.stringify(byStatus)}); spike at ${(spikeAt / 1000).toFixed(0)} s, drop at ${(dropAt / 1000).toFixed(0)} s; ${slo}`,
      );
      assert.ok(scaledUp, 'app-1 scaled up during the 5× spike');
      assert.ok(
        scaledDown,
        `every server scaled down after the stabilisation window (at the drop ${atDrop.join('/')})`,
      );
      // The window, checked on each monitor's log: a scale-down never goes below any recommendation
      // made in the 20 s before it (the highest one wins).
      assert.ok(downs.length >= 1);
      for (const d of downs) {
        const inWindow = records.filter((r) => r.server === d.server && r.at > d.at - 20_000 && r.at <= d.at);
        const highest = Math.max(...inWindow.map((r) => r.recommended));
        assert.ok(
          d.desired >= highest,
          `${d.server} scale-down to ${d.desired} at ${d.at - started}: window had ${highest}`,
        );
      }
      assert.deepEqual(failed, [], '0 failed requests through nginx across every scale change');
      assert.ok(outcomes.length > 5000);
    } finally {
      stop = true;
      for (const a of agents) a.destroy();
    }
  });
});

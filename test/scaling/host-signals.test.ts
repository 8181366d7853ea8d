import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { type CpuInfo, cpus } from 'node:os';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  cpuUtilisation,
  guideCpuPercent,
  memoryUsed,
  memoryWithCgroup,
  parseMeminfo,
  parseProcStat,
  readCpuTimes,
  readMemory,
} from '../../src/scaling/host-signals.js';

interface Recorded {
  samples: { label: string; procStat: string; osCpus: CpuInfo['times'][] }[];
}
/** Real samples from this kind of machine: A, B one second later, C after two seconds of every core busy. */
const recorded = JSON.parse(
  readFileSync(new URL('../fixtures/scaling/proc-stat-samples.json', import.meta.url), 'utf8'),
) as Recorded;
const sample = (label: string) => {
  const s = recorded.samples.find((x) => x.label === label);
  assert.ok(s);
  return s;
};
const asCpus = (times: CpuInfo['times'][]): CpuInfo[] =>
  times.map((t) => ({ model: '', speed: 0, times: t }));

describe('host CPU from /proc/stat deltas (guide correction 10)', () => {
  it('on recorded samples: the guide reads the since-boot average, the delta reads the last seconds', () => {
    const [a, b, c] = [sample('A'), sample('B'), sample('C')];
    const busy = cpuUtilisation(parseProcStat(b.procStat), parseProcStat(c.procStat));
    assert.ok(busy !== null && busy >= 0.95, `every core was busy from B to C: delta says ${busy}`);
    const before = cpuUtilisation(parseProcStat(a.procStat), parseProcStat(b.procStat));
    assert.ok(before !== null && before > 0.5, `the machine was busy from A to B too: ${before}`);
    // The guide's formula, on the same moments: about the average since boot, whatever just happened.
    const guideB = guideCpuPercent(asCpus(b.osCpus));
    const guideC = guideCpuPercent(asCpus(c.osCpus));
    assert.ok(guideC < 30, `the guide reports ${guideC} % while every core was busy`);
    assert.ok(Math.abs(guideC - guideB) <= 1, `two seconds at 100 % barely move it: ${guideB} → ${guideC}`);
    // What it computes is the cumulative ratio of one sample: 1 − idle/total since boot.
    const t = parseProcStat(c.procStat);
    const sinceBoot = (t.user + t.nice + t.system + t.irq) / (t.user + t.nice + t.system + t.irq + t.idle);
    assert.ok(Math.abs(guideC - sinceBoot * 100) <= 1, `${guideC} vs since-boot ${sinceBoot * 100}`);
  });

  it('counts iowait and steal, which os.cpus() hides', () => {
    const t = parseProcStat(sample('C').procStat);
    assert.ok(t.steal > 0 && t.iowait > 0, 'the recorded VM has steal and iowait ticks');
    const osIdle = sample('C').osCpus.reduce((s, x) => s + x.idle, 0) / 10;
    assert.ok(Math.abs(osIdle - t.idle) <= 2, 'os.cpus() idle (ms) is /proc/stat idle (ticks × 10)');
    assert.deepEqual(Object.keys(sample('C').osCpus[0] ?? {}).sort(), ['idle', 'irq', 'nice', 'sys', 'user']);
    const synthetic = (steal: number, iowait: number) => ({
      ...t,
      steal: t.steal + steal,
      iowait: t.iowait + iowait,
    });
    // 100 ticks, all stolen by the hypervisor: the host had no CPU for us.
    assert.equal(cpuUtilisation(t, synthetic(100, 0)), 1);
    // 100 ticks of waiting for disk: the CPU was free.
    assert.equal(cpuUtilisation(t, synthetic(0, 100)), 0);
    assert.equal(cpuUtilisation(t, t), null, 'no time between samples: nothing measured');
  });

  it('on this machine now: a busy second shows in the delta, not in the guide formula', async () => {
    const guideBefore = guideCpuPercent(cpus());
    const before = readCpuTimes();
    const workers = cpus().map(
      () => new Worker('const e = Date.now() + 1500; while (Date.now() < e) {}', { eval: true }),
    );
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
    const after = readCpuTimes();
    const delta = cpuUtilisation(before, after);
    const guideAfter = guideCpuPercent(cpus());
    assert.ok(delta !== null && delta > 0.8, `1.5 s with every core busy: delta ${delta}`);
    assert.ok(
      Math.abs(guideAfter - guideBefore) <= 2,
      `guide ${guideBefore} → ${guideAfter}: it did not see it`,
    );
  });

  it('rejects a /proc/stat without the aggregate line', () => {
    assert.throws(() => parseProcStat('intr 1 2 3\n'), /no aggregate/);
    assert.throws(() => parseProcStat('cpu  1 x 3 4\n'), /malformed/);
  });
});

describe('memory guard input', () => {
  const meminfo = 'MemTotal:       8000000 kB\nMemFree:         500000 kB\nMemAvailable:   6000000 kB\n';

  it('uses MemAvailable (page cache is not "used")', () => {
    const m = parseMeminfo(meminfo);
    assert.equal(m.available, 6_000_000 * 1024);
    assert.equal(memoryUsed(m), 0.25);
  });

  it('uses the cgroup v2 limit when it is tighter than the host', () => {
    const host = parseMeminfo(meminfo);
    const limited = memoryWithCgroup(host, `${1024 ** 3}\n`, `${900 * 1024 ** 2}\n`);
    assert.equal(limited.source, 'cgroup');
    assert.equal(limited.limit, 1024 ** 3);
    assert.ok(memoryUsed(limited) > 0.85, 'a container at 900 MiB of 1 GiB is near its limit');
    assert.deepEqual(memoryWithCgroup(host, 'max\n', '123\n'), host, '"max" is no limit');
    assert.deepEqual(memoryWithCgroup(host, null, null), host, 'no cgroup v2 files');
  });

  it('reads this machine', () => {
    const m = readMemory();
    assert.ok(m.limit > 0 && m.available > 0 && m.available <= m.limit);
  });
});

import { readFileSync } from 'node:fs';
import type { CpuInfo } from 'node:os';

/**
 * Host signals as pure functions over what Linux exposes (guide correction 10): the CPU from the
 * difference of two /proc/stat samples, memory from MemAvailable or the cgroup limit. The readers
 * at the bottom are the only I/O; everything else takes text or numbers, so the tests feed it
 * recorded samples.
 */

/** The aggregate `cpu` line of /proc/stat, in USER_HZ ticks since boot (proc(5)). */
export interface CpuTimes {
  readonly user: number;
  readonly nice: number;
  readonly system: number;
  readonly idle: number;
  readonly iowait: number;
  readonly irq: number;
  readonly softirq: number;
  readonly steal: number;
}

export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (line === undefined) throw new Error('/proc/stat has no aggregate "cpu" line');
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  if (fields.length < 4 || fields.some((n) => !Number.isFinite(n) || n < 0))
    throw new Error(`/proc/stat "cpu" line is malformed: ${line}`);
  // guest and guest_nice (fields 9 and 10) are already counted in user and nice: not added again.
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  return { user, nice, system, idle, iowait, irq, softirq, steal };
}

/**
 * CPU utilisation (0–1) between two samples of /proc/stat. The total includes iowait and steal,
 * which os.cpus() leaves out. iowait counts as idle (the CPU was free to run something else);
 * steal counts as busy (the hypervisor gave our time away: the host is short of CPU either way).
 * Null when no time passed between the samples (nothing to measure).
 */
export function cpuUtilisation(previous: CpuTimes, current: CpuTimes): number | null {
  const idle = (t: CpuTimes) => t.idle + t.iowait;
  const total = (t: CpuTimes) => t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal;
  const elapsed = total(current) - total(previous);
  if (elapsed <= 0) return null;
  const busy = elapsed - (idle(current) - idle(previous));
  return Math.min(1, Math.max(0, busy / elapsed));
}

/**
 * The guide's formula (3.2 `getSystemMetrics`), kept only so a test can show it is wrong: os.cpus()
 * times are cumulative since boot, so this is the average since the machine started, whatever the
 * load is now. Percent, as the guide rounds it.
 */
export function guideCpuPercent(cpus: readonly CpuInfo[]): number {
  return Math.round(
    cpus.reduce((acc, cpu) => {
      const total = Object.values(cpu.times).reduce((a, b) => a + b);
      return acc + ((total - cpu.times.idle) / total) * 100;
    }, 0) / cpus.length,
  );
}

export interface MemorySample {
  /** Bytes usable by new work without swapping. */
  readonly available: number;
  /** Bytes the work may use in all: the host's memory, or the container's limit when lower. */
  readonly limit: number;
  readonly source: 'meminfo' | 'cgroup';
}

/** MemTotal and MemAvailable from /proc/meminfo (kB there; bytes here). */
export function parseMeminfo(text: string): MemorySample {
  const kb = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (match === null) throw new Error(`/proc/meminfo has no ${name}`);
    return Number(match[1]) * 1024;
  };
  return { available: kb('MemAvailable'), limit: kb('MemTotal'), source: 'meminfo' };
}

/**
 * The tighter of the host and the cgroup v2 limit (`memory.max`, "max" meaning none; usage from
 * `memory.current`). In a container /proc/meminfo shows the host, which overstates what is left.
 */
export function memoryWithCgroup(
  host: MemorySample,
  max: string | null,
  current: string | null,
): MemorySample {
  if (max === null || current === null || max.trim() === 'max') return host;
  const limit = Number(max.trim());
  const used = Number(current.trim());
  if (!Number.isFinite(limit) || !Number.isFinite(used) || limit <= 0 || limit >= host.limit) return host;
  return { available: Math.max(0, Math.min(host.available, limit - used)), limit, source: 'cgroup' };
}

/** Share of the memory limit in use (0–1). */
export function memoryUsed(sample: MemorySample): number {
  return sample.limit <= 0 ? 0 : Math.min(1, Math.max(0, 1 - sample.available / sample.limit));
}

function readOptional(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export function readCpuTimes(path = '/proc/stat'): CpuTimes {
  return parseProcStat(readFileSync(path, 'utf8'));
}

export function readMemory(): MemorySample {
  return memoryWithCgroup(
    parseMeminfo(readFileSync('/proc/meminfo', 'utf8')),
    readOptional('/sys/fs/cgroup/memory.max'),
    readOptional('/sys/fs/cgroup/memory.current'),
  );
}

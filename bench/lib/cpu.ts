import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time of processes from /proc (Linux): user + system, in seconds. The benchmark reads it
 * before and after each measured window, so a scenario reports the server's CPU per request beside
 * its throughput: the machine's noise moves throughput far more than it moves CPU per request.
 */

const ticksPerSecond = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat {
  readonly ppid: number;
  /** utime + stime, ticks. */
  readonly own: number;
  /** cutime + cstime: children that exited and were reaped, ticks. */
  readonly reaped: number;
}

function stat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // Fields from 3 on: state ppid … utime(14) stime(15) cutime(16) cstime(17).
  const at = (n: number) => Number(fields[n - 3]);
  return { ppid: at(4), own: at(14) + at(15), reaped: at(16) + at(17) };
}

export const hasProc = stat(process.pid) !== undefined;

/** CPU seconds (user + system) of these processes so far; 0 for one that is gone. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) ticks += stat(pid)?.own ?? 0;
  return ticks / ticksPerSecond;
}

/**
 * CPU seconds of a PostgreSQL server so far: the postmaster, its live children (backends and
 * background processes) and every child already reaped (cutime + cstime). The difference across a
 * window counts backends that came and went inside it, such as pgbench's. It includes whatever
 * else uses the same server meanwhile (a shared machine's other clients).
 */
export function postgresCpuSeconds(postmasterPid: number): number {
  const postmaster = stat(postmasterPid);
  if (postmaster === undefined) return 0;
  let ticks = postmaster.own + postmaster.reaped;
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === postmasterPid) continue;
    const child = stat(pid);
    if (child?.ppid === postmasterPid) ticks += child.own;
  }
  return ticks / ticksPerSecond;
}

/** The postmaster of a backend (its parent), when this machine runs the server. */
export function parentPid(pid: number): number | undefined {
  return stat(pid)?.ppid;
}

/** A process and its direct children (nginx's master and workers). */
export function withChildren(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    const child = Number(entry);
    if (Number.isInteger(child) && child !== pid && stat(child)?.ppid === pid) pids.push(child);
  }
  return pids;
}

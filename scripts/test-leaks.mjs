// What a test run leaves behind on a shared machine, found and removed by the runner (scripts/test.mjs).
//
// A run gets an id and a temp directory of its own. The runner hands both to every test process
// (TMPDIR, SHIPSHAPE_TEST_RUN, SHIPSHAPE_TEST_KEY_PREFIX), so after the run:
// - a file or directory left in the run's temp directory is a leaked temp dir;
// - a Redis key left under the run's key prefix (test/helper.ts testKeyPrefix) is a leaked key;
// - a process whose environment carries the run id, or whose command line names the run's temp
//   directory (PM2 daemons, dist/main.js servers, throwaway PostgreSQL, exporters, nginx), is a
//   leaked process.
// Each is reported, then removed, and the run fails.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A new run: its id, its temp directory and the environment its test processes get. */
export function startRun() {
  const id = randomBytes(6).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), `shipshape-run-${id}-`));
  // Throwaway PostgreSQL clusters run as the postgres user (initdb refuses root): like /tmp.
  chmodSync(dir, 0o1777);
  return {
    id,
    dir,
    keyPrefix: `test:${id}:`,
    env: { TMPDIR: dir, SHIPSHAPE_TEST_RUN: id, SHIPSHAPE_TEST_KEY_PREFIX: `test:${id}:` },
  };
}

/** Processes of this run still alive: the run id in their environment or its directory in their command line. */
export function runProcesses(run, self = process.pid) {
  if (!existsSync('/proc')) return [];
  const marker = `SHIPSHAPE_TEST_RUN=${run.id}`;
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === self) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (cmdline === '') continue; // a zombie or a kernel thread
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (environ.includes(marker) || cmdline.includes(run.dir)) found.push({ pid: Number(entry), cmdline });
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** Keys under the run's prefix; undefined when Redis cannot be asked (then no key can have been left). */
export async function runKeys(run, redisUrl) {
  const { Redis } = await import('ioredis');
  const client = new Redis(redisUrl, {
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    lazyConnect: true,
    connectTimeout: 5000,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    const keys = [];
    let cursor = '0';
    do {
      const [next, batch] = await client.scan(cursor, 'MATCH', `${run.keyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } catch {
    return undefined;
  } finally {
    client.disconnect();
  }
}

async function deleteRunKeys(keys, redisUrl) {
  if (keys.length === 0) return;
  const { Redis } = await import('ioredis');
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    for (let i = 0; i < keys.length; i += 500) await client.del(...keys.slice(i, i + 500));
  } finally {
    client.disconnect();
  }
}

/**
 * Everything the run left: processes (after a grace period in which they may still be exiting),
 * temp entries and Redis keys. `ignore` names temp entries the runner itself manages.
 */
export async function findLeaks(run, { redisUrl, graceMs = 15_000, ignore = [] } = {}) {
  const deadline = Date.now() + graceMs;
  let processes = runProcesses(run);
  while (processes.length > 0 && Date.now() < deadline) {
    await sleep(250);
    processes = runProcesses(run);
  }
  // tsx keeps its transpile cache in the temp folder (tsx-<uid>): a cache, not a leak.
  const temp = existsSync(run.dir)
    ? readdirSync(run.dir).filter((name) => !ignore.includes(name) && !/^tsx-\d+$/.test(name))
    : [];
  const keys = (await runKeys(run, redisUrl)) ?? [];
  return { processes, temp, keys };
}

/** One line per leak, for the run's output. */
export function describeLeaks(leaks) {
  return [
    ...leaks.processes.map((p) => `process ${p.pid} still running: ${p.cmdline.slice(0, 200)}`),
    ...leaks.temp.map((name) => `temp entry left behind: ${name}`),
    ...leaks.keys.slice(0, 20).map((key) => `Redis key left behind: ${key}`),
    ...(leaks.keys.length > 20 ? [`… and ${leaks.keys.length - 20} more Redis keys`] : []),
  ];
}

/** Removes what the run left: kills its processes (by pid), deletes its keys and its temp directory. */
export async function cleanUp(run, leaks, { redisUrl }) {
  for (const { pid } of leaks.processes) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await deleteRunKeys(leaks.keys, redisUrl).catch(() => {});
  rmSync(run.dir, { recursive: true, force: true });
}

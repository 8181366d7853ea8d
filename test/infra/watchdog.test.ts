import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, loadConfig } from '../../src/config.js';
import { type ServerProcess, startServerProcess } from '../harness/process.js';
import { type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';

const entry = new URL('../../src/main.ts', import.meta.url).pathname;
const stallPreload = new URL('../fixtures/stall-on-signal.mjs', import.meta.url).href;

/** Resolves with the exit signal; fails (and kills) if the process is still there after `ms`. */
async function exitWithin(server: ServerProcess, ms: number): Promise<NodeJS.Signals | null> {
  const timer = sleep(ms).then(() => 'still running' as const);
  const outcome = await Promise.race([server.exited(), timer]);
  if (outcome === 'still running') {
    server.child.kill('SIGKILL');
    assert.fail(`the process was still running ${ms} ms later`);
  }
  return server.child.signalCode;
}

const stalledLines = (server: ServerProcess) =>
  server
    .stderr()
    .split('\n')
    .filter((line) => line.includes('"event_loop_stalled"'))
    .map((line) => JSON.parse(line) as { stalledMs: number; pid: number; msg: string });

describe('event-loop watchdog on the real service process (src/infra/watchdog.ts)', () => {
  let database: TestDatabaseEnv;
  before(async () => {
    database = await testDatabaseEnv('sqlite');
  });
  after(() => database?.cleanup());

  const start = (watchdogMs: number, stallCpuMs?: number) =>
    startServerProcess(
      entry,
      {
        ...database.env,
        DATABASE_MIGRATE_ON_START: 'true',
        EVENT_LOOP_WATCHDOG_MS: String(watchdogMs),
        ...(stallCpuMs === undefined ? {} : { STALL_CPU_MS: String(stallCpuMs) }),
      },
      undefined,
      ['--import', stallPreload],
    );

  test('a stuck event loop: one event_loop_stalled line, then SIGKILL, and the connections it held are closed', async () => {
    const server = await start(1000);
    // An idle keep-alive connection, as nginx keeps to every worker.
    const socket = connect(server.port, '127.0.0.1');
    await once(socket, 'connect');
    const closed = once(socket, 'close');
    socket.on('error', () => {});
    server.child.kill('SIGUSR2');
    // Generous: the watchdog acts after 1 s of stall; a loaded machine only delays it.
    const signal = await exitWithin(server, 60_000);
    assert.equal(signal, 'SIGKILL');
    await closed;
    const lines = stalledLines(server);
    assert.equal(lines.length, 1, server.stderr());
    assert.equal(lines[0]?.pid, server.child.pid);
    assert.ok((lines[0]?.stalledMs ?? 0) >= 1000, JSON.stringify(lines[0]));
    assert.match(lines[0]?.msg ?? '', /EVENT_LOOP_WATCHDOG_MS/);
  });

  test('a process stopped (SIGSTOP) longer than the limit in the middle of a short stall is not killed when it resumes', async () => {
    // A 1.5 s stall of CPU time against a 5 s limit, with the process stopped for 6 s inside it:
    // on resuming, the loop is still stuck and the watchdog's thread wakes 6 s late. Counting that
    // sleep as stall would kill a process that only a debugger, a snapshot or an overloaded host
    // had stopped.
    const server = await start(5000, 1500);
    const health = async () => (await fetch(`http://127.0.0.1:${server.port}/health`)).status;
    try {
      server.child.kill('SIGUSR2');
      await sleep(300);
      server.child.kill('SIGSTOP');
      await sleep(6000);
      server.child.kill('SIGCONT');
      // Answered once the rest of the stall is over.
      assert.equal(await health(), 200);
      // A few more of the watchdog's checks (one every 500 ms).
      await sleep(2000);
      assert.equal(await health(), 200);
      assert.equal(server.child.exitCode, null);
      assert.deepEqual(stalledLines(server), []);
    } finally {
      server.child.kill('SIGTERM');
    }
    assert.equal(await exitWithin(server, 60_000), null);
    assert.equal(server.child.exitCode, 0, server.stderr());
  });

  test('EVENT_LOOP_WATCHDOG_MS: 0 turns it off; under a second is refused (a GC pause could trip it)', () => {
    assert.equal(loadConfig({ EVENT_LOOP_WATCHDOG_MS: '0' }).watchdogMs, 0);
    assert.equal(loadConfig({}).watchdogMs, 10_000);
    assert.throws(
      () => loadConfig({ EVENT_LOOP_WATCHDOG_MS: '500' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /EVENT_LOOP_WATCHDOG_MS must be 0 \(off\) or at least 1000/);
        return true;
      },
    );
  });
});

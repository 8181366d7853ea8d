import { url as inspectorUrl } from 'node:inspector';
import { Worker } from 'node:worker_threads';

/**
 * The event-loop watchdog (decision 0116): a process whose event loop is stuck (a runaway loop, a
 * catastrophic regular expression, a synchronous call that never returns) still holds its
 * connections — nginx's keep-alive sockets among them — and answers none of them. Nothing inside
 * the loop can notice, so a worker thread does: the loop bumps a shared counter every `checkMs`;
 * the thread, sleeping in Atomics.wait (no timers, no event loop of its own), looks each `checkMs`.
 * When the counter has not moved for `stallMs` while the thread itself woke on time, it writes one
 * JSON log line to stderr and kills the process with SIGKILL: the process manager (PM2, systemd,
 * Kubernetes) starts a fresh one, and the peers of the dead connections see them closed instead
 * of waiting for their timeouts.
 *
 * A thread that woke late (the whole process was stopped, SIGSTOP, or starved of CPU) starts its
 * count again: only a loop that stalls while the process runs is killed.
 */

// Runs in the worker thread. Plain JavaScript (eval'd): it must work from dist/ and under tsx alike.
const threadSource = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const beats = new Int32Array(workerData.shared);
const { stallMs, checkMs, pid } = workerData;
let seen = Atomics.load(beats, 0);
let lastWake = Date.now();
let stalledFor = 0;
for (;;) {
  // Slot 1 is never written: this is a sleep of checkMs that needs no event loop.
  Atomics.wait(beats, 1, 0, checkMs);
  const now = Date.now();
  const slept = now - lastWake;
  lastWake = now;
  const count = Atomics.load(beats, 0);
  if (count !== seen || slept > 3 * checkMs) {
    seen = count;
    stalledFor = 0;
    continue;
  }
  stalledFor += slept;
  if (stalledFor >= stallMs) {
    const line = JSON.stringify({
      level: 60,
      time: now,
      pid,
      component: 'watchdog',
      event: 'event_loop_stalled',
      stalledMs: stalledFor,
      msg: 'the event loop has not run for ' + stalledFor + ' ms; killing the process (EVENT_LOOP_WATCHDOG_MS)',
    });
    try { writeSync(2, line + '\\n'); } catch {}
    process.kill(pid, 'SIGKILL');
  }
}
`;

/**
 * Starts the watchdog for the rest of the process's life (its timer and thread never keep the
 * process alive), unless `stallMs` is 0 or a debugger is attached (a breakpoint stops the loop on
 * purpose).
 */
export function startEventLoopWatchdog(stallMs: number): void {
  if (stallMs <= 0 || inspectorUrl() !== undefined) return;
  const checkMs = Math.max(50, Math.min(1000, Math.floor(stallMs / 10)));
  const shared = new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
  const beats = new Int32Array(shared);
  const beat = setInterval(() => Atomics.add(beats, 0, 1), checkMs);
  beat.unref();
  const thread = new Worker(threadSource, {
    eval: true,
    workerData: { shared, stallMs, checkMs, pid: process.pid },
    // Its own small heap: it holds a few numbers.
    resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 1 },
  });
  thread.unref();
}

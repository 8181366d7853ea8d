import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** `taskset` pins the server and the load generator to different cores when it exists. */
export const canPin = (() => {
  try {
    execFileSync('taskset', ['-c', '0', 'true']);
    return true;
  } catch {
    return false;
  }
})();

export function pinned(core: number | undefined, command: string, args: string[]): [string, string[]] {
  return canPin && core !== undefined ? ['taskset', ['-c', String(core), command, ...args]] : [command, args];
}

export interface Server {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  rssMiB(): number;
  stop(): Promise<number | null>;
}

/** Resident memory of a process (Linux), in MiB. */
export function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? 0 : Number(match[1]) / 1024;
  } catch {
    return 0;
  }
}

export async function startServer(options: {
  name: string;
  port: number;
  command: string;
  args: string[];
  env: Record<string, string>;
  core?: number;
  logFile: string;
  readyPath?: string;
  cwd?: string;
}): Promise<Server> {
  const out = openSync(options.logFile, 'a');
  const [command, args] = pinned(options.core, options.command, options.args);
  const child = spawn(command, args, {
    env: { ...process.env, ...options.env, PORT: String(options.port), HOST: '127.0.0.1' },
    stdio: ['ignore', out, out],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  closeSync(out);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`${options.name} exited with ${child.exitCode}; see ${options.logFile}`);
    try {
      const res = await fetch(`http://127.0.0.1:${options.port}${options.readyPath ?? '/health'}`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      // Not left running behind the failed benchmark.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
      throw new Error(`${options.name} did not become ready; see ${options.logFile}`);
    }
    await sleep(100);
  }
  return {
    name: options.name,
    port: options.port,
    child,
    // taskset execs the command, so the child's pid is the server's.
    rssMiB: () => rssMiB(child.pid),
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}

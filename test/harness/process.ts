import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** Every JSON log line the process has written so far. */
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: () => string;
  /** Everything the process wrote to stdout, JSON log lines and plain text alike. */
  readonly stdout: () => string;
  exited(): Promise<number | null>;
}

/**
 * Starts a TypeScript entry point as a real process (through tsx) and resolves once it logs
 * 'ready', with the port it listens on. The deadline is generous (tsx compiles on start, and a
 * loaded CI machine is slow), a timer that fired late defers its verdict past the poll phase that
 * delivers the 'ready' line already waiting in the pipe, and a process that missed it is killed.
 */
export async function startServerProcess(
  entry: string,
  env: Record<string, string>,
  timeoutMs = 90_000,
  /** Node flags before the entry (e.g. another `--import` preload). */
  nodeArgs: readonly string[] = [],
): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...nodeArgs, entry], {
    env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'info', PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  let errText = '';
  let outText = '';
  child.stderr.on('data', (chunk) => {
    errText += chunk;
  });
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const port = await new Promise<number>((resolve, reject) => {
    let ready = false;
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (ready) return;
          child.kill('SIGKILL');
          reject(new Error(`server did not become ready within ${timeoutMs} ms:\n${errText}`));
        }),
      timeoutMs,
    );
    exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before ready:\n${errText}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      outText += `${line}\n`;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg === 'ready') {
        ready = true;
        clearTimeout(timer);
        resolve((entry.address as { port: number }).port);
      }
    });
  });
  return { child, port, logs, stderr: () => errText, stdout: () => outText, exited: () => exit };
}

import { spawn } from 'node:child_process';
import { createReadStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Environment, Target } from './environment.js';

/**
 * Runs scripts/release-agent.sh on a target over the system's OpenSSH: host keys only from the
 * environment's pinned known_hosts (StrictHostKeyChecking=yes: an unknown or changed key refuses
 * the connection, so nothing runs), keys only (BatchMode), no agent or X11 forwarding. The agent
 * travels in the command line (`bash -c <agent>`), so stdin stays free for an archive, and it runs
 * with `set -euo pipefail`: a failing remote step is a non-zero exit here, never a silent success.
 */

export interface AgentResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** ssh's own failures (connection, authentication, host key) exit 255. */
export const sshFailure = 255;

export class RemoteError extends Error {
  constructor(
    readonly target: string,
    readonly step: string,
    readonly result: AgentResult,
  ) {
    super(
      `${target}: ${step} failed (exit ${result.code}): ${lastLines(result.stderr || result.stdout, 15)}`,
    );
  }
}

export function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** POSIX single-quoting for the remote shell. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

export function sshArgs(env: Environment, target: Target): string[] {
  return [
    '-F',
    '/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${env.knownHosts}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'UpdateHostKeys=no',
    '-o',
    'ConnectTimeout=20',
    '-o',
    'ServerAliveInterval=10',
    '-o',
    'ServerAliveCountMax=6',
    '-o',
    'ForwardAgent=no',
    '-o',
    'ForwardX11=no',
    '-o',
    'LogLevel=ERROR',
    ...(env.identityFile === null ? [] : ['-o', 'IdentitiesOnly=yes', '-i', env.identityFile]),
    '-p',
    String(target.port),
    `${target.user}@${target.host}`,
  ];
}

let agentScript: string | undefined;
export function agentSource(root: string): string {
  agentScript ??= readFileSync(join(root, 'scripts', 'release-agent.sh'), 'utf8');
  return agentScript;
}

export function runAgent(
  root: string,
  env: Environment,
  target: Target,
  args: readonly string[],
  options: { stdinFile?: string; timeoutMs?: number } = {},
): Promise<AgentResult> {
  const started = Date.now();
  const remote = ['bash', '-c', agentSource(root), 'release-agent', target.dir, ...args]
    .map(shellQuote)
    .join(' ');
  return new Promise((resolve) => {
    const child = spawn('ssh', [...sshArgs(env, target), remote], {
      stdio: [options.stdinFile === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
    });
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    if (options.stdinFile !== undefined && child.stdin !== null) {
      const input = createReadStream(options.stdinFile);
      input.on('error', (err) => {
        stderr += `cannot read ${options.stdinFile}: ${err.message}\n`;
        child.kill();
      });
      child.stdin.on('error', () => {});
      input.pipe(child.stdin);
    }
    const timer = setTimeout(() => {
      stderr += `\ntimed out after ${options.timeoutMs} ms`;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 600_000);
    child.once('error', (err) => {
      stderr += err.message;
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Tab-separated `key value…` lines of the agent's output. */
export function records(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith('###'))
    .map((l) => l.split('\t'));
}

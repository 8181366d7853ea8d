import { spawn, spawnSync } from 'node:child_process';
import { inCi } from '../harness/services.js';

/**
 * The command-line tools the infrastructure suites run (terraform, kubectl, podman, debootstrap,
 * shellcheck, sshd, …) and how to get each. For `describe(name, { skip: skipWithout('kubectl') })`:
 * false when every tool is there; outside CI a skip message naming the install; under CI an error,
 * so a green CI run means every check really ran.
 */
const install = {
  buildah: 'sudo scripts/install-ops-tools.sh (Debian package buildah)',
  debootstrap: 'sudo scripts/install-ops-tools.sh (Debian package debootstrap)',
  'fail2ban-client': 'sudo scripts/install-ops-tools.sh (Debian package fail2ban)',
  kubectl: 'install kubectl 1.32 or later (it carries kustomize): https://kubernetes.io/docs/tasks/tools/',
  catatonit: 'sudo scripts/install-ops-tools.sh (Debian package catatonit: the pause process of podman pods)',
  podman: 'sudo scripts/install-ops-tools.sh (Debian packages podman and runc)',
  runc: 'sudo scripts/install-ops-tools.sh (Debian package runc)',
  shellcheck: 'sudo scripts/install-ops-tools.sh (Debian package shellcheck)',
  sshd: 'sudo scripts/install-ops-tools.sh (Debian package openssh-server)',
  terraform: 'install terraform 1.9 or later: https://developer.hashicorp.com/terraform/install',
  ufw: 'sudo scripts/install-ops-tools.sh (Debian package ufw)',
} as const;

export type Tool = keyof typeof install;

export function haveTool(tool: Tool): boolean {
  const found = spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`], {
    stdio: 'ignore',
  });
  return found.status === 0;
}

export function skipWithout(...tools: Tool[]): string | false {
  for (const tool of tools) {
    if (haveTool(tool)) continue;
    const message = `${tool} is not installed; ${install[tool]}`;
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  output: string;
}

/** Runs a command to completion (no shell), capturing its output. */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Run {
  const result = spawnSync(command, args, {
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    cwd: options.cwd,
    env: options.env ?? process.env,
    input: options.input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: options.timeoutMs ?? 600_000,
  });
  if (result.error) throw result.error;
  const stdout = result.stdout ?? '';
  const stderr = result.stderr ?? '';
  return { status: result.status, stdout, stderr, output: stdout + stderr };
}

/**
 * Like run, without blocking the event loop (for commands that talk to servers in this process).
 * Standard input is /dev/null: a shell whose stdin is a socket takes itself for an rsh session.
 */
export function runAsync(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, output: stdout + stderr });
    });
  });
}

import { execFile } from 'node:child_process';
import { createHash, type X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Agent as HttpAgent, request as httpRequest } from 'node:http';
import { type Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { readState, statusOf } from '../../stack/stack.js';
import type { StackStatus, StageName } from '../../stack/types.js';
import { isAlive } from '../../stack/util.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;

/**
 * Running `npm run stack` stages from tests.
 *
 * - `ownStack(stage)`: a stack for one test file, brought up through the real CLI; the file calls
 *   `stack.down()` in its `after` hook, which also proves nothing was left behind.
 * - `sharedStack(stage)`: one stack per stage (and options) for the whole `npm test` run. The first
 *   file that asks brings it up (under a cross-process lock); later files attach to it; the test
 *   runner (scripts/test.mjs) takes every shared stack down when all files are done. Run outside
 *   the runner (`node --test file`), it behaves like `ownStack` and `release()` takes it down.
 *   A suite on a shared stack must leave it as it found it (servers up, config unchanged).
 */

export interface TestStack {
  readonly stateDir: string;
  /** Status as of now (pids change after a kill or reload). */
  status(): StackStatus;
  /** `npm run stack -- <args> --state-dir <dir>`; rejects on a non-zero exit. */
  cli(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** Ends this file's use: takes an own stack down (asserting nothing is left); a shared one stays. */
  release(): Promise<void>;
}

export function stackCli(stateDir: string, ...args: string[]) {
  return run(
    process.execPath,
    ['--import', 'tsx', join(root, 'stack', 'cli.ts'), ...args, '--state-dir', stateDir],
    {
      cwd: root,
      timeout: 600_000,
      maxBuffer: 16 * 1024 * 1024,
    },
  );
}

/** `removeAfter`: a directory of the stack's own, removed once it is down. */
function handle(stateDir: string, owned: boolean, removeAfter?: string): TestStack {
  return {
    stateDir,
    status() {
      const state = readState(stateDir);
      if (state === null) throw new Error(`no stack in ${stateDir}`);
      return statusOf(state);
    },
    cli: (...args) => stackCli(stateDir, ...args),
    async release() {
      if (!owned) return;
      await stackCli(stateDir, 'down');
      if (removeAfter !== undefined) rmSync(removeAfter, { recursive: true, force: true });
    },
  };
}

export async function ownStack(stage: StageName, args: string[] = []): Promise<TestStack> {
  const parent = mkdtempSync(join(tmpdir(), `shipshape-stack-${stage}-`));
  // nginx's workers (nobody, when the stack runs as root) must reach the webroot and temp dirs.
  chmodSync(parent, 0o755);
  const stateDir = join(parent, 'stack');
  try {
    await stackCli(stateDir, 'up', '--stage', stage, ...args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`stack up --stage ${stage} failed: ${e.message}\n${e.stderr ?? ''}`);
  }
  return handle(stateDir, true, parent);
}

/** The directory scripts/test.mjs gives the run for shared stacks (unset outside the runner). */
export const sharedStacksDir = process.env.SHIPSHAPE_SHARED_STACKS;

async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(path);
      writeFileSync(join(path, 'pid'), String(process.pid));
      break;
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(path, 'pid'), 'utf8'));
      } catch {
        // being created or removed right now
      }
      if (holder > 0 && !isAlive(holder)) rmSync(path, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`stack lock ${path} held too long by pid ${holder}`);
      else await sleep(250);
    }
  }
  try {
    return await work();
  } finally {
    rmSync(path, { recursive: true, force: true });
  }
}

export async function sharedStack(
  stage: StageName,
  args: string[] = [],
  dir: string | undefined = sharedStacksDir,
): Promise<TestStack> {
  if (dir === undefined) return ownStack(stage, args);
  const key = createHash('sha256')
    .update(JSON.stringify([stage, args]))
    .digest('hex')
    .slice(0, 8);
  const stateDir = join(dir, `${stage}-${key}`);
  await withLock(`${stateDir}.lock`, async () => {
    const state = readState(stateDir);
    if (state !== null && statusOf(state).running) return;
    if (state !== null) await stackCli(stateDir, 'down');
    await stackCli(stateDir, 'up', '--stage', stage, ...args);
  });
  return handle(stateDir, false);
}

export interface EdgeResponse {
  /** The server's leaf certificate, when asked for with `peerCertificate`. */
  readonly certificate?: X509Certificate;
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/**
 * One request to a stack URL (HTTPS trusting only `ca`, or plain HTTP), from a chosen loopback
 * source address so the edge sees a distinct "client" (all of 127/8 is loopback).
 */
export function edgeRequest(
  url: string,
  options: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    ca?: string;
    localAddress?: string;
    agent?: HttpAgent | HttpsAgent;
    /** TLS server name (SNI and the name the certificate must carry), when not the URL's host. */
    servername?: string;
    peerCertificate?: boolean;
  } = {},
): Promise<EdgeResponse> {
  const target = new URL(url);
  const tls = target.protocol === 'https:';
  const make = tls ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = make(
      target,
      {
        method: options.method ?? 'GET',
        headers: {
          ...(options.body === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(options.body) }),
          ...options.headers,
        },
        agent: options.agent ?? false,
        ...(tls && options.ca !== undefined ? { ca: options.ca } : {}),
        ...(tls && options.servername !== undefined ? { servername: options.servername } : {}),
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      },
      (res) => {
        let body = '';
        const socket = res.socket as TLSSocket;
        const certificate =
          options.peerCertificate && typeof socket.getPeerX509Certificate === 'function'
            ? socket.getPeerX509Certificate()
            : undefined;
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            ...(certificate ? { certificate } : {}),
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(options.body);
  });
}

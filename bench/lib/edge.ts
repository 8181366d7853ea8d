import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { writeNginx } from '../../src/ops/nginx.js';
import { pinned } from './processes.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const nginxBin = process.env.NGINX_BIN ?? '/usr/sbin/nginx';

export interface Edge {
  /** The shipped HTTPS server (TLS, HTTP/2 offered, upstream keep-alive). */
  readonly httpsPort: number;
  /** The same server block on a plaintext port too (TLS off, everything else equal). */
  readonly plainPort: number;
  /** nginx's master (taskset execs it); its workers are its children. */
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

export const hasNginx = spawnSync(nginxBin, ['-v']).status === 0;

/**
 * The shipped edge config (deploy/nginx, the production renderer) in front of one app server, for
 * the benchmark: one worker process pinned to the server's core (nginx and the app share a box),
 * a local-CA certificate, and the edge rate limits out of reach (the bench measures answers, as
 * the app's own limit is). The plaintext port is the HTTPS server block with one more `listen`,
 * so "TLS off" differs from "TLS on" by the handshake and the encryption only.
 */
export async function startEdge(options: {
  dir: string;
  upstreamPort: number;
  httpPort: number;
  httpsPort: number;
  plainPort: number;
  statusPort: number;
  core?: number;
}): Promise<Edge> {
  const { dir } = options;
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  mkdirSync(join(dir, 'acme'), { recursive: true });
  // As root, nginx's workers are nobody: they must reach the temp dir.
  chmodSync(dir, 0o755);
  if (process.getuid?.() === 0) {
    const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
    chownSync(join(dir, 'tmp'), nobody, 0);
  }
  await run('bash', [join(root, 'scripts', 'local-ca.sh'), join(dir, 'tls'), 'localhost', '127.0.0.1']);
  const config = writeNginx(
    {
      serverName: 'localhost',
      upstreams: [{ address: `127.0.0.1:${options.upstreamPort}` }],
      certificate: join(dir, 'tls', 'server.pem'),
      certificateKey: join(dir, 'tls', 'server.key'),
      runtime: {
        httpListen: `127.0.0.1:${options.httpPort}`,
        httpsListen: `127.0.0.1:${options.httpsPort}`,
        statusListen: `127.0.0.1:${options.statusPort}`,
        publicHttpsPort: options.httpsPort,
        workerProcesses: '1',
        pidFile: join(dir, 'nginx.pid'),
        errorLog: join(dir, 'error.log'),
        accessLog: join(dir, 'access.log'),
        tempDir: join(dir, 'tmp'),
        publicDir: join(root, 'public'),
        acmeWebroot: join(dir, 'acme'),
        apiRate: 1_000_000,
        apiBurst: 1_000_000,
        authRate: 1_000_000,
        authBurst: 1_000_000,
        connectionsPerClient: 10_000,
      },
    },
    join(dir, 'conf'),
  );
  const https = `listen 127.0.0.1:${options.httpsPort} ssl http2 default_server;`;
  const text = readFileSync(config, 'utf8');
  if (!text.includes(https)) throw new Error(`the rendered config has no "${https}"`);
  writeFileSync(
    config,
    text.replace(https, `${https}\n        listen 127.0.0.1:${options.plainPort} default_server;`),
  );
  const [command, args] = pinned(options.core, nginxBin, ['-c', config, '-g', 'daemon off;']);
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c) => {
    stderr += c;
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`http://127.0.0.1:${options.plainPort}/ready`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`nginx did not proxy /ready: ${stderr}`);
    await sleep(100);
  }
  return {
    httpsPort: options.httpsPort,
    plainPort: options.plainPort,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null) return;
      // SIGTERM: fast shutdown; the master takes its worker with it.
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

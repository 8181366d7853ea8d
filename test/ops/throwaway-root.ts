import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { type Run, run, runAsync } from './support.js';

/**
 * A throwaway Debian 12 machine for the bootstrap test: a root file system made by debootstrap,
 * entered with chroot inside a network namespace of its own (so ufw's firewall lands there, never
 * on this machine) and a private mount and PID namespace per command (so /proc, /dev, /sys and /run
 * are its own and every process it starts dies with the command).
 *
 * The namespace has no route out. Package downloads go through an egress proxy that admits only
 * the Debian mirror and the npm registry: apt and npm inside talk to 127.0.0.1:3128 in the
 * namespace, a relay there hands each connection over a Unix socket (a file, which crosses network
 * namespaces) to the proxy running on this machine.
 */

const allowedHosts = new Set(['deb.debian.org', 'security.debian.org', 'registry.npmjs.org']);
export const proxyPort = 3128;
const egressCaPath = 'etc/shipshape-test-egress-ca.pem';

/** The environment npm needs inside the root to reach the registry through the egress proxy. */
export const egressEnv = {
  npm_config_proxy: `http://127.0.0.1:${proxyPort}`,
  npm_config_https_proxy: `http://127.0.0.1:${proxyPort}`,
  npm_config_cafile: `/${egressCaPath}`,
} as const;

/** The mirror the machine's own apt uses (Debian's), and the suites of a Debian 12 server. */
export const debianMirror = 'http://deb.debian.org/debian';
const sourcesList = [
  'deb http://deb.debian.org/debian bookworm main',
  'deb http://deb.debian.org/debian bookworm-updates main',
  'deb http://deb.debian.org/debian-security bookworm-security main',
  '',
].join('\n');

export async function debootstrap(root: string): Promise<void> {
  // minbase + systemd: what a Debian 12 cloud image has that the bootstrap relies on (systemctl).
  const result = run(
    'debootstrap',
    ['--variant=minbase', '--include=systemd,systemd-sysv', 'bookworm', root, debianMirror],
    { timeoutMs: 900_000 },
  );
  if (result.status !== 0) throw new Error(`debootstrap failed:\n${result.output.slice(-4000)}`);
  await writeFile(join(root, 'etc/apt/sources.list'), sourcesList);
  await writeFile(
    join(root, 'etc/apt/apt.conf.d/01shipshape-test-proxy'),
    `Acquire::http::Proxy "http://127.0.0.1:${proxyPort}";\n`,
  );
  // This machine reaches the npm registry through a TLS-inspecting egress whose CA it trusts; npm
  // inside the root must trust it too (a property of this network, not of the bootstrap).
  await copyFile('/etc/ssl/certs/ca-certificates.crt', join(root, egressCaPath));
  // Nothing installed into the root may start a daemon while the bootstrap runs.
  await writeFile(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
}

/** HTTP forward proxy (absolute-URL GETs for apt, CONNECT for npm's HTTPS) on a Unix socket. */
export async function startEgressProxy(
  socketPath: string,
): Promise<{ close(): Promise<void>; refused: string[] }> {
  const refused: string[] = [];
  const server = createHttpServer((req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (url.protocol !== 'http:' || !allowedHosts.has(url.hostname)) {
      refused.push(url.host);
      res.writeHead(403).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    const upstream = httpRequest(
      {
        host: url.hostname,
        port: url.port || 80,
        path: url.pathname + url.search,
        method: req.method,
        headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (req, socket, head) => {
    const [host, port] = (req.url ?? '').split(':');
    if (!host || !allowedHosts.has(host) || port !== '443') {
      refused.push(req.url ?? '');
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    const upstream = connect(443, host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return {
    refused,
    close: () => closeServer(server),
  };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

// Runs inside the namespace: 127.0.0.1:3128 → the proxy's Unix socket.
const relaySource = `
const net = require('node:net');
const [socketPath, port] = process.argv.slice(1);
net.createServer((client) => {
  const upstream = net.connect(socketPath);
  client.pipe(upstream); upstream.pipe(client);
  client.on('error', () => upstream.destroy()); upstream.on('error', () => client.destroy());
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('relay ready\\n'));
`;

export interface Machine {
  readonly root: string;
  /** Runs a bash script chrooted into the root, in the machine's namespaces. */
  sh(script: string, options?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Run>;
  close(): Promise<void>;
}

export async function enterMachine(root: string, socketPath: string): Promise<Machine> {
  const netns = `shipshape-bootstrap-${process.pid}`;
  const add = run('ip', ['netns', 'add', netns]);
  if (add.status !== 0) throw new Error(`ip netns add failed: ${add.output}`);
  run('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
  let relay: ChildProcess | undefined;
  try {
    relay = spawn(
      'ip',
      ['netns', 'exec', netns, process.execPath, '-e', relaySource, socketPath, String(proxyPort)],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const child = relay;
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`relay exited with ${code}`)));
      child.stdout?.once('data', () => resolve());
    });
  } catch (err) {
    relay?.kill('SIGKILL');
    run('ip', ['netns', 'delete', netns]);
    throw err;
  }
  const mounts = [
    `mount --rbind /dev '${root}/dev'`,
    `mount -t sysfs sysfs '${root}/sys'`,
    `mount -t tmpfs -o mode=755 tmpfs '${root}/run'`,
    `mount -t tmpfs -o mode=1777 tmpfs '${root}/tmp'`,
  ].join(' && ');
  return {
    root,
    sh(script, options = {}) {
      const env = Object.entries({
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        HOME: '/root',
        LANG: 'C.UTF-8',
        TERM: 'dumb',
        ...options.env,
      }).map(([key, value]) => `${key}=${value}`);
      // Asynchronous: the egress proxy runs in this process and must keep serving meanwhile.
      return runAsync(
        'ip',
        [
          'netns',
          'exec',
          netns,
          'unshare',
          '--mount',
          '--pid',
          '--fork',
          '--kill-child',
          `--mount-proc=${root}/proc`,
          'bash',
          '-c',
          `set -e; ${mounts}; exec chroot '${root}' /usr/bin/env -i ${env.map((e) => `'${e}'`).join(' ')} /bin/bash -euo pipefail -c "$0"`,
          script,
        ],
        { timeoutMs: options.timeoutMs ?? 900_000 },
      );
    },
    async close() {
      relay?.kill('SIGKILL');
      if (relay && relay.exitCode === null) await once(relay, 'exit');
      run('ip', ['netns', 'delete', netns]);
    },
  };
}

import { execFile, spawnSync } from 'node:child_process';
import { chownSync, cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { writeNginx } from '../../src/ops/nginx.js';
import type { Component, NginxRecord, StackState } from '../types.js';
import { freePort, isAlive, killAndWait, waitFor } from '../util.js';

const run = promisify(execFile);
export const nginxBin = process.env.NGINX_BIN ?? '/usr/sbin/nginx';

export function nginxPid(record: NginxRecord): number | null {
  try {
    const pid = Number(readFileSync(record.pidFile, 'utf8').trim());
    return isAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/** Renders deploy/nginx/ for the stack's servers (the production renderer, local values). */
function render(state: StackState, record: NginxRecord): void {
  writeNginx(
    {
      serverName: record.serverName,
      upstreams: state.servers.map((s) => ({
        address: `${s.host}:${s.port}`,
        weight: s.weight,
        backup: s.role === 'backup',
      })),
      certificate: record.certificate,
      certificateKey: record.certificateKey,
      runtime: {
        httpListen: `127.0.0.1:${record.httpPort}`,
        httpsListen: `127.0.0.1:${record.httpsPort}`,
        statusListen: `127.0.0.1:${record.statusPort}`,
        publicHttpsPort: record.httpsPort,
        workerProcesses: '2',
        pidFile: record.pidFile,
        errorLog: record.errorLog,
        accessLog: record.accessLog,
        tempDir: join(record.confDir, '..', 'tmp'),
        publicDir: record.publicDir,
        acmeWebroot: join(record.confDir, '..', 'acme'),
        ...(record.apiRate === undefined ? {} : { apiRate: record.apiRate }),
      },
    },
    record.confDir,
  );
}

/** The master's children, its workers (Linux: /proc/<pid>/task/<pid>/children). */
function workerPids(master: number): number[] {
  try {
    return readFileSync(`/proc/${master}/task/${master}/children`, 'utf8')
      .split(/\s+/)
      .filter((pid) => pid !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * `nginx -t` then a reload, done once the old workers have exited. Until then both generations
 * accept new connections (the old ones until they act on the master's QUIT, then they finish their
 * requests), so a client could still get the old certificate or upstreams (seen: the first
 * request after the ACME suite put the local certificate back failed verification, although a
 * connection just before had been served the new one).
 */
export async function reloadNginx(record: NginxRecord): Promise<void> {
  const check = spawnSync(nginxBin, ['-t', '-q', '-c', record.config], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`nginx -t failed:\n${check.stderr}`);
  const master = nginxPid(record);
  const old = master === null ? [] : workerPids(master);
  await run(nginxBin, ['-s', 'reload', '-c', record.config]);
  await waitFor("nginx's workers of the previous configuration to exit", () =>
    old.every((pid) => !isAlive(pid)),
  );
}

/** Points the edge at another certificate (e.g. certbot's live/<name>/ files) and reloads. */
export async function installCertificate(state: StackState, certificate: string, key: string): Promise<void> {
  if (state.nginx === null) throw new Error('this stack has no nginx');
  state.nginx.certificate = certificate;
  state.nginx.certificateKey = key;
  render(state, state.nginx);
  await reloadNginx(state.nginx);
}

/**
 * nginx in front of every app server of the stage (two weighted primaries and a backup in the
 * growth stage), TLS from the local CA, on loopback. As root, workers run as nobody (nginx's
 * default), so the directories they write are handed to nobody.
 */
export function nginxEdge(): Component {
  return {
    name: 'nginx',
    async up(ctx) {
      const tls = ctx.state.components.tls as { certificate: string; certificateKey: string } | undefined;
      if (tls === undefined) throw new Error('the nginx component needs the tls component before it');
      const dir = join(ctx.state.stateDir, 'nginx');
      const record: NginxRecord = {
        confDir: join(dir, 'conf'),
        config: join(dir, 'conf', 'nginx.conf'),
        pidFile: join(dir, 'nginx.pid'),
        accessLog: join(dir, 'access.log'),
        errorLog: join(dir, 'error.log'),
        httpPort: ctx.options.httpPort ?? (await freePort()),
        httpsPort: ctx.options.httpsPort ?? (await freePort()),
        statusPort: await freePort(),
        serverName: ctx.options.serverName ?? 'localhost',
        publicDir: resolve(ctx.options.publicDir ?? join(ctx.root, 'public')),
        // Load tests from a handful of addresses outrun the production 50 r/s per client.
        ...(process.env.STACK_NGINX_API_RATE ? { apiRate: Number(process.env.STACK_NGINX_API_RATE) } : {}),
        certificate: tls.certificate,
        certificateKey: tls.certificateKey,
      };
      for (const sub of ['tmp', 'acme/.well-known/acme-challenge'])
        mkdirSync(join(dir, sub), { recursive: true });
      if (process.getuid?.() === 0) {
        const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
        chownSync(join(dir, 'tmp'), nobody, 0);
        // Else nginx answers 404 for the ACME challenge and hands every static file to the app.
        const readable = (served: string) =>
          spawnSync('setpriv', [
            `--reuid=${nobody}`,
            `--regid=${nobody}`,
            '--clear-groups',
            'test',
            '-r',
            served,
            '-a',
            '-x',
            served,
          ]).status === 0;
        // The project's own public/ inside a private checkout (a clone in a 0700 temp directory,
        // as CI makes): nginx serves a copy in the stack's directory instead. A --public-dir the
        // user chose is theirs to fix.
        if (
          ctx.options.publicDir === undefined &&
          !readable(record.publicDir) &&
          existsSync(record.publicDir)
        ) {
          const copy = join(dir, 'public');
          cpSync(record.publicDir, copy, { recursive: true });
          ctx.log(`nginx: serving a copy of ${record.publicDir} (nobody cannot read the checkout)`);
          record.publicDir = copy;
        }
        for (const served of [join(dir, 'acme'), record.publicDir]) {
          if (!readable(served))
            throw new Error(
              `nginx's workers (nobody) cannot read ${served}: make it and every directory above it world-readable (chmod o+rx)`,
            );
        }
      }
      render(ctx.state, record);
      ctx.state.nginx = record;
      ctx.save();
      const check = spawnSync(nginxBin, ['-t', '-q', '-c', record.config], { encoding: 'utf8' });
      if (check.status !== 0 || /\[warn\]/.test(check.stderr))
        throw new Error(`nginx -t refused the rendered config:\n${check.stderr}`);
      await run(nginxBin, ['-c', record.config]);
      await waitFor('nginx to write its pid file', () => nginxPid(record) !== null, 30_000);
      ctx.state.entry = {
        https: `https://127.0.0.1:${record.httpsPort}`,
        http: `http://127.0.0.1:${record.httpPort}`,
      };
      ctx.log(`nginx: ${ctx.state.entry.https} (and ${ctx.state.entry.http} → HTTPS)`);
      ctx.save();
    },
    async down(state, log) {
      const record = state.nginx;
      if (record === null) return;
      const pid = nginxPid(record);
      if (pid !== null) {
        // Fast shutdown (SIGTERM): the master takes its workers with it.
        const workers = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
          .stdout.split('\n')
          .filter(Boolean)
          .map(Number);
        await killAndWait([pid], 'SIGTERM');
        await waitFor('nginx workers to exit', () => workers.every((w) => !isAlive(w)), 30_000);
      }
      log('nginx: stopped');
    },
  };
}

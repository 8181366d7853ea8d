import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { installCertificate } from '../../stack/components/nginx.js';
import { readState } from '../../stack/stack.js';
import type { StackStatus } from '../../stack/types.js';
import { freePort, killAndWait, waitFor } from '../../stack/util.js';
import { edgeRequest } from '../support/stack.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;

export interface AcmeEnv {
  readonly status: StackStatus;
  readonly https: string;
}

/**
 * The real ACME flow, offline: Debian's pebble (Let's Encrypt's test CA, with pebble-challtestsrv
 * answering its DNS) issues a certificate to certbot through the HTTP-01 challenge that the stack's
 * nginx serves from the shipped config; the certificate is installed (re-render + reload), a client
 * trusting only pebble's root completes a handshake, and a renewal dry run succeeds.
 */
export function acmeSuites(env: () => AcmeEnv): void {
  describe('certificates from an ACME CA (pebble + certbot, HTTP-01 through the shipped config)', () => {
    const domain = 'shop.test';
    let dir: string;
    let directory: string;
    let management: string;
    let listenerCa: string;
    const children: ChildProcess[] = [];
    let certbotEnv: NodeJS.ProcessEnv;
    let certbotArgs: string[];

    before(async () => {
      const { status } = env();
      dir = mkdtempSync(join(tmpdir(), 'shipshape-acme-'));
      // pebble's own listener certificate (its ACME API is HTTPS); certbot trusts this CA only.
      await run('bash', [
        join(root, 'scripts', 'local-ca.sh'),
        join(dir, 'listener'),
        'localhost',
        '127.0.0.1',
      ]);
      listenerCa = join(dir, 'listener', 'ca.pem');
      const [acmePort, managementPort, dnsPort, challtestPort, tlsPort] = await Promise.all([
        freePort(),
        freePort(),
        freePort(),
        freePort(),
        freePort(),
      ]);
      const httpPort = Number(new URL((status.entry as { http: string }).http).port);
      writeFileSync(
        join(dir, 'pebble.json'),
        JSON.stringify({
          pebble: {
            listenAddress: `127.0.0.1:${acmePort}`,
            managementListenAddress: `127.0.0.1:${managementPort}`,
            certificate: join(dir, 'listener', 'server.pem'),
            privateKey: join(dir, 'listener', 'server.key'),
            // HTTP-01 validation connects to the domain on this port: the stack's nginx.
            httpPort,
            tlsPort,
            ocspResponderURL: '',
            externalAccountBindingRequired: false,
          },
        }),
      );
      const log = (name: string) => {
        const file = join(dir, `${name}.log`);
        writeFileSync(file, '');
        return file;
      };
      const spawnLogged = (
        name: string,
        cmd: string,
        args: string[],
        extraEnv: Record<string, string> = {},
      ) => {
        const out = log(name);
        const child = spawn(cmd, args, {
          env: { ...process.env, ...extraEnv },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        child.stdout?.on('data', (c) => writeFileSync(out, c, { flag: 'a' }));
        child.stderr?.on('data', (c) => writeFileSync(out, c, { flag: 'a' }));
        children.push(child);
        return child;
      };
      // Every name resolves to 127.0.0.1 (so shop.test → the stack's nginx).
      spawnLogged('challtestsrv', 'pebble-challtestsrv', [
        '-management',
        `127.0.0.1:${challtestPort}`,
        '-dns01',
        `127.0.0.1:${dnsPort}`,
        '-defaultIPv4',
        '127.0.0.1',
        '-defaultIPv6',
        '',
        '-http01',
        '',
        '-https01',
        '',
        '-tlsalpn01',
        '',
      ]);
      spawnLogged(
        'pebble',
        'pebble',
        ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`],
        {
          // No random sleep before validating, no deliberately rejected nonces (certbot-ci does the same).
          PEBBLE_VA_NOSLEEP: '1',
          PEBBLE_WFE_NONCEREJECT: '0',
        },
      );
      directory = `https://127.0.0.1:${acmePort}/dir`;
      management = `https://127.0.0.1:${managementPort}`;
      const ca = readFileSync(listenerCa, 'utf8');
      await waitFor(
        'pebble to serve its directory',
        async () => (await edgeRequest(directory, { ca })).status === 200,
      );
      const nginx = readState(status.stateDir)?.nginx;
      assert.ok(nginx);
      // REQUESTS_CA_BUNDLE: certbot uses python-requests, which ignores the system trust store.
      certbotEnv = { ...process.env, REQUESTS_CA_BUNDLE: listenerCa, NGINX_CONF: nginx.config };
      certbotArgs = [
        '--server',
        directory,
        '--config-dir',
        join(dir, 'certbot', 'config'),
        '--work-dir',
        join(dir, 'certbot', 'work'),
        '--logs-dir',
        join(dir, 'certbot', 'logs'),
        '--non-interactive',
      ];
      mkdirSync(join(dir, 'certbot'), { recursive: true });
    });

    after(async () => {
      // Leave the stack as found: back to the local CA's certificate.
      const state = readState(env().status.stateDir);
      const tls = state?.components.tls as { certificate: string; certificateKey: string } | undefined;
      if (state !== null && state !== undefined && tls !== undefined)
        await installCertificate(state, tls.certificate, tls.certificateKey);
      await killAndWait(
        children.filter((c) => c.exitCode === null && c.pid !== undefined).map((c) => c.pid as number),
      );
      rmSync(dir, { recursive: true, force: true });
    });

    test('certbot obtains a certificate over HTTP-01; once installed, a client trusting only pebble’s root connects', async () => {
      const { status, https } = env();
      const nginx = readState(status.stateDir)?.nginx;
      assert.ok(nginx);
      const webroot = join(nginx.confDir, '..', 'acme');
      const issued = await run(
        'certbot',
        [
          'certonly',
          '--webroot',
          '--webroot-path',
          webroot,
          '-d',
          domain,
          '--agree-tos',
          '--register-unsafely-without-email',
          '--deploy-hook',
          join(root, 'deploy', 'nginx', 'certbot-deploy-hook.sh'),
          ...certbotArgs,
        ],
        { env: certbotEnv, timeout: 180_000 },
      ).catch((err: { stdout: string; stderr: string }) => {
        throw new Error(`certbot certonly failed:\n${err.stdout}\n${err.stderr}`);
      });
      assert.match(`${issued.stdout}${issued.stderr}`, /Successfully received certificate/);
      // The deploy hook ran (nginx -t, then a reload) with certbot's output.
      assert.match(`${issued.stdout}${issued.stderr}`, /certbot-deploy-hook: .* updated; reloading nginx/);

      const live = join(dir, 'certbot', 'config', 'live', domain);
      const state = readState(status.stateDir);
      assert.ok(state);
      await installCertificate(state, join(live, 'fullchain.pem'), join(live, 'privkey.pem'));

      const pebbleRoot = (
        await edgeRequest(`${management}/roots/0`, { ca: readFileSync(listenerCa, 'utf8') })
      ).body;
      assert.match(pebbleRoot, /BEGIN CERTIFICATE/);
      const served = await waitForServedCertificate(
        https,
        domain,
        pebbleRoot,
        readFileSync(join(live, 'cert.pem'), 'utf8'),
      );
      assert.ok(served.subjectAltName?.includes(`DNS:${domain}`));
      const ready = await edgeRequest(`${https}/ready`, { ca: pebbleRoot, servername: domain });
      assert.equal(ready.status, 200);
      // The local CA no longer vouches for what the edge serves.
      await assert.rejects(edgeRequest(`${https}/ready`, { ca: readFileSync(status.caFile ?? '', 'utf8') }));
    });

    test('a renewal dry run against pebble succeeds', async () => {
      const renewed = await run(
        'certbot',
        // --no-random-sleep-on-renew: non-interactive renew otherwise sleeps up to 8 minutes.
        ['renew', '--dry-run', '--no-random-sleep-on-renew', ...certbotArgs],
        { env: certbotEnv, timeout: 180_000 },
      ).catch((err: { stdout: string; stderr: string }) => {
        throw new Error(`certbot renew --dry-run failed:\n${err.stdout}\n${err.stderr}`);
      });
      assert.match(`${renewed.stdout}${renewed.stderr}`, /all simulated renewals succeeded/i);
    });
  });
}

/** Reload is asynchronous (old workers finish first): waits until the edge serves the new leaf. */
async function waitForServedCertificate(https: string, servername: string, ca: string, leafPem: string) {
  const expected = new X509Certificate(leafPem).fingerprint256;
  let served: X509Certificate | undefined;
  await waitFor('nginx to serve the new certificate', async () => {
    const peer = await edgeRequest(`${https}/ready`, { ca, servername, peerCertificate: true });
    served = peer.certificate;
    return served?.fingerprint256 === expected;
  });
  return served as X509Certificate;
}

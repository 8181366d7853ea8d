import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { installCertificate } from '../../stack/components/nginx.js';
import { readState } from '../../stack/stack.js';
import type { StackStatus } from '../../stack/types.js';
import { freePort, waitFor } from '../../stack/util.js';
import { type Daemon, startDaemon } from '../harness/monitoring.js';
import { inCi } from '../harness/services.js';
import { edgeRequest } from '../support/stack.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const deployHook = join(root, 'deploy', 'nginx', 'certbot-deploy-hook.sh');

export interface AcmeEnv {
  readonly status: StackStatus;
  readonly https: string;
}

/** False when Debian's pebble and certbot run; a skip message outside CI; under CI an error. */
export function skipUnlessAcmeTools(): string | false {
  for (const [bin, flag] of [
    ['pebble', '-h'],
    ['pebble-challtestsrv', '-h'],
    ['certbot', '--version'],
  ] as const) {
    const probe = spawnSync(bin, [flag], { encoding: 'utf8' });
    if (probe.error === undefined) continue;
    const message = `${bin} is not installed; install it: sudo scripts/install-ops-tools.sh`;
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}

/**
 * The real ACME flow, offline: Debian's pebble (Let's Encrypt's test CA; pebble-challtestsrv
 * answers its DNS with 127.0.0.1 for every name) issues a certificate to certbot through the
 * HTTP-01 challenge that the stack's nginx serves from the shipped config (`certonly --webroot`,
 * the README's production steps). Installed, nginx serves it to a client that trusts only pebble's
 * root; a forced renewal runs the shipped deploy hook, which reloads nginx while keep-alive
 * clients keep reading (none of their requests fails); a renewal dry run succeeds. Registered into
 * the growth file's suite (its stack); the edge goes back to the local CA's certificate after.
 */
export function acmeSuites(env: () => AcmeEnv): void {
  const skip = skipUnlessAcmeTools();
  describe('certificates from an ACME CA (pebble + certbot, HTTP-01 through the shipped config)', {
    skip,
  }, () => {
    const domain = 'shop.test';
    let dir: string;
    let directory: string;
    let pebbleRoot: string;
    const daemons: Daemon[] = [];
    let certbotEnv: NodeJS.ProcessEnv;
    let certbotArgs: string[];
    let live: string;

    const certbot = async (what: string, args: string[]) => {
      try {
        const out = await run('certbot', [...args, ...certbotArgs], {
          env: certbotEnv,
          timeout: 180_000,
        });
        return `${out.stdout}${out.stderr}`;
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string; message: string };
        throw new Error(`certbot ${what} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
      }
    };

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
      const listenerCa = join(dir, 'listener', 'ca.pem');
      const [acmePort, managementPort, dnsPort, challtestPort, tlsPort] = await Promise.all(
        Array.from({ length: 5 }, () => freePort()),
      );
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
      // Every name resolves to 127.0.0.1 (so shop.test is the stack's nginx). Debian's 2.4.0 names
      // the DNS flag -dns01 (newer builds: -dnsserver).
      daemons.push(
        startDaemon('pebble-challtestsrv', [
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
        ]),
        startDaemon('pebble', ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], {
          ...process.env,
          // No random sleep before validating, no deliberately rejected nonces (as certbot-ci runs it).
          PEBBLE_VA_NOSLEEP: '1',
          PEBBLE_WFE_NONCEREJECT: '0',
        }),
      );
      directory = `https://127.0.0.1:${acmePort}/dir`;
      const listener = readFileSync(listenerCa, 'utf8');
      await waitFor(
        'pebble to serve its directory',
        async () => (await edgeRequest(directory, { ca: listener })).status === 200,
      );
      // The root that signs issued certificates (regenerated at every pebble start).
      pebbleRoot = (await edgeRequest(`https://127.0.0.1:${managementPort}/roots/0`, { ca: listener })).body;
      assert.match(pebbleRoot, /BEGIN CERTIFICATE/);
      const nginx = readState(status.stateDir)?.nginx;
      assert.ok(nginx);
      // REQUESTS_CA_BUNDLE: certbot uses python-requests, which ignores the system trust store.
      // NGINX_CONF: the deploy hook reloads the stack's nginx, not the system's.
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
      live = join(dir, 'certbot', 'config', 'live', domain);
    });

    after(async () => {
      // Leave the stack as found: back to the local CA's certificate.
      const state = readState(env().status.stateDir);
      const tls = state?.components.tls as { certificate: string; certificateKey: string } | undefined;
      if (state !== null && state !== undefined && tls !== undefined) {
        await installCertificate(state, tls.certificate, tls.certificateKey);
        const { https, status } = env();
        await waitForServedCertificate(https, undefined, readFileSync(status.caFile ?? ''), tls.certificate);
      }
      await Promise.all(daemons.map((d) => d.stop()));
      rmSync(dir, { recursive: true, force: true });
    });

    test('certbot obtains a certificate over HTTP-01; once installed, a client trusting only pebble’s root connects', async () => {
      const { status, https } = env();
      const nginx = readState(status.stateDir)?.nginx;
      assert.ok(nginx);
      // The webroot the shipped config serves /.well-known/acme-challenge/ from (port 80's server).
      const webroot = join(nginx.confDir, '..', 'acme');
      const output = await certbot('certonly', [
        'certonly',
        '--webroot',
        '--webroot-path',
        webroot,
        '-d',
        domain,
        '--agree-tos',
        '--register-unsafely-without-email',
        '--deploy-hook',
        deployHook,
      ]);
      assert.match(output, /Successfully received certificate/);
      // certbot ran the shipped hook (nginx -t, then a reload).
      assert.match(output, /certbot-deploy-hook: .*live\/shop\.test updated; reloading nginx/);

      // The operator's one-time step: point the rendered config at certbot's live/ files.
      const state = readState(status.stateDir);
      assert.ok(state);
      await installCertificate(state, join(live, 'fullchain.pem'), join(live, 'privkey.pem'));
      const served = await waitForServedCertificate(https, domain, pebbleRoot, join(live, 'cert.pem'));
      assert.ok(served.subjectAltName?.includes(`DNS:${domain}`));
      assert.ok(served.checkIssued(new X509Certificate(readFileSync(join(live, 'chain.pem')))));
      const ready = await edgeRequest(`${https}/ready`, { ca: pebbleRoot, servername: domain });
      assert.equal(ready.status, 200);
      // The local CA no longer vouches for what the edge serves.
      await assert.rejects(
        edgeRequest(`${https}/ready`, { ca: readFileSync(status.caFile ?? '', 'utf8'), servername: domain }),
      );
    });

    test('a renewal runs the deploy hook; nginx reloads onto the new certificate and no request in flight fails', async () => {
      const { https } = env();
      const before = new X509Certificate(readFileSync(join(live, 'cert.pem'))).fingerprint256;
      // Keep-alive readers through the edge for the whole renewal (each its own connection).
      const outcomes: Array<{ status: number | null; error?: string }> = [];
      let stopping = false;
      // Each from its own address and paced (about 20 requests a second): the edge's per-client
      // limit (50/s) must not be what answers.
      const reader = async (_: unknown, i: number) => {
        const agent = new Agent({
          keepAlive: true,
          maxSockets: 1,
          ca: pebbleRoot,
          servername: domain,
          localAddress: `127.0.13.${i + 1}`,
        });
        while (!stopping) {
          await sleep(50);
          const get = () =>
            edgeRequest(`${https}/api/products?limit=1`, { agent, ca: pebbleRoot, servername: domain });
          try {
            let res: Awaited<ReturnType<typeof get>>;
            try {
              res = await get();
            } catch (err) {
              // A reload closes idle keep-alive connections; a GET sent on one as it closes is
              // reset, and HTTP clients retry an idempotent request once on a new connection
              // (RFC 9112, 9.3.1), as browsers do. Only a second failure counts (seen in CI).
              if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') throw err;
              res = await get();
            }
            outcomes.push({ status: res.status });
          } catch (err) {
            outcomes.push({ status: null, error: (err as NodeJS.ErrnoException).code ?? String(err) });
          }
        }
        agent.destroy();
      };
      const readers = Array.from({ length: 4 }, reader);
      await waitFor('warm-up traffic', () => outcomes.length >= 40, 60_000);
      const started = Date.now();
      // --force-renewal: pebble's certificates are far from expiry. --no-random-sleep-on-renew:
      // a non-interactive renew otherwise sleeps up to 8 minutes first.
      const output = await certbot('renew', ['renew', '--force-renewal', '--no-random-sleep-on-renew']);
      const renewedIn = Date.now() - started;
      assert.match(output, /renewals succeeded/i);
      assert.match(output, /certbot-deploy-hook: .*live\/shop\.test updated; reloading nginx/);
      const renewed = await waitForServedCertificate(https, domain, pebbleRoot, join(live, 'cert.pem'));
      assert.notEqual(renewed.fingerprint256, before, 'a new certificate is served');
      const count = outcomes.length;
      await waitFor('traffic after the reload', () => outcomes.length >= count + 40, 60_000);
      stopping = true;
      await Promise.all(readers);
      assert.deepEqual(
        outcomes.filter((o) => o.status !== 200),
        [],
        'every request during the renewal and reload succeeded',
      );
      console.log(
        `ACME renewal + deploy hook (nginx reload) under load: ${outcomes.length} requests, 0 failed; certbot renew took ${renewedIn} ms`,
      );
    });

    test('a renewal dry run against pebble succeeds', async () => {
      // --server must be on the command line: --dry-run otherwise goes to Let's Encrypt staging.
      const output = await certbot('renew --dry-run', ['renew', '--dry-run', '--no-random-sleep-on-renew']);
      assert.match(output, /all simulated renewals succeeded/i);
    });
  });
}

/** Reload is asynchronous (old workers finish first): waits until the edge serves the given leaf. */
async function waitForServedCertificate(
  https: string,
  servername: string | undefined,
  ca: string | Buffer,
  leafFile: string,
) {
  const expected = new X509Certificate(readFileSync(leafFile)).fingerprint256;
  let served: X509Certificate | undefined;
  await waitFor('nginx to serve the new certificate', async () => {
    const peer = await edgeRequest(`${https}/ready`, {
      ca: ca.toString(),
      ...(servername === undefined ? {} : { servername }),
      peerCertificate: true,
    });
    served = peer.certificate;
    return served?.fingerprint256 === expected;
  });
  return served as X509Certificate;
}

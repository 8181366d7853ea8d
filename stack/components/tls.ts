import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Component } from '../types.js';

const run = promisify(execFile);

/**
 * A local CA and an edge certificate from scripts/local-ca.sh (the same script an operator uses
 * for a staging box). Publishes `caFile`; the nginx component picks up the certificate.
 */
export function localCertificateAuthority(): Component {
  return {
    name: 'tls',
    async up(ctx) {
      const dir = join(ctx.state.stateDir, 'tls');
      const name = ctx.options.serverName ?? 'localhost';
      await run('bash', [join(ctx.root, 'scripts', 'local-ca.sh'), dir, name, 'localhost', '127.0.0.1'], {
        timeout: 60_000,
      });
      ctx.state.caFile = join(dir, 'ca.pem');
      ctx.state.components.tls = {
        dir,
        certificate: join(dir, 'server.pem'),
        certificateKey: join(dir, 'server.key'),
      };
      ctx.log(`tls: local CA ${ctx.state.caFile}`);
      ctx.save();
    },
    // The files go with the state directory.
    async down() {},
  };
}

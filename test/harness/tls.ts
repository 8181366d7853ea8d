import { execFileSync } from 'node:child_process';

/**
 * Writes a self-signed P-256 certificate for `subject` (an X.509 name such as "/CN=127.0.0.1"),
 * valid for `days`, to `certPath` with its unencrypted key at `keyPath`, using the machine's openssl.
 */
export function selfSignedCertificate(opts: {
  readonly certPath: string;
  readonly keyPath: string;
  readonly subject: string;
  readonly days: number;
}): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      opts.subject,
      '-days',
      String(opts.days),
      '-keyout',
      opts.keyPath,
      '-out',
      opts.certPath,
    ],
    // openssl's progress dots stay quiet; its stderr goes into the error if it fails.
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
}

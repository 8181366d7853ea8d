import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { inCi } from './services.js';

export const nginxBin = process.env.NGINX_BIN ?? '/usr/sbin/nginx';

/** False when nginx is installed; a skip message outside CI; under CI an error (never a skip). */
export function skipUnlessNginx(): string | false {
  const probe = spawnSync(nginxBin, ['-v'], { encoding: 'utf8' });
  if (probe.status === 0) return false;
  const message = `nginx is not installed (${nginxBin}); install it: sudo scripts/install-ops-tools.sh`;
  if (inCi) throw new Error(`CI requires ${message}`);
  return message;
}

export interface NginxCheck {
  readonly ok: boolean;
  /** Every [warn] / [emerg] / [crit] / [alert] line nginx printed. */
  readonly problems: readonly string[];
  readonly output: string;
}

/**
 * `nginx -t` on a config, failing on any warning too: nginx 1.22 exits 0 after "[warn] load
 * balancing method redefined", which silently undoes upstream keep-alive.
 */
export function checkNginxConfig(confPath: string): NginxCheck {
  const result = spawnSync(nginxBin, ['-t', '-q', '-c', confPath, '-e', 'stderr'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  const problems = output.split('\n').filter((line) => /\[(warn|emerg|crit|alert|error)\]/.test(line));
  return { ok: result.status === 0 && problems.length === 0, problems, output };
}

const shippedProxyConf = new URL('../../deploy/nginx/snippets/proxy.conf', import.meta.url);

/** A `<name> <n>s;` directive of the shipped deploy/nginx/snippets/proxy.conf (or of `text`), in seconds. */
export function proxySeconds(name: string, text = readFileSync(shippedProxyConf, 'utf8')): number {
  return Number(new RegExp(`${name} (\\d+)s;`).exec(text)?.[1] ?? Number.NaN);
}

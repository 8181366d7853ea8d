import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Renders deploy/nginx/ for one site. Production (`npm run nginx:render`) and `npm run stack` call
 * this same function, so the file the tests load into nginx is the file that ships.
 *
 * Per-site inputs: the upstream servers, the server name and the certificate paths. Everything
 * under `runtime` has production defaults (Debian's layout, ports 80/443); the local stack
 * overrides them with loopback addresses and paths inside its state directory.
 */

export interface Upstream {
  /** `host:port` of one app server (its PM2 cluster's shared port). */
  readonly address: string;
  /** Relative share of new requests among the primaries (least_conn weighs by it). */
  readonly weight?: number;
  /** Receives traffic only while every primary is unavailable. */
  readonly backup?: boolean;
}

export interface NginxSite {
  readonly serverName: string;
  readonly upstreams: readonly Upstream[];
  /** Certificate chain (leaf first) and its private key, e.g. certbot's live/<name>/fullchain.pem. */
  readonly certificate: string;
  readonly certificateKey: string;
  readonly runtime?: Partial<NginxRuntime>;
}

export interface NginxRuntime {
  /** `[address:]port` of the HTTP (redirect + ACME) and HTTPS servers. */
  readonly httpListen: string;
  readonly httpsListen: string;
  /**
   * `address:port` of the stub_status listener that prometheus-nginx-exporter reads
   * (http://ADDRESS:PORT/stub_status); loopback only, never published.
   */
  readonly statusListen: string;
  /** The HTTPS port as clients see it, when not 443 (the redirect must name it). */
  readonly publicHttpsPort: number;
  readonly workerProcesses: string;
  readonly pidFile: string;
  readonly errorLog: string;
  readonly accessLog: string;
  /** Parent of nginx's client-body and proxy temp directories. */
  readonly tempDir: string;
  readonly mimeTypes: string;
  /** The release's public/ directory (static files). */
  readonly publicDir: string;
  /** Where certbot --webroot writes HTTP-01 challenge files. */
  readonly acmeWebroot: string;
  /** Must equal the app's BODY_LIMIT_BYTES. */
  readonly bodyLimitBytes: number;
  /** Requests per second per client, and the burst beyond it, for /api/ and /api/auth/. */
  readonly apiRate: number;
  readonly apiBurst: number;
  readonly authRate: number;
  readonly authBurst: number;
  readonly connectionsPerClient: number;
  /** Seconds; below the app's KEEP_ALIVE_TIMEOUT_MS. */
  readonly upstreamKeepaliveTimeoutSeconds: number;
  /** Publish /docs (Swagger UI) through the edge. Off in production by default. */
  readonly publicDocs: boolean;
}

export const productionRuntime: NginxRuntime = Object.freeze({
  httpListen: '80',
  httpsListen: '443',
  // prometheus-nginx-exporter's default scrape URI is http://127.0.0.1:8080/stub_status.
  statusListen: '127.0.0.1:8080',
  publicHttpsPort: 443,
  workerProcesses: 'auto',
  pidFile: '/run/nginx.pid',
  errorLog: '/var/log/nginx/error.log',
  accessLog: '/var/log/nginx/shipshape.access.log',
  tempDir: '/var/lib/nginx',
  mimeTypes: '/etc/nginx/mime.types',
  publicDir: '/srv/shipshape/current/public',
  acmeWebroot: '/var/www/acme',
  bodyLimitBytes: 102_400,
  apiRate: 50,
  apiBurst: 100,
  authRate: 5,
  authBurst: 20,
  connectionsPerClient: 100,
  upstreamKeepaliveTimeoutSeconds: 60,
  publicDocs: false,
});

const templateDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'nginx');
const snippets = ['proxy.conf', 'static-headers.conf', 'tls-intermediate.conf'] as const;

const hostname =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const hostPort = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/;
const listen = /^(?:(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?[0-9]{1,5}$/;
// Paths go into the config unquoted: refuse anything nginx would read as syntax.
const safePath = /^\/[A-Za-z0-9._/+@-]*$/;

export class NginxSiteError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid nginx site:\n  - ${problems.join('\n  - ')}`);
    this.name = 'NginxSiteError';
  }
}

function validate(site: NginxSite, runtime: NginxRuntime): void {
  const problems: string[] = [];
  if (!hostname.test(site.serverName)) problems.push(`server name "${site.serverName}" is not a hostname`);
  if (site.upstreams.filter((u) => !u.backup).length === 0)
    problems.push('at least one upstream server that is not a backup is required');
  for (const u of site.upstreams) {
    if (!hostPort.test(u.address)) problems.push(`upstream "${u.address}" is not host:port`);
    if (u.weight !== undefined && (!Number.isInteger(u.weight) || u.weight < 1 || u.weight > 100))
      problems.push(`upstream "${u.address}": weight must be an integer from 1 to 100`);
  }
  if (new Set(site.upstreams.map((u) => u.address)).size !== site.upstreams.length)
    problems.push('upstream addresses must be distinct');
  const paths: Record<string, string> = {
    certificate: site.certificate,
    certificateKey: site.certificateKey,
    pidFile: runtime.pidFile,
    errorLog: runtime.errorLog,
    accessLog: runtime.accessLog,
    tempDir: runtime.tempDir,
    mimeTypes: runtime.mimeTypes,
    publicDir: runtime.publicDir,
    acmeWebroot: runtime.acmeWebroot,
  };
  for (const [name, path] of Object.entries(paths)) {
    if (!isAbsolute(path) || !safePath.test(path))
      problems.push(`${name} "${path}" must be an absolute path of letters, digits and ._/+@-`);
  }
  for (const name of ['httpListen', 'httpsListen'] as const) {
    if (!listen.test(runtime[name])) problems.push(`${name} "${runtime[name]}" is not [address:]port`);
  }
  if (!/^(?:127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[::1\]):[0-9]{1,5}$/.test(runtime.statusListen))
    problems.push(`statusListen "${runtime.statusListen}" must be a loopback address:port`);
  if (!/^(?:auto|[1-9][0-9]?)$/.test(runtime.workerProcesses))
    problems.push(`workerProcesses "${runtime.workerProcesses}" is not "auto" or a number`);
  const positive = [
    'publicHttpsPort',
    'bodyLimitBytes',
    'apiRate',
    'apiBurst',
    'authRate',
    'authBurst',
    'connectionsPerClient',
    'upstreamKeepaliveTimeoutSeconds',
  ] as const;
  for (const name of positive) {
    if (!Number.isInteger(runtime[name]) || runtime[name] < 1)
      problems.push(`${name} must be a positive integer`);
  }
  if (problems.length > 0) throw new NginxSiteError(problems);
}

/** `host:port[,weight=N][,backup]`, as the CLI takes it. */
export function parseUpstream(text: string): Upstream {
  const [address = '', ...params] = text.split(',');
  let weight: number | undefined;
  let backup = false;
  for (const param of params) {
    if (param === 'backup') backup = true;
    else if (/^weight=[0-9]+$/.test(param)) weight = Number(param.slice('weight='.length));
    else throw new NginxSiteError([`upstream "${text}": unknown parameter "${param}" (weight=N or backup)`]);
  }
  return { address, ...(weight === undefined ? {} : { weight }), backup };
}

function upstreamLines(upstreams: readonly Upstream[]): string {
  return upstreams
    .map((u) => {
      // nginx ignores weight on a backup; it is the last resort while every primary is out.
      const params = u.backup
        ? ['max_fails=3', 'fail_timeout=10s', 'backup']
        : [`weight=${u.weight ?? 1}`, 'max_fails=3', 'fail_timeout=10s'];
      return `        server ${u.address} ${params.join(' ')};`;
    })
    .join('\n');
}

function docsLocation(publicDocs: boolean): string {
  const body = publicDocs
    ? '            include {{confDir}}/snippets/proxy.conf;'
    : '            return 404;';
  return [
    '        location = /docs {',
    body,
    '        }',
    '        location ^~ /docs/ {',
    body,
    '        }',
    '',
  ].join('\n');
}

function fill(template: string, values: Readonly<Record<string, string>>, file: string): string {
  return template.replace(/\{\{([A-Za-z]+)\}\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`${file}: no value for {{${name}}}`);
    return value;
  });
}

/** The rendered files, by path relative to the output directory (`confDir`). */
export function renderNginx(site: NginxSite, confDir: string): Record<string, string> {
  const runtime: NginxRuntime = { ...productionRuntime, ...site.runtime };
  validate(site, runtime);
  if (!isAbsolute(confDir) || !safePath.test(confDir))
    throw new NginxSiteError([
      `output directory "${confDir}" must be an absolute path of letters, digits and ._/+@-`,
    ]);
  const values: Record<string, string> = {
    serverName: site.serverName,
    certificate: site.certificate,
    certificateKey: site.certificateKey,
    upstreamServers: upstreamLines(site.upstreams),
    httpListen: runtime.httpListen,
    httpsListen: runtime.httpsListen,
    statusListen: runtime.statusListen,
    httpsPortSuffix: runtime.publicHttpsPort === 443 ? '' : `:${runtime.publicHttpsPort}`,
    workerProcesses: runtime.workerProcesses,
    pidFile: runtime.pidFile,
    errorLog: runtime.errorLog,
    accessLog: runtime.accessLog,
    tempDir: runtime.tempDir,
    mimeTypes: runtime.mimeTypes,
    publicDir: runtime.publicDir,
    acmeWebroot: runtime.acmeWebroot,
    bodyLimitBytes: String(runtime.bodyLimitBytes),
    apiRate: `${runtime.apiRate}r/s`,
    apiBurst: String(runtime.apiBurst),
    authRate: `${runtime.authRate}r/s`,
    authBurst: String(runtime.authBurst),
    connectionsPerClient: String(runtime.connectionsPerClient),
    upstreamKeepaliveTimeout: `${runtime.upstreamKeepaliveTimeoutSeconds}s`,
    confDir,
  };
  values.docsLocation = fill(docsLocation(runtime.publicDocs), values, 'docs location');
  const files: Record<string, string> = {
    'nginx.conf': fill(readFileSync(join(templateDir, 'nginx.conf.template'), 'utf8'), values, 'nginx.conf'),
  };
  for (const name of snippets) {
    files[`snippets/${name}`] = fill(readFileSync(join(templateDir, 'snippets', name), 'utf8'), values, name);
  }
  return files;
}

/** Renders into `confDir` (created if needed); returns the path of nginx.conf. */
export function writeNginx(site: NginxSite, confDir: string): string {
  const files = renderNginx(site, confDir);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(confDir, path)), { recursive: true });
    writeFileSync(join(confDir, path), text);
  }
  return join(confDir, 'nginx.conf');
}

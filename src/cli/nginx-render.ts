import { parseArgs } from 'node:util';
import {
  type NginxRuntime,
  NginxSiteError,
  parseUpstream,
  productionRuntime,
  writeNginx,
} from '../ops/nginx.js';

/**
 * `npm run nginx:render -- --out /etc/nginx --server-name shop.example.com \
 *    --upstream 10.0.0.11:3000,weight=3 --upstream 10.0.0.12:3000,weight=2 --upstream 10.0.0.13:3000,backup \
 *    --cert /etc/letsencrypt/live/shop.example.com/fullchain.pem \
 *    --key /etc/letsencrypt/live/shop.example.com/privkey.pem`
 *
 * Writes nginx.conf and snippets/ for one site into --out. Then: `nginx -t && nginx -s reload`.
 */
const usage = `usage: npm run nginx:render -- --out DIR --server-name NAME --upstream HOST:PORT[,weight=N|,backup]... --cert FILE --key FILE
       [--public-dir DIR] [--acme-webroot DIR] [--body-limit-bytes N] [--public-docs]

Renders deploy/nginx/ for one site (README "Growth stage: nginx and TLS"). Defaults:
  --public-dir ${productionRuntime.publicDir}
  --acme-webroot ${productionRuntime.acmeWebroot}
  --body-limit-bytes ${productionRuntime.bodyLimitBytes} (must equal the app's BODY_LIMIT_BYTES)`;

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      'server-name': { type: 'string' },
      upstream: { type: 'string', multiple: true },
      cert: { type: 'string' },
      key: { type: 'string' },
      'public-dir': { type: 'string' },
      'acme-webroot': { type: 'string' },
      'body-limit-bytes': { type: 'string' },
      'public-docs': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  const missing = (['out', 'server-name', 'upstream', 'cert', 'key'] as const).filter(
    (k) => values[k] === undefined,
  );
  if (missing.length > 0)
    throw new NginxSiteError([`missing ${missing.map((k) => `--${k}`).join(', ')}\n\n${usage}`]);
  const runtime: Partial<NginxRuntime> = {
    ...(values['public-dir'] ? { publicDir: values['public-dir'] } : {}),
    ...(values['acme-webroot'] ? { acmeWebroot: values['acme-webroot'] } : {}),
    ...(values['body-limit-bytes'] ? { bodyLimitBytes: Number(values['body-limit-bytes']) } : {}),
    ...(values['public-docs'] ? { publicDocs: true } : {}),
  };
  const path = writeNginx(
    {
      serverName: values['server-name'] as string,
      upstreams: (values.upstream ?? []).map(parseUpstream),
      certificate: values.cert as string,
      certificateKey: values.key as string,
      runtime,
    },
    values.out as string,
  );
  console.log(`wrote ${path} (and snippets/); check and load it with: nginx -t && nginx -s reload`);
}

try {
  main();
} catch (err) {
  if (
    err instanceof NginxSiteError ||
    String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')
  ) {
    console.error((err as Error).message);
    process.exit(2);
  }
  throw err;
}

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { afterCommitAllowanceMs } from '../../src/infra/database-deadline.js';
import {
  type NginxSite,
  NginxSiteError,
  parseUpstream,
  productionRuntime,
  renderNginx,
  writeNginx,
} from '../../src/ops/nginx.js';
import { checkNginxConfig, proxySeconds, skipUnlessNginx } from '../harness/nginx.js';

const root = new URL('../..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'fixtures', 'nginx');

/**
 * Every configuration deploy/nginx/ can render passes `nginx -t` with no warning; the guide's
 * snippets (kept verbatim in test/fixtures/nginx/) and the known traps must fail.
 */
describe('deploy/nginx: rendered configs load in real nginx', { skip: skipUnlessNginx() }, () => {
  let dir: string;
  let tls: { cert: string; key: string };

  const growth = (runtime: NginxSite['runtime'] = {}): NginxSite => ({
    serverName: 'shop.example.com',
    upstreams: [
      { address: '10.0.0.11:3000', weight: 3 },
      { address: '10.0.0.12:3000', weight: 2 },
      { address: '10.0.0.13:3000', backup: true },
    ],
    certificate: tls.cert,
    certificateKey: tls.key,
    runtime,
  });

  /** Renders into a fresh directory with runtime paths inside it (nginx -t opens the logs). */
  function render(name: string, site: NginxSite): string {
    const base = join(dir, name);
    mkdirSync(join(base, 'tmp'), { recursive: true });
    return writeNginx(
      {
        ...site,
        runtime: {
          pidFile: join(base, 'nginx.pid'),
          errorLog: join(base, 'error.log'),
          accessLog: join(base, 'access.log'),
          tempDir: join(base, 'tmp'),
          acmeWebroot: join(base, 'acme'),
          publicDir: join(root, 'public'),
          ...site.runtime,
        },
      },
      join(base, 'conf'),
    );
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-nginx-conf-'));
    execFileSync('bash', [join(root, 'scripts', 'local-ca.sh'), join(dir, 'tls'), 'shop.example.com'], {
      stdio: 'pipe',
    });
    tls = { cert: join(dir, 'tls', 'server.pem'), key: join(dir, 'tls', 'server.key') };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const variants: Record<string, () => NginxSite> = {
    'the growth stage: two weighted primaries and a backup': () => growth(),
    'one upstream server, on non-standard ports': () => ({
      ...growth({
        httpListen: '127.0.0.1:8088',
        httpsListen: '127.0.0.1:8443',
        statusListen: '127.0.0.2:9080',
        publicHttpsPort: 8443,
      }),
      upstreams: [{ address: '127.0.0.1:3000' }],
    }),
    'with /docs published and other limits': () =>
      growth({ publicDocs: true, bodyLimitBytes: 1_048_576, apiRate: 5, apiBurst: 1, workerProcesses: '2' }),
  };
  for (const [name, site] of Object.entries(variants)) {
    test(`renders and passes nginx -t with no warning: ${name}`, () => {
      const check = checkNginxConfig(render(name.replace(/\W+/g, '-'), site()));
      assert.ok(check.ok, check.output);
    });
  }

  test('the production defaults differ from a tested render only in the runtime paths', () => {
    const site = growth();
    const production = renderNginx(site, '/etc/nginx')['nginx.conf'] ?? '';
    const base = join(dir, 'prod');
    const runtime = {
      pidFile: join(base, 'nginx.pid'),
      errorLog: join(base, 'error.log'),
      accessLog: join(base, 'access.log'),
      tempDir: join(base, 'tmp'),
      acmeWebroot: join(base, 'acme'),
      publicDir: join(base, 'public'),
    };
    mkdirSync(runtime.tempDir, { recursive: true });
    mkdirSync(runtime.publicDir, { recursive: true });
    const conf = writeNginx({ ...site, runtime }, join(base, 'conf'));
    let swapped = readFileSync(conf, 'utf8');
    for (const [key, path] of Object.entries(runtime))
      swapped = swapped.replaceAll(path, productionRuntime[key as keyof typeof runtime] as string);
    swapped = swapped.replaceAll(join(base, 'conf'), '/etc/nginx');
    assert.equal(swapped, production);
    assert.ok(checkNginxConfig(conf).ok);
    assert.match(production, /listen 80 default_server;/);
    assert.match(production, /listen 443 ssl http2 default_server;/);
    assert.match(production, /return 308 https:\/\/\$host\$request_uri;/);
    // stub_status for prometheus-nginx-exporter (its default URI), on loopback only.
    assert.match(
      production,
      /listen 127\.0\.0\.1:8080;\n\s+access_log off;\n\n\s+location = \/stub_status \{\n\s+stub_status;\n\s+allow 127\.0\.0\.0\/8;\n\s+allow ::1;\n\s+deny all;/,
    );
  });

  test('the rendered config holds what the guide asks for, done right', () => {
    // Directives only: comments may name what is not done.
    const files = Object.fromEntries(
      Object.entries(renderNginx(growth(), '/etc/nginx')).map(([k, v]) => [k, v.replace(/#.*$/gm, '')]),
    );
    const text = files['nginx.conf'] ?? '';
    const http = text.slice(text.indexOf('http {'));
    const upstream = /upstream shipshape_app \{([^}]*)\}/.exec(text)?.[1] ?? '';
    // Zones at http level, before any server block (guide correction 1).
    assert.ok(http.indexOf('limit_req_zone') < http.indexOf('server {'));
    assert.match(text, /limit_req_status 429;/);
    assert.match(text, /server_tokens off;/);
    // least_conn before keepalive; one backup; weights; keepalive_timeout below the app's 72 s.
    assert.ok(upstream.indexOf('least_conn') < upstream.indexOf('keepalive 32'));
    assert.match(upstream, /server 10\.0\.0\.11:3000 weight=3 max_fails=3 fail_timeout=10s;/);
    assert.match(upstream, /server 10\.0\.0\.13:3000 max_fails=3 fail_timeout=10s backup;/);
    assert.match(upstream, /keepalive_timeout 60s;/);
    assert.match(upstream, /zone shipshape_app 64k;/);
    assert.match(text, /client_max_body_size 102400;/);
    const proxy = files['snippets/proxy.conf'] ?? '';
    assert.match(proxy, /proxy_set_header Connection "";/);
    assert.doesNotMatch(proxy, /upgrade/i, 'guide correction 2: no Connection upgrade');
    assert.match(proxy, /proxy_set_header X-Forwarded-For \$remote_addr;/);
    assert.doesNotMatch(proxy, /proxy_add_x_forwarded_for/);
    assert.match(proxy, /proxy_next_upstream error timeout;/);
    assert.doesNotMatch(proxy, /non_idempotent/);
    // nginx gives up on a silent server only after a working one would have answered (its request
    // budget, then a COMMIT's round-trip deadline: statement timeout + 1 s; decision 0110), and
    // still has time to try another server then (a GET that met a hung server is answered).
    const seconds = (name: string) => proxySeconds(name, proxy);
    const defaults = loadConfig({}).database;
    // …and the bookkeeping after that COMMIT (its WAL position), one short allowance.
    const slowestAnswerMs =
      defaults.requestBudgetMs + defaults.statementTimeoutMs + 1000 + afterCommitAllowanceMs;
    assert.ok(
      seconds('proxy_read_timeout') * 1000 > slowestAnswerMs,
      'read timeout above the app’s slowest answer',
    );
    assert.ok(seconds('proxy_next_upstream_timeout') > seconds('proxy_read_timeout'));
    assert.doesNotMatch(`${text}${proxy}`, /Access-Control-Allow/, 'guide correction 3: CORS is the app’s');
    const tlsSnippet = files['snippets/tls-intermediate.conf'] ?? '';
    assert.match(tlsSnippet, /ssl_protocols TLSv1\.2 TLSv1\.3;/);
    assert.match(tlsSnippet, /ssl_session_tickets off;/);
    assert.doesNotMatch(tlsSnippet, /ssl_stapling/);
  });

  test('bad site inputs are refused with every problem named', () => {
    assert.throws(
      () =>
        renderNginx(
          {
            serverName: 'shop example;com',
            upstreams: [{ address: '10.0.0.1:3000', backup: true }, { address: 'nope' }],
            certificate: 'relative.pem',
            certificateKey: '/etc/ssl/key;evil',
            // stub_status must never be published.
            runtime: { statusListen: '0.0.0.0:8080' },
          },
          '/etc/nginx',
        ),
      (err: unknown) => {
        assert.ok(err instanceof NginxSiteError);
        const text = err.problems.join('\n');
        for (const word of [
          'server name',
          'upstream "nope"',
          'certificate "relative.pem"',
          'certificateKey',
          'statusListen "0.0.0.0:8080" must be a loopback',
        ])
          assert.ok(text.includes(word), `${word} in ${text}`);
        return true;
      },
    );
    assert.deepEqual(parseUpstream('10.0.0.1:3000,weight=3'), {
      address: '10.0.0.1:3000',
      weight: 3,
      backup: false,
    });
    assert.deepEqual(parseUpstream('10.0.0.1:3000,backup'), { address: '10.0.0.1:3000', backup: true });
    assert.throws(() => parseUpstream('10.0.0.1:3000,max_fails=0'), NginxSiteError);
  });

  test('every file in deploy/nginx/ is part of the render, and the scripts pass shellcheck', () => {
    const shipped = [
      'deploy/nginx/nginx.conf.template',
      'deploy/nginx/snippets/proxy.conf',
      'deploy/nginx/snippets/static-headers.conf',
      'deploy/nginx/snippets/tls-intermediate.conf',
    ];
    const onDisk = execFileSync(
      'git',
      ['ls-files', '--cached', '--others', '--exclude-standard', 'deploy/nginx'],
      {
        cwd: root,
        encoding: 'utf8',
      },
    )
      .split('\n')
      .filter((f) => f !== '' && !f.endsWith('.sh'))
      .sort();
    assert.deepEqual(onDisk, shipped);
    const rendered = renderNginx(growth(), '/etc/nginx');
    assert.deepEqual(Object.keys(rendered).sort(), [
      'nginx.conf',
      ...shipped.slice(1).map((f) => f.slice(13)),
    ]);
    for (const script of ['scripts/local-ca.sh', 'deploy/nginx/certbot-deploy-hook.sh']) {
      const check = spawnSync('shellcheck', [join(root, script)], { encoding: 'utf8' });
      assert.equal(check.status, 0, `${script}: ${check.stdout}${check.stderr}`);
    }
  });

  test('scripts/local-ca.sh: a P-256 leaf for the names given, 90 days, that verifies against its CA only', () => {
    const out = join(dir, 'ca-check');
    execFileSync('bash', [join(root, 'scripts', 'local-ca.sh'), out, 'shop.test', 'localhost', '127.0.0.1'], {
      stdio: 'pipe',
    });
    const text = execFileSync('openssl', ['x509', '-in', join(out, 'server.pem'), '-noout', '-text'], {
      encoding: 'utf8',
    });
    assert.match(text, /DNS:shop\.test, DNS:localhost, IP Address:127\.0\.0\.1/);
    assert.match(text, /prime256v1|P-256/);
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(out, 'ca.pem'), join(out, 'server.pem')], {
      encoding: 'utf8',
    });
    assert.equal(verify.status, 0, verify.stderr);
    const days = execFileSync('openssl', [
      'x509',
      '-in',
      join(out, 'server.pem'),
      '-noout',
      '-checkend',
      String(89 * 86400),
    ]);
    assert.match(String(days), /will not expire/);
    const usage = spawnSync('bash', [join(root, 'scripts', 'local-ca.sh')], { encoding: 'utf8' });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /local-ca\.sh DIR NAME/);
  });

  describe('what must fail', () => {
    test("the guide's 3.1 load balancer (limit_req_zone inside server {}) is rejected", () => {
      const base = join(dir, 'guide-3.1');
      mkdirSync(base, { recursive: true });
      const guide = readFileSync(join(fixtures, 'guide-3.1-load-balancer.conf'), 'utf8');
      const wrap = (body: string) =>
        `pid ${base}/nginx.pid;\nerror_log ${base}/error.log;\n${body.replace('http {', `http {\n    access_log ${base}/access.log;`)}`;
      writeFileSync(join(base, 'guide.conf'), wrap(guide));
      const check = checkNginxConfig(join(base, 'guide.conf'));
      assert.equal(check.ok, false);
      assert.match(check.output, /"limit_req_zone" directive is not allowed here/);
      // Control: the same file with the zone moved to http {} loads, so the zone is the defect.
      const zone = '        limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;\n';
      assert.ok(guide.includes(zone));
      writeFileSync(
        join(base, 'moved.conf'),
        wrap(guide.replace(zone, '').replace('http {', `http {\n${zone}`)),
      );
      const moved = checkNginxConfig(join(base, 'moved.conf'));
      assert.ok(moved.ok, moved.output);
    });

    test("the guide's 4.2 cipher string is rejected (no cipher match)", () => {
      const conf = render('guide-4.2', growth());
      const snippet = join(conf, '..', 'snippets', 'tls-intermediate.conf');
      const guide = readFileSync(join(fixtures, 'guide-4.2-tls.conf'), 'utf8')
        .replace('/etc/letsencrypt/live/yourdomain.com/fullchain.pem', tls.cert)
        .replace('/etc/letsencrypt/live/yourdomain.com/privkey.pem', tls.key)
        .replace(/^add_header.*$/m, '');
      // The guide's lines replace our TLS block (its certificate lines name ours).
      writeFileSync(snippet, guide);
      const text = readFileSync(conf, 'utf8').replace(/^\s*ssl_certificate(_key)? .*$/gm, '');
      writeFileSync(conf, text);
      const check = checkNginxConfig(conf);
      assert.equal(check.ok, false);
      assert.match(check.output, /no cipher match/);
      // Control: with only the ssl_ciphers line replaced by ours, the same file loads.
      const ours = readFileSync(join(root, 'deploy', 'nginx', 'snippets', 'tls-intermediate.conf'), 'utf8');
      const cipherLine = /^ssl_ciphers .*$/m.exec(ours)?.[0] ?? '';
      writeFileSync(snippet, guide.replace(/^ssl_ciphers .*$/m, cipherLine));
      const fixed = checkNginxConfig(conf);
      assert.ok(fixed.ok, fixed.output);
    });

    test('keepalive before least_conn only warns in nginx -t; the check fails it', () => {
      const conf = render('order', growth());
      const text = readFileSync(conf, 'utf8');
      writeFileSync(
        conf,
        text.replace(/\n\s*least_conn;/, '').replace('keepalive 32;', 'keepalive 32;\n        least_conn;'),
      );
      const check = checkNginxConfig(conf);
      assert.equal(check.ok, false);
      assert.match(check.problems.join('\n'), /\[warn\].*load balancing method redefined/);
    });

    test('ip_hash with a backup server is rejected', () => {
      const conf = render('ip-hash', growth());
      writeFileSync(conf, readFileSync(conf, 'utf8').replace('least_conn;', 'ip_hash;'));
      const check = checkNginxConfig(conf);
      assert.equal(check.ok, false);
      assert.match(check.output, /does not support parameter "backup"/);
    });
  });
});

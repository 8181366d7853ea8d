import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { freePort } from '../harness/ports.js';
import { createTestDatabase, type TestDatabase } from '../harness/postgres.js';
import { redisUrl } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { deleteKeys, testKeyPrefix } from '../helper.js';
import { buildBaseImage, imageExists, pinnedBaseImage } from './container-base.js';
import { render } from './kustomize.js';
import { run, runAsync, skipWithout } from './support.js';

// The Dockerfile, built and run for real with Debian's podman (runc, no daemon): the image builds
// unchanged from the repository, runs as the unprivileged user on a read-only root, answers
// /health and /ready on PostgreSQL and Redis, drains and exits 0 on SIGTERM as PID 1, and the pod
// of the rendered Kubernetes Deployment runs under `podman kube play` with its probes' paths
// answering. The base image is assembled locally (no registry is reachable here): see
// container-base.ts.

const root = new URL('../..', import.meta.url).pathname;
const tag = `localhost/shipshape:test-${process.pid}`;
// The machine's CA bundle, offered to npm inside the build as the Dockerfile's optional `npm_ca`
// secret (this network's egress inspects TLS; elsewhere the bundle is merely redundant).
const caBundle = '/etc/ssl/certs/ca-certificates.crt';

function log(line: string): void {
  process.stdout.write(`container: ${line}\n`);
}

async function getStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

describe('container image (Dockerfile, podman)', {
  skip: skipWithout('podman', 'runc', 'catatonit', 'debootstrap'),
}, () => {
  let confDir = '';
  let env: NodeJS.ProcessEnv = process.env;
  let db: TestDatabase | undefined;
  const containers: string[] = [];
  const podmanSecrets: string[] = [];
  const playedFiles: string[] = [];
  const prefix = testKeyPrefix('container');

  function podman(args: readonly string[], timeoutMs = 300_000) {
    return runAsync('podman', args, { env, timeoutMs });
  }

  before(async () => {
    confDir = await mkdtemp(join(tmpdir(), 'shipshape-podman-'));
    // What this machine's podman needs (see the issue): runc (crun refuses its hybrid cgroups),
    // cgroupfs (no systemd), and no default ulimits (the sandbox cannot raise them).
    await writeFile(
      join(confDir, 'containers.conf'),
      '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n',
    );
    env = { ...process.env, CONTAINERS_CONF: join(confDir, 'containers.conf') };

    const base = await pinnedBaseImage(join(root, 'Dockerfile'));
    if (imageExists(base, env)) log(`base image ${base} is in the local store`);
    else {
      const started = Date.now();
      await buildBaseImage(base, env, log);
      log(`base image built in ${Math.round((Date.now() - started) / 1000)} s`);
    }

    const commit = run('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root }).stdout.trim() || 'unknown';
    const started = Date.now();
    const built = await podman(
      [
        'build',
        '--format',
        'docker',
        '--network',
        'host',
        '--secret',
        `id=npm_ca,src=${caBundle}`,
        '--build-arg',
        `BUILD_COMMIT=${commit}`,
        '-t',
        tag,
        root,
      ],
      1_800_000,
    );
    assert.equal(built.status, 0, `podman build failed:\n${built.output.slice(-6000)}`);
    log(`image ${tag} built in ${Math.round((Date.now() - started) / 1000)} s`);

    db = await createTestDatabase();
    const migrated = await podman([
      'run',
      '--rm',
      '--no-healthcheck',
      '--network',
      'host',
      '--read-only',
      '-e',
      `DATABASE_URL=${db.url}`,
      '-e',
      `JWT_SECRET=${randomBytes(48).toString('base64')}`,
      tag,
      'node',
      'dist/cli/migrate.js',
    ]);
    assert.equal(migrated.status, 0, `migrations from the image failed:\n${migrated.output}`);
  });

  after(async () => {
    for (const name of containers) await podman(['rm', '-f', '-t', '0', name]);
    for (const file of playedFiles) await podman(['kube', 'down', file]);
    for (const name of podmanSecrets) await podman(['secret', 'rm', name]);
    await podman(['rmi', '-f', tag]);
    await db?.drop();
    await deleteKeys(redisUrl, prefix);
    if (confDir) await rm(confDir, { recursive: true, force: true });
  });

  test('the image runs as node (uid 1000), has a HEALTHCHECK, and carries no sources or dev dependencies', async () => {
    const inspected = await podman(['image', 'inspect', tag]);
    assert.equal(inspected.status, 0, inspected.output);
    const [image] = JSON.parse(inspected.stdout) as Array<{
      Config: { User?: string; Cmd?: string[]; StopSignal?: string };
      Healthcheck?: { Test?: string[] };
    }>;
    assert.equal(image?.Config.User, 'node');
    assert.deepEqual(image?.Config.Cmd, ['node', 'dist/main.js']);
    assert.equal(image?.Config.StopSignal, 'SIGTERM');
    assert.match((image?.Healthcheck?.Test ?? []).join(' '), /\/health/);
    const contents = await podman([
      'run',
      '--rm',
      '--no-healthcheck',
      '--network',
      'none',
      tag,
      'sh',
      '-c',
      'id -u; test ! -e src && test ! -e node_modules/typescript && test ! -e node_modules/tsx && test -f dist/main.js && test -f public/index.html && echo clean',
    ]);
    assert.equal(contents.status, 0, contents.output);
    assert.deepEqual(contents.stdout.trim().split('\n'), ['1000', 'clean']);
  });

  test('on PostgreSQL and Redis with a read-only root: /health and /ready answer; SIGTERM drains and exits 0', async () => {
    assert.ok(db);
    const port = await freePort();
    const name = `shipshape-test-${process.pid}-run`;
    containers.push(name);
    const started = await podman([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      'host',
      '--read-only',
      '--tmpfs',
      '/tmp',
      '-e',
      `PORT=${port}`,
      '-e',
      'HOST=127.0.0.1',
      '-e',
      `DATABASE_URL=${db.url}`,
      '-e',
      `REDIS_URL=${redisUrl}`,
      '-e',
      `REDIS_KEY_PREFIX=${prefix}`,
      '-e',
      `JWT_SECRET=${randomBytes(48).toString('base64')}`,
      '-e',
      `METRICS_TOKEN=${randomBytes(24).toString('hex')}`,
      tag,
    ]);
    assert.equal(started.status, 0, started.output);
    const base = `http://127.0.0.1:${port}`;
    await waitUntil(async () => (await getStatus(`${base}/ready`)) === 200, {
      timeoutMs: 120_000,
      intervalMs: 250,
      what: 'the container answers /ready 200',
    });
    assert.equal(await getStatus(`${base}/health`), 200);

    // PID 1 is the service itself (no shell or init in between), running as uid 1000.
    const pid1 = await podman([
      'exec',
      name,
      'sh',
      '-c',
      "stat -c %u /proc/1; tr '\\0' ' ' < /proc/1/cmdline",
    ]);
    assert.deepEqual(pid1.stdout.trim().split('\n'), ['1000', 'node dist/main.js']);

    const health = await podman(['healthcheck', 'run', name]);
    assert.equal(health.status, 0, `the image's HEALTHCHECK passes: ${health.output}`);

    const killed = await podman(['kill', '--signal', 'TERM', name]);
    assert.equal(killed.status, 0, killed.output);
    const waited = await podman(['wait', name], 120_000);
    assert.equal(waited.stdout.trim(), '0', `exit code after SIGTERM: ${waited.output}`);
    const logs = await podman(['logs', name]);
    assert.match(logs.output, /"msg":"shutting down"/);
    assert.match(logs.output, /"msg":"shutdown complete"/);
  });

  test('podman kube play runs the rendered Deployment pod; its startup, readiness and liveness paths answer', async () => {
    assert.ok(db);
    const objects = render(join(root, 'deploy/k8s/base'));
    const configMap = objects.find((o) => o.kind === 'ConfigMap');
    const deployment = objects.find((o) => o.kind === 'Deployment');
    assert.ok(configMap?.data && deployment);
    const port = await freePort();
    // The pod shares this machine's network (no CNI here), so it gets a free port instead of 3000.
    configMap.data.PORT = String(port);
    configMap.data.HOST = '127.0.0.1';
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    container.image = tag;
    // Host networking takes no port mappings (podman refuses them), so the probes name the port.
    delete container.ports;
    for (const probe of [container.startupProbe, container.readinessProbe, container.livenessProbe]) {
      probe.httpGet.port = port;
    }

    // The Secret the manifests mount at /run/secrets/shipshape, as a podman secret of that name.
    // Where podman is not Kubernetes (Debian 12's 4.3): it writes `data` values to the files as
    // given, without base64-decoding them, and ignores `stringData`; and it does not apply the
    // pod's fsGroup to secret files, so the 0400 root-owned files would be unreadable to uid 1000
    // (the kubelet makes them group-readable for fsGroup 1000). The pod file below differs from
    // the rendered Deployment in exactly those two places, the image, and the port.
    const secretName = 'shipshape';
    const values = {
      'database-url': db.url,
      'redis-url': redisUrl,
      'jwt-secret': randomBytes(48).toString('base64'),
      'metrics-token': randomBytes(24).toString('hex'),
    };
    const podmanVersion = run('podman', ['--version'], { env }).stdout;
    const decodes = !/ 4\.[0-3]\./.test(podmanVersion);
    const secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: secretName },
      data: Object.fromEntries(
        Object.entries(values).map(([k, v]) => [k, decodes ? Buffer.from(v).toString('base64') : v]),
      ),
    };
    const secretVolume = pod.volumes.find((v: { secret?: unknown }) => v.secret);
    secretVolume.secret.defaultMode = 0o444;
    const dir = await mkdtemp(join(tmpdir(), 'shipshape-kube-play-'));
    try {
      const secretFile = join(dir, 'secret.yaml');
      await writeFile(secretFile, stringify(secret));
      podmanSecrets.push(secretName);
      const madeSecret = await podman(['secret', 'create', secretName, secretFile]);
      assert.equal(madeSecret.status, 0, madeSecret.output);

      const podFile = join(dir, 'pod.yaml');
      await writeFile(
        podFile,
        [configMap, { ...deployment, spec: { ...deployment.spec, replicas: 1 } }]
          .map((o) => stringify(o))
          .join('---\n'),
      );
      playedFiles.push(podFile);
      const played = await podman(['kube', 'play', '--network', 'host', podFile], 600_000);
      assert.equal(played.status, 0, `podman kube play failed:\n${played.output}`);

      const base = `http://127.0.0.1:${port}`;
      for (const path of ['/health', '/ready']) {
        await waitUntil(async () => (await getStatus(`${base}${path}`)) === 200, {
          timeoutMs: 120_000,
          intervalMs: 250,
          what: `the pod answers ${path} 200`,
        });
      }
      const probes = [container.startupProbe, container.readinessProbe, container.livenessProbe];
      for (const probe of probes) {
        assert.equal(
          await getStatus(`${base}${probe.httpGet.path}`),
          200,
          `probe path ${probe.httpGet.path}`,
        );
      }
      // The secrets arrived as files, and the metrics token from them guards /metrics.
      assert.equal(await getStatus(`${base}/metrics`), 401);
      assert.equal(
        await getStatus(`${base}/metrics`, { authorization: `Bearer ${values['metrics-token']}` }),
        200,
      );
    } finally {
      await podman(['kube', 'down', join(dir, 'pod.yaml')]);
      // kube play keeps a secret volume as a named podman volume; kube down leaves it behind.
      await podman(['volume', 'rm', '-f', secretName]);
      playedFiles.length = 0;
      await rm(dir, { recursive: true, force: true });
    }
  });
});

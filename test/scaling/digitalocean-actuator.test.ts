import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createAutoscaler } from '../../src/scaling/autoscaler.js';
import { type DigitalOceanOptions, digitalOceanActuator } from '../../src/scaling/digitalocean-actuator.js';
import { defaultPolicy } from '../../src/scaling/policy.js';
import { type DigitalOceanApi, startDigitalOceanApi } from '../harness/digitalocean-api.js';

/**
 * The DigitalOcean actuator against a local server that implements the documented droplet and tag
 * endpoints and their error answers (test/harness/digitalocean-api.ts). A contract test: it shows
 * the actuator speaks the API as documented, not that DigitalOcean answers so today.
 */

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
/** The CLI from its source (no dist/ build shared with other test files running at the same time). */
const cli = ['--import', 'tsx', join(root, 'src', 'cli', 'autoscale.ts')];
const tag = 'shop-app';
let api: DigitalOceanApi;
let waits: number[];

function actuator(overrides: Partial<DigitalOceanOptions> = {}) {
  return digitalOceanActuator({
    apiUrl: api.url,
    token: api.token,
    tag,
    namePrefix: 'shop-auto',
    droplet: { region: 'fra1', size: 's-1vcpu-1gb', image: 'debian-12-x64', vpc_uuid: 'vpc-1' },
    drainMs: 5000,
    pollMs: 50,
    backoffMs: 1000,
    // Waits are recorded at their asked length and served short, so the test asserts the backoff without sleeping it.
    sleep: async (ms) => {
      waits.push(ms);
      await sleep(Math.min(ms, 20));
    },
    ...overrides,
  });
}

const names = () => api.droplets.map((d) => d.name).sort();
const posts = () => api.log.filter((l) => l === 'POST /v2/droplets').length;

describe('DigitalOcean actuator (contract test against a local API)', () => {
  beforeEach(async () => {
    waits = [];
    api = await startDigitalOceanApi({ activeAfterMs: 150, pageSize: 2 });
    // The Terraform layout's droplets: they carry the app tag, and are never removed by the autoscaler.
    api.seed('shop-app-01', [tag]);
    api.seed('shop-app-02', [tag]);
  });
  afterEach(() => api.close());

  it('scale-up creates tagged droplets with free names and waits until they are active', async () => {
    const a = actuator();
    assert.equal((await a.instances()).length, 2, 'lists across pages (2 per page here)');
    await a.scaleTo(4, await a.instances());
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01', 'shop-auto-02']);
    const created = api.droplets.filter((d) => d.name.startsWith('shop-auto'));
    assert.ok(
      created.every((d) => d.status === 'active'),
      'done only once they are active',
    );
    assert.ok(created.every((d) => d.tags.includes(tag) && d.tags.includes(`${tag}-autoscaled`)));
    const instances = await a.instances();
    assert.equal(instances.length, 4);
    assert.ok(
      instances.every((i) => Number.isFinite(i.startedAt)),
      'warm-up runs from created_at',
    );
  });

  it('scale-down untags (the load balancer lets go), drains, then deletes the newest autoscaled droplet', async () => {
    const a = actuator();
    await a.scaleTo(4, []);
    const newest = api.droplets.find((d) => d.name === 'shop-auto-02');
    assert.ok(newest);
    api.log.length = 0;
    await a.scaleTo(3, []);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
    const untag = api.log.indexOf(`DELETE /v2/tags/${tag}/resources`);
    const del = api.log.indexOf(`DELETE /v2/droplets/${newest.id}`);
    assert.ok(untag >= 0 && del > untag, `untag before delete: ${api.log.join(' | ')}`);
    assert.ok(waits.includes(5000), 'waited the drain between them');
    // Below what the autoscaler made: refused, nothing of Terraform's touched.
    await assert.rejects(a.scaleTo(1, []), /only 1 autoscaled droplet\(s\) to remove, 2 asked/);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
  });

  it('an API error surfaces: a 422 is not retried, a 500 is retried with backoff', async () => {
    await assert.rejects(
      actuator({ droplet: { region: 'fra1', size: 's-1vcpu-1gb', image: '' } }).scaleTo(3, []),
      /422 unprocessable_entity You specified an invalid image/,
    );
    assert.equal(posts(), 1, 'a 422 is final');
    assert.equal(api.droplets.length, 2);
    api.fault('GET /v2/droplets', { kind: 'error', status: 500 }, 2);
    assert.equal((await actuator().instances()).length, 2);
    assert.deepEqual(waits, [1000, 2000], 'exponential backoff');
    const wrong = digitalOceanActuator({ ...baseOf(), token: 'wrong' });
    await assert.rejects(wrong.instances(), /401 unauthorized/);
  });

  it('a 429 waits for Retry-After and then creates once', async () => {
    api.fault('POST /v2/droplets', { kind: 'rate-limit', retryAfterSeconds: 3 });
    await actuator().scaleTo(3, []);
    assert.ok(waits.includes(3000), `waited Retry-After: ${waits}`);
    assert.equal(posts(), 2);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
  });

  it('a create that times out (but went through) is not repeated: no duplicate droplet', async () => {
    api.fault('POST /v2/droplets', { kind: 'hang' });
    await actuator({ requestTimeoutMs: 500 }).scaleTo(3, []);
    assert.equal(posts(), 1, 'the listing after the timeout found it');
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
    // And the same decision made again (a monitor restarted mid-change) changes nothing.
    await actuator().scaleTo(3, []);
    assert.equal(posts(), 1);
    assert.equal(api.droplets.length, 3);
  });

  it('a create the API commits after the client gave up is waited for, never sent again: one droplet', async () => {
    // The create lands 1.5 s after it was sent, the client gives up after 0.3 s. DigitalOcean does
    // not enforce unique names: a second POST of the same name would make a second droplet.
    const lateMs = 1500;
    api.fault('POST /v2/droplets', { kind: 'late', afterMs: lateMs });
    const started = Date.now();
    await actuator({ requestTimeoutMs: 300, createGraceMs: 60_000 }).scaleTo(3, []);
    // Long enough for a create that was sent twice to have landed twice.
    await sleep(Math.max(0, started + lateMs + 1000 - Date.now()));
    assert.equal(posts(), 1, `one create sent: ${api.log.join(' | ')}`);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
    assert.equal(
      api.droplets.find((d) => d.name === 'shop-auto-01')?.status,
      'active',
      'done once it is active',
    );
  });

  it('a create without an answer that never appears fails the call without a second POST', async () => {
    // A 5xx says nothing about whether the droplet was made: looked for, not re-sent.
    api.fault('POST /v2/droplets', { kind: 'error', status: 500 });
    await assert.rejects(
      actuator({ createGraceMs: 300 }).scaleTo(3, []),
      /create of shop-auto-01 got no answer .* not sent again/,
    );
    assert.equal(posts(), 1);
    assert.equal(api.droplets.length, 2);
    // The next decision re-observes and creates it.
    await actuator().scaleTo(3, []);
    assert.equal(posts(), 2);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
  });

  it('when the second create of a change fails, the droplet made counts: its cooldown holds the next period', async () => {
    // 2 → 4 asked; the first create goes through, the second is refused (a quota, say): 3.
    api.fault('POST /v2/droplets', { kind: 'error', status: 422 }, 1, 1);
    const scaler = createAutoscaler({
      target: tag,
      policy: { ...defaultPolicy, max: 8, targets: { cpu: 0.8 }, warmupMs: 0 },
      actuator: actuator(),
      // 3.2 cores of demand shared out: 2 droplets want 4, and 3 still want 4.
      sampler: {
        async sample(instances) {
          return { instances: instances.map((i) => ({ ...i, metrics: { cpu: 3.2 / instances.length } })) };
        },
      },
      log: { info() {}, error() {} },
    });
    const failed = await scaler.tick();
    assert.deepEqual([failed.desired, failed.applied, failed.reached], [4, false, 3], failed.error);
    // The next period (well inside the 30 s scale-up cooldown): no second change on top.
    const next = await scaler.tick();
    assert.deepEqual([next.current, next.action, next.reason], [3, 'hold', 'scale-up-cooldown'], next.detail);
    assert.equal(posts(), 2);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
  });

  it('a droplet left untagged by an interrupted scale-down is found and deleted', async () => {
    const a = actuator();
    await a.scaleTo(4, []);
    const orphan = api.droplets.find((d) => d.name === 'shop-auto-02');
    assert.ok(orphan);
    orphan.tags = [`${tag}-autoscaled`];
    assert.equal((await a.instances()).length, 3, 'out of the pool already');
    await a.scaleTo(2, []);
    assert.deepEqual(names(), ['shop-app-01', 'shop-app-02']);
  });

  it('npm run autoscale -- --actuator digitalocean --once: the CLI drives it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-do-'));
    try {
      const tokenFile = join(dir, 'token');
      writeFileSync(tokenFile, `${api.token}\n`, { mode: 0o600 });
      const { stdout } = await run(
        process.execPath,
        [
          ...cli,
          ...[
            '--actuator',
            'digitalocean',
            '--do-api',
            api.url,
            '--do-token-file',
            tokenFile,
            '--do-tag',
            tag,
          ],
          ...['--do-name-prefix', 'shop-auto', '--do-region', 'fra1', '--do-size', 's-1vcpu-1gb'],
          ...['--do-image', 'debian-12-x64', '--min', '3', '--max', '5', '--once'],
        ],
        { cwd: root, timeout: 120_000 },
      );
      const record = JSON.parse(stdout.trim().split('\n').at(-1) ?? '');
      assert.deepEqual(
        [record.action, record.reason, record.desired, record.applied],
        ['scale-up', 'below-min', 3, true],
      );
      assert.deepEqual(names(), ['shop-app-01', 'shop-app-02', 'shop-auto-01']);
      assert.ok(!stdout.includes(api.token), 'the token is never logged');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function baseOf(): DigitalOceanOptions {
  return {
    apiUrl: api.url,
    token: api.token,
    tag,
    namePrefix: 'shop-auto',
    droplet: { region: 'fra1', size: 's', image: 'i' },
    drainMs: 0,
    attempts: 1,
  };
}

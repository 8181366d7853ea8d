import { setTimeout as sleep } from 'node:timers/promises';
import type { Actuator } from './autoscaler.js';
import type { ScrapedInstance } from './samplers.js';

/**
 * DigitalOcean droplets as an actuator (docs/decisions/0082-digitalocean-actuator.md), through the
 * public API v2: the droplets of the Terraform layout carry one tag (`<name>-app`) that the load
 * balancer and the firewalls target, so a droplet created with that tag joins, and one that loses
 * it leaves (decision 0042).
 *
 * - The count is every droplet with the tag; only droplets this actuator made (named
 *   `<prefix>-NN`, also tagged `<tag>-autoscaled`) are ever removed — Terraform's own stay.
 * - Names are the lowest free `<prefix>-NN`, but DigitalOcean does not enforce unique names, so a
 *   create is repeated only after a 429 (not carried out). After a create without an answer (a
 *   timeout, a network error, a 5xx) the list is polled for the name for a grace period, and the
 *   create is never sent again in that call: found, it counts; not found, the call fails and the
 *   next decision re-observes (docs/decisions/0123).
 * - Remove drains: first the app tag is taken off (the load balancer stops sending it requests),
 *   then after `drainMs` the droplet is deleted. A droplet left untagged by a crash in between is
 *   found by its `-autoscaled` tag and deleted on the next scale-down.
 * - 429: waits for Retry-After (seconds) or ratelimit-reset (epoch seconds), else exponential
 *   backoff; 5xx and network errors: backoff; other 4xx (401, 422): no retry, the message surfaces.
 *
 * Tested against a local server that implements these endpoints and their documented error answers
 * (test/harness/digitalocean-api.ts): a contract test, not DigitalOcean.
 */

export interface DropletTemplate {
  readonly region: string;
  readonly size: string;
  readonly image: string;
  readonly vpc_uuid?: string;
  readonly ssh_keys?: readonly string[];
  readonly user_data?: string;
}

interface Droplet {
  id: number;
  name: string;
  status: string;
  created_at: string;
  tags: string[];
  networks?: { v4?: { ip_address: string; type: string }[] };
}

export class DigitalOceanError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly id: string | undefined,
  ) {
    super(message);
  }
}

export interface DigitalOceanOptions {
  readonly apiUrl: string;
  readonly token: string;
  readonly tag: string;
  readonly namePrefix: string;
  readonly droplet: DropletTemplate;
  /** Between untagging a droplet and deleting it: at least the load balancer's health-check interval × its unhealthy threshold. */
  readonly drainMs: number;
  /** e.g. `http://{ip}:9464/metrics` (the private address): each droplet's /metrics for the sampler. */
  readonly metricsUrlTemplate?: string;
  readonly requestTimeoutMs?: number;
  /** Attempts per call (first try included). */
  readonly attempts?: number;
  readonly backoffMs?: number;
  /** After a create without an answer: how long to look for it before failing (never re-sent). */
  readonly createGraceMs?: number;
  /** How long a new droplet may take to become active. */
  readonly activeTimeoutMs?: number;
  readonly pollMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

export function digitalOceanActuator(options: DigitalOceanOptions): Actuator {
  const wait = options.sleep ?? ((ms: number) => sleep(ms));
  const attempts = options.attempts ?? 5;
  const backoff = options.backoffMs ?? 1000;
  const autoscaledTag = `${options.tag}-autoscaled`;
  const base = options.apiUrl.replace(/\/$/, '');
  const ownName = new RegExp(`^${options.namePrefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(\\d+)$`);

  /** One HTTP call; throws DigitalOceanError with the API's id and message, or a plain Error (network, timeout). */
  async function call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${options.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(options.requestTimeoutMs ?? 30_000),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text === '' ? null : JSON.parse(text);
    } catch {
      json = null;
    }
    if (res.status >= 400) {
      const e = (json ?? {}) as { id?: string; message?: string };
      const error = new DigitalOceanError(
        `DigitalOcean ${method} ${path}: ${res.status} ${e.id ?? ''} ${e.message ?? text.slice(0, 200)}`.trim(),
        res.status,
        e.id,
      );
      (error as DigitalOceanError & { retryAfterMs?: number }).retryAfterMs = retryAfter(
        res.status,
        res.headers,
      );
      throw error;
    }
    return { status: res.status, json };
  }

  /** Retry-After (seconds) when given; on a 429 without it, until ratelimit-reset (epoch seconds, sent on every answer). */
  function retryAfter(status: number, headers: Headers): number | undefined {
    const after = Number(headers.get('retry-after'));
    if (Number.isFinite(after) && after > 0) return after * 1000;
    if (status !== 429) return undefined;
    const reset = Number(headers.get('ratelimit-reset'));
    if (Number.isFinite(reset) && reset > 0) return Math.max(0, reset * 1000 - Date.now());
    return undefined;
  }

  const retryable = (err: unknown) =>
    !(err instanceof DigitalOceanError) || err.status === 429 || err.status >= 500;

  /** Retries what is safe to repeat (reads, deletes, tag removal) with backoff; 429 waits as told. */
  async function withRetry<T>(what: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await what();
      } catch (err) {
        if (!retryable(err) || attempt >= attempts) throw err;
        const told = (err as { retryAfterMs?: number }).retryAfterMs;
        await wait(Math.min(60_000, told ?? backoff * 2 ** (attempt - 1)));
      }
    }
  }

  async function listByTag(tag: string): Promise<Droplet[]> {
    const droplets: Droplet[] = [];
    for (let page = 1; ; page++) {
      const { json } = await withRetry(() =>
        call('GET', `/v2/droplets?tag_name=${encodeURIComponent(tag)}&per_page=200&page=${page}`),
      );
      const body = json as { droplets: Droplet[]; links?: { pages?: { next?: string } } };
      droplets.push(...body.droplets);
      if (body.links?.pages?.next === undefined || body.droplets.length === 0) return droplets;
    }
  }

  const ip = (d: Droplet) =>
    d.networks?.v4?.find((n) => n.type === 'private')?.ip_address ?? d.networks?.v4?.[0]?.ip_address;

  function toInstance(d: Droplet): ScrapedInstance {
    const address = ip(d);
    return {
      id: String(d.id),
      startedAt: Date.parse(d.created_at),
      ...(options.metricsUrlTemplate !== undefined && address !== undefined
        ? { metricsUrl: options.metricsUrlTemplate.replace('{ip}', address) }
        : {}),
    };
  }

  async function waitActive(names: readonly string[]): Promise<void> {
    const deadline = Date.now() + (options.activeTimeoutMs ?? 600_000);
    for (;;) {
      const droplets = await listByTag(options.tag);
      const pending = names.filter((n) => droplets.find((d) => d.name === n)?.status !== 'active');
      if (pending.length === 0) return;
      if (Date.now() > deadline) throw new Error(`droplets not active in time: ${pending.join(', ')}`);
      await wait(options.pollMs ?? 5000);
    }
  }

  /**
   * Creates one droplet by name. DigitalOcean does not enforce unique names, so a create is sent
   * again only after an answer that says it was not carried out (429). After any other failure
   * (no answer in time, a network error, a 5xx) the create may land later — the API may commit
   * it after the client gave up — so it is never sent again in this call: the list is polled for
   * the name for `createGraceMs`; if it has not appeared by then the call fails, and the next
   * decision counts what is there.
   */
  async function ensureDroplet(name: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await call('POST', '/v2/droplets', {
          name,
          ...options.droplet,
          tags: [options.tag, autoscaledTag],
          monitoring: true,
        });
        return;
      } catch (err) {
        if (err instanceof DigitalOceanError && err.status === 429) {
          if (attempt >= attempts) throw err;
          const told = (err as { retryAfterMs?: number }).retryAfterMs;
          await wait(Math.min(60_000, told ?? backoff * 2 ** (attempt - 1)));
          continue;
        }
        if (!retryable(err)) throw err;
        const graceMs = options.createGraceMs ?? 120_000;
        const deadline = Date.now() + graceMs;
        for (;;) {
          if ((await listByTag(options.tag)).some((d) => d.name === name)) return;
          if (Date.now() >= deadline) break;
          await wait(options.pollMs ?? 5000);
        }
        throw new Error(
          `create of ${name} got no answer (${(err as Error).message}) and it has not appeared in ${Math.round(graceMs / 1000)} s; not sent again (DigitalOcean allows duplicate names): the next decision counts what is there`,
        );
      }
    }
  }

  async function remove(d: Droplet): Promise<void> {
    if (d.tags.includes(options.tag)) {
      await withRetry(() =>
        call('DELETE', `/v2/tags/${encodeURIComponent(options.tag)}/resources`, {
          resources: [{ resource_id: String(d.id), resource_type: 'droplet' }],
        }),
      );
      await wait(options.drainMs);
    }
    await withRetry(() => call('DELETE', `/v2/droplets/${d.id}`)).catch((err: unknown) => {
      if (!(err instanceof DigitalOceanError && err.status === 404)) throw err;
    });
  }

  return {
    name: 'digitalocean',
    async instances() {
      return (await listByTag(options.tag)).map(toInstance);
    },
    async scaleTo(desired) {
      if (!Number.isInteger(desired) || desired < 0) throw new Error(`cannot scale to ${desired}`);
      const droplets = await listByTag(options.tag);
      if (desired > droplets.length) {
        const used = new Set(
          [...droplets, ...(await listByTag(autoscaledTag))]
            .map((d) => ownName.exec(d.name)?.[1])
            .filter((n): n is string => n !== undefined)
            .map(Number),
        );
        const names: string[] = [];
        for (let n = 1; names.length < desired - droplets.length; n++)
          if (!used.has(n)) names.push(`${options.namePrefix}-${String(n).padStart(2, '0')}`);
        for (const name of names) await ensureDroplet(name);
        await waitActive(names);
        return;
      }
      if (desired < droplets.length) {
        // Leftovers of an interrupted scale-down first (untagged, still running).
        for (const orphan of (await listByTag(autoscaledTag)).filter((d) => !d.tags.includes(options.tag)))
          await remove(orphan);
        const removable = droplets
          .filter((d) => ownName.test(d.name) && d.tags.includes(autoscaledTag))
          .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || b.id - a.id);
        const count = droplets.length - desired;
        if (removable.length < count)
          throw new Error(
            `only ${removable.length} autoscaled droplet(s) to remove, ${count} asked: the rest are Terraform's (raise --min to their count)`,
          );
        for (const d of removable.slice(0, count)) await remove(d);
      }
    },
  };
}

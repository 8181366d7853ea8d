import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for the parts of DigitalOcean's API v2 the droplet actuator uses — a contract
 * test, not DigitalOcean. It answers as the public OpenAPI description (digitalocean/openapi) and
 * the API docs say: bearer auth (401 `unauthorized`); `GET /v2/droplets?tag_name=&page=&per_page=`
 * with `links.pages.next` and `meta.total`; `POST /v2/droplets` → 202 `{droplet}` (422
 * `unprocessable_entity` without region/size/image or with a bad name); `DELETE /v2/droplets/{id}`
 * → 204 (404 `not_found`); `DELETE /v2/tags/{tag}/resources` → 204; every answer carries
 * `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` (epoch seconds), and a 429
 * `too_many_requests` carries `Retry-After` (seconds). New droplets are `new`, then `active`.
 *
 * Faults are queued per route: the next matching requests answer 429, 500, are carried out and
 * never answered (a create that times out on the client but made the droplet), or are carried
 * out only after a delay and never answered (a create that lands after the client gave up).
 */

export interface FakeDroplet {
  id: number;
  name: string;
  status: 'new' | 'active';
  created_at: string;
  tags: string[];
  region: { slug: string };
  size_slug: string;
  image: { slug: string };
  networks: { v4: { ip_address: string; type: 'private' | 'public' }[] };
}

type Fault =
  | { kind: 'rate-limit'; retryAfterSeconds: number }
  | { kind: 'error'; status: number }
  | { kind: 'hang' }
  /**
   * Carried out only `afterMs` after the request arrived, and never answered: a create the API
   * commits after the client has given up (set `afterMs` above the client's timeout).
   */
  | { kind: 'late'; afterMs: number };

export interface DigitalOceanApi {
  readonly url: string;
  readonly token: string;
  readonly droplets: FakeDroplet[];
  /** Every request as "METHOD path" (with query), in order. */
  readonly log: string[];
  /**
   * The next `count` requests whose "METHOD path" starts with `prefix` get this fault, after
   * `skip` such requests were answered normally (the second create of a change fails: skip 1).
   */
  fault(prefix: string, fault: Fault, count?: number, skip?: number): void;
  /** Adds a droplet as Terraform would (with the tag, status active). */
  seed(name: string, tags: string[]): FakeDroplet;
  close(): Promise<void>;
}

export async function startDigitalOceanApi(
  options: { activeAfterMs?: number; pageSize?: number } = {},
): Promise<DigitalOceanApi> {
  const token = 'do-contract-token';
  const droplets: FakeDroplet[] = [];
  const log: string[] = [];
  const faults: { prefix: string; fault: Fault; left: number; skip: number }[] = [];
  const hung = new Set<ServerResponse>();
  let nextId = 1000;
  const activeAfter = options.activeAfterMs ?? 200;

  const make = (name: string, tags: string[], status: FakeDroplet['status']): FakeDroplet => {
    const id = nextId++;
    const d: FakeDroplet = {
      id,
      name,
      status,
      created_at: new Date().toISOString(),
      tags,
      region: { slug: 'fra1' },
      size_slug: 's-1vcpu-1gb',
      image: { slug: 'debian-12-x64' },
      networks: { v4: [{ ip_address: `10.110.0.${id % 250}`, type: 'private' }] },
    };
    droplets.push(d);
    return d;
  };

  const send = (
    res: ServerResponse,
    status: number,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    res.writeHead(status, {
      'ratelimit-limit': '5000',
      'ratelimit-remaining': '4999',
      'ratelimit-reset': String(Math.ceil(Date.now() / 1000) + 60),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    });
    res.end(body === undefined ? undefined : JSON.stringify(body));
  };
  const error = (
    res: ServerResponse,
    status: number,
    id: string,
    message: string,
    headers?: Record<string, string>,
  ) => send(res, status, { id, message, request_id: `req-${log.length}` }, headers);

  async function body(req: IncomingMessage): Promise<unknown> {
    let text = '';
    for await (const chunk of req) text += chunk;
    try {
      return text === '' ? null : JSON.parse(text);
    } catch {
      return undefined;
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const line = `${req.method} ${url.pathname}${url.search}`;
    log.push(line);
    if (req.headers.authorization !== `Bearer ${token}`)
      return error(res, 401, 'unauthorized', 'Unable to authenticate you.');
    const payload = await body(req);
    let fault = faults.find((f) => f.left > 0 && line.startsWith(f.prefix));
    if (fault !== undefined && fault.skip > 0) {
      fault.skip--;
      fault = undefined;
    }
    let hang = false;
    if (fault !== undefined) {
      fault.left--;
      if (fault.fault.kind === 'rate-limit')
        return error(res, 429, 'too_many_requests', 'API Rate limit exceeded.', {
          'retry-after': String(fault.fault.retryAfterSeconds),
          'ratelimit-remaining': '0',
        });
      if (fault.fault.kind === 'error')
        return error(res, fault.fault.status, 'server_error', 'Unexpected server-side error');
      if (fault.fault.kind === 'late') {
        const { afterMs } = fault.fault;
        await new Promise((resolve) => setTimeout(resolve, afterMs));
      }
      hang = true;
    }
    const answer = (status: number, b?: unknown) => {
      if (hang)
        hung.add(res); // carried out, never answered
      else send(res, status, b);
    };

    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'v2')
      return error(res, 404, 'not_found', 'The resource you were accessing could not be found.');
    if (parts[1] === 'droplets' && parts.length === 2 && req.method === 'GET') {
      const tag = url.searchParams.get('tag_name');
      const perPage = Math.min(200, Number(url.searchParams.get('per_page') ?? 20), options.pageSize ?? 200);
      const page = Number(url.searchParams.get('page') ?? 1);
      const matching = droplets.filter((d) => tag === null || d.tags.includes(tag));
      const slice = matching.slice((page - 1) * perPage, page * perPage);
      const next = page * perPage < matching.length;
      return answer(200, {
        droplets: slice,
        links: next ? { pages: { next: `${url.pathname}?page=${page + 1}&per_page=${perPage}` } } : {},
        meta: { total: matching.length },
      });
    }
    if (parts[1] === 'droplets' && parts.length === 2 && req.method === 'POST') {
      const p = payload as
        | { name?: unknown; region?: unknown; size?: unknown; image?: unknown; tags?: unknown }
        | null
        | undefined;
      if (p === undefined || p === null) return error(res, 400, 'bad_request', 'Unparseable JSON body.');
      for (const field of ['region', 'size', 'image'] as const)
        if (typeof p[field] !== 'string' || p[field] === '')
          return error(
            res,
            422,
            'unprocessable_entity',
            `You specified an invalid ${field} for Droplet creation.`,
          );
      if (typeof p.name !== 'string' || !/^[a-zA-Z0-9.-]{1,255}$/.test(p.name))
        return error(res, 422, 'unprocessable_entity', 'Name is not a valid hostname.');
      const tags = Array.isArray(p.tags) ? p.tags.filter((t): t is string => typeof t === 'string') : [];
      const d = make(p.name, tags, 'new');
      setTimeout(() => {
        d.status = 'active';
      }, activeAfter).unref();
      return answer(202, { droplet: d, links: { actions: [{ id: d.id + 1, rel: 'create' }] } });
    }
    if (parts[1] === 'droplets' && parts.length === 3 && req.method === 'DELETE') {
      const index = droplets.findIndex((d) => String(d.id) === parts[2]);
      if (index < 0)
        return error(res, 404, 'not_found', 'The resource you were accessing could not be found.');
      droplets.splice(index, 1);
      return answer(204);
    }
    if (parts[1] === 'tags' && parts[3] === 'resources' && parts.length === 4 && req.method === 'DELETE') {
      const tag = decodeURIComponent(parts[2] ?? '');
      const resources = (payload as { resources?: { resource_id: string; resource_type: string }[] } | null)
        ?.resources;
      if (!Array.isArray(resources)) return error(res, 422, 'unprocessable_entity', 'resources is required');
      for (const r of resources) {
        const d = droplets.find((x) => String(x.id) === r.resource_id && r.resource_type === 'droplet');
        if (d !== undefined) d.tags = d.tags.filter((t) => t !== tag);
      }
      return answer(204);
    }
    return error(res, 404, 'not_found', 'The resource you were accessing could not be found.');
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) error(res, 500, 'server_error', String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    droplets,
    log,
    fault(prefix, fault, count = 1, skip = 0) {
      faults.push({ prefix, fault, left: count, skip });
    },
    seed: (name, tags) => make(name, tags, 'active'),
    close: () =>
      new Promise((resolve) => {
        for (const res of hung) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

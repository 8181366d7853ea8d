import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';

/**
 * Generated input for every route's "never a 5xx" test. Plain `fc.string()` is printable ASCII and
 * `unit: 'binary'` almost never yields the strings that break systems, so the classic troublemakers
 * are mixed in on purpose (decision 0011): NUL and the other C0/C1 controls, lone and reversed
 * surrogates, 4-byte characters, combining sequences, bidi overrides, BOM, strings at and past every
 * length limit and huge ones, numbers at and past every limit, `__proto__`/`constructor` keys, deeply
 * nested JSON and bodies that are not UTF-8.
 */

/** Runs per route and engine; `FUZZ_RUNS=20000 npm test -- test/**\/fuzz.test.ts` for a long run. */
export const fuzzRuns = Number(process.env.FUZZ_RUNS ?? 1000);

const c0 = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i));
const c1 = Array.from({ length: 33 }, (_, i) => String.fromCharCode(0x7f + i));
const loneSurrogates = ['\ud800', '\udbff', '\udc00', '\udfff', '\ud83d', '\ude00'];
const fourByte = ['😀', '𝕳', '𠀋', '\u{10ffff}', '\u{1f1fa}\u{1f1f8}', '👩‍👩‍👧‍👦'];
const combining = [
  'e\u0301',
  'a\u0308\u0323',
  'Z\u0351\u0352\u0353\u0354\u0355\u0356\u0357',
  '\u0301',
  '\u200d',
];
const bidi = ['\u202e', '\u202d', '\u2066', '\u2067', '\u2068', '\u2069', '\u200f', '\u200e', '\u061c'];
const invisible = ['\ufeff', '\u200b', '\u00a0', '\u2028', '\u2029', '\ufffd', '\ufffe', '\uffff'];

/** Single troublesome characters (or short sequences) to build strings from. */
export const troubleUnit: fc.Arbitrary<string> = fc.constantFrom(
  ...c0,
  ...c1,
  ...loneSurrogates,
  ...fourByte,
  ...combining,
  ...bidi,
  ...invisible,
);

/** Lengths at and just past the service's limits (passwords, usernames, skus, names, keys, cursors). */
const lengths = [0, 1, 2, 3, 7, 8, 50, 51, 63, 64, 65, 128, 129, 200, 201, 255, 256, 512, 513, 5000, 5001];

/** Strings that break systems: troublemaker characters alone, embedded, reversed pairs, sizes. */
export const troublemakerString: fc.Arbitrary<string> = fc.oneof(
  troubleUnit,
  fc.string({ unit: fc.oneof(troubleUnit, fc.string({ minLength: 1, maxLength: 1 })), maxLength: 40 }),
  fc.tuple(fc.string({ maxLength: 10 }), troubleUnit, fc.string({ maxLength: 10 })).map((p) => p.join('')),
  fc.constantFrom(
    '\u0000',
    'a\u0000b',
    '\u0000'.repeat(100),
    '\ude00\ud83d', // a reversed surrogate pair
    'a\ud83d', // a high surrogate at the end
    '\ud83d\ud83d\ude00',
    '\ufeff{"a":1}',
    'admin\u202e',
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    '%',
    '_',
    '\\',
    '%00',
    '%C0%80', // overlong NUL, percent-encoded
    '\u0024{jndi:ldap://x}', // ${…} written escaped
    '<script>alert(1)</script>',
    '../../etc/passwd',
    '00000000-0000-0000-0000-000000000000',
    '-1',
    '1e309',
    'NaN',
    'Infinity',
    '__proto__',
    'constructor',
  ),
  fc
    .constantFrom(...lengths)
    .chain((n) =>
      fc
        .constantFrom('a', 'é', '😀', '\u0000', ' ')
        .map((ch) => ch.repeat(Math.max(0, Math.ceil(n / ch.length)))),
    ),
);

/** Huge strings, for bodies: under and just over the 100 KiB body limit (rare: they are slow to send). */
export const hugeString: fc.Arbitrary<string> = fc.constantFrom(60_000, 103_000).map((n) => 'x'.repeat(n));

/** Numbers at and past every limit the service has (and the ones JSON and JavaScript get wrong). */
export const limitNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(
    0,
    -0,
    1,
    -1,
    0.5,
    1.5,
    0.001,
    19.99,
    20,
    50,
    51,
    100,
    101,
    1000,
    1001,
    99_999_999.99,
    100_000_000,
    1e9,
    1e9 + 1,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32,
    Number.MAX_SAFE_INTEGER,
    Number.MAX_SAFE_INTEGER + 2,
    -Number.MAX_SAFE_INTEGER - 2,
    1e21,
    1e308,
    -1e308,
    Number.MIN_VALUE,
  ),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
);

/** Numbers written as text, as a query string or a careless client sends them. */
export const limitNumberText: fc.Arbitrary<string> = fc.oneof(
  limitNumber.map(String),
  fc.constantFrom(
    '1e309',
    '-1e309',
    'Infinity',
    '-Infinity',
    'NaN',
    '0x10',
    '1_000',
    ' 1',
    '1 ',
    '+1',
    '01',
    '1.',
    '.5',
  ),
);

/** An object with own `__proto__`, `constructor` or `prototype` keys (JSON.stringify keeps them). */
export const poisonedObject: fc.Arbitrary<Record<string, unknown>> = fc
  .tuple(fc.constantFrom('__proto__', 'constructor', 'prototype'), fc.jsonValue(), fc.boolean())
  .map(([key, value, nested]) => {
    const object: Record<string, unknown> = {};
    const inner = nested ? { prototype: { polluted: true } } : value;
    Object.defineProperty(object, key, {
      value: inner,
      enumerable: true,
      configurable: true,
      writable: true,
    });
    return object;
  });

/** Values of every JSON type, mixed with every troublemaker. */
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue() },
  { weight: 4, arbitrary: fc.string() },
  { weight: 4, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 12, arbitrary: troublemakerString },
  { weight: 1, arbitrary: hugeString },
  { weight: 4, arbitrary: limitNumber },
  { weight: 4, arbitrary: limitNumberText },
  { weight: 4, arbitrary: poisonedObject },
  { weight: 4, arbitrary: fc.constantFrom(null, true, false, [], {}, [null], { '': '' }) },
);

/** Text for any text field: mostly troublemakers, some plain. */
export const nastyText: fc.Arbitrary<string> = fc.oneof(fc.string(), {
  weight: 3,
  arbitrary: troublemakerString,
});

/** Objects that have some of the expected keys (so validation passes more often) plus junk. */
export function bodyFor(
  keys: readonly string[],
  valid: Record<string, fc.Arbitrary<unknown>> = {},
): fc.Arbitrary<unknown> {
  // Valid values most of the time, so whole bodies often pass validation and reach the database.
  const fields = Object.fromEntries(
    keys.map((k) => {
      const good = valid[k];
      if (good === undefined) return [k, nastyValue];
      const troubled = good.map((v) => (typeof v === 'string' ? insertTrouble(v) : v));
      return [
        k,
        fc.oneof(
          { weight: 4, arbitrary: good },
          { weight: 2, arbitrary: nastyValue },
          { weight: 1, arbitrary: troubled },
        ),
      ];
    }),
  );
  return fc.oneof(
    fc.record(fields, { requiredKeys: [] }),
    fc.record({ ...fields, extra: nastyValue }, { requiredKeys: [] }),
    fc
      .record(fields, { requiredKeys: [] })
      .chain((body) => poisonedObject.map((poison) => Object.assign(poison, body))),
    nastyValue,
  );
}

/** A valid value with a NUL or a lone surrogate inside, so the rest of the body can pass validation. */
function insertTrouble(text: string): string {
  const at = Math.floor(text.length / 2);
  return `${text.slice(0, at)}${text.length % 2 === 0 ? '\u0000' : '\ud800'}${text.slice(at)}`;
}

/** Percent-encodes any string, lone surrogates included (encodeURIComponent throws on those). */
export function percentEncode(text: string): string {
  let out = '';
  for (const ch of text) {
    if (/^[\ud800-\udfff]$/.test(ch)) {
      // The CESU-8 bytes of a lone surrogate: not UTF-8, so a decoder must refuse or replace them.
      const code = ch.charCodeAt(0);
      out += [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)]
        .map((b) => `%${b.toString(16).toUpperCase()}`)
        .join('');
    } else out += encodeURIComponent(ch);
  }
  return out;
}

export const pathSegment: fc.Arbitrary<string> = fc.oneof(
  fc.uuid(),
  fc.uuid().map((id) => id.toUpperCase()),
  fc.string({ minLength: 1 }).map((s) => encodeURIComponent(s)),
  troublemakerString.filter((s) => s.length > 0 && s.length < 1000).map(percentEncode),
  fc.uuid().map((id) => `${id}%00`),
  fc.constantFrom('0', '-1', '%00', '%C0%80', '%ED%A0%80', '%FF', '..', 'null', '%2e%2e', 'a'.repeat(300)),
);

/** Query strings with the given keys (and an extra one), values of every troublesome kind. */
export function queryOf(keys: readonly string[], values: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc
    .array(fc.tuple(fc.constantFrom(...keys, 'extra', '__proto__', 'constructor'), values), {
      maxLength: keys.length + 2,
    })
    .map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${percentEncode(v)}`).join('&'));
}

/** Header values Node accepts on the wire (no CR, LF or NUL, nothing beyond Latin-1). */
export const headerText = fc.string({ unit: 'binary' }).map((s) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, ''));

/**
 * Header values that only a proxy or an in-process caller could hand over: NUL, lone surrogates and
 * other troublemakers (CR and LF removed: they would split the header).
 */
export const troublemakerHeader: fc.Arbitrary<string> = fc.oneof(
  headerText,
  troublemakerString.filter((s) => s.length < 10_000).map((s) => s.replace(/[\r\n]/g, '')),
);

const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function isUnstorable(text: string): boolean {
  // Written independently of the service's check (which uses String#isWellFormed).
  return text.includes('\u0000') || loneSurrogate.test(text);
}

/** Every string (and property name) in a JSON value, iteratively (bodies may be deeply nested). */
function* strings(value: unknown): Generator<string> {
  const stack = [value];
  while (stack.length > 0) {
    const current = stack.pop();
    if (typeof current === 'string') yield current;
    else if (typeof current === 'object' && current !== null) {
      for (const [key, child] of Object.entries(current)) {
        yield key;
        stack.push(child);
      }
    }
  }
}

/** A property name as the service writes it in an error path: RFC 6901, then JSON escapes for bad text. */
function pointerSegment(key: string): string {
  const escaped = key.replaceAll('~', '~0').replaceAll('/', '~1');
  return isUnstorable(escaped) ? JSON.stringify(escaped).slice(1, -1) : escaped;
}

/** The value at a JSON pointer, or the property name when the pointer names a bad key. */
function atPointer(root: unknown, pointer: string): unknown {
  let current = root;
  for (const segment of pointer.split('/').slice(1)) {
    if (typeof current !== 'object' || current === null) return undefined;
    const own = Object.keys(current).find((k) => pointerSegment(k) === segment);
    if (own === undefined) return undefined;
    const next = (current as Record<string, unknown>)[own];
    if (isUnstorable(own) && !(typeof next === 'string' && isUnstorable(next))) return own;
    current = next;
  }
  return current;
}

/** Percent-decoding as Fastify's query parser does it: text that does not decode stays as sent. */
function decodeQueryPart(text: string): string {
  const spaced = text.replaceAll('+', ' ');
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

/** A query string decoded into an object, repeated keys as arrays (as Fastify's parser does). */
function parseQuery(raw: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const pair of raw.split('&')) {
    if (pair === '') continue;
    const at = pair.indexOf('=');
    const key = decodeQueryPart(at === -1 ? pair : pair.slice(0, at));
    const value = at === -1 ? '' : decodeQueryPart(pair.slice(at + 1));
    const seen = Object.hasOwn(query, key) ? query[key] : undefined;
    const merged = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
    Object.defineProperty(query, key, {
      value: merged,
      enumerable: true,
      configurable: true,
      writable: true,
    });
  }
  return query;
}

interface Expectation {
  /** The request carries text the database cannot store, or a JSON body that is not UTF-8. */
  readonly unstorable: boolean | 'body-not-utf8';
  readonly parts: { querystring: unknown; headers: unknown; body: unknown; path: string };
}

/** What the service must see in a request, decoded as Fastify decodes it; undefined when undecidable. */
function expectationOf(options: InjectOptions): Expectation | undefined {
  const url = String(options.url ?? '/');
  const [rawPath = '/', rawQuery = ''] = url.split('?', 2);
  let path: string;
  try {
    const segments = rawPath.split('/').map(decodeURIComponent);
    // The router refuses a parameter longer than its maxParamLength (200) before any hook runs.
    if (segments.some((segment) => segment.length > 200)) return undefined;
    path = segments.join('/');
  } catch {
    return undefined; // an undecodable URL is refused by the router (400) before anything else
  }
  const querystring = parseQuery(rawQuery);
  const headers = Object.fromEntries(
    Object.entries(options.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
  );
  let body: unknown;
  if (options.payload !== undefined) {
    const type = String(headers['content-type'] ?? '');
    if (!type.startsWith('application/json')) return undefined; // 415 first
    const bytes = Buffer.isBuffer(options.payload) ? options.payload : Buffer.from(String(options.payload));
    if (bytes.length > 100 * 1024) return undefined; // 413 first
    if (!isUtf8(bytes)) return { unstorable: 'body-not-utf8', parts: { querystring, headers, body, path } };
    try {
      body = JSON.parse(bytes.toString('utf8'));
    } catch {
      return undefined; // invalid JSON: 400 from the parser
    }
    for (const text of strings(body)) {
      if (text === '__proto__' || text === 'constructor') return undefined; // poisoning: 400 first
    }
  }
  const all = [path, ...strings(querystring), ...strings(headers), ...strings(body)];
  return { unstorable: all.some(isUnstorable), parts: { querystring, headers, body, path } };
}

export interface FuzzReport {
  readonly runs: number;
  /** Requests that carried a NUL or a lone surrogate and were answered 400 naming the field. */
  readonly refusedUnstorable: number;
  readonly statuses: Readonly<Record<number, number>>;
}

/**
 * Runs `runs` generated requests and fails on the first 5xx, showing it. A request that reaches a
 * route with a NUL or a lone surrogate in its path, query, headers or JSON body must be a 400
 * VALIDATION_FAILED whose first error names a field holding such text.
 */
export async function neverServerError(
  app: FastifyInstance,
  request: fc.Arbitrary<InjectOptions>,
  runs = fuzzRuns,
): Promise<FuzzReport> {
  const statuses: Record<number, number> = {};
  let refusedUnstorable = 0;
  await fc.assert(
    fc.asyncProperty(request, async (options) => {
      const res = await app.inject(options);
      // The message is built only when a check fails (bodies can be 100 KiB).
      const shown = () =>
        `${res.statusCode} for ${JSON.stringify(options).slice(0, 500)}: ${res.body.slice(0, 500)}`;
      const check = (ok: boolean, why = '') => {
        if (!ok) assert.fail(`${why}${shown()}`);
      };
      check(res.statusCode < 500);
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      // Unmatched routes (404, 405) and unparseable bodies never reach the check.
      if (res.statusCode === 404 || res.statusCode === 405) return;
      const expected = expectationOf(options);
      if (expected === undefined || expected.unstorable === false) return;
      check(res.statusCode === 400, 'expected 400: ');
      const problem = res.json() as { code: string; errors?: Array<{ path: string; message: string }> };
      check(problem.code === 'VALIDATION_FAILED');
      const first = problem.errors?.[0];
      if (first === undefined) return assert.fail(`no field named: ${shown()}`);
      if (expected.unstorable === 'body-not-utf8') {
        check(first.path === '/body');
        refusedUnstorable++;
        return;
      }
      const [, part = '', ...rest] = first.path.split('/');
      const pointer = rest.length === 0 ? '' : `/${rest.join('/')}`;
      if (part === 'params') {
        check(isUnstorable(expected.parts.path));
      } else {
        check(['querystring', 'headers', 'body'].includes(part));
        const named = atPointer(expected.parts[part as 'querystring' | 'headers' | 'body'], pointer);
        check(typeof named === 'string' && isUnstorable(named), `${first.path} names no bad text: `);
      }
      refusedUnstorable++;
    }),
    { numRuns: runs },
  );
  return { runs, refusedUnstorable, statuses };
}

/** One line for a test's diagnostics: runs, how many carried unstorable text, statuses seen. */
/** One test per case: its generated requests never get a 5xx (the report goes to the diagnostics). */
export function fuzzEachRoute(
  engine: string,
  app: () => FastifyInstance,
  cases: ReadonlyArray<readonly [string, () => fc.Arbitrary<InjectOptions>]>,
): void {
  for (const [name, arbitrary] of cases) {
    test(`${name}: ${fuzzRuns} generated requests, no 5xx, unstorable text refused`, async (t) => {
      t.diagnostic(`${name} on ${engine}: ${describeReport(await neverServerError(app(), arbitrary()))}`);
    });
  }
}

export function describeReport(report: FuzzReport): string {
  const statuses = Object.entries(report.statuses)
    .map(([status, count]) => `${status}×${count}`)
    .join(' ');
  return `${report.runs} generated requests; ${report.refusedUnstorable} with NUL/lone surrogates refused 400 naming the field; statuses ${statuses}`;
}

/** A JSON body most of the time; otherwise deep JSON, bytes that are not UTF-8, text, other types. */
function payload(body: fc.Arbitrary<unknown>) {
  return fc.oneof(
    {
      weight: 8,
      arbitrary: body.map((b) => ({ payload: JSON.stringify(b) ?? 'null', type: 'application/json' })),
    },
    fc.record({
      payload: fc.integer({ min: 1, max: 50_000 }).chain((depth) =>
        fc.constantFrom('[]', '{}').map((pair) => {
          const [open, close] = pair === '[]' ? ['[', ']'] : ['{"a":', '}'];
          return `${open.repeat(depth)}${pair === '[]' ? '"\\u0000"' : '"\\u0000"'}${close.repeat(depth)}`;
        }),
      ),
      type: fc.constant('application/json'),
    }),
    fc.record({
      payload: fc
        .tuple(
          fc.string({ maxLength: 10 }),
          fc.constantFrom([0xc0, 0x80], [0xed, 0xa0, 0x80], [0xff], [0xe2, 0x82]),
        )
        .map(([prefix, bytes]) =>
          Buffer.concat([
            Buffer.from(`{"${prefix.replace(/["\\]/g, '')}":"`),
            Buffer.from(bytes),
            Buffer.from('"}'),
          ]),
        ),
      type: fc.constant('application/json'),
    }),
    fc.record({
      payload: fc.oneof(fc.string(), troublemakerString),
      type: fc.constantFrom(
        'application/json',
        'application/json; charset=utf-8',
        'text/plain',
        'application/x-www-form-urlencoded',
      ),
    }),
  );
}

/**
 * A request builder for one app: every request gets one of the `auth` header sets, and a body (when
 * one is given) that is usually JSON of the expected shape and sometimes anything else.
 */
export function requestsWith(auth: () => fc.Arbitrary<Record<string, string>>) {
  return (
    method: InjectOptions['method'],
    url: fc.Arbitrary<string>,
    body?: fc.Arbitrary<unknown>,
    extraHeaders: fc.Arbitrary<Record<string, string>> = fc.constant({}),
  ): fc.Arbitrary<InjectOptions> =>
    fc
      .record({
        url,
        headers: auth(),
        extra: extraHeaders,
        agent: fc.option(troublemakerHeader, { nil: undefined, freq: 5 }),
        body: body === undefined ? fc.constant(undefined) : payload(body),
      })
      .map(({ url: path, headers, extra, agent, body: sent }) => ({
        method,
        url: path,
        headers: {
          ...headers,
          ...extra,
          ...(agent === undefined ? {} : { 'user-agent': agent }),
          ...(sent === undefined ? {} : { 'content-type': sent.type }),
        },
        ...(sent === undefined ? {} : { payload: sent.payload }),
      }));
}

import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';

/** Values of every JSON type and the strings that tend to break parsers and queries. */
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue(),
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.constantFrom(
    '',
    ' ',
    "' OR 1=1 --",
    '%',
    '_',
    '\\',
    '\u0000',
    '😀',
    'a'.repeat(10_000),
    '00000000-0000-0000-0000-000000000000',
    '-1',
    '1e309',
    'NaN',
    '__proto__',
    null,
    true,
    -1,
    0,
    1e308,
    Number.MAX_SAFE_INTEGER + 2,
    [],
    {},
  ),
);

/** Objects that have some of the expected keys (so validation passes more often) plus junk. */
export function bodyFor(
  keys: readonly string[],
  valid: Record<string, fc.Arbitrary<unknown>> = {},
): fc.Arbitrary<unknown> {
  const fields = Object.fromEntries(
    keys.map((k) => [k, valid[k] === undefined ? nastyValue : fc.oneof(valid[k], nastyValue)]),
  );
  return fc.oneof(
    fc.record(fields, { requiredKeys: [] }),
    fc.record({ ...fields, extra: nastyValue }, { requiredKeys: [] }),
    nastyValue,
  );
}

export const pathSegment: fc.Arbitrary<string> = fc.oneof(
  fc.uuid(),
  fc.string({ minLength: 1 }).map((s) => encodeURIComponent(s)),
  fc.constantFrom('0', '-1', '%00', '..', 'null', 'a'.repeat(300)),
);

/** Runs `runs` generated requests and fails on the first 5xx, showing it. */
export async function neverServerError(
  app: FastifyInstance,
  request: fc.Arbitrary<InjectOptions>,
  runs = 1000,
): Promise<void> {
  await fc.assert(
    fc.asyncProperty(request, async (options) => {
      const res = await app.inject(options);
      assert.ok(
        res.statusCode < 500,
        `${res.statusCode} for ${JSON.stringify(options).slice(0, 500)}: ${res.body}`,
      );
    }),
    { numRuns: runs },
  );
}

/** A JSON body most of the time; otherwise text that is not JSON, or a content type that is not. */
function payload(body: fc.Arbitrary<unknown>) {
  return fc.oneof(
    {
      weight: 4,
      arbitrary: body.map((b) => ({ payload: JSON.stringify(b) ?? 'null', type: 'application/json' })),
    },
    fc.record({
      payload: fc.string(),
      type: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
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
        body: body === undefined ? fc.constant(undefined) : payload(body),
      })
      .map(({ url: path, headers, extra, body: sent }) => ({
        method,
        url: path,
        headers: { ...headers, ...extra, ...(sent === undefined ? {} : { 'content-type': sent.type }) },
        ...(sent === undefined ? {} : { payload: sent.payload }),
      }));
}

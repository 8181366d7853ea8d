import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import {
  describeReport,
  fuzzRuns,
  nastyText,
  neverServerError,
  queryOf,
  requestsWith,
  troublemakerHeader,
} from '../support/fuzz.js';

/**
 * The platform routes under generated requests: troublesome query strings, headers (request ids,
 * origins, bearer tokens) and bodies nobody asked for. Never a 5xx; text the databases cannot store
 * is a 400 naming it, here too.
 */
for (const engine of engines) {
  describe(`platform routes under generated input on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildTestApp({ engine });
    });
    after(() => app?.close());

    const headers = () =>
      fc.dictionary(
        fc.constantFrom(
          'x-request-id',
          'origin',
          'authorization',
          'accept',
          'if-none-match',
          'x-forwarded-for',
        ),
        troublemakerHeader,
        { maxKeys: 3 },
      );
    const request = requestsWith(headers);
    const query = queryOf(['limit', 'q', 'format'], nastyText).map((q) => (q === '' ? '' : `?${q}`));

    const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
      [
        'GET /health',
        () =>
          request(
            'GET',
            query.map((q) => `/health${q}`),
          ),
      ],
      [
        'GET /ready',
        () =>
          request(
            'GET',
            query.map((q) => `/ready${q}`),
          ),
      ],
      [
        'GET /metrics',
        () =>
          request(
            'GET',
            query.map((q) => `/metrics${q}`),
          ),
      ],
      [
        'GET /docs/openapi.json',
        () =>
          request(
            'GET',
            query.map((q) => `/docs/openapi.json${q}`),
          ),
      ],
    ];

    for (const [name, arbitrary] of cases) {
      test(`${name}: ${fuzzRuns} generated requests, no 5xx, unstorable text refused`, async (t) => {
        t.diagnostic(`${name} on ${engine}: ${describeReport(await neverServerError(app, arbitrary()))}`);
      });
    }
  });
}

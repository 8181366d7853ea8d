import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifyInstance } from 'fastify';

/**
 * Two validators: JSON bodies are checked strictly (a string is not a number), while query strings,
 * path parameters and headers — text by nature — are coerced to the schema's types. Unknown body
 * properties are rejected, not silently dropped, so a client learns that `role` cannot be set.
 * allErrors stays off: reporting every error of a hostile payload is a denial-of-service lever.
 * NaN and Infinity are never numbers, and a uuid is the plain lower-case form only.
 */
function createAjv(coerceTypes: boolean | 'array'): Ajv {
  const ajv = new Ajv({
    coerceTypes,
    useDefaults: true,
    removeAdditional: false,
    allErrors: false,
    strict: true,
    strictNumbers: true,
  });
  addFormats.default(ajv, ['date-time', 'email', 'uri']);
  // ajv-formats' uuid also accepts `urn:uuid:…`, which PostgreSQL then refuses (a 500). Ids are
  // written lower-case by the service; an upper-case one would match on PostgreSQL but not SQLite.
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  return ajv;
}

/** The first property of a flat object (query, params, headers) that holds NaN or ±Infinity. */
function nonFiniteProperty(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  for (const [key, value] of Object.entries(data)) {
    if (typeof value === 'number' && !Number.isFinite(value)) return key;
  }
  return undefined;
}

/**
 * ajv coerces the text "1e309" or "Infinity" to Infinity and then checks `maximum` against the
 * original string, so it passes; the value would reach the query (a 500). Coerced text gets one
 * more check here.
 */
function compileText(ajv: Ajv, schema: object): ValidateFunction {
  const validate = ajv.compile(schema);
  const checked = ((data: unknown) => {
    if (!validate(data)) {
      checked.errors = validate.errors;
      return false;
    }
    const key = nonFiniteProperty(data);
    checked.errors =
      key === undefined
        ? null
        : [
            {
              instancePath: `/${key}`,
              message: 'must be a finite number',
              keyword: 'type',
              schemaPath: '#',
              params: {},
            },
          ];
    return key === undefined;
  }) as ValidateFunction;
  return checked;
}

export function validation(app: FastifyInstance): void {
  const bodyAjv = createAjv(false);
  const textAjv = createAjv('array');
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart === 'body' ? bodyAjv.compile(schema as object) : compileText(textAjv, schema as object),
  );
}

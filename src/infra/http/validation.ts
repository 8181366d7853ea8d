import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifyInstance } from 'fastify';

/**
 * Two validators: JSON bodies are checked strictly (a string is not a number), while query strings,
 * path parameters and headers — text by nature — are coerced to the schema's types. Unknown body
 * properties are rejected, not silently dropped, so a client learns that `role` cannot be set.
 * allErrors stays off: reporting every error of a hostile payload is a denial-of-service lever.
 */
function createAjv(coerceTypes: boolean | 'array'): Ajv {
  const ajv = new Ajv({
    coerceTypes,
    useDefaults: true,
    removeAdditional: false,
    allErrors: false,
    strict: true,
  });
  addFormats.default(ajv, ['date-time', 'email', 'uuid', 'uri']);
  return ajv;
}

export function validation(app: FastifyInstance): void {
  const bodyAjv = createAjv(false);
  const textAjv = createAjv('array');
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? bodyAjv : textAjv).compile(schema as object),
  );
}

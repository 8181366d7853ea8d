import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { pageSecurityHeaders } from './http/security-headers.js';

const description = `
Shipshape's HTTP contract. Conventions:

- JSON in and out. Errors are RFC 9457 problem details (\`application/problem+json\`) with a stable
  \`code\`; \`405 METHOD_NOT_ALLOWED\` (with an \`Allow\` header) answers a known path with the wrong method.
- Every response carries \`x-request-id\`: the caller's when it is 1–128 characters of
  \`[A-Za-z0-9._:-]\`, else a new UUID.
- IDs are UUIDs, timestamps ISO 8601 UTC, money a decimal string with two places.
- Lists are cursor-paginated: \`limit\` 1–100 (default 20) and an opaque \`cursor\`.
- \`/api\` routes are rate-limited per client IP; responses carry \`RateLimit-Limit\`,
  \`RateLimit-Remaining\` and \`RateLimit-Reset\`, and a 429 carries \`Retry-After\`.
`;

interface OpenApiOperation {
  parameters?: Array<{ required?: boolean; schema?: { default?: unknown } }>;
  responses?: Record<string, { content?: Record<string, unknown> }>;
}

/**
 * Corrections to what @fastify/swagger derives from the route schemas, so that generated clients
 * get the contract right: error responses are `application/problem+json` (what the error handler
 * sends), and a query parameter with a default is optional for the client (`limit`).
 */
function correctDocument(document: { paths?: Record<string, Record<string, OpenApiOperation>> }) {
  for (const operations of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(operations)) {
      for (const parameter of operation.parameters ?? []) {
        if (parameter.schema?.default !== undefined) parameter.required = false;
      }
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        const json = response.content?.['application/json'];
        if (Number(status) >= 400 && json !== undefined && response.content !== undefined)
          response.content = { 'application/problem+json': json };
      }
    }
  }
  return document;
}

/** OpenAPI 3 generated from the route schemas that also validate requests; Swagger UI at /docs. */
export async function apiDocs(app: FastifyInstance, version: string): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Shipshape API', version, description },
      // Relative: the document describes whichever host serves it (the Host header is never reflected).
      servers: [{ url: '/', description: 'The service that serves this document' }],
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      },
    },
    // A collection route is registered as `/api/products` and `/api/products/` (Fastify's
    // prefixTrailingSlash 'both': old clients keep working); the document names the slashless one.
    transform: ({ schema, url }) => ({
      schema: schema as never,
      url: url.length > 1 && url.endsWith('/') ? url.slice(0, -1) : url,
    }),
    transformObject: (documentObject) =>
      correctDocument(
        'openapiObject' in documentObject ? (documentObject.openapiObject as never) : {},
      ) as never,
    refResolver: {
      // Shared schemas (Problem) keep their own names under components.schemas.
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
  });
  await app.register(fastifySwaggerUi, {
    routePrefix: '/docs',
    staticCSP: false,
    // Swagger UI is an HTML page: it gets the page headers (its own scripts and styles may load).
    uiHooks: {
      onRequest: (_request, reply, done) => {
        reply.headers(pageSecurityHeaders);
        done();
      },
    },
  });
  app.get('/docs/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}

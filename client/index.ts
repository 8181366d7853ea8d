// A typed client for the Shipshape API: openapi-fetch over the types `npm run client:generate`
// derives from the OpenAPI document the service serves (client/schema.ts, committed; a test fails
// when it is stale). Usage:
//
//   import { createShipshapeClient } from '../client/index.js';
//   const api = createShipshapeClient({ baseUrl: 'https://shop.example.com' });
//   const { data, error } = await api.GET('/api/products', { params: { query: { limit: 20 } } });
//
// `data` is typed by the 2xx schema, `error` by the problem+json schema of the error statuses.
import createClient, { type ClientOptions } from 'openapi-fetch';
import type { paths } from './schema.js';

export type { components, operations, paths } from './schema.js';

export function createShipshapeClient(options: ClientOptions = {}) {
  return createClient<paths>(options);
}

export type ShipshapeClient = ReturnType<typeof createShipshapeClient>;

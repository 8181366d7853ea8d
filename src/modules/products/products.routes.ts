import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Db } from '../../db/database.js';
import {
  representationOf,
  sendRepresentation,
  serializeWithSchema,
} from '../../infra/cache/representation.js';
import { noContent, problemResponses } from '../../infra/http/problem.js';
import type { ReadRouting } from '../../infra/read-your-writes.js';
import { NotFoundError } from '../../lib/errors.js';
import { pageSchema } from '../../lib/pagination.js';
import type { AuthDeps } from '../auth/auth.deps.js';
import { authenticate, requireRole } from '../auth/authenticate.js';
import type { ProductCache } from './products.cache.js';
import {
  CreateProductBody,
  ListProductsQuery,
  ProductIdParams,
  ProductSchema,
  UpdateProductBody,
} from './products.schema.js';
import * as productsService from './products.service.js';

export interface CatalogDeps {
  readonly db: Db;
  /** Where catalog reads run: a replica when fresh enough for the caller and the cache (replicas.ts). */
  readonly reads: ReadRouting;
  readonly currency: string;
  readonly cache: ProductCache;
}

const notModified = {
  type: 'null',
  description: 'Not modified: the `If-None-Match` ETag is current.',
} as const;

/**
 * `/api/products` (docs/api.md). Reads are public and served from the cache when warm: a hit sends the
 * stored body and ETag without touching the database. Writes are admin-only and invalidate the
 * cache before answering.
 */
export function productsRoutes(scope: FastifyInstance, auth: AuthDeps, deps: CatalogDeps): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const adminOnly = [authenticate(auth), requireRole('admin')];
  const tags = ['products'];
  const security = [{ bearerAuth: [] }];

  app.get(
    '/',
    {
      schema: {
        summary: 'List active products',
        operationId: 'listProducts',
        security: [],
        tags,
        description:
          'Active products in sku order, cursor-paginated. `q` matches the name or sku (case-insensitive). Answers carry an ETag; `If-None-Match` → 304.',
        querystring: ListProductsQuery,
        response: { 200: pageSchema(ProductSchema), 304: notModified, ...problemResponses(400) },
      },
    },
    async (request, reply) => {
      const listing = productsService.productListing(request.query);
      // With the primary unreachable, a replica behind the floor still answers, uncached (0096).
      const page = await deps.cache.page(listing, async (floor, uncacheable) => {
        const result = await deps.reads.read(
          request,
          (db) => productsService.listProducts(db, listing, deps.currency),
          floor,
          uncacheable,
        );
        return representationOf(serializeWithSchema(reply, 200, result));
      });
      return sendRepresentation(request, reply, page);
    },
  );

  app.get(
    '/:id',
    {
      schema: {
        summary: 'Read one product',
        operationId: 'getProduct',
        security: [],
        tags,
        description: 'One active product, with a strong ETag; `If-None-Match` → 304. Archived → 404.',
        params: ProductIdParams,
        response: { 200: ProductSchema, 304: notModified, ...problemResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const id = request.params.id.toLowerCase();
      const product = await deps.cache.product(id, async (floor, uncacheable) => {
        const row = await deps.reads.read(
          request,
          (db) => productsService.findProduct(db, id),
          floor,
          uncacheable,
        );
        if (row === undefined) return null;
        return representationOf(
          serializeWithSchema(reply, 200, productsService.toProduct(row, deps.currency)),
        );
      });
      if (product === null) throw new NotFoundError('No such product.');
      return sendRepresentation(request, reply, product);
    },
  );

  app.post(
    '/',
    {
      schema: {
        summary: 'Create a product (admin)',
        operationId: 'createProduct',
        tags,
        security,
        body: CreateProductBody,
        response: { 201: ProductSchema, ...problemResponses(400, 401, 403, 409) },
      },
      preValidation: adminOnly,
    },
    async (request, reply) => {
      const row = await productsService.createProduct(deps.db, request.body);
      await deps.cache.invalidate([row.id]);
      reply.code(201);
      return productsService.toProduct(row, deps.currency);
    },
  );

  app.patch(
    '/:id',
    {
      schema: {
        summary: 'Change a product (admin)',
        operationId: 'updateProduct',
        tags,
        security,
        description:
          'Changes any of the fields; `stock` is set, not added to. Cached copies are invalidated first.',
        params: ProductIdParams,
        body: UpdateProductBody,
        response: { 200: ProductSchema, ...problemResponses(400, 401, 403, 404, 409) },
      },
      preValidation: adminOnly,
    },
    async (request) => {
      const id = request.params.id.toLowerCase();
      const row = await productsService.updateProduct(deps.db, id, request.body);
      await deps.cache.invalidate([id]);
      return productsService.toProduct(row, deps.currency);
    },
  );

  app.delete(
    '/:id',
    {
      schema: {
        summary: 'Archive a product (admin)',
        operationId: 'archiveProduct',
        tags,
        security,
        description: 'Archives the product: no longer listed or orderable; past orders keep it.',
        params: ProductIdParams,
        response: { 204: noContent, ...problemResponses(400, 401, 403, 404) },
      },
      preValidation: adminOnly,
    },
    async (request, reply) => {
      const id = request.params.id.toLowerCase();
      await productsService.archiveProduct(deps.db, id);
      await deps.cache.invalidate([id]);
      reply.code(204);
    },
  );
}

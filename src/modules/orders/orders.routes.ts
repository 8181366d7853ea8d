import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { jsonContentType, serializeWithSchema } from '../../infra/cache/representation.js';
import { problem, problemContentType, problemResponses } from '../../infra/http/problem.js';
import type { ReadRouting } from '../../infra/read-your-writes.js';
import { AppError, ValidationError } from '../../lib/errors.js';
import { pageSchema } from '../../lib/pagination.js';
import type { AuthDeps } from '../auth/auth.deps.js';
import { authenticate, authOf, requireRole } from '../auth/authenticate.js';
import * as idempotency from '../idempotency/idempotency.service.js';
import {
  CreateOrderBody,
  CreateOrderHeaders,
  ListOrdersQuery,
  OrderIdParams,
  OrderSchema,
  UpdateOrderBody,
} from './orders.schema.js';
import * as ordersService from './orders.service.js';

const idempotencyScope = 'POST /api/orders';

/**
 * POST with an Idempotency-Key: claim the key, then place the order and store its exact response
 * bytes in the same transaction, and send those bytes. A business refusal (4xx) is stored and
 * replayed too; a 5xx releases the key so a retry starts afresh.
 */
async function placeIdempotently(
  deps: ordersService.OrdersDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  key: string,
  lines: readonly ordersService.OrderLine[],
): Promise<FastifyReply> {
  const { userId } = authOf(request);
  const begun = await idempotency.begin(
    deps.db,
    {
      userId,
      key,
      scope: idempotencyScope,
      fingerprint: idempotency.fingerprint(ordersService.orderRequestOf(lines)),
    },
    deps.idempotency,
  );
  if (begun.kind === 'replay') {
    deps.metrics.replayed.inc();
    return reply
      .code(begun.status)
      .header('idempotent-replayed', 'true')
      .type(begun.status < 400 ? jsonContentType : problemContentType)
      .send(begun.body);
  }
  const { hold } = begun;
  let body = '';
  try {
    await ordersService.placeOrder(deps, userId, lines, (order) => {
      body = serializeWithSchema(reply, 201, order);
      return idempotency.completion(hold, { status: 201, body }, deps.idempotency);
    });
  } catch (err) {
    if (
      err instanceof AppError &&
      err.status < 500 &&
      !(err instanceof idempotency.IdempotencyKeyInUseError)
    ) {
      const refusal = serializeWithSchema(
        reply,
        err.status,
        problem(err.status, err.code, err.message, request.id, err.options.errors),
      );
      await idempotency
        .complete(deps.db, hold, { status: err.status, body: refusal }, deps.idempotency)
        .catch(async (storeErr: unknown) => {
          // Not stored (hold lost, or the database failed): a retry will run the request again.
          request.log.warn({ err: storeErr }, 'could not store the idempotent response');
          await idempotency.release(deps.db, hold).catch(() => {});
        });
      deps.metrics.failed.inc({ reason: ordersService.failureReason(err) });
      return reply.code(err.status).type(problemContentType).send(refusal);
    }
    if (!(err instanceof idempotency.IdempotencyKeyInUseError)) {
      await idempotency.release(deps.db, hold).catch((releaseErr: unknown) => {
        request.log.warn(
          { err: releaseErr },
          'could not release the idempotency key; it frees itself when its lock expires',
        );
      });
    }
    throw err;
  }
  deps.metrics.created.inc();
  return reply.code(201).type(jsonContentType).send(body);
}

/** `/api/orders` (docs/api.md). */
/** How many times a header appears in a request (rawHeaders alternates names and values). */
function headerCount(rawHeaders: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count += 1;
  return count;
}

export function ordersRoutes(
  scope: FastifyInstance,
  auth: AuthDeps,
  deps: ordersService.OrdersDeps,
  reads: ReadRouting,
): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const requireAuth = authenticate(auth);
  const tags = ['orders'];
  const security = [{ bearerAuth: [] }];

  app.post(
    '/',
    {
      schema: {
        summary: 'Place an order',
        operationId: 'createOrder',
        tags,
        security,
        description:
          'Places an order: stock is taken and prices are read in one transaction. Unknown or archived product → 422 (`VALIDATION_FAILED`, the line in `errors[].path`); not enough stock → 409 `INSUFFICIENT_STOCK`; more than 10 units of a product while the `checkout-unit-limit` feature flag is on for the buyer → 422 (`VALIDATION_FAILED`, the quantity in `errors[].path`). Lines are answered in productId order. An `Idempotency-Key` identifies the request by its lines, in any order.',
        headers: CreateOrderHeaders,
        body: CreateOrderBody,
        response: { 201: OrderSchema, ...problemResponses(400, 401, 403, 409, 422, 503) },
      },
      preValidation:
        deps.requireVerifiedEmail === undefined ? requireAuth : [requireAuth, deps.requireVerifiedEmail],
    },
    async (request, reply) => {
      try {
        const lines = ordersService.orderLines(request.body.items);
        const key = request.headers['idempotency-key'];
        // Node folds repeated headers into "a, b", which would replay as one key; the draft makes
        // Idempotency-Key a single item (security probe 2026-12-02, finding 16).
        if (key !== undefined && headerCount(request.raw.rawHeaders, 'idempotency-key') > 1) {
          throw new ValidationError('Send one Idempotency-Key header.', [
            { path: '/headers/idempotency-key', message: 'must be sent once' },
          ]);
        }
        if (key !== undefined) return await placeIdempotently(deps, request, reply, key, lines);
        const order = await ordersService.placeOrder(deps, authOf(request).userId, lines);
        deps.metrics.created.inc();
        reply.code(201);
        return order;
      } catch (err) {
        deps.metrics.failed.inc({ reason: ordersService.failureReason(err) });
        throw err;
      }
    },
  );

  app.get(
    '/',
    {
      schema: {
        summary: 'List orders',
        operationId: 'listOrders',
        tags,
        security,
        description: 'The caller’s orders, newest first; admins see everyone’s and may filter by `userId`.',
        querystring: ListOrdersQuery,
        response: { 200: pageSchema(OrderSchema), ...problemResponses(400, 401, 403) },
      },
      preValidation: requireAuth,
    },
    async (request) =>
      reads.read(request, (db) => ordersService.listOrders(db, authOf(request), request.query)),
  );

  app.get(
    '/:id',
    {
      schema: {
        summary: 'Read one order (owner or admin)',
        operationId: 'getOrder',
        tags,
        security,
        params: OrderIdParams,
        response: { 200: OrderSchema, ...problemResponses(400, 401, 404) },
      },
      preValidation: requireAuth,
    },
    async (request) =>
      reads.read(request, (db) =>
        ordersService.getOrder(db, authOf(request), request.params.id.toLowerCase()),
      ),
  );

  app.post(
    '/:id/cancel',
    {
      schema: {
        summary: 'Cancel an order (owner or admin)',
        operationId: 'cancelOrder',
        tags,
        security,
        description: 'Owner or admin: `pending` or `paid` → `cancelled`, stock returned; otherwise 409.',
        params: OrderIdParams,
        response: { 200: OrderSchema, ...problemResponses(400, 401, 404, 409) },
      },
      preValidation: requireAuth,
    },
    async (request) => {
      const caller = authOf(request);
      return ordersService.transition(
        deps,
        request.params.id.toLowerCase(),
        'cancelled',
        caller.role === 'admin' ? undefined : caller.userId,
      );
    },
  );

  app.patch(
    '/:id',
    {
      schema: {
        summary: 'Move an order along its status (admin)',
        operationId: 'updateOrderStatus',
        tags,
        security,
        description:
          'Admin: `pending → paid → shipped → delivered`, or `pending`/`paid` → `cancelled` (stock returned); any other move → 409 `INVALID_STATE_TRANSITION`.',
        params: OrderIdParams,
        body: UpdateOrderBody,
        response: { 200: OrderSchema, ...problemResponses(400, 401, 403, 404, 409) },
      },
      preValidation: [requireAuth, requireRole('admin')],
    },
    async (request) => ordersService.transition(deps, request.params.id.toLowerCase(), request.body.status),
  );
}

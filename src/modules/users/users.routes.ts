import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { noContent, problemResponses } from '../../infra/http/problem.js';
import type { RateLimitRule } from '../../infra/rate-limit/rate-limit.js';
import { NotFoundError } from '../../lib/errors.js';
import { pageSchema } from '../../lib/pagination.js';
import type { AuthDeps } from '../auth/auth.deps.js';
import * as authService from '../auth/auth.service.js';
import { authenticate, authOf, requireRole } from '../auth/authenticate.js';
import {
  AdminUpdateBody,
  ChangePasswordBody,
  ListUsersQuery,
  UpdateMeBody,
  UserIdParams,
  UserSchema,
} from './users.schema.js';
import * as usersService from './users.service.js';

/** `/api/users` (API.md): the caller's own account, and admin management of every account. */
/**
 * `authLimit`: PATCH /me answers 409 for a taken email or username, so it could enumerate accounts
 * like /register; both share the strict per-IP auth budget (security probe 2026-12-02, finding 6).
 */
export function usersRoutes(scope: FastifyInstance, deps: AuthDeps, authLimit: RateLimitRule): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const requireAuth = authenticate(deps);
  const adminOnly = [requireAuth, requireRole('admin')];
  const tags = ['users'];
  const security = [{ bearerAuth: [] }];

  app.get(
    '/me',
    {
      schema: {
        summary: "Read the caller's account",
        operationId: 'getMe',
        tags,
        security,
        response: { 200: UserSchema, ...problemResponses(401) },
      },
      preValidation: requireAuth,
    },
    async (request) => usersService.getMe(deps, authOf(request).userId),
  );

  app.patch(
    '/me',
    {
      schema: {
        summary: "Change the caller's username or email",
        operationId: 'updateMe',
        tags,
        security,
        body: UpdateMeBody,
        response: { 200: UserSchema, ...problemResponses(400, 401, 409, 429) },
      },
      config: { rateLimit: authLimit },
      preValidation: requireAuth,
    },
    async (request) => {
      const user = await usersService.updateProfile(deps, authOf(request).userId, request.body);
      if (request.body.email !== undefined && user.email_verified_at === null)
        await authService.startVerification(deps, user);
      return usersService.toUser(user);
    },
  );

  app.post(
    '/me/password',
    {
      schema: {
        summary: "Change the caller's password",
        operationId: 'changePassword',
        tags,
        security,
        body: ChangePasswordBody,
        response: { 204: noContent, ...problemResponses(400, 401, 403, 429) },
      },
      preValidation: requireAuth,
    },
    async (request, reply) => {
      await usersService.changePassword(
        deps,
        authOf(request),
        request.body.currentPassword,
        request.body.newPassword,
      );
      reply.code(204);
    },
  );

  app.delete(
    '/me',
    {
      schema: {
        summary: "Deactivate the caller's account",
        operationId: 'deactivateMe',
        tags,
        security,
        response: { 204: noContent, ...problemResponses(401, 409) },
      },
      preValidation: requireAuth,
    },
    async (request, reply) => {
      await usersService.deactivate(deps, authOf(request).userId);
      reply.code(204);
    },
  );

  app.get(
    '/',
    {
      schema: {
        summary: 'List and search users (admin)',
        operationId: 'listUsers',
        tags,
        security,
        querystring: ListUsersQuery,
        response: { 200: pageSchema(UserSchema), ...problemResponses(400, 401, 403) },
      },
      preValidation: adminOnly,
    },
    async (request) => usersService.listUsers(deps.db, request.query),
  );

  app.get(
    '/:id',
    {
      schema: {
        summary: 'Read one user (admin, or the user themself)',
        operationId: 'getUser',
        tags,
        security,
        params: UserIdParams,
        response: { 200: UserSchema, ...problemResponses(400, 401, 404) },
      },
      preValidation: requireAuth,
    },
    async (request) => {
      const auth = authOf(request);
      const id = request.params.id.toLowerCase();
      // Someone else's account answers exactly like an account that does not exist.
      if (auth.role !== 'admin' && auth.userId !== id) throw new NotFoundError('No such user.');
      return usersService.toUser(await usersService.getUser(deps.db, id));
    },
  );

  app.patch(
    '/:id',
    {
      schema: {
        summary: "Change a user's role or status (admin)",
        operationId: 'updateUser',
        tags,
        security,
        params: UserIdParams,
        body: AdminUpdateBody,
        response: { 200: UserSchema, ...problemResponses(400, 401, 403, 404, 409) },
      },
      preValidation: adminOnly,
    },
    async (request) =>
      usersService.toUser(
        await usersService.adminUpdate(
          deps,
          authOf(request).userId,
          request.params.id.toLowerCase(),
          request.body,
        ),
      ),
  );
}

import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { noContent, problemResponses } from '../../infra/http/problem.js';
import type { RateLimitRule } from '../../infra/rate-limit/rate-limit.js';
import { UnauthenticatedError, ValidationError } from '../../lib/errors.js';
import { toUser } from '../users/users.service.js';
import type { AuthDeps } from './auth.deps.js';
import {
  AuthResponse,
  LoginBody,
  RefreshTokenBody,
  RegisterBody,
  SessionIdParams,
  SessionsResponse,
  TokensResponse,
} from './auth.schema.js';
import * as authService from './auth.service.js';
import { authenticate, authOf } from './authenticate.js';
import { clearedRefreshCookie, readRefreshCookie, refreshCookie, refreshCookieName } from './cookies.js';
import type { Tokens } from './sessions.service.js';

function clientOf(request: FastifyRequest) {
  return { userAgent: request.headers['user-agent'], ip: request.ip };
}

function setRefreshCookie(reply: FastifyReply, tokens: Tokens): void {
  reply.header(
    'set-cookie',
    refreshCookie(tokens.refreshToken, (Date.parse(tokens.sessionExpiresAt) - Date.now()) / 1000),
  );
}

/** The refresh token from the body, or else from the cookie a browser sends. */
function presentedRefreshToken(
  request: FastifyRequest<{ Body: { refreshToken?: string } }>,
): string | undefined {
  if (request.body.refreshToken !== undefined) return request.body.refreshToken;
  const cookie = readRefreshCookie(request.headers.cookie);
  if (cookie === 'ambiguous') {
    throw new ValidationError('Send one refresh-token cookie.', [
      { path: '/headers/cookie', message: `carries ${refreshCookieName} more than once` },
    ]);
  }
  return cookie;
}

/** `/api/auth` (API.md). Credential-taking routes share the strict auth rate limit. */
export function authRoutes(scope: FastifyInstance, deps: AuthDeps, authLimit: RateLimitRule): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const requireAuth = authenticate(deps);
  const tags = ['auth'];
  // Browsers relying on the cookie may post no body at all.
  const emptyBodyIsObject = async (request: FastifyRequest) => {
    request.body ??= {};
  };

  app.post(
    '/register',
    {
      schema: {
        summary: 'Create a customer account and log in',
        operationId: 'register',
        security: [],
        tags,
        body: RegisterBody,
        response: { 201: AuthResponse, ...problemResponses(400, 409, 429) },
      },
      config: { rateLimit: authLimit },
    },
    async (request, reply) => {
      const { user, tokens } = await authService.register(deps, request.body, clientOf(request));
      request.auth = { userId: user.id, sessionId: tokens.sessionId, role: user.role };
      setRefreshCookie(reply, tokens);
      reply.code(201);
      return {
        user: toUser(user),
        accessToken: tokens.accessToken,
        refreshToken: tokens.refreshToken,
        expiresIn: tokens.expiresIn,
      };
    },
  );

  app.post(
    '/login',
    {
      schema: {
        summary: 'Log in with an email or username',
        operationId: 'login',
        security: [],
        tags,
        body: LoginBody,
        response: { 200: AuthResponse, ...problemResponses(400, 401, 429) },
      },
      config: { rateLimit: authLimit },
    },
    async (request, reply) => {
      const { user, tokens } = await authService.login(deps, request.body, clientOf(request));
      request.auth = { userId: user.id, sessionId: tokens.sessionId, role: user.role };
      setRefreshCookie(reply, tokens);
      return {
        user: toUser(user),
        accessToken: tokens.accessToken,
        refreshToken: tokens.refreshToken,
        expiresIn: tokens.expiresIn,
      };
    },
  );

  app.post(
    '/refresh',
    {
      schema: {
        summary: 'Exchange a refresh token for new tokens (rotation)',
        operationId: 'refreshTokens',
        security: [],
        tags,
        body: RefreshTokenBody,
        response: { 200: TokensResponse, ...problemResponses(400, 401, 429) },
      },
      config: { rateLimit: authLimit },
      preValidation: emptyBodyIsObject,
    },
    async (request, reply) => {
      const token = presentedRefreshToken(request);
      if (token === undefined) throw new UnauthenticatedError('A refresh token is required.');
      const tokens = await authService.refresh(deps, token);
      setRefreshCookie(reply, tokens);
      return {
        accessToken: tokens.accessToken,
        refreshToken: tokens.refreshToken,
        expiresIn: tokens.expiresIn,
      };
    },
  );

  app.post(
    '/logout',
    {
      schema: {
        summary: 'End the session of a refresh token',
        operationId: 'logout',
        security: [],
        tags,
        body: RefreshTokenBody,
        response: { 204: noContent, ...problemResponses(400, 429) },
      },
      config: { rateLimit: authLimit },
      preValidation: emptyBodyIsObject,
    },
    async (request, reply) => {
      const token = presentedRefreshToken(request);
      if (token !== undefined) await authService.logout(deps, token);
      reply.header('set-cookie', clearedRefreshCookie()).code(204);
    },
  );

  app.post(
    '/logout-all',
    {
      schema: {
        summary: 'End every session of the caller',
        operationId: 'logoutAll',
        tags,
        security: [{ bearerAuth: [] }],
        response: { 204: noContent, ...problemResponses(401) },
      },
      preValidation: requireAuth,
    },
    async (request, reply) => {
      await authService.logoutAll(deps, authOf(request).userId);
      reply.header('set-cookie', clearedRefreshCookie()).code(204);
    },
  );

  app.get(
    '/sessions',
    {
      schema: {
        summary: "List the caller's live sessions",
        operationId: 'listSessions',
        tags,
        security: [{ bearerAuth: [] }],
        response: { 200: SessionsResponse, ...problemResponses(401) },
      },
      preValidation: requireAuth,
    },
    async (request) => {
      const auth = authOf(request);
      return { items: await authService.listSessions(deps, auth.userId, auth.sessionId) };
    },
  );

  app.delete(
    '/sessions/:id',
    {
      schema: {
        summary: "End one of the caller's sessions",
        operationId: 'revokeSession',
        tags,
        security: [{ bearerAuth: [] }],
        params: SessionIdParams,
        response: { 204: noContent, ...problemResponses(400, 401, 404) },
      },
      preValidation: requireAuth,
    },
    async (request, reply) => {
      await authService.revokeOwnSession(deps, authOf(request).userId, request.params.id.toLowerCase());
      reply.code(204);
    },
  );
}

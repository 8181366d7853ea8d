import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { noContent, problemResponses } from '../../infra/http/problem.js';
import type { RateLimitRule } from '../../infra/rate-limit/rate-limit.js';
import { accepted, PasswordResetBody, PasswordResetConfirmBody, VerifyEmailBody } from './accounts.schema.js';
import * as accounts from './accounts.service.js';
import { authenticate, authOf } from './authenticate.js';

/**
 * Password reset and email verification under `/api/auth` (docs/api.md). The token-taking routes
 * share the strict per-IP auth limit; mails per address have their own budget (accounts.service).
 */
export function accountsRoutes(
  scope: FastifyInstance,
  deps: accounts.AccountsDeps,
  authLimit: RateLimitRule,
): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const requireAuth = authenticate(deps.auth);
  const tags = ['auth'];

  app.post(
    '/password-reset',
    {
      schema: {
        summary: 'Mail a password-reset link (202 whatever the address)',
        operationId: 'requestPasswordReset',
        security: [],
        tags,
        body: PasswordResetBody,
        response: { 202: accepted, ...problemResponses(400, 429) },
      },
      config: { rateLimit: authLimit },
    },
    async (request, reply) => {
      await accounts.requestPasswordReset(deps, request.body.email);
      reply.code(202);
    },
  );

  app.post(
    '/password-reset/confirm',
    {
      schema: {
        summary: 'Set a new password with a reset token; ends every session',
        operationId: 'confirmPasswordReset',
        security: [],
        tags,
        body: PasswordResetConfirmBody,
        response: { 204: noContent, ...problemResponses(400, 429) },
      },
      config: { rateLimit: authLimit },
    },
    async (request, reply) => {
      await accounts.confirmPasswordReset(deps, request.body.token, request.body.newPassword);
      reply.code(204);
    },
  );

  app.post(
    '/verify-email',
    {
      schema: {
        summary: 'Confirm an email address with the token from the mail',
        operationId: 'verifyEmail',
        security: [],
        tags,
        body: VerifyEmailBody,
        response: { 204: noContent, ...problemResponses(400, 429) },
      },
      config: { rateLimit: authLimit },
    },
    async (request, reply) => {
      await accounts.confirmEmailVerification(deps, request.body.token);
      reply.code(204);
    },
  );

  app.post(
    '/verify-email/resend',
    {
      schema: {
        summary: "Mail the caller's verification link again",
        operationId: 'resendEmailVerification',
        tags,
        security: [{ bearerAuth: [] }],
        response: { 202: accepted, ...problemResponses(401, 429) },
      },
      config: { rateLimit: authLimit },
      preValidation: requireAuth,
    },
    async (request, reply) => {
      await accounts.resendVerification(deps, authOf(request).userId);
      reply.code(202);
    },
  );
}

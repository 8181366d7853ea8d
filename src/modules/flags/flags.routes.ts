import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Db } from '../../db/database.js';
import { problemResponses } from '../../infra/http/problem.js';
import { NotFoundError } from '../../lib/errors.js';
import type { AuthDeps } from '../auth/auth.deps.js';
import { authenticate, authOf, requireRole } from '../auth/authenticate.js';
import { type FlagKey, isFlagKey } from './flags.definitions.js';
import { FlagKeyParams, FlagSchema, FlagStateSchema, FlagsResponse } from './flags.schema.js';
import type { FeatureFlags, FlagView } from './flags.service.js';

function flagKey(key: string): FlagKey {
  if (!isFlagKey(key)) throw new NotFoundError('No such feature flag.');
  return key;
}

/** The wire form: the response schema is the allow-list of fields. */
const toFlag = (flag: FlagView) => ({
  key: flag.key,
  description: flag.description,
  default: { ...flag.default, allowUsers: [...flag.default.allowUsers] },
  override: flag.override === null ? null : { ...flag.override, allowUsers: [...flag.override.allowUsers] },
});

/** The audit line: who changed which flag, its override before and after (never more). */
function logChange(
  request: FastifyRequest,
  key: FlagKey,
  change: { readonly before: FlagView; readonly after: FlagView },
  message: string,
): void {
  const by = authOf(request).userId;
  request.log.info(
    {
      event: 'feature_flag_changed',
      flag: key,
      by,
      before: change.before.override,
      after: change.after.override,
    },
    message,
  );
}

/** `/api/flags` (docs/api.md): list and change the feature flags; admins only, every change logged. */
export function flagsRoutes(scope: FastifyInstance, auth: AuthDeps, db: Db, flags: FeatureFlags): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  const adminOnly = [authenticate(auth), requireRole('admin')];
  const tags = ['flags'];
  const security = [{ bearerAuth: [] }];

  app.get(
    '/',
    {
      schema: {
        summary: 'List the feature flags with their defaults and overrides (admin)',
        operationId: 'listFlags',
        tags,
        security,
        response: { 200: FlagsResponse, ...problemResponses(401, 403) },
      },
      preValidation: adminOnly,
    },
    async () => ({ items: (await flags.list(db)).map(toFlag) }),
  );

  app.put(
    '/:key',
    {
      schema: {
        summary: 'Override a feature flag (admin): on/off, allow-list, percentage',
        operationId: 'setFlag',
        description:
          'Every worker and server uses the new state within a second. The change is logged (`feature_flag_changed`, with who, before and after).',
        tags,
        security,
        params: FlagKeyParams,
        body: FlagStateSchema,
        response: { 200: FlagSchema, ...problemResponses(400, 401, 403, 404) },
      },
      preValidation: adminOnly,
    },
    async (request) => {
      const key = flagKey(request.params.key);
      const change = await flags.set(db, key, request.body, authOf(request).userId);
      logChange(request, key, change, 'feature flag changed');
      return toFlag(change.after);
    },
  );

  app.delete(
    '/:key',
    {
      schema: {
        summary: 'Remove the override of a feature flag: back to its coded default (admin)',
        operationId: 'resetFlag',
        tags,
        security,
        params: FlagKeyParams,
        response: { 200: FlagSchema, ...problemResponses(400, 401, 403, 404) },
      },
      preValidation: adminOnly,
    },
    async (request) => {
      const key = flagKey(request.params.key);
      const change = await flags.clear(db, key);
      logChange(request, key, change, 'feature flag reset to its default');
      return toFlag(change.after);
    },
  );
}

import { type Static, Type } from 'typebox';

export const HealthSchema = Type.Object(
  {
    status: Type.Literal('healthy'),
    timestamp: Type.String({ format: 'date-time' }),
    uptime: Type.Number({ description: 'Seconds since the process started.' }),
  },
  { additionalProperties: false },
);

export const ReadinessSchema = Type.Object(
  {
    status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
    checks: Type.Object(
      {
        database: Type.Union([Type.Literal('up'), Type.Literal('down')]),
        cache: Type.Union([Type.Literal('up'), Type.Literal('degraded')]),
        replicas: Type.Optional(
          Type.Union([Type.Literal('up'), Type.Literal('degraded')], {
            description:
              'Only with read replicas configured: `degraded` while none is usable and the primary serves every read.',
          }),
        ),
      },
      { additionalProperties: false },
    ),
    reason: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

export type Readiness = Static<typeof ReadinessSchema>;

import { type Static, Type } from 'typebox';

const Count = Type.Number({ minimum: 0 });

/** This instance's counters at one moment; the operations page turns two snapshots into rates. */
export const OpsSnapshotSchema = Type.Object(
  {
    takenAt: Type.String({ format: 'date-time' }),
    instance: Type.Object(
      {
        pid: Type.Integer(),
        appInstance: Type.Integer({ minimum: 0 }),
        version: Type.String(),
        commit: Type.String(),
        nodeVersion: Type.String(),
        uptimeSeconds: Count,
      },
      { additionalProperties: false },
    ),
    requests: Type.Object(
      {
        total: Count,
        serverErrors: Count,
        inFlight: Count,
        durationBuckets: Type.Array(
          Type.Object({ le: Type.Number(), count: Count }, { additionalProperties: false }),
          {
            description:
              'Cumulative request counts by upper bound in seconds (the last is +Inf, sent as 1e9).',
          },
        ),
      },
      { additionalProperties: false },
    ),
    cache: Type.Object({ hits: Count, misses: Count, errors: Count }, { additionalProperties: false }),
    eventLoop: Type.Object(
      {
        utilization: Type.Number({ minimum: 0, maximum: 1 }),
        delayP99Seconds: Count,
      },
      { additionalProperties: false, description: 'Since the previous snapshot of this instance.' },
    ),
    pool: Type.Object(
      { max: Count, inUse: Count, idle: Count, waiting: Count },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type OpsSnapshot = Static<typeof OpsSnapshotSchema>;

import { type Static, Type } from 'typebox';

export const FlagStateSchema = Type.Object(
  {
    enabled: Type.Boolean({ description: 'Off: nobody has the feature (the kill switch).' }),
    percentage: Type.Integer({
      minimum: 0,
      maximum: 100,
      description:
        'Of the users not on the allow-list, this percentage has the feature; sticky per user (a stable hash of flag and user id).',
    }),
    allowUsers: Type.Array(Type.String({ format: 'uuid' }), {
      maxItems: 1000,
      uniqueItems: true,
      description: 'User ids that have the feature whenever it is enabled.',
    }),
  },
  { additionalProperties: false },
);

export const FlagSchema = Type.Object(
  {
    key: Type.String(),
    description: Type.String(),
    default: FlagStateSchema,
    override: Type.Union([
      Type.Object(
        {
          ...FlagStateSchema.properties,
          updatedAt: Type.String({ format: 'date-time' }),
          updatedBy: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
        },
        { additionalProperties: false },
      ),
      Type.Null(),
    ]),
  },
  { additionalProperties: false },
);

export const FlagsResponse = Type.Object({ items: Type.Array(FlagSchema) }, { additionalProperties: false });

export const FlagKeyParams = Type.Object(
  { key: Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,63}$' }) },
  { additionalProperties: false },
);

export type FlagStateBody = Static<typeof FlagStateSchema>;

import { Type } from 'typebox';
import { IdSchema } from '../products/products.schema.js';
import { EmailSchema, PasswordSchema, UsernameSchema, UserSchema } from '../users/users.schema.js';

export const RegisterBody = Type.Object(
  { email: EmailSchema, username: UsernameSchema, password: PasswordSchema },
  { additionalProperties: false },
);

export const LoginBody = Type.Object(
  {
    login: Type.String({ minLength: 1, maxLength: 254, description: 'Email or username.' }),
    // No policy here: a login must accept whatever the password was when it was set.
    password: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { additionalProperties: false },
);

export const RefreshTokenBody = Type.Object(
  {
    refreshToken: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 512,
        description: 'The refresh token; browsers may send none and rely on the HttpOnly cookie instead.',
      }),
    ),
  },
  { additionalProperties: false },
);

const tokenProperties = {
  accessToken: Type.String(),
  refreshToken: Type.String(),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires.' }),
};

export const AuthResponse = Type.Object(
  { user: UserSchema, ...tokenProperties },
  { additionalProperties: false },
);
export const TokensResponse = Type.Object(tokenProperties, { additionalProperties: false });

export const SessionSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    createdAt: Type.String({ format: 'date-time' }),
    lastUsedAt: Type.String({ format: 'date-time' }),
    userAgent: Type.Union([Type.String(), Type.Null()]),
    ip: Type.Union([Type.String(), Type.Null()]),
    current: Type.Boolean(),
  },
  { additionalProperties: false },
);
export const SessionsResponse = Type.Object(
  { items: Type.Array(SessionSchema) },
  { additionalProperties: false },
);
/** A UUID in either case; the route lower-cases it (ids are stored so). */
export const SessionIdParams = Type.Object({ id: IdSchema }, { additionalProperties: false });

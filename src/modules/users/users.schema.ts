import { type Static, Type } from 'typebox';
import { pageQueryProperties } from '../../lib/pagination.js';
import { IdSchema } from '../products/products.schema.js';

/** The public shape of a user: an allow-list, so a password hash can never be serialised. */
export const UserSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    email: Type.String(),
    username: Type.String(),
    role: Type.Union([Type.Literal('customer'), Type.Literal('admin')]),
    isActive: Type.Boolean(),
    emailVerified: Type.Boolean({ description: 'The current email was confirmed through the mailed link.' }),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    lastLoginAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { additionalProperties: false },
);
export type User = Static<typeof UserSchema>;

export const EmailSchema = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
export const UsernameSchema = Type.String({
  minLength: 3,
  maxLength: 50,
  pattern: '^[A-Za-z0-9_.-]+$',
  description: '3–50 letters, digits, `_`, `.` or `-`.',
});
export const PasswordSchema = Type.String({
  minLength: 8,
  maxLength: 128,
  description: '8–128 characters; no composition rules; very common passwords are refused.',
});

export const UpdateMeBody = Type.Object(
  { username: Type.Optional(UsernameSchema), email: Type.Optional(EmailSchema) },
  { additionalProperties: false, minProperties: 1 },
);
export const ChangePasswordBody = Type.Object(
  { currentPassword: Type.String({ minLength: 1, maxLength: 1024 }), newPassword: PasswordSchema },
  { additionalProperties: false },
);
export const AdminUpdateBody = Type.Object(
  {
    role: Type.Optional(Type.Union([Type.Literal('customer'), Type.Literal('admin')])),
    isActive: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, minProperties: 1 },
);
/** A UUID in either case, as on products and orders; routes lower-case it (ids are stored so). */
export const UserIdParams = Type.Object({ id: IdSchema }, { additionalProperties: false });
export const ListUsersQuery = Type.Object({
  ...pageQueryProperties,
  q: Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'Matches email or username.' })),
});

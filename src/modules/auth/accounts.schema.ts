import { Type } from 'typebox';
import { EmailSchema, PasswordSchema } from '../users/users.schema.js';

const TokenSchema = Type.String({
  minLength: 20,
  maxLength: 128,
  pattern: '^[A-Za-z0-9_-]+$',
  description: 'The token from the link in the mail (after `#token=`).',
});

export const PasswordResetBody = Type.Object({ email: EmailSchema }, { additionalProperties: false });
export const PasswordResetConfirmBody = Type.Object(
  { token: TokenSchema, newPassword: PasswordSchema },
  { additionalProperties: false },
);
export const VerifyEmailBody = Type.Object({ token: TokenSchema }, { additionalProperties: false });

/** The schema of a bodiless 202. */
export const accepted = { type: 'null', description: 'Accepted.' } as const;

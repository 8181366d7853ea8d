import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { createPasswordHasher } from '../../src/modules/auth/passwords.js';
import type { User } from '../../src/modules/users/users.schema.js';
import { createUser } from '../../src/modules/users/users.service.js';
import type { ReceivedMail } from '../harness/smtp.js';

/** The token in a mailed link (`…/#/<page>?token=<token>`), from the text part. */
export function tokenIn(mail: ReceivedMail, page: 'reset-password' | 'verify-email'): string {
  const match = new RegExp(`/#/${page}\\?token=([A-Za-z0-9_-]+)`).exec(mail.text);
  assert.ok(match?.[1], `no ${page} link in:\n${mail.text}`);
  // The HTML part carries the same link.
  assert.ok(mail.html.includes(`/#/${page}?token=${match[1]}`));
  return match[1];
}

let sequence = 0;

export interface Account {
  readonly user: User;
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly email: string;
  readonly username: string;
  readonly password: string;
}

/** The user object's documented fields (docs/api.md), sorted: every answer carrying a user has exactly these. */
export const userKeys = [
  'createdAt',
  'email',
  'emailVerified',
  'id',
  'isActive',
  'lastLoginAt',
  'role',
  'updatedAt',
  'username',
];

export function bearer(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` };
}

export function uniqueName(prefix = 'user'): string {
  sequence += 1;
  return `${prefix}${process.pid}x${Date.now().toString(36)}x${sequence}`;
}

/** Registers a customer through the API. */
export async function registerUser(
  app: FastifyInstance,
  overrides: Partial<{ email: string; username: string; password: string }> = {},
): Promise<Account> {
  const name = uniqueName();
  const body = {
    email: `${name}@example.com`,
    username: name,
    password: 'correct horse battery staple',
    ...overrides,
  };
  const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: body });
  assert.equal(res.statusCode, 201, res.body);
  const json = res.json();
  return { ...json, email: body.email.toLowerCase(), username: body.username, password: body.password };
}

export async function login(app: FastifyInstance, loginName: string, password: string) {
  return app.inject({ method: 'POST', url: '/api/auth/login', payload: { login: loginName, password } });
}

/** An admin, made the way the CLI makes one (never through the public API), then logged in. */
export async function createAdmin(app: FastifyInstance): Promise<Account> {
  const name = uniqueName('admin');
  const password = 'admin password for tests';
  await createUser(app.database.db, createPasswordHasher(app.config.auth), {
    email: `${name}@example.com`,
    username: name,
    password,
    role: 'admin',
  });
  const res = await login(app, name, password);
  assert.equal(res.statusCode, 200, res.body);
  return { ...res.json(), email: `${name}@example.com`, username: name, password };
}

// The pages talk to the API only through the typed client generated from the OpenAPI document
// (client/), so a changed contract breaks the build, not the shopper. The access token lives in
// this module's memory only; the refresh token is the HttpOnly cookie the API sets, which no
// script can read: a reload restores the session by one POST /api/auth/refresh.
import type { operations } from '../../client/index.js';
import { createShipshapeClient } from '../../client/index.js';

type Json<Op extends keyof operations, Status extends number> =
  operations[Op]['responses'] extends Record<Status, { content: { 'application/json': infer Body } }>
    ? Body
    : never;

export type User = Json<'getMe', 200>;
export type Product = Json<'getProduct', 200>;
export type Order = Json<'getOrder', 200>;
export type Problem = {
  status: number;
  code?: string;
  title?: string;
  detail?: string;
  errors?: { path: string; message: string }[];
  retryAfter?: string | null;
};

let accessToken: string | undefined;
let currentUser: User | undefined;
const listeners = new Set<() => void>();

export const api = createShipshapeClient({
  baseUrl: location.origin,
  credentials: 'same-origin',
});

api.use({
  onRequest({ request }) {
    if (accessToken && !request.headers.has('authorization')) {
      request.headers.set('authorization', `Bearer ${accessToken}`);
    }
    return request;
  },
});

export function user(): User | undefined {
  return currentUser;
}

export function onSessionChange(listener: () => void): void {
  listeners.add(listener);
}

// Not a secret: only whether this browser has signed in, so an anonymous visit does not ask the
// API to refresh a session it cannot have (a 401 on every page load).
const signedInHint = 'shipshape.signed-in';

function setSession(token: string | undefined, who: User | undefined): void {
  accessToken = token;
  currentUser = who;
  if (who) localStorage.setItem(signedInHint, '1');
  else localStorage.removeItem(signedInHint);
  for (const listener of listeners) listener();
}

async function loadMe(): Promise<void> {
  const { data } = await api.GET('/api/users/me');
  setSession(accessToken, data);
}

/** On page load: a live refresh cookie becomes an access token; anything else means signed out. */
export async function restoreSession(): Promise<void> {
  if (localStorage.getItem(signedInHint) === null) return;
  const { data } = await api.POST('/api/auth/refresh', { body: {} });
  if (!data) {
    setSession(undefined, undefined);
    return;
  }
  accessToken = data.accessToken;
  await loadMe();
}

export async function login(loginName: string, password: string): Promise<Problem | undefined> {
  const { data, error, response } = await api.POST('/api/auth/login', {
    body: { login: loginName, password },
  });
  if (!data) return problemOf(error, response);
  setSession(data.accessToken, data.user);
  return undefined;
}

export async function register(
  email: string,
  username: string,
  password: string,
): Promise<Problem | undefined> {
  const { data, error, response } = await api.POST('/api/auth/register', {
    body: { email, username, password },
  });
  if (!data) return problemOf(error, response);
  setSession(data.accessToken, data.user);
  return undefined;
}

export async function logout(): Promise<void> {
  await api.POST('/api/auth/logout', { body: {} });
  setSession(undefined, undefined);
}

export function problemOf(error: unknown, response: Response): Problem {
  const body = (error ?? {}) as Partial<Problem>;
  return { ...body, status: response.status, retryAfter: response.headers.get('retry-after') };
}

/** One sentence a shopper can act on, for any problem answer. */
export function describe(problem: Problem): string {
  switch (problem.code) {
    case 'INSUFFICIENT_STOCK':
      return `Not enough stock: ${problem.detail ?? 'a product in your cart has run out'}. Lower the quantity and try again.`;
    case 'RATE_LIMITED': {
      const retry = Number(problem.retryAfter ?? '');
      const wait = Number.isFinite(retry) && retry > 0 ? ` Try again in ${Math.ceil(retry / 60)} min.` : '';
      return `Too many attempts: this account is locked for now.${wait}`;
    }
    case 'UNAUTHENTICATED':
      return problem.detail ?? 'Wrong login or password.';
    case 'VALIDATION_FAILED':
      return (
        (problem.errors ?? []).map((e) => `${e.path.replace(/^\/body\//, '')}: ${e.message}`).join('; ') ||
        'Check the form.'
      );
    case 'CONFLICT':
      return problem.detail ?? 'That is already taken.';
    case 'SERVICE_UNAVAILABLE':
      return 'The shop is busy or down for a moment. Please try again.';
    default:
      return problem.detail ?? problem.title ?? `Something went wrong (${problem.status}).`;
  }
}

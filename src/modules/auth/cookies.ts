/**
 * The refresh token as a browser cookie: HttpOnly (no script can read it), Secure, SameSite=Strict
 * (never sent on cross-site requests) and scoped to the auth routes, the only ones that read it.
 */
export const refreshCookieName = '__Secure-refresh-token';
const attributes = 'Path=/api/auth; HttpOnly; Secure; SameSite=Strict';

export function refreshCookie(token: string, maxAgeSeconds: number): string {
  return `${refreshCookieName}=${token}; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}; ${attributes}`;
}

export function clearedRefreshCookie(): string {
  return `${refreshCookieName}=; Max-Age=0; ${attributes}`;
}

export function readRefreshCookie(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === refreshCookieName) {
      const value = part.slice(eq + 1).trim();
      return value === '' ? undefined : value;
    }
  }
  return undefined;
}

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

/**
 * The refresh cookie's value; 'ambiguous' when the request carries more than one: a sibling
 * subdomain can plant a second `__Secure-` cookie that browsers send first (security probe
 * 2026-12-02, finding 19), so neither is trusted.
 */
export function readRefreshCookie(header: string | undefined): string | 'ambiguous' | undefined {
  if (header === undefined) return undefined;
  let found: string | undefined;
  let count = 0;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === refreshCookieName) {
      count += 1;
      const value = part.slice(eq + 1).trim();
      if (value !== '') found = value;
    }
  }
  if (count > 1) return 'ambiguous';
  return found;
}

import type { Cache } from '../../infra/cache/cache.js';
import type { User } from './users.schema.js';

/**
 * How `GET /api/users/me` uses the cache (decision 0112): the caller's public account — the
 * response schema's fields, never the password hash or anything else of the row — under its own
 * scope (`user:<id>`). Every write to an account invalidates that scope once it has committed, before
 * the response is sent: username, email, password, verification, login time, an admin's change.
 * The load always reads the primary (as `/me` did before), so it needs no replica floor. Writes made
 * behind the service's back (a CLI on PostgreSQL) are bounded by the TTL; on SQLite the cache sees
 * them (`externalWrites`) and starts afresh.
 */
export interface UserCache {
  user(id: string, load: () => Promise<User>): Promise<User>;
  /** After the account changed, once committed. */
  invalidate(id: string): Promise<void>;
}

const userKey = (id: string) => `user:${id}`;

export function createUserCache(cache: Cache, ttlSeconds: number): UserCache {
  const ttlMs = ttlSeconds * 1000;
  return {
    user: (id, load) => cache.aside({ cache: 'user', scope: userKey(id), key: userKey(id), ttlMs }, load),
    invalidate: (id) => cache.invalidate({ scopes: [userKey(id)], keys: [userKey(id)] }),
  };
}

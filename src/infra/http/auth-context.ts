/** Who made the request, once authentication has run; null for anonymous requests. */
export interface AuthContext {
  readonly userId: string;
  readonly sessionId: string;
  readonly role: 'customer' | 'admin';
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthContext | null;
  }
}

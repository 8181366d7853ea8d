import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { type Account, bearer } from '../support/accounts.js';

export const productKeys = [
  'createdAt',
  'currency',
  'description',
  'id',
  'name',
  'price',
  'sku',
  'stock',
  'updatedAt',
];

let sequence = 0;

/** A sku no other test (or process) uses: `prefix` lets a test find its own products with `?q=`. */
export function uniqueSku(prefix = 'T'): string {
  sequence += 1;
  return `${prefix}-${process.pid.toString(36)}${Date.now().toString(36)}-${String(sequence).padStart(4, '0')}`;
}

export interface ProductInput {
  sku?: string;
  name?: string;
  description?: string;
  price?: string;
  stock?: number;
}

/** Creates a product through the API as the admin; returns the product as answered. */
export async function createProduct(
  app: FastifyInstance,
  admin: Account,
  input: ProductInput = {},
): Promise<{ id: string; sku: string; price: string; stock: number; [key: string]: unknown }> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/products',
    headers: bearer(admin.accessToken),
    payload: { sku: uniqueSku(), name: 'Test product', price: '9.99', stock: 10, ...input },
  });
  assert.equal(res.statusCode, 201, res.body);
  return res.json();
}

import { type Static, Type } from 'typebox';
import { ValidationError } from '../../lib/errors.js';
import { pageQueryProperties } from '../../lib/pagination.js';

/**
 * Wire schemas of `/api/products` (docs/api.md). Strings that reach the database exclude control
 * characters (PostgreSQL rejects NUL in text, and nothing else wants them); ids are matched by a
 * plain UUID pattern, not the `uuid` format, which also admits `urn:uuid:…` that PostgreSQL refuses.
 */

export const uuidPattern = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
export const IdSchema = Type.String({ pattern: uuidPattern, description: 'A UUID.' });

/** Input amounts: up to 99,999,999.99 (numeric(10,2)), at most two decimal places. */
export const moneyPattern = '^(0|[1-9][0-9]{0,7})(\\.[0-9]{1,2})?$';
export const MoneyInputSchema = Type.String({
  pattern: moneyPattern,
  description: 'A decimal amount with at most two places, as a string: "19.99".',
});
/** Output amounts: always two places. */
export const MoneySchema = Type.String({
  pattern: '^-?[0-9]+\\.[0-9]{2}$',
  description: 'A decimal amount with two places, as a string: "19.99".',
});

export const SkuSchema = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$',
  description: 'Stock-keeping unit: letters, digits, `.`, `_` or `-`; unique.',
});
export const skuRegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/**
 * Characters that change how the text around them is shown without being seen themselves: C0 and
 * C1 controls, bidirectional controls (U+061C, U+200E/F, U+202A–E, U+2066–9) and zero-width or
 * invisible characters (U+200B–D, U+2060–4, U+FEFF). In a name a storefront displays they can
 * reorder or hide text (an "exe.txt" that reads "txt.exe"), so names refuse them (security probe
 * 2026-12-02, finding 20; decision 0051).
 */
export const displayNamePattern =
  '^[^\\x00-\\x1F\\x7F-\\x9F\\u061C\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u2064\\u2066-\\u2069\\uFEFF]+$';
const NameSchema = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: displayNamePattern,
  description:
    'Not blank; no control characters, no bidirectional controls and no zero-width or invisible characters.',
});
const DescriptionSchema = Type.String({
  maxLength: 5000,
  pattern: '^[^\\x00]*$',
  description: 'Free text (no NUL characters).',
});
const StockSchema = Type.Integer({ minimum: 0, maximum: 1_000_000_000 });

export const ProductSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    sku: Type.String(),
    name: Type.String(),
    description: Type.String(),
    price: MoneySchema,
    currency: Type.String({ description: 'ISO 4217 code; one currency per deployment.' }),
    stock: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type Product = Static<typeof ProductSchema>;

export const CreateProductBody = Type.Object(
  {
    sku: SkuSchema,
    name: NameSchema,
    description: Type.Optional(DescriptionSchema),
    price: MoneyInputSchema,
    stock: StockSchema,
  },
  { additionalProperties: false },
);
export type CreateProductInput = Static<typeof CreateProductBody>;

export const UpdateProductBody = Type.Object(
  {
    sku: Type.Optional(SkuSchema),
    name: Type.Optional(NameSchema),
    description: Type.Optional(DescriptionSchema),
    price: Type.Optional(MoneyInputSchema),
    stock: Type.Optional(StockSchema),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type UpdateProductInput = Static<typeof UpdateProductBody>;

export const ProductIdParams = Type.Object({ id: IdSchema }, { additionalProperties: false });

/**
 * The page size, once more: Ajv coerces `?limit=1e309` to Infinity and then skips `maximum` for
 * non-finite numbers, so the schema alone lets it through (and the database rejects it: a 500).
 */
export function pageLimit(limit: number): number {
  if (!Number.isSafeInteger(limit)) {
    throw new ValidationError('The request is not valid.', [
      { path: '/querystring/limit', message: 'must be <= 100' },
    ]);
  }
  return limit;
}

export const ListProductsQuery = Type.Object({
  ...pageQueryProperties,
  q: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 100,
      pattern: '^[^\\x00-\\x1F\\x7F]+$',
      description: 'Case-insensitive search in the name or the sku.',
    }),
  ),
  minPrice: Type.Optional(Type.String({ pattern: moneyPattern, description: 'Lowest price, inclusive.' })),
  maxPrice: Type.Optional(Type.String({ pattern: moneyPattern, description: 'Highest price, inclusive.' })),
  inStock: Type.Optional(
    Type.Boolean({ description: 'true: only products in stock; false: only products out of stock.' }),
  ),
});
export type ListProductsQuery = Static<typeof ListProductsQuery>;

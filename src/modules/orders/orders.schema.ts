import { type Static, Type } from 'typebox';
import { pageQueryProperties } from '../../lib/pagination.js';
import { IdSchema, MoneySchema, uuidPattern } from '../products/products.schema.js';

export const OrderStatusSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('paid'),
  Type.Literal('shipped'),
  Type.Literal('delivered'),
  Type.Literal('cancelled'),
]);

export const OrderItemSchema = Type.Object(
  {
    productId: Type.String({ format: 'uuid' }),
    sku: Type.String(),
    name: Type.String(),
    unitPrice: MoneySchema,
    quantity: Type.Integer(),
    lineTotal: MoneySchema,
  },
  { additionalProperties: false },
);

export const OrderSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    userId: Type.String({ format: 'uuid' }),
    status: OrderStatusSchema,
    totalAmount: MoneySchema,
    currency: Type.String(),
    items: Type.Array(OrderItemSchema, {
      description:
        'The lines, by productId; sku, name and unit price as they were when the order was placed.',
    }),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type Order = Static<typeof OrderSchema>;
export type OrderItem = Static<typeof OrderItemSchema>;

export const maxOrderLines = 50;
export const maxLineQuantity = 1000;

export const CreateOrderBody = Type.Object(
  {
    items: Type.Array(
      Type.Object(
        {
          productId: IdSchema,
          quantity: Type.Integer({ minimum: 1, maximum: maxLineQuantity }),
        },
        { additionalProperties: false },
      ),
      {
        minItems: 1,
        maxItems: maxOrderLines,
        description: '1–50 lines, each for a different product; quantities 1–1000.',
      },
    ),
  },
  { additionalProperties: false },
);
export type CreateOrderInput = Static<typeof CreateOrderBody>;

export const CreateOrderHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      pattern: '^[\\x20-\\x7E]+$',
      description:
        'Makes retries safe: the same key with the same body (per user, for at least 24 h) replays the first response with `Idempotent-Replayed: true` and creates nothing; with a different body → 422; while the first is still running → 409.',
    }),
  ),
});

export const OrderIdParams = Type.Object({ id: IdSchema }, { additionalProperties: false });

export const ListOrdersQuery = Type.Object({
  ...pageQueryProperties,
  status: Type.Optional(OrderStatusSchema),
  userId: Type.Optional(
    Type.String({
      pattern: uuidPattern,
      description: 'Admins: one user’s orders (customers: only their own id).',
    }),
  ),
});
export type ListOrdersQuery = Static<typeof ListOrdersQuery>;

export const UpdateOrderBody = Type.Object({ status: OrderStatusSchema }, { additionalProperties: false });

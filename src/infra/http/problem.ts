import { STATUS_CODES } from 'node:http';
import { Type } from 'typebox';
import { ErrorCode as Codes, type ErrorCode, type FieldError } from '../../lib/errors.js';

/** RFC 9457 problem details, as docs/api.md specifies them. Referenced by every route's error responses. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'A URN naming the kind of problem: urn:shipshape:problem:<code>.' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'Stable, machine-readable error code.' }),
    requestId: Type.String(),
    errors: Type.Optional(
      Type.Array(
        Type.Object({ path: Type.String(), message: Type.String() }, { additionalProperties: false }),
      ),
    ),
  },
  { $id: 'Problem', additionalProperties: false, description: 'RFC 9457 problem details.' },
);

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  requestId: string;
  errors?: FieldError[];
}

export const problemContentType = 'application/problem+json; charset=utf-8';

export function problem(
  status: number,
  code: ErrorCode,
  detail: string,
  requestId: string,
  errors?: readonly FieldError[],
): Problem {
  return {
    type: `urn:shipshape:problem:${code.toLowerCase().replaceAll('_', '-')}`,
    title: STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    code,
    requestId,
    ...(errors === undefined || errors.length === 0 ? {} : { errors: [...errors] }),
  };
}

/** The code a bare HTTP status stands for, when an error carries nothing more specific. */
export function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 401:
      return Codes.UNAUTHENTICATED;
    case 403:
      return Codes.FORBIDDEN;
    case 404:
      return Codes.NOT_FOUND;
    case 405:
      return Codes.METHOD_NOT_ALLOWED;
    case 409:
      return Codes.CONFLICT;
    case 413:
      return Codes.PAYLOAD_TOO_LARGE;
    case 415:
      return Codes.UNSUPPORTED_MEDIA_TYPE;
    case 429:
      return Codes.RATE_LIMITED;
    case 503:
      return Codes.SERVICE_UNAVAILABLE;
    default:
      return status >= 500 ? Codes.INTERNAL : Codes.VALIDATION_FAILED;
  }
}

/** Response schemas for error statuses, all pointing at the shared Problem schema (for OpenAPI). */
export function problemResponses(
  ...statuses: number[]
): Record<number, { $ref: string; description: string }> {
  return Object.fromEntries(
    statuses.map((status) => [status, { $ref: 'Problem#', description: STATUS_CODES[status] ?? 'Error' }]),
  );
}

/** The schema of a bodiless 204. */
export const noContent = { type: 'null', description: 'No content.' } as const;

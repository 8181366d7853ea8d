import { createServer, type IncomingMessage } from 'node:http';
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';

/**
 * A real OTLP/HTTP trace receiver (a collector's `otlphttp` receiver, reduced to what the tests
 * read): POST /v1/traces with an ExportTraceServiceRequest, answered 200 with an empty
 * ExportTraceServiceResponse. `@opentelemetry/exporter-trace-otlp-http` sends the OTLP/JSON
 * encoding (Content-Type application/json; trace and span ids as hex strings, times as decimal
 * nanosecond strings, attributes as AnyValue objects; optionally gzip). Protobuf
 * (application/x-protobuf, the `-proto` exporter) is answered 415, so a change of encoding fails
 * the tests loudly instead of losing spans.
 */

export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** SPAN_KIND_SERVER = 2, CLIENT = 3, CONSUMER = 5 (OTLP's enum). */
  readonly kind: number;
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly resource: Readonly<Record<string, unknown>>;
  readonly startTimeUnixNano: bigint;
  readonly endTimeUnixNano: bigint;
}

export interface OtlpReceiver {
  /** http://127.0.0.1:<port>/v1/traces — for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. */
  readonly url: string;
  /** Every span received, in arrival order. */
  readonly spans: ReceivedSpan[];
  /** Export requests received (any path), with their content type. */
  readonly requests: Array<{ path: string; contentType: string; status: number }>;
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
  bytesValue?: string;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: KeyValue[];
}
interface ExportTraceServiceRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: Array<{ spans?: JsonSpan[] }>;
  }>;
}

function anyValue(value: AnyValue | undefined): unknown {
  if (value === undefined) return undefined;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  // int64 is a decimal string in OTLP/JSON (a number from some encoders).
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(anyValue);
  if (value.kvlistValue !== undefined) return attributesOf(value.kvlistValue.values);
  if (value.bytesValue !== undefined) return Buffer.from(value.bytesValue, 'base64');
  return undefined;
}

function attributesOf(list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValue(kv.value)]));
}

/** OTLP/JSON ids are hex; a JSON encoder following protobuf's JSON mapping would send base64. */
function hexId(id: string | undefined, bytes: number): string {
  if (id === undefined || id === '') return '';
  if (new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(id)) return id;
  const decoded = Buffer.from(id, 'base64');
  if (decoded.length !== bytes) throw new Error(`not a ${bytes}-byte id: ${id}`);
  return decoded.toString('hex');
}

async function body(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  const encoding = String(request.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'gzip') return promisify(gunzip)(raw);
  if (encoding === 'deflate') return promisify(inflate)(raw);
  if (encoding !== 'identity') throw new Error(`unsupported content-encoding ${encoding}`);
  return raw;
}

export function decodeExportRequest(json: ExportTraceServiceRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const resourceSpans of json.resourceSpans ?? []) {
    const resource = attributesOf(resourceSpans.resource?.attributes);
    for (const scope of resourceSpans.scopeSpans ?? []) {
      for (const span of scope.spans ?? []) {
        spans.push({
          traceId: hexId(span.traceId, 16),
          spanId: hexId(span.spanId, 8),
          parentSpanId: hexId(span.parentSpanId, 8),
          name: span.name,
          kind: span.kind ?? 0,
          attributes: attributesOf(span.attributes),
          resource,
          startTimeUnixNano: BigInt(span.startTimeUnixNano),
          endTimeUnixNano: BigInt(span.endTimeUnixNano),
        });
      }
    }
  }
  return spans;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: OtlpReceiver['requests'] = [];
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const contentType = String(request.headers['content-type'] ?? '')
      .split(';')[0]
      ?.trim()
      .toLowerCase();
    const answer = (status: number, text: string) => {
      requests.push({ path, contentType: contentType ?? '', status });
      response.writeHead(status, { 'content-type': 'application/json' }).end(text);
    };
    if (request.method !== 'POST' || path !== '/v1/traces') {
      request.resume();
      answer(404, '{}');
      return;
    }
    if (contentType !== 'application/json') {
      request.resume();
      answer(415, JSON.stringify({ code: 3, message: `unsupported content type ${contentType}` }));
      return;
    }
    body(request)
      .then((data) => {
        spans.push(...decodeExportRequest(JSON.parse(data.toString('utf8')) as ExportTraceServiceRequest));
        // An ExportTraceServiceResponse with no partialSuccess: everything was accepted.
        answer(200, '{}');
      })
      .catch((err: Error) => answer(400, JSON.stringify({ code: 3, message: err.message })));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address !== 'object') throw new Error('OTLP receiver has no address');
  return {
    url: `http://127.0.0.1:${address.port}/v1/traces`,
    spans,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

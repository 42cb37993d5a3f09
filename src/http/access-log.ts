import type { Context } from 'hono';

/**
 * The request id and the access log: one record per request, handed to the sink the entry
 * point injects (a JSON line on stdout on Node, console.log on Workers).
 *
 * Every response carries X-Request-Id: the client's own when it is well-formed (a proxy or a
 * client that already traces requests), otherwise a fresh one (nextRequestId). The record is
 * written when the runtime says the response has ended (Node: the socket took the last byte, or the connection
 * closed first: "aborted"); a runtime that cannot tell (Workers, app.request() in tests) gets
 * the record when the handler returns, with the declared Content-Length as its bytes
 * ("returned"). Nothing here touches the body stream: this is the blob hot path.
 *
 * What is never logged: request headers (Authorization, cookies, tokens), and the value of any
 * query parameter outside the OCI ones below, since a value there may be a credential
 * (`?token=`, a presigned signature); those appear as `name=[redacted]`.
 */

export interface AccessRecord {
  msg: 'access';
  requestId: string;
  method: string;
  /** The request URL's path (percent-encoding kept), without the query, cut at MAX_PATH_CHARS. */
  path: string;
  /** The query string with every value outside SAFE_QUERY_PARAMETERS redacted; absent without one. */
  query?: string;
  status: number;
  /** Body bytes sent ("finished", "aborted"), or the declared Content-Length ("returned"; null when none was declared). */
  bytes: number | null;
  /** From the request's arrival in the app to the record, rounded to 0.1 ms. */
  durationMs: number;
  /** The client's address when the runtime knows it. */
  remote?: string;
  /** The signature gate's decision on a gated manifest read: `allowed`, `warned` or `denied`, with the policies (`denied:release-signed`). */
  gate?: string;
  /**
   * finished: the whole response went to the connection. aborted: the connection closed first
   * (the client went away, or the body failed mid-way). returned: the runtime cannot observe
   * the body; the handler returned and the body was still to be sent.
   */
  outcome: 'finished' | 'aborted' | 'returned';
}

export type AccessLogSink = (record: AccessRecord) => void;

/** What only the runtime knows about a request's connection (Node: the socket; Workers: the edge's headers). */
export interface ConnectionInfo {
  remoteAddress(c: Context): string | undefined;
  /**
   * The request target exactly as the client sent it, when the runtime keeps it (Node: the
   * request line; the URL Hono sees has had its dot-segments resolved). Routing refuses a target
   * with dot-segments rather than serve the repository it resolves to.
   */
  sentTarget?(c: Context): string | undefined;
  /**
   * Arranges for `end` to be called once, when the response has been sent or its connection
   * closed first; false when this runtime cannot observe that (the record is then written when
   * the handler returns).
   */
  onResponseEnd?(c: Context, end: (result: { bytes: number; finished: boolean }) => void): boolean;
  /**
   * The request body read straight from the connection, where that is cheaper than the
   * Request's stream (Node: the socket's own Buffers; the adapter's stream copies every chunk);
   * undefined to read the Request's. The same stream every time for one request.
   */
  requestBody?(c: Context): ReadableStream<Uint8Array> | undefined;
}

/** Incoming ids longer than this, or with other characters, are replaced: they are echoed and logged. */
export const MAX_REQUEST_ID_CHARS = 128;
const REQUEST_ID = new RegExp(`^[A-Za-z0-9._:-]{1,${MAX_REQUEST_ID_CHARS}}$`);
/** Bounds one log line; a repository name is at most 255 characters, a reference 128. */
export const MAX_PATH_CHARS = 1024;
export const MAX_QUERY_CHARS = 512;
/** The OCI query parameters (spec.md#endpoints, containerd's ns): their values name content, never credentials. */
const SAFE_QUERY_PARAMETERS = new Set(['digest', 'mount', 'from', 'n', 'last', 'ns', 'artifactType']);
const MAX_QUERY_VALUE_CHARS = 200;

/**
 * A fresh id: this process's (or isolate's) random prefix, then a counter. Unique without a
 * random draw per request (crypto.randomUUID costs about 2 µs each on Node 20); ids are for
 * finding lines, not secrets. The prefix is drawn on first use: Workers refuse random values
 * in the global scope.
 */
let idPrefix: string | undefined;
let idCounter = 0;

export function nextRequestId(): string {
  idPrefix ??= Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${idPrefix}-${(++idCounter).toString(36)}`;
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
    /** The signature gate's decision on a manifest read, for the access record (routes/manifests.ts). */
    gate: string;
  }
}

/** What `begin` noted about a request, for `end`. */
export interface Begun {
  started: number;
  requestId: string;
}

/**
 * The request id and the access record of each request, as two halves that the app's one
 * outermost middleware calls around everything else (one middleware layer less per request:
 * this runs on every request, the blob hot path included).
 */
export function requestLog(sink: AccessLogSink | undefined, connection: ConnectionInfo | undefined) {
  return {
    begin(c: Context): Begun {
      const incoming = c.req.header('x-request-id');
      const requestId = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : nextRequestId();
      c.set('requestId', requestId);
      return { started: performance.now(), requestId };
    },
    /** After the response is made: returns the id, and writes the record (now, or when the runtime says the body has gone). */
    end(c: Context, { started, requestId }: Begun): void {
      c.res.headers.set('X-Request-Id', requestId);
      if (!sink) return;
      const { path, query } = splitTarget(c.req.url);
      const address = connection?.remoteAddress(c);
      // One shape for every record (JSON.stringify leaves out the undefined ones).
      const record: AccessRecord = {
        msg: 'access',
        requestId,
        method: c.req.method,
        path,
        query,
        status: c.res.status,
        bytes: null,
        durationMs: 0,
        remote: address ? address.slice(0, 64) : undefined,
        gate: c.get('gate'),
        outcome: 'returned',
      };
      const write = (outcome: AccessRecord['outcome'], bytes: number | null) => {
        record.outcome = outcome;
        record.bytes = bytes;
        record.durationMs = Math.round((performance.now() - started) * 10) / 10;
        sink(record);
      };
      const observed = connection?.onResponseEnd?.(c, ({ bytes, finished }) => write(finished ? 'finished' : 'aborted', bytes)) ?? false;
      if (!observed) write('returned', declaredBytes(c));
    },
  };
}

/** The body a response declares: none without a body, for HEAD, 204 and 304, whatever Content-Length says. */
function declaredBytes(c: Context): number | null {
  const status = c.res.status;
  if (c.res.body === null || c.req.method === 'HEAD' || status === 204 || status === 304) return 0;
  const length = c.res.headers.get('content-length');
  return length !== null && /^\d+$/.test(length) ? Number(length) : null;
}

/** Path and redacted query of a request URL, by string search (no URL parse per request). */
export function splitTarget(url: string): { path: string; query?: string } {
  const scheme = url.indexOf('://');
  const slash = url.indexOf('/', scheme < 0 ? 0 : scheme + 3);
  const target = slash < 0 ? '/' : url.slice(slash);
  const mark = target.indexOf('?');
  const path = cut(mark < 0 ? target : target.slice(0, mark), MAX_PATH_CHARS);
  if (mark < 0 || mark === target.length - 1) return { path };
  return { path, query: cut(redactQuery(target.slice(mark + 1)), MAX_QUERY_CHARS) };
}

/** A name that reads as a parameter name; anything else (`?<token>` without a value, say) may itself be a secret. */
const PLAIN_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/;

function redactQuery(query: string): string {
  return query
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      if (eq >= 0 && SAFE_QUERY_PARAMETERS.has(name)) return `${name}=${cut(pair.slice(eq + 1), MAX_QUERY_VALUE_CHARS)}`;
      const shown = PLAIN_NAME.test(name) ? name : '[redacted]';
      return eq < 0 ? shown : `${shown}=[redacted]`;
    })
    .join('&');
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}...`;
}

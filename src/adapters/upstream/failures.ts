import type { UpstreamFailure } from '../../ports/upstream.js';
import { discard, readBounded } from './bodies.js';
import { parseRetryAfter } from './headers.js';
import { DEFAULT_RETRY_AFTER_SECONDS, MAX_ERROR_BODY_BYTES } from './limits.js';

/**
 * From a final non-2xx response to the port's tagged failure. Messages name the host, the
 * status and at most the OCI error code (checked against the code grammar), never the
 * upstream's own text: they may reach a client, and an upstream's body is not ours to echo.
 */

export function unavailable(message: string, status?: number): UpstreamFailure {
  return status === undefined ? { kind: 'unavailable', message } : { kind: 'unavailable', status, message };
}

export function denied(status: number, message: string): UpstreamFailure {
  return { kind: 'denied', status, message };
}

export function rateLimited(res: Response, now: number): UpstreamFailure {
  return { kind: 'rate-limited', retryAfterSeconds: parseRetryAfter(res.headers.get('retry-after'), now) ?? DEFAULT_RETRY_AFTER_SECONDS };
}

/** An OCI error code as the spec spells them (spec.md#error-codes); anything else is not repeated. */
const ERROR_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/** The error codes of an OCI error body (`{"errors":[{"code":...}]}`), read bounded; [] for anything else. */
async function errorCodes(res: Response, host: string, idleMs: number, abort: () => void): Promise<string[]> {
  const read = await readBounded(res, MAX_ERROR_BODY_BYTES, { host, idleMs, abort });
  if (read.kind !== 'ok' || read.bytes.byteLength === 0) return [];
  try {
    const doc = JSON.parse(new TextDecoder().decode(read.bytes)) as { errors?: Array<{ code?: unknown }> };
    if (!Array.isArray(doc?.errors)) return [];
    return doc.errors.map((e) => e?.code).filter((c): c is string => typeof c === 'string' && ERROR_CODE.test(c));
  } catch {
    return [];
  }
}

export interface FailureContext {
  /** The host that answered. */
  host: string;
  /** What was asked, for messages: `manifest`, `blob`, `tag list`, `referrers`. */
  what: string;
  now: number;
  idleMs: number;
  abort: () => void;
}

/**
 * Maps a final non-2xx answer:
 *
 *   404                             -> not-found
 *   429                             -> rate-limited (Retry-After, or a default)
 *   4xx with an *_UNKNOWN code      -> not-found (NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN)
 *   401, 403                        -> denied (we already authenticated as configured)
 *   anything else                   -> unavailable (5xx after retries, 3xx without Location, other 4xx)
 */
export async function failureOf(res: Response, c: FailureContext): Promise<UpstreamFailure> {
  const { status } = res;
  if (status === 404) {
    await discard(res);
    return { kind: 'not-found' };
  }
  if (status === 429) {
    await discard(res);
    return rateLimited(res, c.now);
  }
  let codes: string[] = [];
  if (status >= 400 && status < 500) codes = await errorCodes(res, c.host, c.idleMs, c.abort);
  else await discard(res);
  if (codes.some((code) => code.endsWith('_UNKNOWN'))) return { kind: 'not-found' };
  const code = codes[0] ? ` ${codes[0]}` : '';
  if (status === 401 || status === 403) return denied(status, `${c.host} denied the ${c.what} request (${status}${code})`);
  return unavailable(`${c.host} answered ${status}${code} to the ${c.what} request`, status);
}


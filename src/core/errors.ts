/**
 * The one table of errors Outpost can answer with.
 *
 * Each entry maps an internal kind to the wire code of the OCI Distribution Spec
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes),
 * its HTTP status and a default message. A few kinds share a wire code but need a
 * different status (a manifest over the size cap is SIZE_INVALID with 413, an
 * unsatisfiable range is 416), which is why the table is keyed by kind, not by code.
 * Wire codes stay within the spec's list (plus UNKNOWN for server faults, and Distribution's
 * UNAVAILABLE for an upstream that cannot be reached), so clients that switch on them keep working.
 *
 * Everything in core throws `OciError`; `http/errors.ts` is the only place that turns
 * one into `{"errors":[{code,message,detail}]}`.
 */
export const ERRORS = {
  BLOB_UNKNOWN: { code: 'BLOB_UNKNOWN', status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { code: 'BLOB_UPLOAD_UNKNOWN', status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { code: 'DIGEST_INVALID', status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { code: 'MANIFEST_BLOB_UNKNOWN', status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { code: 'MANIFEST_INVALID', status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { code: 'MANIFEST_UNKNOWN', status: 404, message: 'manifest unknown to registry' },
  MANIFEST_TOO_LARGE: { code: 'SIZE_INVALID', status: 413, message: 'manifest too large' },
  BLOB_TOO_LARGE: { code: 'SIZE_INVALID', status: 413, message: 'blob too large' },
  NAME_INVALID: { code: 'NAME_INVALID', status: 400, message: 'invalid repository name' },
  // A path with dot-segments (/v2/a/../b/...) names a repository only after it is resolved; it is refused, never resolved.
  PATH_DOT_SEGMENTS: { code: 'NAME_INVALID', status: 404, message: 'the path has dot-segments ("." or ".."); a repository name is taken exactly as sent' },
  NAME_UNKNOWN: { code: 'NAME_UNKNOWN', status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { code: 'SIZE_INVALID', status: 400, message: 'provided length did not match content length' },
  REFERENCE_INVALID: { code: 'MANIFEST_INVALID', status: 400, message: 'invalid tag or digest reference' },
  QUERY_INVALID: { code: 'UNSUPPORTED', status: 400, message: 'invalid query parameter' },
  RANGE_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 416, message: 'chunk does not start at the current upload offset' },
  // The blob exists: BLOB_UNKNOWN would send a client to look for it elsewhere.
  RANGE_NOT_SATISFIABLE: { code: 'SIZE_INVALID', status: 416, message: 'requested range not satisfiable' },
  UNAUTHORIZED: { code: 'UNAUTHORIZED', status: 401, message: 'authentication required' },
  DENIED: { code: 'DENIED', status: 403, message: 'requested access to the resource is denied' },
  // An immutable tag that a push would move or a DELETE remove (core/registry/immutable-tags.ts).
  TAG_IMMUTABLE: { code: 'DENIED', status: 403, message: 'the tag is immutable' },
  UNSUPPORTED: { code: 'UNSUPPORTED', status: 415, message: 'the operation is unsupported' },
  METHOD_NOT_ALLOWED: { code: 'UNSUPPORTED', status: 405, message: 'method not allowed for this route' },
  // A request the HTTP layer cannot even turn into a URL (a target of "*", a backslash, no Host).
  REQUEST_MALFORMED: { code: 'UNSUPPORTED', status: 400, message: 'malformed request' },
  ROUTE_UNKNOWN: { code: 'UNSUPPORTED', status: 404, message: 'no such route in the distribution API' },
  TOO_MANY_REQUESTS: { code: 'TOOMANYREQUESTS', status: 429, message: 'too many requests' },
  /** Garbage collection is deleting older bytes of this digest (core/gc/references.ts); it settles within minutes. */
  CONTENT_BEING_COLLECTED: { code: 'UNAVAILABLE', status: 503, message: 'garbage collection is deleting this content; store it again shortly' },
  CONTENT_RANGE_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 400, message: 'malformed Content-Range' },
  MANIFEST_BODY_INCOMPLETE: { code: 'MANIFEST_INVALID', status: 400, message: 'the manifest body broke off before its end' },
  // The mirror's upstream failed and nothing cached could answer (messages name the upstream).
  UPSTREAM_UNAVAILABLE: { code: 'UNAVAILABLE', status: 503, message: 'the upstream registry is unavailable' },
  UPSTREAM_RATE_LIMITED: { code: 'TOOMANYREQUESTS', status: 429, message: 'the upstream registry is rate-limiting this mirror' },
  UPSTREAM_DENIED: { code: 'DENIED', status: 403, message: 'the upstream registry refused access' },
  UPSTREAM_INVALID: { code: 'UNKNOWN', status: 502, message: 'the upstream registry sent invalid content' },
  // Not the client's doing; the spec has no code for these, so they use UNKNOWN as Distribution does.
  INTERNAL: { code: 'UNKNOWN', status: 500, message: 'internal server error' },
  MISCONFIGURED: { code: 'UNKNOWN', status: 503, message: 'the registry is misconfigured' },
} as const satisfies Record<string, { code: string; status: number; message: string }>;

export type ErrorKind = keyof typeof ERRORS;

export class OciError extends Error {
  readonly kind: ErrorKind;
  readonly detail: unknown;
  /** Extra response headers the error needs (e.g. `Content-Range` on 416, `Range` on an upload offset mismatch). */
  readonly headers: Record<string, string>;

  constructor(kind: ErrorKind, message?: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message ?? ERRORS[kind].message);
    this.name = 'OciError';
    this.kind = kind;
    this.detail = detail;
    this.headers = headers;
  }

  get code(): string {
    return ERRORS[this.kind].code;
  }

  get status(): number {
    return ERRORS[this.kind].status;
  }
}

export function isOciError(err: unknown): err is OciError {
  return err instanceof OciError;
}

/** What an error says, for a log line or an error's detail: its message (or the value itself), at most `max` characters. */
export function messageOf(err: unknown, max = 200): string {
  return String((err as Error)?.message ?? err).slice(0, max);
}

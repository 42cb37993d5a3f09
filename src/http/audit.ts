import type { Context } from 'hono';
import type { ErrorKind } from '../core/errors.js';

/**
 * The audit log: one record per change (a manifest or blob stored, a blob mounted, a manifest
 * or blob deleted), per token issued to a user (a login, with what it grants), and per request
 * refused for who sent it (401, 403, and the 429 of too many failed logins), handed to its own sink, apart from the access log. Routine requests (pulls,
 * upload chunks) write none. A record says who, what, where, the result, the client's address
 * and the request id; never a credential, a header or a query value.
 *
 *   {"msg":"audit","requestId","who","action","repository","reference","digest","from",
 *    "scope","result","status","code","client"}
 *
 * result: ok (a change was made), denied (refused: bad credentials, no permission, an
 * immutable tag, too many logins), unauthenticated (no credentials were sent where they are
 * needed: a client's first anonymous try, before it signs in).
 */

export interface AuditRecord {
  msg: 'audit';
  requestId: string;
  /** The user, or `anonymous`. */
  who: string;
  action: 'pull' | 'push' | 'delete' | 'mount' | 'login' | 'catalog';
  repository?: string;
  reference?: string;
  digest?: string;
  /** The source repository of a mount. */
  from?: string;
  /** What a token issued to a user grants (`repository:team/app:pull,push ...`). */
  scope?: string;
  result: 'ok' | 'denied' | 'unauthenticated';
  status: number;
  /** The OCI error code of a refusal. */
  code?: string;
  client?: string;
}

export type AuditSink = (record: AuditRecord) => void;

/** What the request is about, set by routing (app.ts) and the token endpoint. */
export interface AuditTarget {
  action: AuditRecord['action'];
  repository?: string;
  reference?: string;
  from?: string;
  /** Set by the token endpoint when it issued a token to a user: what the token grants. */
  granted?: string;
}

declare module 'hono' {
  interface ContextVariableMap {
    audit: AuditTarget;
    /** The OCI code of the error answered (http/errors.ts), for the audit record. */
    errorCode: string;
    /** Its kind in the one table (core/errors.ts): what decides whether a refusal is audited. */
    errorKind: ErrorKind;
  }
}

/**
 * The refusals of who asked: bad or missing credentials, no permission, an immutable tag, and
 * (for a login) too many failed logins. An upstream's refusal (UPSTREAM_DENIED) or rate limit,
 * and the anonymous fill limit, are not about the caller's rights: the access log has them.
 */
const REFUSALS: ReadonlySet<ErrorKind> = new Set(['UNAUTHORIZED', 'DENIED', 'TAG_IMMUTABLE', 'TOO_MANY_REQUESTS']);

/** A repository name is at most 255 characters; a reference, a digest or a scope list is cut here. */
const MAX_FIELD_CHARS = 256;

/** Writes the audit record of a request that has one (after its response is made). */
export function audit(c: Context, sink: AuditSink | undefined, client: string | undefined): void {
  const target = c.get('audit');
  if (!sink || !target) return;
  const status = c.res.status;
  const method = c.req.method;
  let result: AuditRecord['result'];
  const kind = c.get('errorKind');
  if (kind !== undefined && REFUSALS.has(kind) && (kind !== 'TOO_MANY_REQUESTS' || target.action === 'login')) {
    const identity = c.get('identity');
    const sentCredentials = c.req.header('authorization') !== undefined;
    result = status === 401 && !sentCredentials && identity?.caller.kind !== 'user' ? 'unauthenticated' : 'denied';
    // A client's first anonymous try at the base route is how it finds the token endpoint.
    if (result === 'unauthenticated' && target.action === 'login') return;
  } else if (status >= 200 && status < 300 && (isChange(method, status, target) || target.granted !== undefined)) {
    result = 'ok';
  } else {
    return;
  }
  const caller = c.get('identity')?.caller;
  const digest = c.res.headers.get('docker-content-digest') ?? undefined;
  sink({
    msg: 'audit',
    requestId: c.get('requestId'),
    who: caller?.kind === 'user' ? cut(caller.name) : 'anonymous',
    action: target.action,
    repository: target.repository && cut(target.repository),
    reference: target.reference && cut(target.reference),
    digest: digest && cut(digest),
    from: target.from && cut(target.from),
    scope: target.granted && cut(target.granted),
    result,
    status,
    code: result === 'ok' ? undefined : c.get('errorCode'),
    client: client?.slice(0, 64),
  });
}

/** A stored manifest or blob (201), a mount (201), a delete of content (202); not an upload's start, chunk or cancel. */
function isChange(method: string, status: number, target: AuditTarget): boolean {
  if (target.action === 'login' || target.action === 'pull' || target.action === 'catalog') return false;
  if (method === 'PUT' || method === 'POST') return status === 201;
  return method === 'DELETE' && status === 202;
}

function cut(s: string): string {
  return s.length <= MAX_FIELD_CHARS ? s : `${s.slice(0, MAX_FIELD_CHARS)}...`;
}

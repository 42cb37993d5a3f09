import type { Context } from 'hono';
import type { Auth, Credentials, Decision, Identity } from '../core/auth/auth.js';
import { ANONYMOUS } from '../core/auth/access.js';
import { TOKEN_PATH, type Action } from '../core/auth/config.js';
import { OciError } from '../core/errors.js';

/**
 * Authentication at the HTTP edge (the Docker token spec,
 * https://distribution.github.io/distribution/spec/auth/token/): reading credentials from the
 * Authorization header, the challenges of 401 answers, and turning a Decision of core/auth
 * into the answer a registry client expects:
 *
 *   allowed             the route runs
 *   sign-in             401 UNAUTHORIZED, WWW-Authenticate: Bearer realm,service,scope
 *   insufficient-scope  401 UNAUTHORIZED, the same challenge with error="insufficient_scope"
 *   denied              403 DENIED
 *
 * A Basic header is accepted on every route too (Docker clients send it when a registry
 * challenges with Basic; curl users send it anyway); a wrong one is a 401, and too many wrong
 * ones from one address a 429 with Retry-After, before any password is checked.
 */

/** An Authorization header longer than this is no credential of ours (a token is under 2 KiB). */
const MAX_AUTHORIZATION_CHARS = 16 * 1024;

declare module 'hono' {
  interface ContextVariableMap {
    /** Who the request is from (set when authentication is configured). */
    identity: Identity;
    /** The caller may not pull the source of the mount it asked for (routes/uploads.ts). */
    mountRefused: boolean;
  }
}

export function credentialsOf(header: string | undefined): Credentials {
  if (header === undefined || header.trim() === '') return { kind: 'none' };
  if (header.length > MAX_AUTHORIZATION_CHARS) return { kind: 'malformed' };
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const value = space < 0 ? '' : header.slice(space + 1).trim();
  if (scheme === 'bearer' && value !== '') return { kind: 'bearer', token: value };
  if (scheme === 'basic') {
    const decoded = decodeBasic(value);
    if (decoded) return { kind: 'basic', ...decoded };
  }
  return { kind: 'malformed' };
}

function decodeBasic(value: string): { user: string; password: string } | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(atob(value), (ch) => ch.charCodeAt(0)));
  } catch {
    return undefined;
  }
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** The token endpoint's URL as this request's client reaches it. */
export function realmOf(c: Context, auth: Auth): string {
  if (auth.config.realm) return auth.config.realm;
  const url = new URL(c.req.url);
  // The origin comes from the client's Host: Node takes `x",error="y` as a host, which must not end the quoted realm.
  return `${url.origin}${TOKEN_PATH}`.replace(/["\\]/g, encodeURIComponent);
}

/** `Bearer realm="...",service="..."[,scope="..."][,error="..."]`; every value is ours or a validated name. */
export function challenge(c: Context, auth: Auth, scope?: string, error?: string): string {
  let header = `Bearer realm="${realmOf(c, auth)}",service="${auth.config.service}"`;
  if (scope) header += `,scope="${scope}"`;
  if (error) header += `,error="${error}"`;
  return header;
}

/**
 * Who the request is from; throws the 401 (bad credentials or token) or 429 (too many failed
 * logins from this address) that answers it otherwise.
 */
export async function identify(c: Context, auth: Auth, client: string): Promise<Identity> {
  const credentials = credentialsOf(c.req.header('authorization'));
  const result = await auth.authenticate(credentials, client);
  switch (result.kind) {
    case 'ok':
      c.set('identity', result.identity);
      return result.identity;
    case 'bad-credentials':
      c.set('identity', { caller: credentials.kind === 'basic' ? { kind: 'user', name: credentials.user } : ANONYMOUS });
      throw new OciError('UNAUTHORIZED', 'the credentials are not valid', undefined, { 'WWW-Authenticate': challenge(c, auth) });
    case 'bad-token':
      c.set('identity', { caller: ANONYMOUS });
      throw new OciError('UNAUTHORIZED', 'the token is not valid; get a new one', undefined, {
        'WWW-Authenticate': challenge(c, auth, undefined, 'invalid_token'),
      });
    case 'rate-limited':
      c.set('identity', { caller: credentials.kind === 'basic' ? { kind: 'user', name: credentials.user } : ANONYMOUS });
      throw tooManyLogins(result.retryAfterMs);
  }
}

/** Whole seconds for Retry-After: at least 1, rounded up. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

export function tooManyLogins(retryAfterMs: number): OciError {
  const seconds = retryAfterSeconds(retryAfterMs);
  return new OciError('TOO_MANY_REQUESTS', `too many failed logins from this address; try again in ${seconds} s`, undefined, { 'Retry-After': String(seconds) });
}

/** Answers a decision that is not `allowed` (throws); `scope` is what a new token must hold. */
export function enforce(c: Context, auth: Auth, decision: Decision, scope: string, what: string): void {
  switch (decision) {
    case 'allowed':
      return;
    case 'sign-in':
      throw new OciError('UNAUTHORIZED', `authentication required to ${what}`, undefined, { 'WWW-Authenticate': challenge(c, auth, scope) });
    case 'insufficient-scope':
      throw new OciError('UNAUTHORIZED', `the token does not grant ${what}; get one for ${scope}`, undefined, {
        'WWW-Authenticate': challenge(c, auth, scope, 'insufficient_scope'),
      });
    case 'denied':
      throw new OciError('DENIED', `not allowed to ${what}`);
  }
}

/**
 * The action a route needs (the token spec's actions): reads pull, uploads and manifest
 * pushes push, deletes of manifests and blobs delete. Docker asks for pull,push to push, so
 * the challenge of a push names both.
 */
export function actionOf(route: 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload', method: string): Action {
  if (method === 'GET' || method === 'HEAD') return route === 'upload' ? 'push' : 'pull';
  if (method === 'DELETE' && (route === 'manifest' || route === 'blob')) return 'delete';
  return 'push';
}

export function scopeFor(name: string, action: Action): string {
  return `repository:${name}:${action === 'push' ? 'pull,push' : action}`;
}

import type { Clock } from '../../ports/clock.js';
import type { UpstreamFailure } from '../../ports/upstream.js';
import { discard, readBounded } from './bodies.js';
import { denied, rateLimited, unavailable } from './failures.js';
import { parseChallenge } from './headers.js';
import { DEFAULT_TOKEN_LIFETIME_SECONDS, MAX_CACHED_TOKENS, MAX_TOKEN_RESPONSE_BYTES, TOKEN_EXPIRY_MARGIN_MS } from './limits.js';
import type { Transport } from './transport.js';

/**
 * Authentication against one upstream, after oras-go's auth client and the distribution token
 * spec (distribution spec/auth/token.md):
 *
 *   prepare(scope):     the header for a first attempt, from what the last challenge taught us:
 *                       nothing yet -> anonymous; Basic -> credentials; Bearer -> a cached token,
 *                       else one fetched from the known realm (saves the anonymous 401 round trip)
 *   challenged(401):    Basic  -> credentials, once (denied without them, or when they were refused)
 *                       Bearer -> a token for our scope plus the challenged ones, once:
 *                                 a cached one we did not just send, else a fresh one
 *   the caller retries once with that header; a second 401 is `denied`.
 *
 * Tokens are cached per (upstream host, scopes) until `expires_in` (default 60 s) less a
 * margin, and concurrent fetches of the same token are merged into one request.
 *
 * The realm is checked before it is called (CVE-2026-33540, where distribution's proxy sent its
 * upstream credentials to whatever realm a challenge named): it must be an absolute http(s)
 * URL, and credentials go to it only over https, or over http to the upstream's own host name
 * (a registry and its token service on loopback in tests). Otherwise the token is fetched
 * anonymously: public content keeps working, private content answers `denied`, and the
 * credentials never leave. Redirects from the realm drop them too (transport.ts).
 */

export interface Credentials {
  username: string;
  password: string;
}

export interface AuthOptions {
  upstream: URL;
  credentials?: Credentials;
  transport: Transport;
  clock: Clock;
  tokenTimeoutMs: number;
  idleMs: number;
  log: (event: Record<string, unknown>) => void;
  /** Timer of the waiting caller (see JOIN_TICK_MS). */
  sleep: (ms: number) => Promise<void>;
}

/**
 * A caller that joins another's token fetch also wakes on a timer of its own this often: on
 * workerd a request that awaits only a promise that another request's I/O settles is cancelled
 * as hung, and the fetch dies with the request that started it.
 */
const JOIN_TICK_MS = 25;

/** An Authorization header to send (undefined: anonymous). */
export interface Attempt {
  kind: 'attempt';
  header?: string;
}

type HostScheme = { kind: 'basic' } | { kind: 'bearer'; realm: string; service?: string };

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** `repository:library/nginx:pull`, the scope a pull needs (token-scope.md). */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function basicHeader(c: Credentials): string {
  // btoa takes Latin-1 only; credentials are UTF-8 (RFC 7617 section 2.1's charset).
  let latin1 = '';
  for (const b of new TextEncoder().encode(`${c.username}:${c.password}`)) latin1 += String.fromCharCode(b);
  return `Basic ${btoa(latin1)}`;
}

export type RealmCheck = { kind: 'ok'; url: URL; credentials: boolean } | { kind: 'refused'; why: string };

/** Whether a challenge's realm may be called, and whether with our credentials. */
export function checkRealm(realm: string, upstream: URL): RealmCheck {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    return { kind: 'refused', why: 'is not an absolute URL' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { kind: 'refused', why: 'is not an http(s) URL' };
  if (url.username || url.password) return { kind: 'refused', why: 'carries credentials of its own' };
  return { kind: 'ok', url, credentials: url.protocol === 'https:' || url.hostname === upstream.hostname };
}

export class Authenticator {
  private scheme: HostScheme | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, { promise: Promise<CachedToken | UpstreamFailure>; settled: boolean }>();

  constructor(private readonly o: AuthOptions) {}

  async prepare(scope: string): Promise<Attempt | UpstreamFailure> {
    const s = this.scheme;
    if (s === undefined) return { kind: 'attempt' };
    if (s.kind === 'basic') return { kind: 'attempt', header: this.o.credentials && basicHeader(this.o.credentials) };
    const scopes = [scope];
    const cached = this.cached(scopes);
    if (cached) return { kind: 'attempt', header: `Bearer ${cached}` };
    return this.bearer(s, scopes);
  }

  /** After a 401 from the upstream itself, answered to `sent`: the one header to retry with, or the answer. */
  async challenged(res: Response, scope: string, sent: Attempt): Promise<Attempt | UpstreamFailure> {
    const host = this.o.upstream.host;
    const challenge = parseChallenge(res.headers.get('www-authenticate'));
    await discard(res);
    if (challenge?.scheme === 'basic') {
      this.scheme = { kind: 'basic' };
      if (!this.o.credentials) return denied(401, `${host} requires credentials and none are configured`);
      const header = basicHeader(this.o.credentials);
      if (sent.header === header) return denied(401, `${host} refused the configured credentials`);
      return { kind: 'attempt', header };
    }
    if (challenge?.scheme !== 'bearer') return denied(401, `${host} answered 401 without a usable challenge`);
    const realm = challenge.params.realm;
    if (!realm) return unavailable(`${host} sent a Bearer challenge without a realm`, 401);
    const s: HostScheme = { kind: 'bearer', realm, service: challenge.params.service };
    this.scheme = s;
    const scopes = [scope, ...(challenge.params.scope ?? '').split(' ')];
    const cached = this.cached(scopes);
    // A token we have not tried yet (another request fetched it meanwhile) is worth one try.
    if (cached && sent.header !== `Bearer ${cached}`) return { kind: 'attempt', header: `Bearer ${cached}` };
    this.tokens.delete(this.key(scopes));
    return this.bearer(s, scopes);
  }

  /** Sorted, unique, non-empty: the same scopes in another order share a token (oras-go CleanScopes, simplified). */
  private key(scopes: string[]): string {
    return `${this.o.upstream.host} ${[...new Set(scopes.filter((s) => s !== ''))].sort().join(' ')}`;
  }

  private cached(scopes: string[]): string | undefined {
    const key = this.key(scopes);
    const t = this.tokens.get(key);
    if (t === undefined) return undefined;
    if (t.expiresAt > this.o.clock.now()) return t.token;
    this.tokens.delete(key);
    return undefined;
  }

  private async bearer(s: Extract<HostScheme, { kind: 'bearer' }>, scopes: string[]): Promise<Attempt | UpstreamFailure> {
    const key = this.key(scopes);
    let pending = this.inflight.get(key);
    const joined = pending !== undefined;
    if (pending === undefined) {
      const entry: { promise: Promise<CachedToken | UpstreamFailure>; settled: boolean } = { promise: Promise.resolve({ kind: 'unavailable', message: '' }), settled: false };
      entry.promise = this.fetchToken(s, [...new Set(scopes.filter((x) => x !== ''))].sort()).finally(() => {
        entry.settled = true;
        this.inflight.delete(key);
      });
      this.inflight.set(key, entry);
      pending = entry;
    }
    if (joined) {
      const deadline = this.o.clock.now() + this.o.tokenTimeoutMs;
      while (!pending.settled && this.o.clock.now() < deadline) await Promise.race([pending.promise, this.o.sleep(JOIN_TICK_MS)]);
      // The fetch we joined outlived its timeout (its request may be gone): fetch our own.
      if (!pending.settled) return this.bearerAlone(s, scopes, key);
    }
    const t = await pending.promise;
    if ('kind' in t) return t;
    this.remember(key, t);
    return { kind: 'attempt', header: `Bearer ${t.token}` };
  }

  private async bearerAlone(s: Extract<HostScheme, { kind: 'bearer' }>, scopes: string[], key: string): Promise<Attempt | UpstreamFailure> {
    const t = await this.fetchToken(s, [...new Set(scopes.filter((x) => x !== ''))].sort());
    if ('kind' in t) return t;
    this.remember(key, t);
    return { kind: 'attempt', header: `Bearer ${t.token}` };
  }

  private remember(key: string, t: CachedToken): void {
    this.tokens.delete(key);
    this.tokens.set(key, t);
    // Map keeps insertion order: the first key is the one touched longest ago.
    while (this.tokens.size > MAX_CACHED_TOKENS) this.tokens.delete(this.tokens.keys().next().value!);
  }

  /** GET realm?service=..&scope=.. (token.md#requesting-a-token). */
  private async fetchToken(s: Extract<HostScheme, { kind: 'bearer' }>, scopes: string[]): Promise<CachedToken | UpstreamFailure> {
    const host = this.o.upstream.host;
    const check = checkRealm(s.realm, this.o.upstream);
    if (check.kind === 'refused') return unavailable(`${host} named a token realm that ${check.why}`);
    const url = new URL(check.url);
    if (s.service !== undefined) url.searchParams.set('service', s.service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = { accept: 'application/json' };
    const creds = this.o.credentials;
    if (creds && check.credentials) headers.authorization = basicHeader(creds);
    if (creds && !check.credentials) this.o.log({ event: 'upstream.realm-insecure', host, realm: url.host, action: 'token fetched without credentials' });

    const realmHost = url.host;
    const sent = await this.o.transport.send({ method: 'GET', url, headers, timeoutMs: this.o.tokenTimeoutMs });
    if (sent.kind === 'error') return unavailable(`token service: ${sent.message}`);
    const { res } = sent;
    if (res.status === 401 || res.status === 403) {
      await discard(res);
      return denied(res.status, `${realmHost} refused ${headers.authorization ? 'the configured credentials' : 'an anonymous token'} (${res.status})`);
    }
    if (res.status === 429) {
      await discard(res);
      return rateLimited(res, this.o.clock.now());
    }
    if (res.status !== 200) {
      await discard(res);
      return unavailable(`${realmHost} answered ${res.status} to the token request`, res.status);
    }
    const read = await readBounded(res, MAX_TOKEN_RESPONSE_BYTES, { host: realmHost, idleMs: this.o.idleMs, abort: sent.abort });
    if (read.kind !== 'ok') return unavailable(read.kind === 'too-large' ? `${realmHost}: token response larger than ${MAX_TOKEN_RESPONSE_BYTES} bytes` : read.message);
    const parsed = parseTokenResponse(read.bytes);
    if (!parsed) return unavailable(`${realmHost}: token response without a token`);
    const lifetimeMs = parsed.expiresIn * 1000;
    const expiresAt = this.o.clock.now() + lifetimeMs - Math.min(TOKEN_EXPIRY_MARGIN_MS, lifetimeMs / 2);
    this.o.log({ event: 'upstream.token', host, realm: realmHost, scopes, expiresInSeconds: parsed.expiresIn, credentials: headers.authorization !== undefined });
    return { token: parsed.token, expiresAt };
  }
}

/** `{"token": ..., "access_token": ..., "expires_in": ...}` (token.md#token-response-fields); either token field will do. */
export function parseTokenResponse(bytes: Uint8Array): { token: string; expiresIn: number } | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  const token = [d.token, d.access_token].find((t): t is string => typeof t === 'string' && t !== '');
  // A token goes into a header: refuse what a header cannot carry rather than send it broken.
  if (token === undefined || !/^[\x21-\x7e]+$/.test(token)) return undefined;
  const e = d.expires_in;
  const expiresIn = typeof e === 'number' && Number.isFinite(e) && e > 0 ? e : DEFAULT_TOKEN_LIFETIME_SECONDS;
  return { token, expiresIn };
}

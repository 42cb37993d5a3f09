/**
 * Authentication and the authorisation decision of one request.
 *
 * A caller is anonymous, or a configured user proven by Basic credentials (on any route, or
 * at the token endpoint) or by an access token Outpost issued. A request is allowed when
 *
 *   the rules let the caller do the action on the repository the request resolves to
 *   (its qualified name), and, when it came with a token, the token grants that action on
 *   the repository name the request used.
 *
 * The token is an upper bound that the rules are checked against again on every request, so a
 * token never widens what the rules allow, and a token for `library/nginx` reached with
 * `?ns=docker.io` is still judged by the rules of `docker.io/library/nginx`. What is not
 * allowed is told apart as the token spec asks: an anonymous caller is asked to sign in (401
 * with a challenge), a token lacking a scope the rules would grant is sent back for a new one
 * (401, error="insufficient_scope"), and a known caller the rules refuse is denied (403).
 *
 * Passwords: plaintext from secrets is hashed at start-up; a proven (user, password) pair is
 * remembered for VERIFIED_TTL_MS under a keyed digest (the plaintext is not kept), so Basic
 * on every blob request does not pay PBKDF2 each time. Failed logins are counted per client
 * address and user name, and per address (limiter.ts), and answered 429 past a limit, without
 * checking the password.
 */
import { AccessRules, ANONYMOUS, type Caller } from './access.js';
import type { Action, AuthConfig } from './config.js';
import { WindowLimiter } from './limiter.js';
import { constantTimeEqual } from '../bytes.js';
import { DEFAULT_ITERATIONS, formatPasswordHash, hashPassword, parsePasswordHash, verifyPassword, type PasswordHash } from './passwords.js';
import { grants, grantsCatalog, type AccessEntry, type Scope } from './scopes.js';
import { TokenError, Tokens } from './tokens.js';

/**
 * Failed logins are counted per (address, user) against `loginFailures.limit`, and per address
 * against this many times it: behind a shared address (a proxy, a NAT) one client's wrong
 * password does not lock out every user, while guessing across many user names still stops.
 */
const ADDRESS_FAILURE_FACTOR = 10;
/** How long a proven (user, password) pair is taken without PBKDF2 again. */
const VERIFIED_TTL_MS = 5 * 60_000;
/** Proven pairs remembered at once. */
const MAX_VERIFIED = 10_000;

export type Credentials =
  | { kind: 'none' }
  | { kind: 'basic'; user: string; password: string }
  | { kind: 'bearer'; token: string }
  /** An Authorization header that is neither (or not decodable). */
  | { kind: 'malformed' };

/** Who is asking; `token` is the access claim when the request came with a token. */
export interface Identity {
  caller: Caller;
  token?: AccessEntry[];
}

export type Authentication =
  | { kind: 'ok'; identity: Identity }
  | { kind: 'bad-credentials' }
  | { kind: 'bad-token'; why: string }
  | { kind: 'rate-limited'; retryAfterMs: number };

export type Decision = 'allowed' | 'sign-in' | 'insufficient-scope' | 'denied';

export type Login = { kind: 'ok'; user: string } | { kind: 'bad' } | { kind: 'rate-limited'; retryAfterMs: number };

interface User {
  hash: PasswordHash;
  /** What a refresh token names of the password (see passwordVersion). */
  version: string;
}

export class Auth {
  readonly rules: AccessRules;
  private readonly failures: WindowLimiter;
  private readonly addressFailures: WindowLimiter;
  private readonly fills: WindowLimiter;
  private readonly verified = new Map<string, number>();
  /** Checks in flight, by the keyed digest of (user, password). */
  private readonly checking = new Map<string, Promise<boolean>>();

  private constructor(
    readonly config: AuthConfig,
    readonly tokens: Tokens,
    private readonly users: Map<string, User>,
    /** An unknown user's hash: the work of the costliest configured one. */
    private readonly dummy: PasswordHash,
    private readonly secret: Uint8Array,
    private readonly now: () => number,
  ) {
    this.rules = new AccessRules(config.rules);
    this.failures = new WindowLimiter(config.loginFailures.limit, config.loginFailures.windowMs, now);
    this.addressFailures = new WindowLimiter(config.loginFailures.limit * ADDRESS_FAILURE_FACTOR, config.loginFailures.windowMs, now);
    this.fills = new WindowLimiter(config.anonymousFills.limit, config.anonymousFills.windowMs, now);
  }

  /** Imports the token keys and hashes the passwords given in plaintext (async: WebCrypto). */
  static async create(config: AuthConfig, now: () => number = Date.now): Promise<Auth> {
    const tokens = await Tokens.create(config, now);
    const users = new Map<string, User>();
    await Promise.all(
      config.users.map(async (u) => {
        // A plaintext password is salted by a digest keyed by the signing key's secret, so that
        // every instance sharing the keys derives the same hash (and so the same version below).
        const hash =
          'hash' in u.password
            ? parsePasswordHash(u.password.hash)
            : await hashPassword(u.password.plaintext, DEFAULT_ITERATIONS, hexBytes(await tokens.keyedDigest(`plaintext-salt\0${u.name}`)));
        // What refresh tokens name: a keyed digest of the hash, which tells nothing without the
        // secret and, with it, costs a PBKDF2 per guess.
        users.set(u.name, { hash, version: await tokens.keyedDigest(`password-version\0${u.name}\0${formatPasswordHash(hash)}`) });
      }),
    );
    // Every failed login costs the work of the costliest hash: a wrong user name, or a user with
    // a cheaper hash, is not told apart by its speed.
    const most = users.size > 0 ? Math.max(...[...users.values()].map((u) => u.hash.iterations)) : DEFAULT_ITERATIONS;
    // Random salt and key: nothing derives to it, and it costs nothing to make.
    const dummy: PasswordHash = { iterations: most, salt: crypto.getRandomValues(new Uint8Array(16)), key: crypto.getRandomValues(new Uint8Array(32)) };
    return new Auth(config, tokens, users, dummy, crypto.getRandomValues(new Uint8Array(32)), now);
  }

  /** Checks a user's password, counting failures per client address. */
  async login(user: string, password: string, client: string): Promise<Login> {
    const remembered = await this.rememberedKey(user, password);
    // First: a blocked client learns nothing, not even that a password proven a moment ago is right.
    const pair = `${client}\0${user.slice(0, 256)}`;
    const wait = Math.max(this.failures.blockedFor(pair), this.addressFailures.blockedFor(client));
    if (wait > 0) return { kind: 'rate-limited', retryAfterMs: wait };
    const until = this.verified.get(remembered);
    if (until !== undefined && until > this.now()) return { kind: 'ok', user };
    // The same (user, password) being checked already: one check, counted once (a client's
    // parallel first requests with a new password are one login, and so is a repeated guess).
    const pending = this.checking.get(remembered);
    if (pending) return (await pending) ? { kind: 'ok', user } : { kind: 'bad' };
    // Counted before the check and taken back if it succeeds: guesses sent in parallel all
    // count, however long each check takes.
    this.failures.record(pair);
    this.addressFailures.record(client);
    const check = this.check(user, password);
    this.checking.set(remembered, check);
    let ok: boolean;
    try {
      ok = await check;
    } finally {
      this.checking.delete(remembered);
    }
    if (!ok) return { kind: 'bad' };
    this.failures.forgive(pair);
    this.addressFailures.forgive(client);
    if (this.verified.size >= MAX_VERIFIED) this.verified.clear();
    this.verified.set(remembered, this.now() + VERIFIED_TTL_MS);
    return { kind: 'ok', user };
  }

  /** The password check; a failure costs the work of the costliest configured hash. */
  private async check(user: string, password: string): Promise<boolean> {
    const known = this.users.get(user);
    const hash = known?.hash ?? this.dummy;
    const ok = (await verifyPassword(password, hash)) && known !== undefined;
    if (!ok && hash.iterations < this.dummy.iterations) await verifyPassword(password, { ...this.dummy, iterations: this.dummy.iterations - hash.iterations });
    return ok;
  }

  /** Who the credentials of a request prove. */
  async authenticate(credentials: Credentials, client: string): Promise<Authentication> {
    switch (credentials.kind) {
      case 'none':
        return { kind: 'ok', identity: { caller: ANONYMOUS } };
      case 'malformed':
        return { kind: 'bad-credentials' };
      case 'basic': {
        const login = await this.login(credentials.user, credentials.password, client);
        if (login.kind === 'ok') return { kind: 'ok', identity: { caller: { kind: 'user', name: login.user } } };
        return login.kind === 'bad' ? { kind: 'bad-credentials' } : login;
      }
      case 'bearer': {
        try {
          const claims = await this.tokens.verifyAccess(credentials.token);
          // A token of a user since removed from the configuration proves nobody.
          if (claims.sub !== '' && !this.users.has(claims.sub)) return { kind: 'bad-token', why: `user "${claims.sub.slice(0, 64)}" is not configured` };
          const caller: Caller = claims.sub === '' ? ANONYMOUS : { kind: 'user', name: claims.sub };
          return { kind: 'ok', identity: { caller, token: claims.access } };
        } catch (err) {
          if (err instanceof TokenError) return { kind: 'bad-token', why: err.message };
          throw err;
        }
      }
    }
  }

  /**
   * May `identity` do `action` on the repository the request named `name` and that resolved
   * to `qualified`?
   */
  authorise(identity: Identity, name: string, qualified: string, action: Action): Decision {
    const byRules = this.rules.may(identity.caller, qualified, action);
    if (byRules && (identity.token === undefined || grants(identity.token, name, action))) return 'allowed';
    if (byRules) return 'insufficient-scope';
    return identity.caller.kind === 'anonymous' ? 'sign-in' : 'denied';
  }

  /** May `identity` list the catalog at all (each repository is then filtered by pull)? */
  authoriseCatalog(identity: Identity): Decision {
    if (identity.token !== undefined && !grantsCatalog(identity.token)) return 'insufficient-scope';
    if (identity.caller.kind === 'anonymous' && !this.rules.mayPullSomething(identity.caller)) return 'sign-in';
    return 'allowed';
  }

  /**
   * The access claim for a token: of each requested scope, the actions the rules let `caller`
   * do on some repository the name can resolve to (`qualify`; every request is checked again
   * against the one it does resolve to). Never more than was asked.
   */
  grant(caller: Caller, scopes: Scope[], qualify: (name: string) => string[]): AccessEntry[] {
    const out: AccessEntry[] = [];
    for (const scope of scopes) {
      if (scope.type === 'registry') {
        out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
        continue;
      }
      const allowed = new Set<Action>();
      for (const qualified of qualify(scope.name)) for (const a of this.rules.actions(caller, qualified)) allowed.add(a);
      const actions = scope.actions.filter((a) => allowed.has(a));
      if (actions.length > 0) out.push({ type: 'repository', name: scope.name, actions });
    }
    return out;
  }

  /** Counts a cold fill an anonymous client starts: 0, or milliseconds until it may start one. */
  admitAnonymousFill(client: string): number {
    return this.fills.take(client);
  }

  /**
   * What a refresh token names of the user's password, so that a new password ends old refresh
   * tokens: a digest of the configured password (or hash) keyed by the signing key's secret, the
   * same on every instance that shares the keys, and nothing to test guesses against without it.
   */
  async passwordVersion(user: string): Promise<string | undefined> {
    return this.users.get(user)?.version;
  }

  /** Whether a refresh token's `ver` still matches the user's password. */
  async currentVersion(user: string, ver: string): Promise<boolean> {
    const current = await this.passwordVersion(user);
    const enc = new TextEncoder();
    return current !== undefined && constantTimeEqual(enc.encode(current), enc.encode(ver));
  }

  private async rememberedKey(user: string, password: string): Promise<string> {
    const enc = new TextEncoder();
    const parts = [this.secret, enc.encode(user), new Uint8Array([0]), enc.encode(password)];
    const joined = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      joined.set(p, at);
      at += p.byteLength;
    }
    return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', joined)));
  }
}

function hexBytes(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

import type { Context } from 'hono';
import type { Auth } from '../../core/auth/auth.js';
import type { Caller } from '../../core/auth/access.js';
import { parseScopes, type AccessEntry, type Scope } from '../../core/auth/scopes.js';
import { TokenError } from '../../core/auth/tokens.js';
import { OciError } from '../../core/errors.js';
import { readCapped } from '../../core/streams.js';
import { challenge, identify, tooManyLogins } from '../auth.js';
import { methodNotAllowed } from '../errors.js';
import { jsonResponse } from '../json.js';
import { body } from '../request.js';

/**
 * The token endpoint (TOKEN_PATH), both forms registry clients use:
 *
 * - GET (https://distribution.github.io/distribution/spec/auth/token/): `service`, `scope`
 *   (repeated), `offline_token=true` for a refresh token; Basic credentials, or none for an
 *   anonymous token. Answers {token, access_token, expires_in, issued_at[, refresh_token]}.
 * - POST (https://distribution.github.io/distribution/spec/auth/oauth/), a form with
 *   `grant_type=password` (username, password) or `grant_type=refresh_token`
 *   (refresh_token), `service`, `scope` (space-separated), `client_id`, `access_type=offline`.
 *   Answers {access_token, token_type, expires_in, issued_at, scope[, refresh_token]}.
 *
 * A token grants of each scope only the actions the rules let the caller do (core/auth), and
 * never more than was asked; asking for what is not granted is not an error (the token
 * simply lacks it, and the registry answers 401 or 403 when it is used).
 */

/** A token request form is a few hundred bytes; a refresh token and 32 scopes stay far under this. */
const MAX_FORM_BYTES = 32 * 1024;

export type Qualify = (name: string) => string[];

export async function tokenRoute(c: Context, auth: Auth, client: string, qualify: Qualify): Promise<Response> {
  if (c.req.method === 'GET') return getToken(c, auth, client, qualify);
  if (c.req.method === 'POST') return postToken(c, auth, client, qualify);
  throw methodNotAllowed(['GET', 'POST']);
}

async function getToken(c: Context, auth: Auth, client: string, qualify: Qualify): Promise<Response> {
  checkService(auth, c.req.query('service'));
  const scopes = scopesOf(c.req.queries('scope') ?? []);
  // A Bearer token is no credential here: tokens are got with a password or a refresh token.
  if (/^\s*bearer\s/i.test(c.req.header('authorization') ?? '')) throw badCredentials(c, auth, 'send Basic credentials (or none) to get a token');
  const { caller } = await identify(c, auth, client);
  const granted = auth.grant(caller, scopes, qualify);
  const issued = await auth.tokens.issueAccess(subject(caller), granted);
  if (caller.kind === 'user') c.set('audit', { action: 'login', granted: scopeText(granted) });
  const answer: Record<string, unknown> = { token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt };
  if (c.req.query('offline_token') === 'true' && caller.kind === 'user') answer.refresh_token = await refreshFor(auth, caller.name);
  return noStore(jsonResponse(200, answer));
}

async function postToken(c: Context, auth: Auth, client: string, qualify: Qualify): Promise<Response> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) {
    throw new OciError('UNSUPPORTED', 'the token endpoint takes an application/x-www-form-urlencoded form', undefined);
  }
  const raw = await readCapped(body(c), MAX_FORM_BYTES, () => new OciError('QUERY_INVALID', `the token request form is larger than ${MAX_FORM_BYTES} bytes`));
  const form = new URLSearchParams(new TextDecoder().decode(raw));
  checkService(auth, form.get('service') ?? undefined);
  const scopes = scopesOf(form.getAll('scope'));
  let user: string;
  const grant = form.get('grant_type');
  switch (grant) {
    case 'password': {
      const username = form.get('username') ?? '';
      const login = await auth.login(username, form.get('password') ?? '', client);
      c.set('identity', { caller: { kind: 'user', name: username.slice(0, 64) } });
      if (login.kind === 'rate-limited') throw tooManyLogins(login.retryAfterMs);
      if (login.kind === 'bad') throw badCredentials(c, auth, 'the user name or password is wrong');
      user = login.user;
      break;
    }
    case 'refresh_token': {
      const refreshed = await auth.tokens.verifyRefresh(form.get('refresh_token') ?? '').catch((err: unknown) => {
        if (err instanceof TokenError) return undefined;
        throw err;
      });
      if (!refreshed || !(await auth.currentVersion(refreshed.sub, refreshed.ver))) throw badCredentials(c, auth, 'the refresh token is not valid; sign in again');
      user = refreshed.sub;
      c.set('identity', { caller: { kind: 'user', name: user } });
      break;
    }
    default:
      throw new OciError('QUERY_INVALID', 'grant_type must be password or refresh_token');
  }
  const caller: Caller = { kind: 'user', name: user };
  c.set('identity', { caller });
  const granted = auth.grant(caller, scopes, qualify);
  const issued = await auth.tokens.issueAccess(user, granted);
  c.set('audit', { action: 'login', granted: scopeText(granted) });
  const answer: Record<string, unknown> = {
    access_token: issued.token,
    token_type: 'Bearer',
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
    scope: scopeText(granted),
  };
  // A refresh token is issued for a password only: one that renewed itself would live forever.
  if (form.get('access_type') === 'offline' && grant === 'password') answer.refresh_token = await refreshFor(auth, user);
  return noStore(jsonResponse(200, answer));
}

function scopeText(granted: AccessEntry[]): string {
  return granted.map((g) => `${g.type}:${g.name}:${g.actions.join(',')}`).join(' ');
}

function scopesOf(values: string[]): Scope[] {
  const scopes = parseScopes(values);
  if (!scopes) throw new OciError('QUERY_INVALID', 'too many scopes in one token request');
  return scopes;
}

/** A token is for this registry's service; one asked for another would be refused by it anyway. */
function checkService(auth: Auth, service: string | undefined): void {
  if (service !== undefined && service !== '' && service !== auth.config.service) {
    throw new OciError('QUERY_INVALID', `service "${service.slice(0, 80)}" is not this registry's ("${auth.config.service}")`);
  }
}

function subject(caller: Caller): string {
  return caller.kind === 'user' ? caller.name : '';
}

async function refreshFor(auth: Auth, user: string): Promise<string> {
  return auth.tokens.issueRefresh(user, (await auth.passwordVersion(user))!);
}

/** Every 401 names how to authenticate (RFC 9110 section 15.5.2). */
function badCredentials(c: Context, auth: Auth, message: string): OciError {
  return new OciError('UNAUTHORIZED', message, undefined, { 'WWW-Authenticate': challenge(c, auth) });
}

/** Tokens are credentials: no cache keeps them. */
function noStore(response: Response): Response {
  response.headers.set('Cache-Control', 'no-store');
  return response;
}

import type { AccessEntry } from '../../src/core/auth/scopes.js';
import { PROTO_KEYS, text, type Rng } from './fuzz.js';
import type { AuthKnown, IssuedTokenInfo, Presented } from './fuzz-auth.js';

/**
 * Tokens for the auth fuzz test (test/http/fuzz-auth.test.ts): JWT-shaped garbage, real tokens
 * edited, and tokens signed with the registry's own key around hostile headers and claims,
 * each with what it proves.
 */

const enc = new TextEncoder();
const b64url = (s: string) => Buffer.from(enc.encode(s)).toString('base64url');

function header(rng: Rng): Record<string, unknown> {
  const h: Record<string, unknown> = {};
  const weird = () => rng.pick<unknown>([1, 0, -1, {}, [], null, true, '', 'x'.repeat(3000), ...PROTO_KEYS, { kid: 'x' }]);
  if (rng.chance(0.8)) h.alg = rng.chance(0.5) ? rng.pick(['ES256', 'EdDSA', 'none', 'HS256', 'RS256', 'ES512']) : weird();
  if (rng.chance(0.8)) h.kid = rng.chance(0.5) ? rng.pick(['fuzz-key', 'other', '']) : weird();
  if (rng.chance(0.6)) h.typ = rng.chance(0.5) ? rng.pick(['at+jwt', 'rt+jwt', 'JWT', 'AT+JWT']) : weird();
  if (rng.chance(0.1)) h.crit = rng.pick<unknown>([['b64'], ['x'], 'b64', [], [1]]);
  if (rng.chance(0.1)) h.b64 = false;
  if (rng.chance(0.1)) h[rng.pick(['jku', 'jwk', 'x5u', 'x5c', 'zip'])] = rng.pick<unknown>(['https://evil.test/keys', { kty: 'oct', k: 'AAAA' }, 'DEF']);
  return h;
}

/** JWT-shaped garbage: a hostile header, random claims, a random or absent signature. */
export function jwtGarbage(rng: Rng, known: AuthKnown): string {
  const h = header(rng);
  if (rng.chance(0.3)) h.kid = known.kid;
  const head = rng.pick([() => JSON.stringify(h), () => rng.pick(['[]', '1', '"x"', 'null', '{', '{"__proto__":{"kid":"fuzz-key"}}', '{"alg":"ES256","kid":"fuzz-key","alg":"none"}'])])();
  const payload = JSON.stringify({ sub: rng.pick<unknown>(['admin', '', 1, {}]), access: rng.pick<unknown>([[], null, 'x', [{ type: 'repository', name: 'team/app', actions: ['*'] }]]), exp: rng.pick<unknown>([9_999_999_999, 'x', null]) });
  const sig = rng.pick(['', Buffer.from(rng.bytes(64)).toString('base64url'), 'x', '===', text(rng, 5)]);
  const segments = [b64url(head), rng.chance(0.1) ? text(rng, 20) : b64url(payload), sig];
  return rng.chance(0.1) ? segments.slice(0, 1 + rng.int(2)).join('.') : segments.join(rng.chance(0.05) ? '..' : '.');
}

/** A real token one character or a few changed; `presented` is bad unless the bytes it stands for did not change. */
export function editedToken(rng: Rng, t: IssuedTokenInfo): { token: string; presented: Presented } {
  const token = t.token;
  let out: string;
  const r = rng.int(5);
  if (r === 0) out = token.slice(0, rng.int(token.length));
  else if (r === 1) out = token.split('.').reverse().join('.');
  else if (r === 2) out = `${token}${rng.pick(['.', '.x', '=', ' ', 'A', token])}`;
  else {
    const at = rng.int(token.length);
    out = token.slice(0, at) + rng.pick([...'AZaz09-_.+/=', '%', ' ']) + token.slice(at + (r === 3 ? 1 : 0));
  }
  return { token: out, presented: sameBytes(token, out) ? { kind: 'token', sub: t.sub, access: t.access } : { kind: 'bad' } };
}

/**
 * Whether an edited compact JWS may still verify: its signing input (the header and payload
 * segments as text) unchanged, and its signature decoding, leniently, to the same bytes (a
 * padding bit, an appended "=" or whitespace an HTTP header drops is no change). Erring
 * towards "may": such a token is only held to its subject's rights, never required to pass.
 */
function sameBytes(a: string, b: string): boolean {
  const as = a.split('.');
  const bs = b.trim().split('.');
  if (bs.length !== 3 || as[0] !== bs[0] || as[1] !== bs[1]) return false;
  return Buffer.from(as[2]!, 'base64url').equals(Buffer.from(bs[2]!, 'base64url'));
}

/**
 * Tokens signed with the registry's own key (`sign`, ES256) around headers and claims that
 * only a key holder could send: non-string subjects, prototype keys, odd audiences, expiries,
 * malformed or huge access claims. Each says what it proves: a token that verifies is judged by
 * its subject and access like any other; the rest are bad.
 */
export async function forgeTokens(rng: Rng, sign: CryptoKey, kid: string, service: string, nowS: number, users: string[], count: number): Promise<Array<{ token: string; presented: Presented }>> {
  const out: Array<{ token: string; presented: Presented }> = [];
  for (let i = 0; i < count; i++) {
    const standard = rng.chance(0.7);
    const head: Record<string, unknown> = { alg: 'ES256', kid, typ: 'at+jwt' };
    if (!standard) {
      const broken = rng.pick<Array<[string, unknown]>>([
        [['alg', 'none']],
        [['alg', 'HS256']],
        [['alg', 'EdDSA']],
        [['kid', 'other']],
        [['kid', { toString: kid }]],
        [['kid', ['fuzz-key']]],
        [['typ', 'rt+jwt']],
        [['typ', 'JWT']],
        [['typ', 1]],
        [['typ', {}]],
        [['crit', ['x']], ['x', 1]],
      ]);
      for (const [k, v] of broken) head[k] = v;
    }
    const entries = () =>
      Array.from({ length: rng.int(4) }, () => ({
        type: rng.pick(['repository', 'repository', 'registry', '__proto__', 'Repository']),
        name: rng.pick(['team/app', 'other/private', 'public/lib', 'up/library/pub', 'catalog', '*', '**', '__proto__', '', 'team/*']),
        actions: rng.pick([['pull'], ['pull', 'push'], ['*'], ['pull', 'push', 'delete'], ['__proto__'], []]),
      }));
    const claims: Record<string, unknown> = {
      iss: rng.chance(0.9) ? 'outpost' : rng.pick<unknown>(['other', 1, null]),
      aud: rng.chance(0.85) ? service : rng.pick<unknown>(['other', [service], ['other', service], {}, 1]),
      sub: rng.pick<unknown>(['admin', 'reader', 'writer', '', 'nobody', '__proto__', 'constructor', 1, {}, null, undefined, 'x'.repeat(3000)]),
      iat: rng.chance(0.9) ? nowS : rng.pick<unknown>(['x', undefined, '1']),
      exp: rng.chance(0.85) ? nowS + 3600 : rng.pick<unknown>([nowS - 3600, 'x', undefined, 1e308]),
      access: rng.chance(0.7) ? entries() : rng.pick<unknown>([null, {}, 'x', [null], [{ type: 'repository', name: 'team/app', actions: 'pull' }], [{ type: 1 }], Array.from({ length: 500 }, () => ({ type: 'repository', name: 'team/app', actions: ['pull'] }))]),
      jti: text(rng, 8),
    };
    if (rng.chance(0.2)) claims.nbf = rng.pick<unknown>([nowS, nowS + 3600, 'x']);
    let payload = JSON.stringify(claims);
    if (rng.chance(0.1)) payload = `{"__proto__":{"sub":"admin","access":[{"type":"repository","name":"other/private","actions":["*"]}]},${payload.slice(1)}`;
    const input = `${b64url(JSON.stringify(head))}.${b64url(payload)}`;
    const signature = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, sign, enc.encode(input)));
    const token = `${input}.${Buffer.from(signature).toString('base64url')}`;
    out.push({ token, presented: verifies(standard, claims, service, nowS, users, token) });
  }
  return out;
}

/** What a token signed with our key proves, by the rules tokens.ts and jose check (the runner's clock stays within an hour of `nowS`). */
function verifies(standard: boolean, c: Record<string, unknown>, service: string, nowS: number, users: string[], token: string): Presented {
  const aud = c.aud === service || (Array.isArray(c.aud) && c.aud.includes(service));
  const times = typeof c.iat === 'number' && typeof c.exp === 'number' && c.exp > nowS && (c.nbf === undefined || (typeof c.nbf === 'number' && c.nbf <= nowS));
  const access = c.access;
  const entries =
    Array.isArray(access) &&
    access.every((e: unknown) => {
      const x = e as AccessEntry | null;
      return typeof x === 'object' && x !== null && typeof x.type === 'string' && typeof x.name === 'string' && Array.isArray(x.actions) && x.actions.every((a) => typeof a === 'string');
    });
  if (!standard || c.iss !== 'outpost' || !aud || !times || !entries || token.length > 16 * 1024) return { kind: 'bad' };
  // A subject that is not a string is no user: tokens.ts takes it as anonymous.
  const sub = typeof c.sub === 'string' ? c.sub : '';
  if (sub !== '' && !users.includes(sub)) return { kind: 'bad' };
  return { kind: 'token', sub, access: access as AccessEntry[] };
}

import type { Action } from '../../src/core/auth/config.js';
import type { AccessEntry } from '../../src/core/auth/scopes.js';
import { CLIENT_HEADER } from './auth.js';
import { PROTO_KEYS, Rng, text, type FuzzRequest } from './fuzz.js';
import { editedToken, jwtGarbage } from './fuzz-tokens.js';
import { sha256 } from './images.js';

/**
 * The generator of the auth fuzz test (test/http/fuzz-auth.test.ts): hostile Authorization
 * headers, token endpoint requests (GET queries, POST forms and whatever else a client may
 * send there), and repository requests with credentials good and bad mixed in. Each request
 * says what it presented, so the runner can tell a refusal it must get from a success the
 * rules allow, and which passwords it submitted, which no answer or record may contain.
 */

/** What the credentials of a request prove, as far as the generator knows. */
export type Presented =
  | { kind: 'none' }
  /** Basic credentials of a configured user. */
  | { kind: 'user'; name: string }
  /** A token that verifies: its subject ('' anonymous) and access claim. */
  | { kind: 'token'; sub: string; access: AccessEntry[] }
  /** Credentials that must never get past authentication. */
  | { kind: 'bad' };

export interface AuthFuzzRequest extends FuzzRequest {
  presented: Presented;
  /** Passwords the request submits: never answered, never in an audit or access record. */
  secrets: string[];
  /** The repository operation aimed at: a success must be one the rules (and the token) allow. */
  intent?: { name: string; ns?: string; action: Action };
}

export interface IssuedTokenInfo {
  token: string;
  sub: string;
  access: AccessEntry[];
}

export interface AuthKnown {
  users: Array<{ name: string; password: string }>;
  /** Access tokens that verify now (renewed by the runner as its clock moves). */
  tokens: IssuedTokenInfo[];
  /** Tokens that no longer verify (expired) and refresh tokens (the wrong kind on a route). */
  stale: string[];
  refresh: string[];
  /** Tokens signed with the registry's own key around hostile headers and claims. */
  forged: Array<{ token: string; presented: Presented }>;
  kid: string;
  names: string[];
  digests: string[];
  tags: string[];
  /** Client addresses the fuzzer sends from (never those of the users it checks afterwards). */
  clients: string[];
  /** The configured service (the `aud` of tokens). */
  service: string;
}

const enc = new TextEncoder();
const b64 = (bytes: Uint8Array | string) => Buffer.from(typeof bytes === 'string' ? enc.encode(bytes) : bytes).toString('base64');
/** encodeURIComponent that takes lone surrogates too (as U+FFFD, which is what a client's encoder sends). */
export const encode = (s: string) => encodeURIComponent(s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'));

const BAD_NAMES = ['A', 'a//b', '_a', 'a-', '..', 'a"b', 'a%22b', 'a%0d%0ab', 'a b', 'é', 'x'.repeat(300), '', ...PROTO_KEYS];
const SCHEMES = ['Basic', 'basic', 'BASIC', 'Bearer', 'bearer', 'BEARER', 'Digest', 'Negotiate', 'Token', 'JWT', 'OAuth', 'Bearer,', 'Basic:', 'B', ''];

/** A password that the leak check can recognise: random, at least 12 characters. */
function password(rng: Rng): string {
  return rng.chance(0.15) ? 'p'.repeat(1000 + rng.int(2000)) + text(rng, 8) : `pw-${text(rng, 10 + rng.int(30))}`;
}

interface Authorization {
  value?: string;
  presented: Presented;
  secrets: string[];
}

/** An Authorization header: valid or not, well-formed or far from it. */
export function authorization(rng: Rng, known: AuthKnown): Authorization {
  const auth = anyAuthorization(rng, known);
  // An empty (or all-space) header is no credential: the caller is anonymous, as without one.
  return auth.value !== undefined && auth.value.trim() === '' ? { ...auth, presented: { kind: 'none' } } : auth;
}

function anyAuthorization(rng: Rng, known: AuthKnown): Authorization {
  const r = rng.int(20);
  const valid = rng.pick(known.users);
  const name = () => rng.pick([valid.name, valid.name, `${valid.name}x`, text(rng, 1 + rng.int(12)), rng.pick(PROTO_KEYS), 'x'.repeat(3000)]);
  const spaces = () => ' '.repeat(rng.pick([1, 1, 2, 7, 200]));
  if (r === 0) return { presented: { kind: 'none' }, secrets: [] };
  if (r <= 2) return { value: `${rng.pick(['Basic', 'basic'])}${spaces()}${b64(`${valid.name}:${valid.password}`)}${rng.chance(0.2) ? spaces() : ''}`, presented: { kind: 'user', name: valid.name }, secrets: [valid.password] };
  if (r <= 5) {
    // Basic that decodes to user:password, wrong in one way or another.
    const user = name();
    const pw = rng.chance(0.2) ? `${valid.password}${rng.pick(['x', ' ', '\u0000'])}` : password(rng);
    const joined = rng.pick([`${user}:${pw}`, `${user}:${pw}`, `${user}${pw}`, `:${pw}`, `${user}:`, `${user}::${pw}`]);
    const ok = user === valid.name && joined === `${user}:${pw}` && pw === valid.password;
    return { value: `Basic${spaces()}${b64(joined)}`, presented: ok ? { kind: 'user', name: user } : { kind: 'bad' }, secrets: [pw] };
  }
  if (r === 6) {
    // Not base64, or base64 of bytes that are not UTF-8.
    const value = rng.pick([
      () => '!!!',
      () => 'YWJj=',
      () => '====',
      () => 'a',
      () => `${b64('a:b').slice(0, 3)} ${b64('a:b').slice(3)}`,
      () => Buffer.from('admin:x').toString('base64url') + '-_',
      () => b64(Uint8Array.from([0x61, 0x3a, 0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80])),
      () => b64(rng.bytes(1 + rng.int(64))),
      () => text(rng, 20),
      () => '',
    ])();
    return { value: `${rng.pick(['Basic', 'basic', 'Basic  '])} ${value}`, presented: { kind: 'bad' }, secrets: [] };
  }
  if (r === 7) {
    // Huge: past the header cap, or under it with a user name and password past theirs.
    if (rng.chance(0.5)) {
      const pw = 'q'.repeat(rng.pick([1025, 5000, 11_000])) + text(rng, 6);
      return { value: `Basic ${b64(`${rng.chance(0.5) ? valid.name : 'u'.repeat(5000)}:${pw}`)}`, presented: { kind: 'bad' }, secrets: [pw] };
    }
    return { value: rng.pick(['Basic ', 'Bearer ', '']) + 'A'.repeat(rng.pick([16 * 1024, 16 * 1024 + 1, 40_000])), presented: { kind: 'bad' }, secrets: [] };
  }
  if (r === 8) return { value: `${rng.pick(SCHEMES)}${rng.pick([' ', '', '  ', '\t'])}${text(rng, rng.int(40))}`, presented: { kind: 'bad' }, secrets: [] };
  if (r <= 11) {
    const t = rng.pick(known.tokens);
    return { value: `${rng.pick(['Bearer', 'bearer', 'BEARER'])}${spaces()}${t.token}`, presented: { kind: 'token', sub: t.sub, access: t.access }, secrets: [] };
  }
  if (r <= 13) {
    const edited = editedToken(rng, rng.pick(known.tokens));
    return { value: `Bearer ${edited.token}`, presented: edited.presented, secrets: [] };
  }
  if (r === 14) return { value: `Bearer ${jwtGarbage(rng, known)}`, presented: { kind: 'bad' }, secrets: [] };
  if (r === 15) {
    const forged = rng.pick(known.forged);
    return { value: `Bearer ${forged.token}`, presented: forged.presented, secrets: [] };
  }
  if (r === 16) return { value: `Bearer ${rng.pick([...known.stale, ...known.refresh])}`, presented: { kind: 'bad' }, secrets: [] };
  if (r === 17) return { value: `Bearer ${rng.pick(['', ' ', text(rng, 1 + rng.int(60)), 'x'.repeat(16 * 1024 + 1), `${'eyJ'.repeat(5000)}.e.e`])}`, presented: { kind: 'bad' }, secrets: [] };
  if (r === 18) {
    // Two credentials in one header, or a token where a password goes.
    const t = rng.pick(known.tokens).token;
    return { value: rng.pick([`Bearer ${t}, Basic ${b64('a:b')}`, `Basic ${b64(`${valid.name}:${t}`)}`, `Bearer Basic ${b64(`${valid.name}:${valid.password}`)}`]), presented: { kind: 'bad' }, secrets: [] };
  }
  return { value: text(rng, 1 + rng.int(100)), presented: { kind: 'bad' }, secrets: [] };
}

/** Scopes as clients write them and as they should not. */
function scope(rng: Rng, known: AuthKnown): string {
  const name = () => (rng.chance(0.7) ? rng.pick(known.names) : rng.chance(0.5) ? rng.pick(BAD_NAMES) : `${rng.pick(known.names)}${text(rng, 1 + rng.int(4))}`);
  const actions = () => rng.pick(['pull', 'push', 'pull,push', 'pull,push,delete', '*', 'delete', '', 'PULL', 'pull,,push', text(rng, 4), rng.pick(PROTO_KEYS)]);
  return rng.pick([
    () => `repository:${name()}:${actions()}`,
    () => `repository:${name()}:${actions()}`,
    () => 'registry:catalog:*',
    () => `repository(plugin):${name()}:pull`,
    () => `${rng.pick(['registry', 'Repository', 'repo', text(rng, 5), rng.pick(PROTO_KEYS)])}:${name()}:${actions()}`,
    () => rng.pick(['', ':', '::', ':::', 'repository', 'repository::pull', 'repository:a', `repository:${'a'.repeat(256)}:pull`, `repository:${'a/'.repeat(300)}a:pull`]),
    () => text(rng, 1 + rng.int(30)),
  ])();
}

/** The token endpoint: GET with a random query, POST with a random form and content type, other methods and near paths. */
export function tokenRequest(rng: Rng, known: AuthKnown): AuthFuzzRequest {
  const client = rng.pick(known.clients);
  const r = rng.int(10);
  if (r < 5) {
    const params: string[] = [];
    for (let i = 0, n = rng.int(6); i < n; i++) {
      params.push(
        rng.pick([
          () => `service=${rng.pick([known.service, known.service, 'outpost', '', 'other', encode(text(rng, 8)), text(rng, 8), 'x'.repeat(3000)])}`,
          () => `scope=${encode(scope(rng, known))}`,
          () => `scope=${scope(rng, known)}`,
          () => `scope=${encode(Array.from({ length: 1 + rng.int(40) }, () => scope(rng, known)).join(' '))}`,
          () => Array.from({ length: rng.pick([2, 31, 32, 33, 200]) }, () => `scope=${encode(scope(rng, known))}`).join('&'),
          () => `offline_token=${rng.pick(['true', 'false', '1', 'TRUE', ''])}`,
          () => `${rng.pick(['client_id', 'account', 'password', 'username', 'grant_type', ...PROTO_KEYS])}=${encode(text(rng, 10))}`,
          () => rng.pick(['%zz=%', '=', '&&', 'scope', 'scope=%', 'service', `scope=${'%'.repeat(100)}`]),
        ])(),
      );
    }
    const auth = authorization(rng, known);
    const headers: Record<string, string> = { [CLIENT_HEADER]: client };
    if (auth.value !== undefined) headers.Authorization = auth.value;
    // A password in the query is a client's mistake; it is no more to be echoed than one in a header.
    const secrets = [...auth.secrets, ...params.filter((p) => p.startsWith('password=')).map((p) => decodeURIComponent(p.slice('password='.length)))];
    return { method: 'GET', target: `/auth/token${params.length > 0 ? '?' : ''}${params.join('&')}`, headers, presented: auth.presented, secrets };
  }
  if (r < 9) return tokenForm(rng, known, client);
  const headers: Record<string, string> = { [CLIENT_HEADER]: client };
  const auth = authorization(rng, known);
  if (auth.value !== undefined) headers.Authorization = auth.value;
  const method = rng.pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'FOO', 'PROPFIND', 'GET', 'POST']);
  const path = rng.pick(['/auth/token', '/auth/token/', '/auth/token/x', '/auth/tokens', '/auth', '/AUTH/TOKEN', '/auth/token%2f', '/auth//token', '/auth/./token', '/v2/auth/token']);
  const body = method === 'GET' || method === 'HEAD' ? undefined : rng.bytes(rng.int(200));
  return { method, target: path, headers, body, presented: auth.presented, secrets: auth.secrets };
}

/** POST /auth/token: the OAuth2 form, its fields valid, missing, repeated, huge or mis-encoded. */
function tokenForm(rng: Rng, known: AuthKnown, client: string): AuthFuzzRequest {
  const valid = rng.pick(known.users);
  const secrets: string[] = [];
  const fields: Array<[string, string]> = [];
  // A third are the form a client sends (then mis-encoded or mis-typed, or not); the rest are random.
  if (rng.chance(0.35)) {
    if (rng.chance(0.6)) {
      fields.push(['grant_type', 'password'], ['username', valid.name], ['password', valid.password]);
      secrets.push(valid.password);
    } else fields.push(['grant_type', 'refresh_token'], ['refresh_token', rng.pick(known.refresh)]);
    fields.push(['service', known.service], ['scope', Array.from({ length: 1 + rng.int(3) }, () => scope(rng, known)).join(' ')]);
    if (rng.chance(0.3)) fields.push(['access_type', 'offline']);
    if (rng.chance(0.5)) fields.push(['client_id', 'docker']);
    return postForm(rng, known, client, fields, secrets, rng.chance(0.7));
  }
  const grant = rng.pick(['password', 'password', 'refresh_token', 'refresh_token', 'client_credentials', 'authorization_code', '', 'PASSWORD', text(rng, 6), ...PROTO_KEYS]);
  if (rng.chance(0.95)) fields.push(['grant_type', grant]);
  if (rng.chance(0.05)) fields.push(['grant_type', rng.pick(['password', 'refresh_token'])]);
  if (rng.chance(0.8)) fields.push(['username', rng.pick([valid.name, valid.name, '', text(rng, 1 + rng.int(20)), 'u'.repeat(20_000), ...PROTO_KEYS])]);
  if (rng.chance(0.8)) {
    const pw = rng.chance(0.3) ? valid.password : password(rng);
    secrets.push(pw);
    fields.push(['password', pw]);
  }
  if (rng.chance(0.5)) {
    const t = rng.pick(known.tokens);
    fields.push(['refresh_token', rng.pick([rng.pick(known.refresh), rng.pick(known.refresh), t.token, editedToken(rng, { ...t, token: rng.pick(known.refresh) }).token, jwtGarbage(rng, known), text(rng, 20), ''])]);
  }
  if (rng.chance(0.6)) fields.push(['scope', Array.from({ length: rng.pick([1, 1, 3, 33, 100]) }, () => scope(rng, known)).join(rng.pick([' ', '+', '  ', ','])) ]);
  if (rng.chance(0.4)) fields.push(['service', rng.pick([known.service, 'outpost', '', 'other', text(rng, 10)])]);
  if (rng.chance(0.3)) fields.push(['client_id', text(rng, 10)]);
  if (rng.chance(0.3)) fields.push(['access_type', rng.pick(['offline', 'online', ''])]);
  if (rng.chance(0.1)) fields.push([rng.pick(PROTO_KEYS), text(rng, 5)]);
  for (let i = fields.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [fields[i], fields[j]] = [fields[j]!, fields[i]!];
  }
  return postForm(rng, known, client, fields, secrets, false);
}

/** The form encoded well or not, with a content type right or not (`proper`: encoded and typed as a client would). */
function postForm(rng: Rng, known: AuthKnown, client: string, fields: Array<[string, string]>, secrets: string[], proper: boolean): AuthFuzzRequest {
  const valid = rng.pick(known.users);
  const encoding = proper ? 0 : rng.int(10);
  let body: Uint8Array | undefined;
  if (encoding < 6) body = enc.encode(new URLSearchParams(fields).toString());
  else if (encoding === 6) body = enc.encode(fields.map(([k, v]) => `${k}=${v}`).join('&')); // raw: & = % + as they come
  else if (encoding === 7) {
    const form = new URLSearchParams(fields).toString();
    const at = rng.int(form.length + 1);
    body = enc.encode(form.slice(0, at) + rng.pick(['%', '%zz', '%e9', '%ff%fe', '%c0%80', '%ed%a0%80', '&&&', '=', '%00']) + form.slice(at));
  } else if (encoding === 8) {
    // Raw bytes that are not UTF-8 inside the form.
    const form = enc.encode(new URLSearchParams(fields).toString());
    const at = rng.int(form.byteLength + 1);
    body = new Uint8Array([...form.slice(0, at), ...Uint8Array.from([0xff, 0xc3, 0x28, 0x80]), ...rng.bytes(rng.int(8)), ...form.slice(at)]);
  } else body = rng.pick([undefined, new Uint8Array(0), enc.encode(JSON.stringify(Object.fromEntries(fields))), enc.encode(`grant_type=password&username=${valid.name}&password=${'x'.repeat(rng.pick([32 * 1024, 40_000]))}`), rng.bytes(rng.int(500))]);

  const headers: Record<string, string> = { [CLIENT_HEADER]: client };
  if (proper) headers['Content-Type'] = rng.pick(['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=UTF-8']);
  else if (rng.chance(0.9)) {
    headers['Content-Type'] = rng.pick([
      'application/x-www-form-urlencoded',
      'application/x-www-form-urlencoded',
      'application/x-www-form-urlencoded; charset=utf-8',
      'APPLICATION/X-WWW-FORM-URLENCODED',
      'application/x-www-form-urlencodedx',
      'application/json',
      'multipart/form-data; boundary=x',
      'text/plain',
      '',
      ';;;',
      'x/'.repeat(2000),
    ]);
  }
  if (rng.chance(0.2)) {
    const auth = authorization(rng, known);
    if (auth.value !== undefined) headers.Authorization = auth.value;
    secrets.push(...auth.secrets);
  }
  // The form proves who asks; an Authorization header is not read here.
  return { method: 'POST', target: '/auth/token', headers, body, presented: { kind: 'bad' }, secrets };
}

/** Repository routes with credentials good and bad, ?ns= and mounts from random names. */
export function repositoryRequest(rng: Rng, known: AuthKnown): AuthFuzzRequest {
  const auth = authorization(rng, known);
  const headers: Record<string, string> = { [CLIENT_HEADER]: rng.pick(known.clients) };
  if (auth.value !== undefined) headers.Authorization = auth.value;
  const name = rng.chance(0.9) ? rng.pick(known.names) : rng.pick(BAD_NAMES);
  const ns = rng.chance(0.2) ? rng.pick(['registry.test', 'registry.test', 'REGISTRY.TEST', 'registry.test:443', 'evil.test', '', '..', 'a"b', '%zz', 'docker.io']) : undefined;
  const digest = () => (rng.chance(0.8) ? rng.pick(known.digests) : rng.pick([sha256(rng.bytes(4)), 'sha256:abc', '%zz', '']));
  const reference = () => (rng.chance(0.6) ? rng.pick(known.tags) : digest());
  const r = rng.int(12);
  let method: string;
  let path: string;
  let action: Action;
  const query: string[] = ns !== undefined ? [`ns=${ns}`] : [];
  let body: Uint8Array | undefined;
  if (r < 4) {
    method = rng.pick(['GET', 'GET', 'HEAD', 'PUT', 'DELETE']);
    path = `/v2/${name}/manifests/${reference()}`;
    action = method === 'PUT' ? 'push' : method === 'DELETE' ? 'delete' : 'pull';
    if (method === 'PUT') {
      headers['Content-Type'] = 'application/vnd.oci.image.manifest.v1+json';
      body = enc.encode(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest(), size: 2 }, layers: [] }));
    }
  } else if (r < 6) {
    method = rng.pick(['GET', 'HEAD', 'GET', 'DELETE']);
    path = `/v2/${name}/blobs/${digest()}`;
    action = method === 'DELETE' ? 'delete' : 'pull';
  } else if (r < 9) {
    method = 'POST';
    path = `/v2/${name}/blobs/uploads/`;
    action = 'push';
    const from = rng.chance(0.8) ? rng.pick(known.names) : rng.pick(BAD_NAMES);
    if (rng.chance(0.8)) query.push(`mount=${digest()}`, `from=${rng.chance(0.8) ? from : encode(from)}`);
    if (rng.chance(0.2)) query.push(rng.pick(['from=', 'mount=', 'from=team/app&from=other/private', `digest=${digest()}`]));
  } else if (r < 10) {
    method = rng.pick(['GET', 'PATCH', 'PUT', 'DELETE']);
    path = `/v2/${name}/blobs/uploads/${rng.pick([crypto.randomUUID(), '..', '%zz'])}`;
    action = 'push';
  } else if (r < 11) {
    method = 'GET';
    path = `/v2/${name}/${rng.pick(['tags/list', `referrers/${digest()}`])}`;
    action = 'pull';
  } else {
    method = rng.pick(['GET', 'HEAD', 'GET', 'POST']);
    path = rng.pick(['/v2/', '/v2/_catalog', `/v2/_catalog?n=${rng.pick(['1', '0', 'x'])}`, '/v2/_catalog?last=team/app']);
    return { method, target: path, headers, presented: auth.presented, secrets: auth.secrets };
  }
  // A client may name the host in an absolute target; the realm of a challenge must not carry it verbatim.
  const origin = rng.chance(0.05) ? rng.pick(['http://a"b', 'http://x",error="y', 'http://evil.test', 'http://a\\b', 'https://outpost:8443']) : '';
  const target = `${origin}${path}${query.length > 0 ? '?' : ''}${query.join('&')}`;
  const intent = known.names.includes(name) ? { name, ns: ns === '' ? undefined : ns, action } : undefined;
  return { method, target, headers, body, presented: auth.presented, secrets: auth.secrets, intent };
}

/** A third each: Authorization headers on the base and a repository route, the token endpoint, repository routes. */
export function authFuzzRequest(rng: Rng, known: AuthKnown): AuthFuzzRequest {
  const r = rng.int(3);
  if (r === 0) {
    const auth = authorization(rng, known);
    const headers: Record<string, string> = { [CLIENT_HEADER]: rng.pick(known.clients) };
    if (auth.value !== undefined) headers.Authorization = auth.value;
    const target = rng.pick(['/v2/', '/v2/', '/v2/team/app/manifests/v1', '/v2/public/lib/manifests/latest', '/v2/_catalog', '/auth/token?scope=repository:team/app:pull']);
    const intent = target.includes('/manifests/') ? { name: target.split('/').slice(2, 4).join('/'), action: 'pull' as const } : undefined;
    return { method: rng.pick(['GET', 'GET', 'HEAD']), target, headers, presented: auth.presented, secrets: auth.secrets, intent };
  }
  return r === 1 ? tokenRequest(rng, known) : repositoryRequest(rng, known);
}


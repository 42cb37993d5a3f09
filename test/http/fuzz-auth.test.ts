import { importPKCS8 } from 'jose';
import { describe, expect, it } from 'vitest';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { ANONYMOUS, type Caller } from '../../src/core/auth/access.js';
import { Auth } from '../../src/core/auth/auth.js';
import type { Action } from '../../src/core/auth/config.js';
import { grants } from '../../src/core/auth/scopes.js';
import { generateTokenKey } from '../../src/core/auth/tokens.js';
import type { Registry } from '../../src/core/registry/registry.js';
import type { AccessRecord } from '../../src/http/access-log.js';
import type { AuditRecord } from '../../src/http/audit.js';
import { accessOf, authConfig, basic, bearer, CLIENT_HEADER, pushImageAs, rule, testConnection, user } from '../support/auth.js';
import { TestClock } from '../support/clock.js';
import { authFuzzRequest, encode, type AuthFuzzRequest, type AuthKnown, type IssuedTokenInfo, type Presented } from '../support/fuzz-auth.js';
import { forgeTokens } from '../support/fuzz-tokens.js';
import { CLIENT_STATUSES, checkAnswer, SEED, sender, withDeadline } from '../support/fuzz-run.js';
import { Journal, Rng } from '../support/fuzz.js';
import { image, type Blob } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

/**
 * The fuzz test of the auth surface (fuzz.test.ts fuzzes the rest): seeded hostile
 * Authorization headers (schemes, Basic that is not base64 or not UTF-8 or has no colon, huge
 * values; Bearer garbage, edited real tokens, JWTs with hostile headers, tokens signed with
 * the registry's own key around hostile claims), the token endpoint (GET queries, POST forms,
 * other methods) and repository routes with good and bad credentials, ?ns= and mounts. Every
 * answer is < 500 and an OCI error when refused, never echoes a KiB of input; a 401 carries a
 * Bearer challenge of the configured realm and service whose scope names only valid
 * repositories; nothing answered or recorded holds a submitted password; bad credentials never
 * get through, a success is one the rules (and the token) allow, a token never grants more
 * than the rules; a refusal changes nothing stored; and afterwards the users can still sign
 * in and pull from their own addresses. FUZZ_SEED replays a run, FUZZ_AUTH_ITERATIONS runs longer.
 */

const ITERATIONS = Number(process.env.FUZZ_AUTH_ITERATIONS ?? 900);
const KID = 'fuzz-key';
const PASSWORDS = { reader: 'reader-pw-b5f0e2a1', writer: 'writer-pw-c7d93e04', admin: 'admin-pw-1f6a8b3c' };
const USERS = await Promise.all(Object.entries(PASSWORDS).map(([name, pw]) => user(name, pw)));
const RULES = [
  rule(['public/**', 'registry.test/library/pub'], { anonymous: true }, ['pull']),
  rule(['team/**'], { users: ['reader', 'writer'] }, ['pull']),
  rule(['team/**'], { users: ['writer'] }, ['push']),
  rule(['registry.test/**'], { authenticated: true }, ['pull']),
  rule(['**'], { users: ['admin'] }, ['pull', 'push', 'delete']),
];
/** Where the fuzzer sends from, where fixtures are set up, and where the users check afterwards that they are not locked out. */
const FUZZ_CLIENTS = ['198.51.100.1', '198.51.100.2'];
const SETUP = '203.0.113.1';
const CHECKER = '203.0.113.2';
/** The auth clock moves a login window on every STEP requests, so the fuzzer keeps reaching password checks past its 429s. */
const STEP = 300;
const WINDOW_MS = 60_000;
/** authConfig()'s token lifetime. */
const TOKEN_TTL_MS = 300_000;
const STATUSES: ReadonlySet<number> = new Set([...CLIENT_STATUSES, 401, 429]);
/** Coordination items of the mirror (fuzz.test.ts COORDINATION). */
const COORDINATION = /^(fill|mfetch)$/;
const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const SCOPE = /^(?:repository:([^:]+):(?:pull|pull,push|delete)|registry:catalog:\*)$/;

const subjects: Array<[string, { realm?: string; service: string }, number]> = [
  ['a realm taken from the request', { service: 'outpost' }, ITERATIONS],
  ['a configured realm and service', { realm: 'https://login.outpost.test/auth/token', service: 'registry.outpost.test' }, Math.ceil(ITERATIONS / 3)],
];

describe.each(subjects)('fuzzing the auth surface with %s', (_, options, iterations) => {
  it(`${iterations} seeded requests: refusals are OCI errors with sound challenges, nothing leaks or gets past, users keep their access`, { timeout: 300_000 }, async () => {
    await run(options, iterations);
  });
});

async function run(options: { realm?: string; service: string }, iterations: number): Promise<void> {
  let now = 1_700_000_000_000;
  const { privateKeyPem } = await generateTokenKey();
  const authPromise = Auth.create(authConfig({ ...options, tokenTtlMs: TOKEN_TTL_MS, keys: [{ kid: KID, privateKeyPem }], users: USERS, rules: RULES, loginFailures: { limit: 3, windowMs: WINDOW_MS } }), () => now);
  const auth = await authPromise;
  const audits: AuditRecord[] = [];
  const accesses: AccessRecord[] = [];
  const store = new MemoryBlobStore();
  const index = new MemoryMetaIndex(new TestClock());
  const journal = new Journal(index, store, COORDINATION);
  const m = mirrorTest({ store, index: journal.journalled(), hosted: ['team', 'public', 'other', 'new'], auth: authPromise, connection: testConnection, audit: (r) => audits.push(r), accessLog: (r) => accesses.push(r) });
  m.up.addImage('library/pub', 'latest', image({ layers: [300] }));
  m.up.addImage('library/app', 'v1', image({ layers: [200] }));
  const { app, registry } = m.instances[0]!;
  const send = sender(app);
  const from = (client: string, headers: Record<string, string>) => ({ ...headers, [CLIENT_HEADER]: client });
  const request = (path: string, init: RequestInit = {}) => app.request(path, init);

  // Content to aim at, pushed by admin; team/sentinel is never aimed at, so that the users' last pull finds it.
  const seeded: Array<[string, Blob]> = [];
  for (const [name, ref] of [['team/app', 'v1'], ['team/base', 'v1'], ['public/lib', 'latest'], ['other/private', 'v1'], ['team/sentinel', 'v1']] as const) {
    const img = image({ layers: [100] });
    await pushImageAs(request, name, img, ref, from(SETUP, basic('admin', PASSWORDS.admin)));
    for (const b of [img.config, ...img.layers, img.manifest]) seeded.push([name, b]);
  }
  const issue = async (): Promise<{ tokens: IssuedTokenInfo[]; refresh: string[] }> => {
    const tokens: IssuedTokenInfo[] = [];
    const refresh: string[] = [];
    const scopes = ['repository:team/app:pull,push,delete', 'repository:other/private:*', 'repository:public/lib:pull', 'repository:registry.test/library/pub:pull', 'repository:up/library/app:pull', 'registry:catalog:*'];
    for (const who of [...Object.keys(PASSWORDS), '']) {
      for (const asked of [scopes, scopes.slice(0, 1), scopes.slice(3, 5)]) {
        const query = [`service=${options.service}`, 'offline_token=true', ...asked.map((s) => `scope=${encodeURIComponent(s)}`)].join('&');
        const res = await request(`/auth/token?${query}`, { headers: from(SETUP, who === '' ? {} : basic(who, PASSWORDS[who as keyof typeof PASSWORDS])) });
        expect(res.status, await res.clone().text()).toBe(200);
        const body = (await res.json()) as { token: string; refresh_token?: string };
        tokens.push({ token: body.token, sub: who, access: accessOf(body.token) });
        if (body.refresh_token) refresh.push(body.refresh_token);
      }
    }
    return { tokens, refresh };
  };

  const rng = new Rng(SEED);
  const first = await issue();
  const sign = await importPKCS8(privateKeyPem, 'ES256');
  const known: AuthKnown = {
    users: Object.entries(PASSWORDS).map(([name, password]) => ({ name, password })),
    ...first,
    stale: [],
    forged: await forgeTokens(rng, sign, KID, options.service, Math.floor(now / 1000), Object.keys(PASSWORDS), 40),
    kid: KID,
    names: ['team/app', 'team/base', 'public/lib', 'other/private', 'new/repo', 'up/library/pub', 'registry.test/library/pub', 'up/library/app', 'library/pub', 'registry.test/library/none'],
    digests: [...new Set(seeded.filter(([n]) => n !== 'team/sentinel').map(([, b]) => b.digest))],
    tags: ['v1', 'latest', 'nope'],
    clients: FUZZ_CLIENTS,
    service: options.service,
  };

  let live = known.tokens.map((t) => ({ ...t, at: now }));
  const failures: string[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < iterations && failures.length < 5; i++) {
    if (i > 0 && i % STEP === 0) {
      now += WINDOW_MS + 1;
      // Past its lifetime and the 30 s of clock skew allowed, a token is stale; younger ones still verify.
      const [stale, fresh] = partition(live, (t) => now - t.at > TOKEN_TTL_MS + 30_000);
      known.stale.push(...stale.map((t) => t.token));
      const issued = await issue();
      live = [...fresh, ...issued.tokens.map((t) => ({ ...t, at: now }))];
      known.tokens = live;
      known.refresh = issued.refresh;
      // Forged again around the new time, so that what each proves still holds however long the run.
      known.forged = await forgeTokens(rng, sign, KID, options.service, Math.floor(now / 1000), Object.keys(PASSWORDS), 40);
    }
    const r = authFuzzRequest(rng, known);
    const what = `#${i} (FUZZ_SEED=${SEED}) ${r.method} ${r.target.slice(0, 200)} ${JSON.stringify(r.headers).slice(0, 300)} body ${r.body?.byteLength ?? 'none'}`;
    await journal.start();
    const auditFrom = audits.length;
    const accessFrom = accesses.length;
    const answer = await withDeadline(
      (async () => {
        const res = await send(r);
        return res && { res, text: await res.text() };
      })(),
    );
    if (answer === 'hang') {
      failures.push(`${what}: no answer within the deadline`);
      continue;
    }
    if (!answer) continue;
    const { res, text } = answer;
    const problems = [
      checkAnswer(r, res, text, STATUSES),
      checkChallenge(r, res, options),
      leaks(r, res, text, [...audits.slice(auditFrom), ...accesses.slice(accessFrom)]),
      echoes(r, res, text),
      getsThrough(r, res, auth, registry),
      tokenProblem(r, res, text, auth, registry),
    ].filter((p) => p !== undefined);
    for (const p of problems) failures.push(`${what}: ${p}`);
    if (res.status >= 400) {
      const changes = await journal.changes();
      if (changes.length > 0) failures.push(`${what}: refused with ${res.status} but changed ${changes.slice(0, 3).join('; ')}`);
    }
    const where = r.target.startsWith('/auth/') ? `${r.method} token` : /\/(manifests|blobs\/uploads|blobs|tags|referrers|_catalog)\b/.exec(r.target)?.[1] ?? 'base';
    const challenge = /error="(\w+)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1] ?? '';
    const bucket = `${where} ${res.status} ${challenge}`.trim();
    seen.set(bucket, (seen.get(bucket) ?? 0) + 1);
  }
  if (process.env.FUZZ_VERBOSE) console.log([...seen].sort().map(([k, n]) => `${k}: ${n}`).join('\n'));
  expect(failures).toEqual([]);
  // The generator reaches what it is for: tokens issued, each kind of 401, denials, lockouts, bad forms
  // (asked of a long run only: a short one may miss a rare answer).
  const count = (p: RegExp) => [...seen].filter(([k]) => p.test(k)).reduce((n, [, v]) => n + v, 0);
  for (const p of [/^GET token 200/, /^POST token 200/, /^POST token 401/, /^POST token 400/, / 401 invalid_token/, / 401 insufficient_scope/, /^(manifests|blobs).* 401$/, / 403/, / 429/, /^(manifests|blobs).* 20\d/]) {
    if (iterations >= 600) expect(count(p), `answers matching ${p}`).toBeGreaterThan(0);
  }
  expect(audits.filter((a) => a.status >= 500)).toEqual([]);

  // No lockout across users: from their own address, every user still signs in and pulls.
  const sentinel = seeded.find(([n, b]) => n === 'team/sentinel' && b.mediaType.includes('manifest'))![1];
  for (const [name, pw] of Object.entries(PASSWORDS)) {
    const res = await request('/v2/team/sentinel/manifests/v1', { headers: from(CHECKER, basic(name, pw)) });
    expect(res.status, `${name} pulls with Basic: ${await res.clone().text()}`).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(sentinel.bytes)).toBe(true);
  }
  const got = await request(`/auth/token?service=${options.service}&scope=repository:team/sentinel:pull`, { headers: from(CHECKER, basic('reader', PASSWORDS.reader)) });
  expect(got.status).toBe(200);
  const jwt = ((await got.json()) as { token: string }).token;
  expect((await request('/v2/team/sentinel/manifests/v1', { headers: from(CHECKER, bearer(jwt)) })).status).toBe(200);
  const form = new URLSearchParams({ grant_type: 'password', username: 'reader', password: PASSWORDS.reader, service: options.service, scope: 'repository:team/sentinel:pull' });
  expect((await request('/auth/token', { method: 'POST', body: form.toString(), headers: from(CHECKER, { 'Content-Type': 'application/x-www-form-urlencoded' }) })).status).toBe(200);

  // Nothing stored is corrupt: every seeded blob and manifest is served byte-identical, unless a request that succeeded deleted it.
  for (const [name, b] of seeded) {
    const kind = b.mediaType.includes('manifest') ? 'manifests' : 'blobs';
    const res = await request(`/v2/${name}/${kind}/${b.digest}`, { headers: from(CHECKER, basic('admin', PASSWORDS.admin)) });
    const bytes = Buffer.from(await res.arrayBuffer());
    if (res.status === 404) continue;
    expect(res.status, `${name} ${b.digest}`).toBe(200);
    expect(bytes.equals(b.bytes), `${name} ${b.digest} is byte-identical`).toBe(true);
  }
}

/** A 401 (and a 429 that carries one) challenges Bearer with the configured realm and service, and a scope of valid names only. */
function checkChallenge(r: AuthFuzzRequest, res: Response, options: { realm?: string; service: string }): string | undefined {
  const header = res.headers.get('www-authenticate');
  if (header === null) return res.status === 401 ? 'a 401 without a WWW-Authenticate challenge' : undefined;
  const m = /^Bearer realm="([^"\\\x00-\x1f\x7f]*)",service="([^"\\\x00-\x1f\x7f]*)"(?:,scope="([^"\\\x00-\x1f\x7f]*)")?(?:,error="(invalid_token|insufficient_scope)")?$/.exec(header);
  if (!m) return `a malformed challenge: ${header.slice(0, 300)}`;
  // Taken from the request, the realm is its origin, with what would end a quoted string percent-encoded.
  const realm = options.realm ?? `${new URL(r.target, 'http://outpost').origin}/auth/token`.replace(/["\\]/g, encodeURIComponent);
  if (m[1] !== realm) return `the challenge's realm is ${m[1]}, not ${realm}`;
  if (m[2] !== options.service) return `the challenge's service is ${m[2]}`;
  for (const s of m[3]?.split(' ') ?? []) {
    const name = SCOPE.exec(s);
    if (!name || (name[1] !== undefined && (!NAME.test(name[1]) || name[1].length > 255))) return `the challenge's scope names more than a valid repository: ${s.slice(0, 200)}`;
  }
  if (res.status === 429 && !/^\d{1,3}$/.test(res.headers.get('retry-after') ?? '')) return 'a 429 without Retry-After seconds';
  return undefined;
}

/** No submitted password is answered (body or header) or written to an audit or access record. */
function leaks(r: AuthFuzzRequest, res: Response, text: string, records: unknown[]): string | undefined {
  const spots = [text, ...[...res.headers].map(([k, v]) => `${k}: ${v}`), ...records.map((x) => JSON.stringify(x))];
  for (const secret of new Set([...r.secrets, ...Object.values(PASSWORDS)])) {
    if (secret.length < 8) continue;
    const forms = [secret, JSON.stringify(secret).slice(1, -1), encode(secret)];
    const spot = spots.find((s) => forms.some((f) => s.includes(f)));
    if (spot !== undefined) return `a password (${secret.slice(0, 20)}...) appears in ${spot.slice(0, 120)}`;
  }
  return undefined;
}

/** No answer carries 1 KiB of the request's own input. */
function echoes(r: AuthFuzzRequest, res: Response, text: string): string | undefined {
  const inputs = [r.target, ...Object.values(r.headers), r.body ? Buffer.from(r.body).toString('latin1') : ''];
  const answered = [text, ...[...res.headers].map(([, v]) => v)];
  for (const input of inputs) {
    if (input.length <= 1024) continue;
    for (const at of [0, Math.floor((input.length - 1025) / 2), input.length - 1025]) {
      const window = input.slice(at, at + 1025);
      if (answered.some((a) => a.includes(window) || a.includes(JSON.stringify(window).slice(1, -1)))) return `the answer echoes 1 KiB of input (from ${at})`;
    }
  }
  return undefined;
}

function partition<T>(items: T[], test: (item: T) => boolean): [T[], T[]] {
  return [items.filter(test), items.filter((x) => !test(x))];
}

function callerOf(p: Presented): Caller {
  if (p.kind === 'user') return { kind: 'user', name: p.name };
  if (p.kind === 'token' && p.sub !== '') return { kind: 'user', name: p.sub };
  return ANONYMOUS;
}

/**
 * Bad credentials never get past authentication; a repository request that succeeds is one
 * the rules let its caller do on the repository it resolves to, and its token (if any) grants
 * on the name it used, and a mount that happened is one whose source the caller may pull.
 */
function getsThrough(r: AuthFuzzRequest, res: Response, auth: Auth, registry: Registry): string | undefined {
  if (res.status >= 300) return undefined;
  const guarded = new URL(r.target, 'http://outpost').pathname.startsWith('/v2/') || (r.method === 'GET' && r.target.startsWith('/auth/token'));
  if (r.presented.kind === 'bad') return guarded ? `bad credentials were answered ${res.status}` : undefined;
  if (!r.intent) return undefined;
  const caller = callerOf(r.presented);
  const token = r.presented.kind === 'token' ? r.presented.access : undefined;
  const may = (name: string, qualified: string, action: Action) => auth.rules.may(caller, qualified, action) && (token === undefined || grants(token, name, action));
  let qualified: string;
  try {
    qualified = registry.mirror.route(r.intent.name, r.intent.ns).name;
  } catch {
    return `a request for a name that does not route was answered ${res.status}`;
  }
  if (!may(r.intent.name, qualified, r.intent.action)) return `${JSON.stringify(r.presented).slice(0, 200)} may not ${r.intent.action} ${qualified}, answered ${res.status}`;
  const source = new URL(r.target, 'http://outpost').searchParams.get('from');
  if (res.status === 201 && r.method === 'POST' && source !== null && new URL(r.target, 'http://outpost').searchParams.has('mount') && !may(source, source, 'pull')) {
    return `mounted from ${source.slice(0, 100)}, which the caller may not pull`;
  }
  return undefined;
}

/** An issued token is no-store, names a configured user (the one who signed in) or nobody, and grants no more than the rules. */
function tokenProblem(r: AuthFuzzRequest, res: Response, text: string, auth: Auth, registry: Registry): string | undefined {
  if (res.status !== 200 || !r.target.startsWith('/auth/token')) return undefined;
  if (res.headers.get('cache-control') !== 'no-store') return 'a token answer without Cache-Control: no-store';
  const body = JSON.parse(text) as { access_token?: string };
  if (typeof body.access_token !== 'string') return `a token answer without access_token: ${text.slice(0, 200)}`;
  const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1]!, 'base64url').toString()) as { sub: string; access: Array<{ type: string; name: string; actions: string[] }> };
  if (claims.sub !== '' && !(claims.sub in PASSWORDS)) return `a token for "${claims.sub.slice(0, 80)}", who is not configured`;
  if (r.method === 'GET') {
    const expected = r.presented.kind === 'user' ? r.presented.name : r.presented.kind === 'none' ? '' : undefined;
    if (claims.sub !== expected) return `a token for "${claims.sub}" answered to ${JSON.stringify(r.presented).slice(0, 100)}`;
  }
  const caller: Caller = claims.sub === '' ? ANONYMOUS : { kind: 'user', name: claims.sub };
  for (const e of claims.access) {
    if (e.type === 'registry' && e.name === 'catalog') continue;
    const allowed = new Set<string>();
    for (const ns of [undefined, ...registry.mirror.namespaces()]) {
      try {
        for (const a of auth.rules.actions(caller, registry.mirror.route(e.name, ns).name)) allowed.add(a);
      } catch {
        // Not routable that way.
      }
    }
    const extra = e.actions.filter((a) => !allowed.has(a));
    if (e.type !== 'repository' || extra.length > 0) return `a token grants ${e.type}:${e.name}:${extra.join(',')} beyond the rules of "${claims.sub}"`;
  }
  return undefined;
}

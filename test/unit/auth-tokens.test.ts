import { createHmac } from 'node:crypto';
import { importPKCS8, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import type { AuthConfig, TokenKeyConfig } from '../../src/core/auth/config.js';
import { generateTokenKey, MAX_TOKEN_CHARS, TokenError, Tokens } from '../../src/core/auth/tokens.js';
import { accessOf, authConfig, basic, bearer, expectChallenge, rule, token, user, type Requester } from '../support/auth.js';
import { testApp } from '../support/app.js';
import { expectOciError } from '../support/oci-errors.js';

/**
 * The tokens Outpost issues (src/core/auth/tokens.ts), directly and through the token
 * endpoint: what verifies (its own key by kid, before expiry, for its audience and issuer,
 * of the right kind) and the many near-misses that must not.
 */

const T0 = 1_700_000_000_000;
const ES = await generateTokenKey('ES256');
const ED = await generateTokenKey('EdDSA');
const ALICE = basic('alice', 'alice-pw');
const USERS = [await user('alice', 'alice-pw'), await user('bob', 'bob-pw')];

function config(keys: TokenKeyConfig[] = [{ kid: 'k1', privateKeyPem: ES.privateKeyPem }], overrides: Partial<AuthConfig> = {}): AuthConfig {
  return authConfig({ keys, users: USERS, rules: [rule(['team/**'], { users: ['alice', 'bob'] }, ['pull', 'push'])], ...overrides });
}

/** An Auth over a controllable clock, and an app that uses it. */
async function setup(keys?: TokenKeyConfig[], overrides?: Partial<AuthConfig>) {
  const clock = { now: T0 };
  const auth = Auth.create(config(keys, overrides), () => clock.now);
  const t = testApp({}, { auth });
  return { clock, auth: await auth, request: t.request };
}

const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>;
const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A token with its header or claims edited, its signature kept. */
function edited(jwt: string, edit: { header?: Record<string, unknown>; claims?: Record<string, unknown> }): string {
  const [h, p, s] = jwt.split('.') as [string, string, string];
  return [encode({ ...decode(h), ...edit.header }), encode({ ...decode(p), ...edit.claims }), s].join('.');
}

/** Claims like Outpost's own, signed with `pem` by jose, with anything overridden. */
async function forged(pem: string, alg: 'ES256' | 'EdDSA', header: Record<string, unknown>, claims: Record<string, unknown> = {}): Promise<string> {
  const iat = Math.floor(T0 / 1000);
  return new SignJWT({ access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }], iss: 'outpost', aud: 'outpost', sub: 'alice', iat, nbf: iat, exp: iat + 300, jti: 'x', ...claims })
    .setProtectedHeader({ alg, typ: 'at+jwt', ...header })
    .sign(await importPKCS8(pem, alg));
}

async function expectInvalidToken(res: Response) {
  await expectOciError(res, { status: 401, code: 'UNAUTHORIZED', message: 'token is not valid' });
  expectChallenge(res, { error: 'invalid_token', scope: null });
}

async function refused(auth: Auth, jwt: string, why?: RegExp) {
  const err = await auth.tokens.verifyAccess(jwt).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(TokenError);
  if (why) expect((err as Error).message).toMatch(why);
}

const pull = async (request: Requester, jwt: string, name = 'team/app') => request(`/v2/${name}/tags/list`, { headers: bearer(jwt) });

describe('a token verifies', () => {
  it('until it expires (with 30 s of clock skew), then is 401 invalid_token', async () => {
    const { clock, auth, request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    expect((await auth.tokens.verifyAccess(jwt)).sub).toBe('alice');
    expect((await pull(request, jwt)).status).toBe(404); // NAME_UNKNOWN: allowed, nothing pushed
    clock.now = T0 + 300_000 + 29_000;
    expect((await pull(request, jwt)).status).toBe(404);
    clock.now = T0 + 300_000 + 31_000;
    await refused(auth, jwt, /exp/);
    await expectInvalidToken(await pull(request, jwt));
  });

  it('not before it is issued (beyond the skew)', async () => {
    const { clock, auth, request } = await setup();
    clock.now = T0 + 3_600_000;
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    clock.now = T0;
    await refused(auth, jwt, /nbf|iat/);
  });

  it('with ES256 and with EdDSA keys', async () => {
    for (const [kid, pem, alg] of [['es', ES.privateKeyPem, 'ES256'], ['ed', ED.privateKeyPem, 'EdDSA']] as const) {
      const { auth, request } = await setup([{ kid, privateKeyPem: pem }]);
      const jwt = await token(request, ['repository:team/app:pull'], ALICE);
      expect(decode(jwt.split('.')[0]!)).toEqual({ alg, kid, typ: 'at+jwt' });
      expect((await auth.tokens.verifyAccess(jwt)).access).toEqual([{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
      expect((await pull(request, jwt)).status).toBe(404);
    }
  });

  it('after key rotation: tokens of the old key (listed with its public part only) still verify', async () => {
    const before = await setup([{ kid: 'old', privateKeyPem: ES.privateKeyPem }]);
    const old = await token(before.request, ['repository:team/app:pull'], ALICE);
    for (const keys of [
      [{ kid: 'new', privateKeyPem: ED.privateKeyPem }, { kid: 'old', publicKeyPem: ES.publicKeyPem }],
      [{ kid: 'old', publicKeyPem: ES.publicKeyPem }, { kid: 'new', privateKeyPem: ED.privateKeyPem }],
    ]) {
      const after = await setup(keys);
      expect((await pull(after.request, old)).status).toBe(404);
      const fresh = await token(after.request, ['repository:team/app:pull'], ALICE);
      expect(decode(fresh.split('.')[0]!).kid).toBe('new');
      // The old process cannot check the new key's tokens: it does not know the kid.
      await expectInvalidToken(await pull(before.request, fresh));
    }
    // Once the old key is gone from the list, its tokens are over.
    const retired = await setup([{ kid: 'new', privateKeyPem: ED.privateKeyPem }]);
    await refused(retired.auth, old, /names no key/);
  });
});

describe('a token does not verify', () => {
  it('with a byte of its signature flipped', async () => {
    const { auth, request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    const [h, p, s] = jwt.split('.') as [string, string, string];
    const sig = Buffer.from(s, 'base64url');
    sig[10] = sig[10]! ^ 0x01;
    const flipped = [h, p, sig.toString('base64url')].join('.');
    await refused(auth, flipped, /signature/);
    await expectInvalidToken(await pull(request, flipped));
  });

  it('with the access claim (or any claim) edited', async () => {
    const { auth, request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    for (const claims of [{ access: [{ type: 'repository', name: 'team/app', actions: ['pull', 'push', 'delete'] }] }, { access: [{ type: 'repository', name: 'team/other', actions: ['pull'] }] }, { sub: 'bob' }, { exp: 4_000_000_000 }]) {
      const forgedToken = edited(jwt, { claims });
      await refused(auth, forgedToken, /signature/);
      await expectInvalidToken(await pull(request, forgedToken, 'team/other'));
    }
  });

  it('naming another listed key (wrong kid), or an unknown kid, or none', async () => {
    const { auth, request } = await setup([
      { kid: 'k1', privateKeyPem: ES.privateKeyPem },
      { kid: 'k2', publicKeyPem: (await generateTokenKey('ES256')).publicKeyPem },
      { kid: 'ed', publicKeyPem: ED.publicKeyPem },
    ]);
    // Control: a jose-signed token with our key and kid verifies, so each refusal below is for its one difference.
    expect((await auth.tokens.verifyAccess(await forged(ES.privateKeyPem, 'ES256', { kid: 'k1' }))).sub).toBe('alice');
    await refused(auth, await forged(ES.privateKeyPem, 'ES256', { kid: 'k2' }), /signature/);
    await refused(auth, await forged(ES.privateKeyPem, 'ES256', { kid: 'nope' }), /names no key/);
    await refused(auth, await forged(ES.privateKeyPem, 'ES256', {}), /names no key/);
    // An EdDSA token (signed by the key the kid names) presented under an ES256 key's kid, and the reverse.
    await refused(auth, await forged(ED.privateKeyPem, 'EdDSA', { kid: 'k1' }), /alg/);
    await refused(auth, await forged(ES.privateKeyPem, 'ES256', { kid: 'ed' }), /alg/);
    await expectInvalidToken(await pull(request, await forged(ES.privateKeyPem, 'ES256', { kid: 'nope' })));
  });

  it("from another Outpost's key, even under the same kid", async () => {
    const ours = await setup([{ kid: 'k1', privateKeyPem: ES.privateKeyPem }]);
    const theirs = await setup([{ kid: 'k1', privateKeyPem: (await generateTokenKey('ES256')).privateKeyPem }]);
    const ephemeral = await setup([]);
    for (const other of [theirs, ephemeral]) {
      const jwt = await token(other.request, ['repository:team/app:pull'], ALICE);
      await expectInvalidToken(await pull(ours.request, jwt));
    }
    expect(ephemeral.auth.tokens.ephemeral).toBe(true);
  });

  it('for another audience or issuer, signed with our own key', async () => {
    const { auth, request } = await setup();
    for (const claims of [{ aud: 'other-service' }, { iss: 'someone-else' }, { aud: undefined }]) {
      const jwt = await forged(ES.privateKeyPem, 'ES256', { kid: 'k1' }, claims);
      await refused(auth, jwt, /aud|iss/);
      await expectInvalidToken(await pull(request, jwt));
    }
  });

  it('unsecured (alg: none)', async () => {
    const { auth, request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    const [, p] = jwt.split('.') as [string, string];
    for (const alg of ['none', 'None', 'NONE']) {
      const unsecured = `${encode({ alg, kid: 'k1', typ: 'at+jwt' })}.${p}.`;
      await refused(auth, unsecured);
      await expectInvalidToken(await pull(request, unsecured));
    }
  });

  it('HS256 with the public key as the HMAC secret (algorithm confusion)', async () => {
    const { auth, request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    const [, p] = jwt.split('.') as [string, string];
    const head = encode({ alg: 'HS256', kid: 'k1', typ: 'at+jwt' });
    for (const secret of [ES.publicKeyPem, ES.publicKeyPem.trim(), Buffer.from(ES.publicKeyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64')]) {
      const sig = createHmac('sha256', secret).update(`${head}.${p}`).digest('base64url');
      await refused(auth, `${head}.${p}.${sig}`, /alg/);
      await expectInvalidToken(await pull(request, `${head}.${p}.${sig}`));
    }
  });

  it('of the other kind: a refresh token is no access token, and an access token no refresh token', async () => {
    const { auth, request } = await setup();
    const res = await request('/auth/token?service=outpost&scope=repository:team/app:pull&offline_token=true', { headers: ALICE });
    const { token: access, refresh_token: refresh } = (await res.json()) as { token: string; refresh_token: string };
    expect(decode(refresh.split('.')[0]!).typ).toBe('rt+jwt');
    await refused(auth, refresh, /typ/);
    await expectInvalidToken(await pull(request, refresh));
    await expect(auth.tokens.verifyRefresh(access)).rejects.toBeInstanceOf(TokenError);
    const form = `grant_type=refresh_token&refresh_token=${access}&service=outpost`;
    await expectOciError(await request('/auth/token', { method: 'POST', body: form, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), { status: 401, code: 'UNAUTHORIZED' });
  });

  it('longer than MAX_TOKEN_CHARS, or not a JWT at all', async () => {
    const { auth } = await setup();
    await refused(auth, 'a'.repeat(MAX_TOKEN_CHARS + 1), /too long/);
    await refused(auth, 'not-a-jwt', /not a JWT/);
  });

  it('of a user since removed from the configuration', async () => {
    const { request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], basic('bob', 'bob-pw'));
    const after = await setup(undefined, { users: [USERS[0]!] });
    await expectInvalidToken(await pull(after.request, jwt));
  });
});

describe('what a token grants', () => {
  it('never more than the rules give, of what was asked', async () => {
    const { request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull,push,delete', 'repository:other/x:pull', 'repository:team/b:*', 'repository:team/c:bogus'], ALICE);
    expect(accessOf(jwt)).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
      { type: 'repository', name: 'team/b', actions: ['pull', 'push'] },
    ]);
    expect(accessOf(await token(request, ['repository:team/app:pull']))).toEqual([]);
  });

  it('for repository A only: on B it is 401 insufficient_scope, and on A an action it lacks is too', async () => {
    const { request } = await setup();
    const jwt = await token(request, ['repository:team/a:pull'], ALICE);
    expect((await pull(request, jwt, 'team/a')).status).toBe(404);
    const onB = await pull(request, jwt, 'team/b');
    await expectOciError(onB, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(onB, { scope: 'repository:team/b:pull', error: 'insufficient_scope' });
    const push = await request('/v2/team/a/blobs/uploads/', { method: 'POST', headers: bearer(jwt) });
    await expectOciError(push, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(push, { scope: 'repository:team/a:pull,push', error: 'insufficient_scope' });
  });

  it('is checked against the rules on every request: a token of a caller the rules now refuse is denied', async () => {
    const { request } = await setup();
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    const after = await setup(undefined, { rules: [rule(['team/**'], { users: ['bob'] }, ['pull'])] });
    await expectOciError(await pull(after.request, jwt), { status: 403, code: 'DENIED' });
  });
});

describe('refresh tokens', () => {
  const form = (fields: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(fields).toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });

  it('POST grant_type=password with access_type=offline, then grant_type=refresh_token', async () => {
    const { auth, request } = await setup();
    const first = await request('/auth/token', form({ grant_type: 'password', username: 'alice', password: 'alice-pw', service: 'outpost', access_type: 'offline', scope: 'repository:team/app:pull' }));
    expect(first.status).toBe(200);
    expect(first.headers.get('cache-control')).toBe('no-store');
    const one = (await first.json()) as { access_token: string; refresh_token: string; token_type: string; scope: string; expires_in: number };
    expect(one).toMatchObject({ token_type: 'Bearer', scope: 'repository:team/app:pull', expires_in: 300 });
    expect((await auth.tokens.verifyRefresh(one.refresh_token)).sub).toBe('alice');
    const second = await request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: one.refresh_token, service: 'outpost', scope: 'repository:team/app:pull,push repository:other/x:pull' }));
    expect(second.status).toBe(200);
    const two = (await second.json()) as { access_token: string; scope: string; refresh_token?: string };
    expect(two.scope).toBe('repository:team/app:pull,push');
    expect(two.refresh_token).toBeUndefined();
    expect((await pull(request, two.access_token)).status).toBe(404);
  });

  // A refresh token that renewed itself would never expire: refreshTokenTtl bounds how long a
  // password, once given, keeps a client signed in.
  it('grant_type=refresh_token issues none, even asked for with access_type=offline', async () => {
    const { clock, request } = await setup();
    const first = (await (await request('/auth/token', form({ grant_type: 'password', username: 'alice', password: 'alice-pw', access_type: 'offline' }))).json()) as { refresh_token: string };
    clock.now = T0 + 86_400_000 - 60_000;
    const again = await request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: first.refresh_token, access_type: 'offline', offline_token: 'true', scope: 'repository:team/app:pull' }));
    expect(again.status).toBe(200);
    const body = (await again.json()) as { access_token: string; refresh_token?: string };
    expect(body.refresh_token).toBeUndefined();
    expect((await pull(request, body.access_token)).status).toBe(404);
    // So the one refresh token ends at its expiry, however often it was used.
    clock.now = T0 + 86_400_000 + 31_000;
    expect((await request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: first.refresh_token }))).status).toBe(401);
  });

  it('GET with offline_token=true gives one to a user, never to an anonymous caller', async () => {
    const { request } = await setup();
    const signedIn = (await (await request('/auth/token?offline_token=true', { headers: ALICE })).json()) as { refresh_token?: string };
    expect(typeof signedIn.refresh_token).toBe('string');
    const anonymous = (await (await request('/auth/token?offline_token=true')).json()) as { refresh_token?: string };
    expect(anonymous.refresh_token).toBeUndefined();
  });

  it("stop working when the user's password hash changes (same keys), and keep working while it does not", async () => {
    const { request } = await setup();
    const { refresh_token: refresh } = (await (await request('/auth/token?offline_token=true', { headers: ALICE })).json()) as { refresh_token: string };
    const same = await setup();
    expect((await same.request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: refresh }))).status).toBe(200);
    const changed = await setup(undefined, { users: [await user('alice', 'new-pw'), USERS[1]!] });
    await expectOciError(await changed.request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: refresh })), { status: 401, code: 'UNAUTHORIZED', message: 'sign in again' });
    const removed = await setup(undefined, { users: [USERS[1]!] });
    await expectOciError(await removed.request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: refresh })), { status: 401, code: 'UNAUTHORIZED' });
  });

  // A plaintext password is salted afresh by every instance (each Workers isolate, each
  // restart); its refresh tokens must still be taken by all of them.
  it('survive a restart when the password is configured as plaintext', async () => {
    const plain = [{ name: 'alice', password: { plaintext: 'alice-pw' } }];
    const one = await setup(undefined, { users: plain });
    const { refresh_token: refresh } = (await (await one.request('/auth/token?offline_token=true', { headers: ALICE })).json()) as { refresh_token: string };
    const two = await setup(undefined, { users: plain });
    expect((await two.request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: refresh }))).status).toBe(200);
  });

  it('expire after refreshTokenTtl', async () => {
    const { clock, request } = await setup();
    const { refresh_token: refresh } = (await (await request('/auth/token?offline_token=true', { headers: ALICE })).json()) as { refresh_token: string };
    clock.now = T0 + 86_400_000 + 31_000;
    expect((await request('/auth/token', form({ grant_type: 'refresh_token', refresh_token: refresh }))).status).toBe(401);
  });
});

describe('the token endpoint refuses', () => {
  it('another service, too many scopes, a Bearer credential, a non-form POST and an unknown grant', async () => {
    const { request } = await setup();
    await expectOciError(await request('/auth/token?service=elsewhere', { headers: ALICE }), { status: 400, code: 'UNSUPPORTED', message: 'elsewhere' });
    const many = Array.from({ length: 33 }, (_, i) => `scope=repository:team/r${i}:pull`).join('&');
    await expectOciError(await request(`/auth/token?${many}`, { headers: ALICE }), { status: 400, code: 'UNSUPPORTED', message: 'too many scopes' });
    const jwt = await token(request, ['repository:team/app:pull'], ALICE);
    await expectOciError(await request('/auth/token?scope=repository:team/app:push', { headers: bearer(jwt) }), { status: 401, code: 'UNAUTHORIZED' });
    await expectOciError(await request('/auth/token', { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' } }), { status: 415, code: 'UNSUPPORTED' });
    await expectOciError(await request('/auth/token', { method: 'POST', body: 'grant_type=client_credentials', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), { status: 400, code: 'UNSUPPORTED', message: 'grant_type' });
    await expectOciError(await request('/auth/token', { method: 'DELETE' }), { status: 405, code: 'UNSUPPORTED' });
  });
});

describe('Tokens.create', () => {
  it('refuses a key that is neither P-256 nor Ed25519', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await expect(Tokens.create({ ...config(), keys: [{ kid: 'rsa', privateKeyPem: rsa }] })).rejects.toThrow(/not an ES256 \(P-256\) or EdDSA/);
  });
});

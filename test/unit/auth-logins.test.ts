import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import type { AuthConfig } from '../../src/core/auth/config.js';
import { WindowLimiter } from '../../src/core/auth/limiter.js';
import { constantTimeEqual } from '../../src/core/bytes.js';
import {
  formatPasswordHash,
  hashPassword,
  MAX_PASSWORD_BYTES,
  MIN_ITERATIONS,
  NODE_MAX_ITERATIONS,
  parsePasswordHash,
  PasswordHashError,
  verifyPassword,
  WORKERS_MAX_ITERATIONS,
} from '../../src/core/auth/passwords.js';
import { authConfig, basic, CLIENT_HEADER, expectChallenge, rule, testConnection, user } from '../support/auth.js';
import { testApp } from '../support/app.js';
import { expectOciError } from '../support/oci-errors.js';

/**
 * Logins: Basic credentials on routes and at the token endpoint, the limit on failed ones
 * (per client address and user, and per address at ADDRESS_FAILURE_FACTOR times it), equal work
 * for every failed login whatever the user's hash, and the password hashes themselves
 * (src/core/auth/passwords.ts).
 */

const T0 = 1_700_000_000_000;
const USERS = [await user('alice', 'alice-pw'), await user('carol', 'pa:ss wörd')];

async function setup(overrides: Partial<AuthConfig> = {}) {
  const clock = { now: T0 };
  const auth = Auth.create(authConfig({ users: USERS, rules: [rule(['team/**'], { authenticated: true }, ['pull'])], ...overrides }), () => clock.now);
  const t = testApp({}, { auth, connection: testConnection });
  return { clock, auth: await auth, request: t.request };
}

const header = (value: string) => ({ Authorization: value });
const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

describe('Basic credentials', () => {
  it.each([
    ['a wrong password', basic('alice', 'wrong')],
    ['an unknown user', basic('mallory', 'alice-pw')],
    ['an empty password', basic('alice', '')],
    ['no colon', header(`Basic ${b64('alice')}`)],
    ['an empty user', header(`Basic ${b64(':alice-pw')}`)],
    ['not base64', header('Basic !!!not-base64')],
    ['bytes that are not UTF-8', header(`Basic ${b64(Buffer.from([0x61, 0x3a, 0xff, 0xfe]))}`)],
    ['an unknown scheme', header(`Digest ${b64('alice:alice-pw')}`)],
    ['an empty Bearer', header('Bearer ')],
    ['an over-long header', header(`Basic ${b64(`alice:${'x'.repeat(20_000)}`)}`)],
    ['a password of the wrong case', basic('alice', 'ALICE-PW')],
    ['the right password of another user', basic('alice', 'pa:ss wörd')],
  ])('with %s: 401 on a route and at the token endpoint', async (_, credentials) => {
    const { request } = await setup();
    for (const path of ['/v2/team/app/tags/list', '/v2/', '/auth/token?scope=repository:team/app:pull']) {
      const res = await request(path, { headers: credentials });
      await expectOciError(res, { status: 401, code: 'UNAUTHORIZED' });
      if (path.startsWith('/v2/')) expectChallenge(res, { scope: null, error: null });
    }
  });

  it('the right ones pass: any case of the scheme, a password with a colon and non-ASCII', async () => {
    const { request } = await setup();
    for (const credentials of [basic('alice', 'alice-pw'), header(`basic ${b64('alice:alice-pw')}`), header(`BASIC  ${b64('alice:alice-pw')}`), basic('carol', 'pa:ss wörd')]) {
      expect((await request('/v2/', { headers: credentials })).status).toBe(200);
      expect((await request('/v2/team/app/tags/list', { headers: credentials })).status).toBe(404);
    }
  });
});

describe('the failed-login limit', () => {
  it('answers 429 after `limit` failures of one user from one address, before checking the password', async () => {
    const { auth, clock } = await setup({ loginFailures: { limit: 3, windowMs: 60_000 } });
    for (let i = 0; i < 3; i++) expect(await auth.login('alice', `wrong-${i}`, 'A')).toEqual({ kind: 'bad' });
    clock.now += 10_000;
    expect(await auth.login('alice', 'alice-pw', 'A')).toEqual({ kind: 'rate-limited', retryAfterMs: 50_000 });
    // Other users at the same address count on their own (a shared proxy or NAT is not locked out).
    expect(await auth.login('mallory', 'x', 'A')).toEqual({ kind: 'bad' });
    expect(await auth.login('carol', 'pa:ss wörd', 'A')).toEqual({ kind: 'ok', user: 'carol' });
    // Another address is unaffected, and counts on its own.
    expect(await auth.login('alice', 'wrong', 'B')).toEqual({ kind: 'bad' });
    expect(await auth.login('alice', 'alice-pw', 'B')).toEqual({ kind: 'ok', user: 'alice' });
    // Lifted when the window ends.
    clock.now = T0 + 60_000;
    expect(await auth.login('alice', 'alice-pw', 'A')).toEqual({ kind: 'ok', user: 'alice' });
    expect(await auth.login('alice', 'wrong', 'A')).toEqual({ kind: 'bad' });
  });

  it('over HTTP: 429 TOOMANYREQUESTS with Retry-After on routes and the token endpoint; other addresses unaffected', async () => {
    const { request, clock } = await setup({ loginFailures: { limit: 2, windowMs: 30_000 } });
    const from = (client: string, credentials: Record<string, string>) => ({ headers: { [CLIENT_HEADER]: client, ...credentials } });
    expect((await request('/v2/team/app/tags/list', from('10.0.0.1', basic('alice', 'no')))).status).toBe(401);
    const form = { method: 'POST', body: 'grant_type=password&username=alice&password=no', headers: { [CLIENT_HEADER]: '10.0.0.1', 'Content-Type': 'application/x-www-form-urlencoded' } };
    expect((await request('/auth/token', form)).status).toBe(401);
    const blocked = [
      await request('/v2/team/app/tags/list', from('10.0.0.1', basic('alice', 'alice-pw'))),
      await request('/auth/token?scope=repository:team/app:pull', from('10.0.0.1', basic('alice', 'alice-pw'))),
      await request('/auth/token', { ...form, body: 'grant_type=password&username=alice&password=alice-pw' }),
    ];
    for (const res of blocked) {
      await expectOciError(res, { status: 429, code: 'TOOMANYREQUESTS', message: 'too many failed logins' });
      expect(res.headers.get('retry-after')).toBe('30');
    }
    expect((await request('/v2/team/app/tags/list', from('10.0.0.2', basic('alice', 'alice-pw')))).status).toBe(404);
    // Anonymous requests from the blocked address are not logins.
    expect((await request('/auth/token', from('10.0.0.1', {}))).status).toBe(200);
    // Another user at the blocked address signs in.
    expect((await request('/v2/', from('10.0.0.1', basic('carol', 'pa:ss wörd')))).status).toBe(200);
    clock.now += 29_500;
    expect((await request('/v2/', from('10.0.0.1', basic('alice', 'alice-pw')))).headers.get('retry-after')).toBe('1');
    clock.now += 500;
    expect((await request('/v2/', from('10.0.0.1', basic('alice', 'alice-pw')))).status).toBe(200);
  });

  // Each guess is counted before its password is checked: guesses sent at once cannot all
  // pass the limit while the first checks are still running.
  it('of 40 parallel wrong guesses with a limit of 3, at most 3 are checked (401), the rest are 429', async () => {
    const { auth } = await setup({ loginFailures: { limit: 3, windowMs: 60_000 } });
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => auth.login('alice', `guess-${i}`, 'A')));
    const kinds = answers.map((a) => a.kind);
    expect(kinds.filter((k) => k === 'bad').length).toBeLessThanOrEqual(3);
    expect(kinds.filter((k) => k === 'rate-limited').length).toBeGreaterThanOrEqual(37);
    expect(kinds.filter((k) => k !== 'bad' && k !== 'rate-limited')).toEqual([]);
    // And the same over HTTP, at the token endpoint.
    const { request } = await setup({ loginFailures: { limit: 3, windowMs: 60_000 } });
    const responses = await Promise.all(Array.from({ length: 40 }, (_, i) => request('/auth/token', { headers: { [CLIENT_HEADER]: '10.0.0.9', ...basic('alice', `guess-${i}`) } })));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(3);
    expect(statuses.filter((s) => s !== 401 && s !== 429)).toEqual([]);
  });

  it('parallel logins with one right password are one check: none is refused past the limit', async () => {
    const { auth } = await setup({ loginFailures: { limit: 3, windowMs: 60_000 } });
    const answers = await Promise.all(Array.from({ length: 20 }, () => auth.login('carol', 'pa:ss wörd', 'A')));
    expect(answers.map((a) => a.kind)).toEqual(Array(20).fill('ok'));
    // A guess repeated in parallel is one guess too: counted once, so the limit is not reached.
    const repeated = await Promise.all(Array.from({ length: 20 }, () => auth.login('carol', 'same-guess', 'B')));
    expect(repeated.map((a) => a.kind)).toEqual(Array(20).fill('bad'));
    expect(await auth.login('carol', 'pa:ss wörd', 'B')).toEqual({ kind: 'ok', user: 'carol' });
  });

  it('a right password is not counted against the limit (its count is taken back)', async () => {
    const { auth, clock } = await setup({ loginFailures: { limit: 3, windowMs: 600_000 } });
    for (const pw of ['wrong-1', 'wrong-2']) expect(await auth.login('carol', pw, 'A')).toEqual({ kind: 'bad' });
    expect(await auth.login('carol', 'pa:ss wörd', 'A')).toEqual({ kind: 'ok', user: 'carol' });
    // Past the 5 minutes a proven password is remembered for, so checked (and counted) again.
    clock.now += 6 * 60_000;
    expect(await auth.login('carol', 'pa:ss wörd', 'A')).toEqual({ kind: 'ok', user: 'carol' });
    expect(await auth.login('carol', 'wrong-3', 'A')).toEqual({ kind: 'bad' });
    expect((await auth.login('carol', 'pa:ss wörd', 'A')).kind).toBe('rate-limited');
  });

  it('behind one address: wrong passwords for one user do not block another; guessing across many user names does', async () => {
    const admin = await user('admin', 'admin-pw');
    const { auth, clock } = await setup({ users: [...USERS, admin], loginFailures: { limit: 3, windowMs: 60_000 } });
    const proxy = '10.1.1.1';
    for (let i = 0; i < 10; i++) expect((await auth.login('nobody', `wrong-${i}`, proxy)).kind).toBe(i < 3 ? 'bad' : 'rate-limited');
    expect(await auth.login('admin', 'admin-pw', proxy)).toEqual({ kind: 'ok', user: 'admin' });
    // 3 failures so far; 10 x 3 per address in all: 27 more user names, each failing once.
    for (let i = 0; i < 27; i++) expect(await auth.login(`user-${i}`, 'x', proxy), `user-${i}`).toEqual({ kind: 'bad' });
    clock.now += 1_000;
    for (const [name, password] of [['user-new', 'x'], ['alice', 'alice-pw'], ['carol', 'pa:ss wörd']]) {
      expect(await auth.login(name!, password!, proxy), name).toEqual({ kind: 'rate-limited', retryAfterMs: 59_000 });
    }
    // Only that address.
    expect(await auth.login('alice', 'alice-pw', '10.1.1.2')).toEqual({ kind: 'ok', user: 'alice' });
  });

  // Past the limit a right guess must not be told apart from a wrong one, even for a password
  // its user proved in the last 5 minutes (remembered, so not hashed again).
  it('a blocked address is refused even the password its user proved a moment ago', async () => {
    const { auth } = await setup({ loginFailures: { limit: 2, windowMs: 60_000 } });
    expect(await auth.login('alice', 'alice-pw', 'user-laptop')).toEqual({ kind: 'ok', user: 'alice' });
    for (let i = 0; i < 2; i++) expect(await auth.login('alice', `guess-${i}`, 'attacker')).toEqual({ kind: 'bad' });
    expect((await auth.login('alice', 'alice-pw', 'attacker')).kind).toBe('rate-limited');
  });

  it('WindowLimiter: take counts up to the limit; a limit of 0 admits nothing', () => {
    let now = 0;
    const limiter = new WindowLimiter(2, 1000, () => now);
    expect([limiter.take('a'), limiter.take('a'), limiter.take('a'), limiter.take('b')]).toEqual([0, 0, 1000, 0]);
    now = 400;
    expect(limiter.blockedFor('a')).toBe(600);
    now = 1000;
    expect(limiter.take('a')).toBe(0);
    expect(new WindowLimiter(0, 5000, () => now).take('a')).toBe(5000);
  });
});

describe('timing of failed logins', () => {
  /** Median milliseconds of each kind of attempt, measured interleaved so that drift hits both alike. */
  async function medians(attempts: Array<[string, (i: number) => Promise<unknown>]>, rounds = 15) {
    const times = attempts.map(() => [] as number[]);
    for (let i = 0; i < 3; i++) for (const [, run] of attempts) await run(-1 - i);
    for (let i = 0; i < rounds; i++) {
      for (const [k, [, run]] of attempts.entries()) {
        const start = performance.now();
        await run(i);
        times[k]!.push(performance.now() - start);
      }
    }
    return times.map((t) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)]!);
  }

  /** Each median within a factor of 2 of the first: 8x the work (the hashes below) is far outside. */
  function expectAlike(named: Array<[string, number]>) {
    const text = named.map(([k, ms]) => `${k} ${ms.toFixed(2)} ms`).join(', ');
    for (const [, ms] of named.slice(1)) {
      expect(ms / named[0]![1], text).toBeGreaterThan(0.5);
      expect(ms / named[0]![1], text).toBeLessThan(2);
    }
  }

  it('a wrong user name costs what a wrong password does (equal PBKDF2 work)', async () => {
    const { auth } = await setup({ loginFailures: { limit: 1000, windowMs: 60_000 } });
    const [wrongUser, wrongPassword] = await medians([
      ['wrong user', (i) => auth.login(`nobody-${i}`, 'alice-pw', `u${i}`)],
      ['wrong password', (i) => auth.login('alice', `wrong-${i}`, `p${i}`)],
    ]);
    expectAlike([['wrong password', wrongPassword!], ['wrong user', wrongUser!]]);
  });

  // Every failed login costs the work of the costliest configured hash, so that neither a
  // user's hash nor whether the user exists is told by how long a wrong password takes.
  it('users with 1x and 8x the iterations, and unknown users, cost about the same on failure', async () => {
    const slow = await user('slow', 'slow-pw', MIN_ITERATIONS * 8);
    const { auth } = await setup({ users: [USERS[0]!, slow], loginFailures: { limit: 1000, windowMs: 60_000 } });
    const [fast, slowOne, unknown] = await medians([
      ['1x user', (i) => auth.login('alice', `wrong-${i}`, `f${i}`)],
      ['8x user', (i) => auth.login('slow', `wrong-${i}`, `s${i}`)],
      ['unknown user', (i) => auth.login(`nobody-${i}`, 'slow-pw', `u${i}`)],
    ], 9);
    expectAlike([['8x user', slowOne!], ['1x user', fast!], ['unknown user', unknown!]]);
    // The order of the configured users does not matter.
    const reversed = (await setup({ users: [slow, USERS[0]!], loginFailures: { limit: 1000, windowMs: 60_000 } })).auth;
    const [fastR, slowR] = await medians([
      ['1x user', (i) => reversed.login('alice', `wrong-${i}`, `f${i}`)],
      ['8x user', (i) => reversed.login('slow', `wrong-${i}`, `s${i}`)],
    ], 7);
    expectAlike([['8x user', slowR!], ['1x user', fastR!]]);
  });
});

describe('password hashes', () => {
  it('verify the password they were made from, and no other', async () => {
    const hash = parsePasswordHash(formatPasswordHash(await hashPassword('correct horse', MIN_ITERATIONS)));
    expect(hash.iterations).toBe(MIN_ITERATIONS);
    expect(await verifyPassword('correct horse', hash)).toBe(true);
    for (const wrong of ['correct horse ', 'Correct horse', '', 'correct hors']) expect(await verifyPassword(wrong, hash)).toBe(false);
  });

  it('refuse the password with NUL bytes added (HMAC pads its key with zeros, so PBKDF2 alone would take it)', async () => {
    const hash = await hashPassword('pw', MIN_ITERATIONS);
    expect(await verifyPassword('pw', hash)).toBe(true);
    for (const padded of ['pw\0', 'pw\0\0\0', 'p\0w']) expect(await verifyPassword(padded, hash), JSON.stringify(padded)).toBe(false);
  });

  it('are PBKDF2-HMAC-SHA-256 (RFC 7914 section 11 vector, first 32 bytes)', async () => {
    const key = Buffer.from('55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc', 'hex');
    const hash = { iterations: 1, salt: new TextEncoder().encode('salt'), key: new Uint8Array(key) };
    expect(await verifyPassword('passwd', hash)).toBe(true);
    expect(await verifyPassword('passwe', hash)).toBe(false);
  });

  it('refuse passwords over MAX_PASSWORD_BYTES (counted in UTF-8 bytes), even a matching one', async () => {
    const longest = 'x'.repeat(MAX_PASSWORD_BYTES);
    expect(await verifyPassword(longest, await hashPassword(longest, MIN_ITERATIONS))).toBe(true);
    for (const over of [`${longest}x`, 'é'.repeat(MAX_PASSWORD_BYTES / 2 + 1)]) {
      expect(await verifyPassword(over, await hashPassword(over, MIN_ITERATIONS))).toBe(false);
    }
    // Nor does an over-long password match the hash of the empty one it is derived as.
    expect(await verifyPassword(`${longest}x`, await hashPassword('', MIN_ITERATIONS))).toBe(false);
  });

  const SALT = b64('0123456789abcdef');
  const KEY = b64(Buffer.alloc(32, 7));
  it.each([
    ['no scheme', `${MIN_ITERATIONS}$${SALT}$${KEY}`, /must be pbkdf2-sha256/],
    ['another scheme', `bcrypt$${MIN_ITERATIONS}$${SALT}$${KEY}`, /must be pbkdf2-sha256/],
    ['a part too many', `pbkdf2-sha256$${MIN_ITERATIONS}$${SALT}$${KEY}$x`, /must be pbkdf2-sha256/],
    ['plaintext', 'hunter2', /must be pbkdf2-sha256/],
    ['iterations not a number', `pbkdf2-sha256$lots$${SALT}$${KEY}`, /iterations/],
    ['iterations in exponent form', `pbkdf2-sha256$1e5$${SALT}$${KEY}`, /iterations/],
    ['too few iterations', `pbkdf2-sha256$${MIN_ITERATIONS - 1}$${SALT}$${KEY}`, /from 10000 to/],
    ['too many iterations', `pbkdf2-sha256$${NODE_MAX_ITERATIONS + 1}$${SALT}$${KEY}`, /iterations/],
    ['a salt under 8 bytes', `pbkdf2-sha256$${MIN_ITERATIONS}$${b64('1234567')}$${KEY}`, /salt/],
    ['a salt over 64 bytes', `pbkdf2-sha256$${MIN_ITERATIONS}$${b64(Buffer.alloc(65))}$${KEY}`, /salt/],
    ['a salt that is not base64', `pbkdf2-sha256$${MIN_ITERATIONS}$not*base64$${KEY}`, /salt/],
    ['a key of 31 bytes', `pbkdf2-sha256$${MIN_ITERATIONS}$${SALT}$${b64(Buffer.alloc(31))}`, /key that is not 32 bytes/],
    ['a key of 33 bytes', `pbkdf2-sha256$${MIN_ITERATIONS}$${SALT}$${b64(Buffer.alloc(33))}`, /key that is not 32 bytes/],
  ])('are refused with %s, without echoing the hash', (_, text, message) => {
    let err: unknown;
    try {
      parsePasswordHash(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PasswordHashError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).not.toContain(SALT);
    expect((err as Error).message).not.toContain(KEY);
  });

  it('accept iterations up to the bound given: NODE_MAX_ITERATIONS by default, WORKERS_MAX_ITERATIONS on Workers', () => {
    const at = (n: number) => `pbkdf2-sha256$${n}$${SALT}$${KEY}`;
    expect(parsePasswordHash(at(MIN_ITERATIONS)).iterations).toBe(MIN_ITERATIONS);
    expect(parsePasswordHash(at(NODE_MAX_ITERATIONS)).iterations).toBe(NODE_MAX_ITERATIONS);
    expect(parsePasswordHash(at(WORKERS_MAX_ITERATIONS), WORKERS_MAX_ITERATIONS).iterations).toBe(WORKERS_MAX_ITERATIONS);
    expect(() => parsePasswordHash(at(WORKERS_MAX_ITERATIONS + 1), WORKERS_MAX_ITERATIONS)).toThrow(/from 10000 to 100000 iterations/);
  });

  it('constantTimeEqual compares length and every byte', () => {
    const a = new Uint8Array([1, 2, 3]);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 3]))).toBe(true);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 4]))).toBe(false);
    expect(constantTimeEqual(a, new Uint8Array([1, 2]))).toBe(false);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 3, 0]))).toBe(false);
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });
});

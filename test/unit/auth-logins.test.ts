import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import type { AuthConfig } from '../../src/core/auth/config.js';
import { WindowLimiter } from '../../src/core/auth/limiter.js';
import {
  constantTimeEqual,
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
 * Logins: Basic credentials on routes and at the token endpoint, the per-address limit on
 * failed ones, equal work for a wrong user and a wrong password, and the password hashes
 * themselves (src/core/auth/passwords.ts).
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
  it('answers 429 after `limit` failures from one address, before checking the password', async () => {
    const { auth, clock } = await setup({ loginFailures: { limit: 3, windowMs: 60_000 } });
    for (let i = 0; i < 3; i++) expect(await auth.login('alice', `wrong-${i}`, 'A')).toEqual({ kind: 'bad' });
    clock.now += 10_000;
    expect(await auth.login('alice', 'alice-pw', 'A')).toEqual({ kind: 'rate-limited', retryAfterMs: 50_000 });
    expect(await auth.login('mallory', 'x', 'A')).toEqual({ kind: 'rate-limited', retryAfterMs: 50_000 });
    // Another address is unaffected, and counts on its own.
    expect(await auth.login('alice', 'wrong', 'B')).toEqual({ kind: 'bad' });
    expect(await auth.login('alice', 'alice-pw', 'B')).toEqual({ kind: 'ok', user: 'alice' });
    // Lifted when the window ends.
    clock.now = T0 + 60_000;
    expect(await auth.login('carol', 'pa:ss wörd', 'A')).toEqual({ kind: 'ok', user: 'carol' });
    expect(await auth.login('carol', 'wrong', 'A')).toEqual({ kind: 'bad' });
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
    clock.now += 29_500;
    expect((await request('/v2/', from('10.0.0.1', basic('carol', 'pa:ss wörd')))).headers.get('retry-after')).toBe('1');
    clock.now += 500;
    expect((await request('/v2/', from('10.0.0.1', basic('carol', 'pa:ss wörd')))).status).toBe(200);
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

  it('a wrong user name costs what a wrong password does (equal PBKDF2 work)', async () => {
    const { auth } = await setup({ loginFailures: { limit: 1000, windowMs: 60_000 } });
    const [wrongUser, wrongPassword] = await medians([
      ['wrong user', (i) => auth.login(`nobody-${i}`, 'alice-pw', `u${i}`)],
      ['wrong password', (i) => auth.login('alice', `wrong-${i}`, `p${i}`)],
    ]);
    const ratio = wrongUser! / wrongPassword!;
    expect(ratio, `wrong user ${wrongUser!.toFixed(2)} ms, wrong password ${wrongPassword!.toFixed(2)} ms`).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });

  it('the measurement tells unequal work apart (a user with 8x the iterations)', async () => {
    const slow = await user('slow', 'slow-pw', MIN_ITERATIONS * 8);
    const { auth } = await setup({ users: [USERS[0]!, slow], loginFailures: { limit: 1000, windowMs: 60_000 } });
    const [fast, slowOne] = await medians([
      ['typical user', (i) => auth.login('alice', `wrong-${i}`, `f${i}`)],
      ['slow user', (i) => auth.login('slow', `wrong-${i}`, `s${i}`)],
    ], 7);
    expect(slowOne! / fast!).toBeGreaterThan(2);
  });
});

describe('password hashes', () => {
  it('verify the password they were made from, and no other', async () => {
    const hash = parsePasswordHash(formatPasswordHash(await hashPassword('correct horse', MIN_ITERATIONS)));
    expect(hash.iterations).toBe(MIN_ITERATIONS);
    expect(await verifyPassword('correct horse', hash)).toBe(true);
    for (const wrong of ['correct horse ', 'Correct horse', '', 'correct hors']) expect(await verifyPassword(wrong, hash)).toBe(false);
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

import { expect } from 'vitest';
import type { Context } from 'hono';
import type { AccessRule, Action, AuthConfig, UserConfig } from '../../src/core/auth/config.js';
import { formatPasswordHash, hashPassword, MIN_ITERATIONS } from '../../src/core/auth/passwords.js';
import { compileGlob } from '../../src/core/glob.js';
import type { ConnectionInfo } from '../../src/http/access-log.js';
import { nodeConnection } from '../../src/entry/node-server.js';
import type { Image } from './images.js';

/**
 * Authentication fixtures for test/http/auth-*.test.ts and test/unit/auth-*.test.ts: users with
 * cheap password hashes (MIN_ITERATIONS, so a login costs milliseconds), rules from globs, Basic
 * headers, tokens from the token endpoint, and a connection whose client address a test picks.
 */

/** What answers requests like app.request(). */
export type Requester = (path: string, init?: RequestInit) => Promise<Response> | Response;

/** A configured user whose password is stored as a MIN_ITERATIONS hash. */
export async function user(name: string, password: string, iterations = MIN_ITERATIONS): Promise<UserConfig> {
  return { name, password: { hash: formatPasswordHash(await hashPassword(password, iterations)) } };
}

export function rule(globs: string[], who: { users?: string[]; authenticated?: boolean; anonymous?: boolean }, actions: Action[]): AccessRule {
  return {
    repositories: globs.map(compileGlob),
    users: who.users ?? [],
    authenticated: who.authenticated ?? false,
    anonymous: who.anonymous ?? false,
    actions,
  };
}

export function authConfig(overrides: Partial<AuthConfig> = {}): AuthConfig {
  return {
    service: 'outpost',
    issuer: 'outpost',
    tokenTtlMs: 300_000,
    refreshTokenTtlMs: 86_400_000,
    keys: [],
    users: [],
    rules: [],
    loginFailures: { limit: 5, windowMs: 60_000 },
    anonymousFills: { limit: 100, windowMs: 60_000 },
    ...overrides,
  };
}

export function basic(name: string, password: string): Record<string, string> {
  return { Authorization: `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}` };
}

export function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

/** The header a test sets to choose its client address (CLIENT_HEADER), read by `testConnection`. */
export const CLIENT_HEADER = 'x-test-client';

/**
 * A runtime connection whose client address is the CLIENT_HEADER of the request (192.0.2.1
 * without it), and whose request target as sent is the Node one (app.request's env `incoming.url`).
 */
export const testConnection: ConnectionInfo = {
  remoteAddress: (c: Context) => c.req.header(CLIENT_HEADER) ?? '192.0.2.1',
  sentTarget: (c: Context) => nodeConnection.sentTarget?.(c),
};

/** GET /auth/token for `scopes`, with Basic credentials or none; asserts 200 and returns the token. */
export async function token(request: Requester, scopes: string[], credentials?: Record<string, string>): Promise<string> {
  const query = ['service=outpost', ...scopes.map((s) => `scope=${encodeURIComponent(s)}`)].join('&');
  const res = await request(`/auth/token?${query}`, { headers: credentials ?? {} });
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as { token: string; access_token: string };
  expect(body.access_token).toBe(body.token);
  return body.token;
}

/** The access claim of a token (not verified: for assertions on what was granted). */
export function accessOf(jwt: string): Array<{ type: string; name: string; actions: string[] }> {
  return (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { access: Array<{ type: string; name: string; actions: string[] }> }).access;
}

/** Pushes an image's blobs and manifest with `headers` (credentials); asserts every 201. */
export async function pushImageAs(request: Requester, name: string, img: Image, reference: string, headers: Record<string, string>): Promise<void> {
  for (const b of [img.config, ...img.layers]) {
    const res = await request(`/v2/${name}/blobs/uploads/?digest=${b.digest}`, {
      method: 'POST',
      body: new Uint8Array(b.bytes),
      headers: { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(b.size) },
    });
    expect(res.status, `push blob: ${await res.clone().text()}`).toBe(201);
  }
  const res = await putManifestAs(request, name, reference, img, headers);
  expect(res.status, `push manifest: ${await res.clone().text()}`).toBe(201);
}

export async function putManifestAs(request: Requester, name: string, reference: string, img: Image, headers: Record<string, string>): Promise<Response> {
  return request(`/v2/${name}/manifests/${reference}`, {
    method: 'PUT',
    body: new Uint8Array(img.manifest.bytes),
    headers: { ...headers, 'Content-Type': img.manifest.mediaType },
  });
}

/** Asserts a 401 challenge: Bearer realm and service, and the scope/error parameters given (null: absent). */
export function expectChallenge(res: Response, expected: { scope?: string | null; error?: string | null } = {}): void {
  const header = res.headers.get('www-authenticate') ?? '';
  expect(header).toMatch(/^Bearer realm="http:\/\/localhost\/auth\/token",service="outpost"/);
  const param = (name: string) => new RegExp(`,${name}="([^"]*)"`).exec(header)?.[1] ?? null;
  if (expected.scope !== undefined) expect(param('scope')).toBe(expected.scope);
  if (expected.error !== undefined) expect(param('error')).toBe(expected.error);
}

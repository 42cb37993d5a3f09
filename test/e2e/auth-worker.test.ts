import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { conformanceFlow } from './suites/conformance-flow.js';
import { outpostCli } from './support/cli.js';
import { freshCloudStore } from './support/cloud-store.js';
import { startContainerd, type Containerd } from './support/containerd.js';
import { imageBlobs, readLayout, tarImage, writeLayout } from './support/oci-layout.js';
import type { OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import type { Target } from './support/targets.js';
import { basicAuth } from './support/upstream-registry.js';
import { startWorker } from './support/worker.js';

/**
 * Authentication on workerd: one worker (`wrangler dev`, on S3 + DynamoDB, behind the plain-HTTP
 * relay of support/worker.ts) whose OUTPOST_CONFIG has an auth section as a Worker needs it: a
 * token key from `outpost token-key` in a secret named by privateKeyEnv, users with a password
 * from a secret (hashed by the isolate at start) and with a hash from `outpost hash-password`
 * (100,000 iterations, the most workerd's PBKDF2 takes), and rules. Real clients sign in
 * through it as through Node (auth.test.ts): skopeo, containerd with ctr --user, the Docker
 * token flow by hand (the challenge's realm must be the origin clients reach, the relay's), and
 * the replayed conformance flow with Basic credentials (conformance-auth.test.ts), all on the
 * one worker. wrangler runs at --log-level log, so that the worker's audit lines reach
 * `logs()`: they record the pushes and refusals, and no output holds a secret.
 */

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const app = tarImage({ layers: [256 * 1024, 1024], arch: ARCH });
const other = tarImage({ layers: [64 * 1024], arch: ARCH });

const ciPassword = randomBytes(15).toString('base64url');
const readerPassword = randomBytes(15).toString('base64url');
const conformancePassword = randomBytes(15).toString('base64url');
const ci = `ci:${ciPassword}`;
const reader = `reader:${readerPassword}`;
const ciBasic = basicAuth({ username: 'ci', password: ciPassword });
const conformanceBasic = basicAuth({ username: 'conformance', password: conformancePassword });

let work: string;
let layout: string;
let worker: OutpostProcess;
let tokenKey: string;
let readerHash: string;
/** Every token the tests were given: none may appear in wrangler's output. */
const tokens: string[] = [];

/** A skopeo run that must fail: its error text. */
function refused(...args: string[]): Promise<string> {
  return skopeo(...args).then(
    () => {
      throw new Error(`skopeo ${args.join(' ')} succeeded`);
    },
    (err: Error) => err.message,
  );
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-auth-worker-'));
  layout = join(work, 'source');
  const [hashed, key, store] = await Promise.all([
    // The operator's commands, as real processes: the password piped on stdin.
    outpostCli(['hash-password'], { input: `${readerPassword}\n` }),
    outpostCli(['token-key']),
    freshCloudStore('auth-worker'),
    writeLayout(layout, { app: app.manifest, other: other.manifest }, [...imageBlobs(app), ...imageBlobs(other)]),
  ]);
  expect(hashed.status, hashed.stderr).toBe(0);
  readerHash = hashed.stdout.trim();
  expect(readerHash).toMatch(/^pbkdf2-sha256\$100000\$/);
  expect(key.status, key.stderr).toBe(0);
  tokenKey = key.stdout;
  expect(tokenKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);

  const config = {
    auth: {
      tokenKeys: [{ kid: 'e2e-worker', privateKeyEnv: 'E2E_TOKEN_KEY' }],
      users: [
        { name: 'ci', passwordEnv: 'E2E_CI_PASSWORD' },
        { name: 'reader', passwordHash: readerHash },
        { name: 'conformance', passwordEnv: 'E2E_CONFORMANCE_PASSWORD' },
      ],
      rules: [
        { repositories: ['team/**'], users: ['ci'], actions: ['pull', 'push', 'delete'] },
        { repositories: ['team/**'], users: ['reader'], actions: ['pull'] },
        { repositories: ['public/**'], anonymous: true, actions: ['pull'] },
        // The conformance flow's repository, and the conformance-<random> one of its cross-repository mount.
        { repositories: ['conformance/myorg/myrepo', 'conformance-*'], users: ['conformance'], actions: ['pull', 'push', 'delete'] },
      ],
    },
  };
  const secrets = { OUTPOST_CONFIG: JSON.stringify(config), E2E_TOKEN_KEY: tokenKey, E2E_CI_PASSWORD: ciPassword, E2E_CONFORMANCE_PASSWORD: conformancePassword };
  worker = await startWorker(store, secrets, { authorization: ciBasic, logLevel: 'log' });
}, 150_000);

afterAll(async () => {
  await worker?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('skopeo through the token flow on workerd', () => {
  const ref = (repoAndTag: string) => `docker://${worker.host}/${repoAndTag}`;

  it('ci pushes to team/app and pulls it back; a reader (hash from hash-password) pulls it too', async () => {
    await skopeo('copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:app`, ref('team/app:v1'));
    await skopeo('copy', '--quiet', '--src-tls-verify=false', '--src-creds', ci, ref('team/app:v1'), `oci:${join(work, 'pulled')}:v1`);
    expect((await readLayout(join(work, 'pulled'))).ref('v1').digest).toBe(app.manifest.digest);
    const inspected = JSON.parse(await skopeo('inspect', '--tls-verify=false', '--creds', reader, ref('team/app:v1'))) as { Digest: string };
    expect(inspected.Digest).toBe(app.manifest.digest);
  });

  it('is refused without credentials, and a reader may not push', async () => {
    const anonymous = await refused('copy', '--quiet', '--src-tls-verify=false', ref('team/app:v1'), `oci:${join(work, 'anonymous')}:v1`);
    expect(anonymous).toMatch(/unauthorized|authentication required/i);
    const push = await refused('copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', reader, `oci:${layout}:other`, ref('team/app:v2'));
    expect(push).toMatch(/denied/i);
  });
});

describe('containerd through the token flow on workerd', () => {
  let ctd: Containerd | undefined;
  let hostsDir: string;

  beforeAll(async () => {
    ctd = await startContainerd();
    hostsDir = join(work, 'hosts');
    await mkdir(hostsDir, { recursive: true });
  });
  afterAll(async () => ctd?.stop());

  it('pulls team/app with --user, and is refused without it', async () => {
    const name = `${worker.host}/team/app:v1`;
    const anonymous = await ctd!.pull(name, { hostsDir, plainHttp: true });
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toMatch(/401|unauthorized/i);
    const ok = await ctd!.pull(name, { hostsDir, plainHttp: true, user: ci });
    expect(ok.code, ok.stderr).toBe(0);
    expect(await ctd!.images()).toContainEqual({ ref: name, mediaType: app.manifest.mediaType, digest: app.manifest.digest });
  });
});

describe('the token flow by hand on workerd, as Docker does it', () => {
  /** The parameters of a `Bearer k="v",...` challenge. */
  function challenge(res: Response): Record<string, string> {
    const header = res.headers.get('www-authenticate') ?? '';
    expect(header).toMatch(/^Bearer /);
    return Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
  }

  const manifest = (token: string, init: RequestInit = {}) =>
    fetch(`${worker.url}/v2/team/app/manifests/v1`, { ...init, headers: { Authorization: `Bearer ${token}`, Accept: app.manifest.mediaType, ...init.headers } });

  it('GET /v2/ challenges with a realm at the origin clients reach; a token got there with Basic opens it', async () => {
    const base = await fetch(`${worker.url}/v2/`);
    expect(base.status).toBe(401);
    const { realm, service } = challenge(base);
    // The relay's origin, which clients reach, not wrangler's own listener behind it.
    expect(realm).toBe(`${worker.url}/auth/token`);
    expect(service).toBe('outpost');
    const denied = await fetch(`${worker.url}/v2/team/app/manifests/v1`);
    expect(challenge(denied).scope).toBe('repository:team/app:pull');

    const got = await fetch(`${realm}?service=${service}&scope=${encodeURIComponent('repository:team/app:pull')}`, { headers: { Authorization: ciBasic } });
    expect(got.status).toBe(200);
    expect(got.headers.get('cache-control')).toBe('no-store');
    const { token } = (await got.json()) as { token: string };
    tokens.push(token);
    expect((await fetch(`${worker.url}/v2/`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
    const res = await manifest(token);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(app.manifest.digest);
    // The token holds pull only: a push is sent back for a token with push.
    const push = await manifest(token, { method: 'PUT', body: new Uint8Array(app.manifest.bytes), headers: { 'Content-Type': app.manifest.mediaType } });
    expect(push.status).toBe(401);
    expect(challenge(push)).toMatchObject({ scope: 'repository:team/app:pull,push', error: 'insufficient_scope' });
  });

  it('the OAuth2 POST password grant gives an access token (and a refresh token that gives more)', async () => {
    const post = (form: Record<string, string>) =>
      fetch(`${worker.url}/auth/token`, { method: 'POST', body: new URLSearchParams({ service: 'outpost', client_id: 'e2e', ...form }) });
    const login = await post({ grant_type: 'password', username: 'ci', password: ciPassword, scope: 'repository:team/app:pull', access_type: 'offline' });
    expect(login.status).toBe(200);
    const first = (await login.json()) as { access_token: string; refresh_token: string; token_type: string; scope: string };
    tokens.push(first.access_token, first.refresh_token);
    expect(first).toMatchObject({ token_type: 'Bearer', scope: 'repository:team/app:pull' });
    expect((await manifest(first.access_token)).status).toBe(200);

    const refreshed = await post({ grant_type: 'refresh_token', refresh_token: first.refresh_token, scope: 'repository:team/app:pull,push' });
    expect(refreshed.status).toBe(200);
    const second = (await refreshed.json()) as { access_token: string; scope: string };
    tokens.push(second.access_token);
    expect(second.scope).toBe('repository:team/app:pull,push');
    expect((await manifest(second.access_token)).status).toBe(200);
    expect((await post({ grant_type: 'password', username: 'ci', password: readerPassword })).status).toBe(401);
  });
});

/** The same worker, for the conformance flow: its own stop is the file's afterAll. */
const AUTH_WORKER: Target = {
  name: 'workerd (wrangler dev) on S3 + DynamoDB, with auth and Basic credentials',
  authorization: conformanceBasic,
  start: async () => ({ ...worker, stop: async () => {} }),
};

conformanceFlow(AUTH_WORKER);

interface AuditLine {
  who: string;
  action: string;
  repository?: string;
  reference?: string;
  result: string;
  status: number;
  code?: string;
}

/** The worker's audit lines, as console.log wrote them and wrangler passed them on. */
function auditLines(): AuditLine[] {
  return worker
    .logs()
    .split('\n')
    .filter((l) => l.includes('"msg":"audit"'))
    .map((l) => JSON.parse(l.slice(l.indexOf('{'))) as AuditLine);
}

describe('what wrangler wrote', () => {
  it('audit lines record the pushes and the refusals', async () => {
    await vi.waitFor(
      () => {
        const lines = auditLines();
        const has = (expected: Partial<AuditLine>) => expect(lines, JSON.stringify(lines, null, 1)).toContainEqual(expect.objectContaining(expected));
        has({ who: 'ci', action: 'push', repository: 'team/app', reference: 'v1', result: 'ok', status: 201 });
        has({ who: 'reader', action: 'push', repository: 'team/app', result: 'denied', status: 403, code: 'DENIED' });
        has({ who: 'anonymous', action: 'pull', repository: 'team/app', result: 'unauthenticated', status: 401 });
        has({ who: 'ci', action: 'login', result: 'denied', status: 401 });
        has({ who: 'conformance', action: 'push', repository: 'conformance/myorg/myrepo', result: 'ok' });
      },
      { timeout: 5_000, interval: 100 },
    );
  });

  it('no line holds a password, a key or a token', () => {
    const output = worker.logs();
    const keyLines = tokenKey.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
    for (const secret of [ciPassword, readerPassword, conformancePassword, readerHash, ...keyLines, ...tokens]) expect(output.includes(secret), 'a secret in the output').toBe(false);
    expect(output).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
    // Outpost's own warning (no auth section); wrangler's, that Cron Triggers do not fire in dev, is expected.
    expect(output).not.toMatch(/outpost: WARNING/);
  });
});

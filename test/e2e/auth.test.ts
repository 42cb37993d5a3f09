import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { outpostCli } from './support/cli.js';
import { startContainerd, UNREACHABLE_SERVER, writeHostsToml, type Containerd } from './support/containerd.js';
import { imageBlobs, readLayout, tarImage, writeLayout } from './support/oci-layout.js';
import { baseEnv, CLI, launch, startOutpost, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { basicAuth, seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';

/**
 * Authentication end to end: a real `outpost serve` whose configuration file has users (one
 * password from a variable, one hash made by `outpost hash-password`), a token key made by
 * `outpost token-key`, access rules, immutable tags on team/**, and Debian's docker-registry as
 * an upstream that anonymous callers may pull through. Real clients go through the Docker token
 * flow: skopeo with and without credentials, containerd (ctr --user, and anonymously through a
 * hosts.toml mirror), and the flow by hand with fetch, GET and the OAuth2 POST with refresh
 * tokens. The server's audit lines record pushes and refusals, and no output holds a secret.
 */

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const app = tarImage({ layers: [256 * 1024, 1024], arch: ARCH });
const other = tarImage({ layers: [200 * 1024], arch: ARCH });
const tool = tarImage({ layers: [64 * 1024], arch: ARCH });
const mirrored = tarImage({ layers: [96 * 1024], arch: ARCH });

const ciPassword = randomBytes(15).toString('base64url');
const readerPassword = randomBytes(15).toString('base64url');
const ci = `ci:${ciPassword}`;
const reader = `reader:${readerPassword}`;

let work: string;
let layout: string;
let up: UpstreamRegistry;
let outpost: OutpostProcess;
let tokenKey: string;
let readerHash: string;
/** Every token the tests were given: none may appear in the server's output. */
const tokens: string[] = [];

interface AuditLine {
  who: string;
  action: string;
  repository?: string;
  reference?: string;
  result: string;
  status: number;
  code?: string;
}

function auditLines(): AuditLine[] {
  return outpost
    .logs()
    .split('\n')
    .filter((l) => l.includes('"msg":"audit"'))
    .map((l) => JSON.parse(l) as AuditLine);
}

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
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-auth-'));
  layout = join(work, 'source');
  await writeLayout(layout, { app: app.manifest, other: other.manifest, tool: tool.manifest }, [...imageBlobs(app), ...imageBlobs(other), ...imageBlobs(tool)]);
  up = await startUpstreamRegistry();
  await seedImage(up, 'library/mirrored', 'v1', mirrored);

  // The operator's commands, as real processes: the password piped on stdin.
  const hashed = await outpostCli(['hash-password'], { input: `${readerPassword}\n` });
  expect(hashed.status, hashed.stderr).toBe(0);
  readerHash = hashed.stdout.trim();
  expect(readerHash).toMatch(/^pbkdf2-sha256\$100000\$/);
  expect(hashed.stdout + hashed.stderr).not.toContain(readerPassword);
  const key = await outpostCli(['token-key', '--alg', 'EdDSA']);
  expect(key.status, key.stderr).toBe(0);
  tokenKey = key.stdout;
  expect(tokenKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);

  const config = {
    upstreams: [{ name: 'hub', url: up.url, namespace: 'docker.io' }],
    auth: {
      tokenKeys: [{ kid: 'e2e-2025', privateKeyEnv: 'E2E_TOKEN_KEY' }],
      users: [
        { name: 'ci', passwordEnv: 'E2E_CI_PASSWORD' },
        { name: 'reader', passwordHash: readerHash },
      ],
      rules: [
        { repositories: ['team/**'], users: ['ci'], actions: ['pull', 'push', 'delete'] },
        { repositories: ['team/**'], users: ['reader'], actions: ['pull'] },
        { repositories: ['public/**'], users: ['ci'], actions: ['pull', 'push'] },
        { repositories: ['public/**', 'docker.io/**'], anonymous: true, actions: ['pull'] },
      ],
    },
    immutableTags: [{ repositories: ['team/**'] }],
  };
  const file = join(work, 'outpost.yaml');
  // JSON is YAML.
  await writeFile(file, JSON.stringify(config, null, 2));
  outpost = await startOutpost(
    join(work, 'data'),
    { OUTPOST_CONFIG_FILE: file, E2E_TOKEN_KEY: tokenKey, E2E_CI_PASSWORD: ciPassword },
    { authorization: basicAuth({ username: 'ci', password: ciPassword }) },
  );
}, 60_000);

afterAll(async () => {
  await outpost?.stop();
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('skopeo through the token flow', () => {
  const ref = (repoAndTag: string) => `docker://${outpost.host}/${repoAndTag}`;

  it('ci pushes to team/app and pulls it back; a reader pulls it too', async () => {
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
    const wrong = await refused('inspect', '--tls-verify=false', '--creds', `ci:${readerPassword}`, ref('team/app:v1'));
    expect(wrong).toMatch(/unauthorized|authentication required|invalid username\/password/i);
  });

  it('refuses another image on an immutable tag, and takes the same one again', async () => {
    const moved = await refused('copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:other`, ref('team/app:v1'));
    expect(moved).toMatch(/immutable/i);
    // A retried push of the same manifest is no move.
    await skopeo('copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:app`, ref('team/app:v1'));
    const res = await fetch(`${outpost.url}/v2/team/app/manifests/v1`, { method: 'HEAD', headers: { Authorization: basicAuth({ username: 'ci', password: ciPassword }), Accept: app.manifest.mediaType } });
    expect(res.headers.get('docker-content-digest')).toBe(app.manifest.digest);
  });

  it('serves public/** and the mirrored docker.io/** to anonymous callers', async () => {
    await skopeo('copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:tool`, ref('public/tool:v1'));
    const pub = JSON.parse(await skopeo('inspect', '--tls-verify=false', ref('public/tool:v1'))) as { Digest: string };
    expect(pub.Digest).toBe(tool.manifest.digest);
    const mirror = JSON.parse(await skopeo('inspect', '--tls-verify=false', ref('docker.io/library/mirrored:v1'))) as { Digest: string };
    expect(mirror.Digest).toBe(mirrored.manifest.digest);
  });
});

describe('containerd through the token flow', () => {
  let ctd: Containerd | undefined;
  let hostsDir: string;

  beforeAll(async () => {
    ctd = await startContainerd();
    hostsDir = join(work, 'hosts');
    await mkdir(hostsDir, { recursive: true });
  });
  afterAll(async () => ctd?.stop());

  it('pulls team/app with --user, and is refused without it', async () => {
    const name = `${outpost.host}/team/app:v1`;
    const anonymous = await ctd!.pull(name, { hostsDir, plainHttp: true });
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toMatch(/401|unauthorized/i);
    const wrong = await ctd!.pull(name, { hostsDir, plainHttp: true, user: `reader:${ciPassword}` });
    expect(wrong.code).not.toBe(0);
    const ok = await ctd!.pull(name, { hostsDir, plainHttp: true, user: ci });
    expect(ok.code, ok.stderr).toBe(0);
    expect(await ctd!.images()).toContainEqual({ ref: name, mediaType: app.manifest.mediaType, digest: app.manifest.digest });
  });

  it('pulls docker.io names anonymously through a hosts.toml mirror (?ns=docker.io)', async () => {
    await writeHostsToml(hostsDir, 'docker.io', outpost.url, { server: UNREACHABLE_SERVER });
    const ok = await ctd!.pull('docker.io/library/mirrored:v1', { hostsDir });
    expect(ok.code, ok.stderr).toBe(0);
    expect(await ctd!.images()).toContainEqual({ ref: 'docker.io/library/mirrored:v1', mediaType: mirrored.manifest.mediaType, digest: mirrored.manifest.digest });
  });
});

describe('the token flow by hand, as Docker does it', () => {
  /** The parameters of a `Bearer k="v",...` challenge. */
  function challenge(res: Response): Record<string, string> {
    const header = res.headers.get('www-authenticate') ?? '';
    expect(header).toMatch(/^Bearer /);
    return Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
  }

  const manifest = (token: string, init: RequestInit = {}) =>
    fetch(`${outpost.url}/v2/team/app/manifests/v1`, { ...init, headers: { Authorization: `Bearer ${token}`, Accept: app.manifest.mediaType, ...init.headers } });

  it('GET /v2/ challenges; a token got with Basic and a scope opens it', async () => {
    const base = await fetch(`${outpost.url}/v2/`);
    expect(base.status).toBe(401);
    const { realm, service } = challenge(base);
    expect(realm).toBe(`${outpost.url}/auth/token`);
    expect(service).toBe('outpost');
    const denied = await fetch(`${outpost.url}/v2/team/app/manifests/v1`);
    expect(challenge(denied).scope).toBe('repository:team/app:pull');

    const url = `${realm}?service=${service}&scope=${encodeURIComponent('repository:team/app:pull')}`;
    const got = await fetch(url, { headers: { Authorization: basicAuth({ username: 'ci', password: ciPassword }) } });
    expect(got.status).toBe(200);
    expect(got.headers.get('cache-control')).toBe('no-store');
    const { token } = (await got.json()) as { token: string };
    tokens.push(token);
    expect((await fetch(`${outpost.url}/v2/`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
    const res = await manifest(token);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(app.manifest.digest);
    // The token holds pull only: a push is sent back for a token with push.
    const push = await manifest(token, { method: 'PUT', body: new Uint8Array(app.manifest.bytes), headers: { 'Content-Type': app.manifest.mediaType } });
    expect(push.status).toBe(401);
    expect(challenge(push)).toMatchObject({ scope: 'repository:team/app:pull,push', error: 'insufficient_scope' });
  });

  it('the OAuth2 POST gives a refresh token, which gives new access tokens', async () => {
    const post = (form: Record<string, string>) =>
      fetch(`${outpost.url}/auth/token`, { method: 'POST', body: new URLSearchParams({ service: 'outpost', client_id: 'e2e', ...form }) });
    const login = await post({ grant_type: 'password', username: 'ci', password: ciPassword, scope: 'repository:team/app:pull', access_type: 'offline' });
    expect(login.status).toBe(200);
    const first = (await login.json()) as { access_token: string; refresh_token: string; token_type: string; scope: string };
    tokens.push(first.access_token, first.refresh_token);
    expect(first).toMatchObject({ token_type: 'Bearer', scope: 'repository:team/app:pull' });
    expect(first.refresh_token).toBeTruthy();
    expect((await manifest(first.access_token)).status).toBe(200);

    const refreshed = await post({ grant_type: 'refresh_token', refresh_token: first.refresh_token, scope: 'repository:team/app:pull,push' });
    expect(refreshed.status).toBe(200);
    const second = (await refreshed.json()) as { access_token: string; scope: string };
    tokens.push(second.access_token);
    expect(second.access_token).not.toBe(first.access_token);
    expect(second.scope).toBe('repository:team/app:pull,push');
    expect((await manifest(second.access_token)).status).toBe(200);
    // A refresh token is no access token, and a wrong password gets none.
    expect((await manifest(first.refresh_token)).status).toBe(401);
    expect((await post({ grant_type: 'password', username: 'ci', password: readerPassword })).status).toBe(401);
  });
});

describe('what the server wrote', () => {
  it('audit lines record the pushes and the refusals', async () => {
    // The output comes over a pipe of its own: the last lines may still be on their way.
    await vi.waitFor(
      () => {
        const lines = auditLines();
        const has = (expected: Partial<AuditLine>) => expect(lines, JSON.stringify(lines, null, 1)).toContainEqual(expect.objectContaining(expected));
        has({ who: 'ci', action: 'push', repository: 'team/app', reference: 'v1', result: 'ok', status: 201 });
        has({ who: 'ci', action: 'push', repository: 'public/tool', reference: 'v1', result: 'ok', status: 201 });
        // The immutable tag, the reader's push, anonymous pulls, the wrong passwords (Basic and the form), a refresh token used as a token.
        has({ who: 'ci', action: 'push', repository: 'team/app', reference: 'v1', result: 'denied', status: 403, code: 'DENIED' });
        has({ who: 'reader', action: 'push', repository: 'team/app', result: 'denied', status: 403, code: 'DENIED' });
        has({ who: 'anonymous', action: 'pull', repository: 'team/app', result: 'unauthenticated', status: 401 });
        has({ who: 'reader', action: 'login', result: 'denied', status: 401 });
        expect(lines.filter((l) => l.who === 'ci' && l.action === 'login' && l.result === 'denied').length).toBeGreaterThanOrEqual(2);
        has({ who: 'anonymous', action: 'login', result: 'denied', status: 401 });
        // Pulls are no changes.
        expect(lines.filter((l) => l.action === 'pull' && l.result === 'ok')).toEqual([]);
      },
      { timeout: 5_000, interval: 100 },
    );
  });

  it('no line holds a password, a key or a token', () => {
    const output = outpost.logs();
    const keyLines = tokenKey.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
    for (const secret of [ciPassword, readerPassword, readerHash, ...keyLines, ...tokens]) expect(output.includes(secret), `a secret in the output`).toBe(false);
    // Whatever tokens skopeo and containerd were given: no JWT at all.
    expect(output).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
    expect(output).not.toMatch(/WARNING/);
  });
});

describe('the start-up warning', () => {
  it('a server without auth on 0.0.0.0 warns on stderr; on 127.0.0.1 it does not', async () => {
    const open = await launch({
      label: 'outpost on 0.0.0.0',
      command: process.execPath,
      args: [CLI, 'serve'],
      env: { ...baseEnv(), OUTPOST_STORE: 'local', OUTPOST_DATA_DIR: join(work, 'open'), OUTPOST_HOST: '0.0.0.0', OUTPOST_PORT: '0' },
      port: (output) => Number(/on http:\/\/0\.0\.0\.0:(\d+)\/v2\//.exec(output)?.[1]) || undefined,
    });
    const loopback = await startOutpost(join(work, 'loopback'));
    try {
      expect(open.stderr()).toMatch(/^outpost: WARNING: no auth section in the configuration: listening on 0\.0\.0\.0/m);
      expect(loopback.logs()).not.toMatch(/WARNING/);
    } finally {
      await Promise.all([open.stop(), loopback.stop()]);
    }
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenFlow, tokenFlowOutput, type TokenFlowTarget } from './suites/token-flow.js';
import { hashPassword, newTokenKey } from './support/cli.js';
import { UNREACHABLE_SERVER, writeHostsToml } from './support/containerd.js';
import { imageBlobs, tarImage, writeLayout } from './support/oci-layout.js';
import { baseEnv, CLI, launch, startOutpost, type OutpostProcess } from './support/server.js';
import { skopeo, skopeoRefused } from './support/skopeo.js';
import { basicAuth, seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';

/**
 * Authentication end to end: a real `outpost serve` whose configuration file has users (one
 * password from a variable, one hash made by `outpost hash-password`), a token key made by
 * `outpost token-key`, access rules, immutable tags on team/**, and Debian's docker-registry as
 * an upstream that anonymous callers may pull through. Real clients go through the Docker token
 * flow (test/e2e/suites/token-flow.ts: skopeo, containerd with ctr --user, the flow by hand with
 * fetch, GET and the OAuth2 POST with refresh tokens), and here also onto an immutable tag,
 * anonymously onto public/** and the mirror, and containerd anonymously through a hosts.toml
 * mirror. The server's audit lines record pushes and refusals, and no output holds a secret.
 */

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const app = tarImage({ layers: [256 * 1024, 1024], arch: ARCH });
const other = tarImage({ layers: [200 * 1024], arch: ARCH });
const tool = tarImage({ layers: [64 * 1024], arch: ARCH });
const mirrored = tarImage({ layers: [96 * 1024], arch: ARCH });

const ciPassword = randomBytes(15).toString('base64url');
const readerPassword = randomBytes(15).toString('base64url');
const ci = `ci:${ciPassword}`;

let work: string;
let layout: string;
let up: UpstreamRegistry;
let outpost: OutpostProcess;
let tokenKey: string;
let readerHash: string;
/** Every token the tests were given: none may appear in the server's output. */
const tokens: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-auth-'));
  layout = join(work, 'source');
  await writeLayout(layout, { app: app.manifest, other: other.manifest, tool: tool.manifest }, [...imageBlobs(app), ...imageBlobs(other), ...imageBlobs(tool)]);
  up = await startUpstreamRegistry();
  await seedImage(up, 'library/mirrored', 'v1', mirrored);

  // The operator's commands, as real processes: the password piped on stdin.
  readerHash = await hashPassword(readerPassword);
  tokenKey = await newTokenKey('--alg', 'EdDSA');

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

const NODE: TokenFlowTarget = {
  name: 'on Node',
  server: () => outpost,
  work: () => work,
  layout: () => layout,
  app,
  passwords: { ci: ciPassword, reader: readerPassword },
  tokens,
  skopeo: () => {
    const ref = (repoAndTag: string) => `docker://${outpost.host}/${repoAndTag}`;

    it('refuses another image on an immutable tag, and takes the same one again', async () => {
      const moved = await skopeoRefused('copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:other`, ref('team/app:v1'));
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
  },
  containerd: (ctd, hostsDir) => {
    it('pulls docker.io names anonymously through a hosts.toml mirror (?ns=docker.io)', async () => {
      await writeHostsToml(hostsDir(), 'docker.io', outpost.url, { server: UNREACHABLE_SERVER });
      const ok = await ctd().pull('docker.io/library/mirrored:v1', { hostsDir: hostsDir() });
      expect(ok.code, ok.stderr).toBe(0);
      expect(await ctd().images()).toContainEqual({ ref: 'docker.io/library/mirrored:v1', mediaType: mirrored.manifest.mediaType, digest: mirrored.manifest.digest });
    });
  },
};

tokenFlow(NODE);

tokenFlowOutput(NODE, {
  writer: 'the server',
  secrets: () => [readerHash],
  tokenKey: () => tokenKey,
  warning: /WARNING/,
  audit: (lines, has) => {
    has({ who: 'ci', action: 'push', repository: 'public/tool', reference: 'v1', result: 'ok', status: 201 });
    // The immutable tag.
    has({ who: 'ci', action: 'push', repository: 'team/app', reference: 'v1', result: 'denied', status: 403, code: 'DENIED' });
    // Pulls are no changes.
    expect(lines.filter((l) => l.action === 'pull' && l.result === 'ok')).toEqual([]);
  },
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

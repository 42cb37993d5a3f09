/**
 * npm run bench:auth: what authentication adds to a manifest GET, against the same GET on a
 * registry without an `auth:` section in the same run (the peer), on the embedded store (files
 * + SQLite) through the HTTP app in process (no network, so the figures are auth's own cost):
 *   - a GET with a Bearer token already verified (the usual case: a client reuses its token)
 *   - a GET with Basic credentials already proven (remembered for 5 minutes)
 *   - a GET with a token not seen before (the ES256 signature checked)
 *   - a login at the token endpoint with a new password check (PBKDF2, 100,000 iterations)
 * BENCH_AUTH_REQUESTS (default 2000) warm requests per side, BENCH_AUTH_COLD (default 50).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeHash } from '../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../src/adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../src/adapters/local/sqlite-meta-index.js';
import { Auth } from '../src/core/auth/auth.js';
import type { AuthConfig } from '../src/core/auth/config.js';
import { generateTokenKey } from '../src/core/auth/tokens.js';
import { compileGlob } from '../src/core/glob.js';
import { createRegistry } from '../src/core/registry/registry.js';
import { createApp } from '../src/http/app.js';
import { systemClock } from '../src/ports/clock.js';
import { median } from './harness.js';
import { image } from '../test/support/images.js';

const WARM = Number(process.env.BENCH_AUTH_REQUESTS ?? 2000);
const COLD = Number(process.env.BENCH_AUTH_COLD ?? 50);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-bench-auth-'));
  try {
    const index = new SqliteMetaIndex(join(dir, 'index.db'), systemClock);
    const registry = createRegistry({ store: new FsBlobStore(dir), index, hash: nodeHash, clock: systemClock });
    const config: AuthConfig = {
      service: 'outpost',
      issuer: 'outpost',
      tokenTtlMs: 3_600_000,
      refreshTokenTtlMs: 86_400_000,
      keys: [{ kid: 'bench', privateKeyPem: (await generateTokenKey('ES256')).privateKeyPem }],
      users: [{ name: 'ci', password: { plaintext: 'bench-password' } }],
      rules: [{ repositories: [compileGlob('team/**')], users: ['ci'], authenticated: false, anonymous: false, actions: ['pull', 'push', 'delete'] }],
      loginFailures: { limit: 10, windowMs: 300_000 },
      anonymousFills: { limit: 100, windowMs: 60_000 },
    };
    const open = createApp({ registry });
    const guarded = createApp({ registry, auth: Auth.create(config) });
    const basic = `Basic ${Buffer.from('ci:bench-password').toString('base64')}`;
    const img = image({ layers: [100] });
    for (const b of [img.config, ...img.layers]) {
      const res = await open.request(`/v2/team/app/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
      if (res.status !== 201) throw new Error(`blob: ${res.status}`);
    }
    const put = await open.request('/v2/team/app/manifests/v1', { method: 'PUT', body: new Uint8Array(img.manifest.bytes), headers: { 'Content-Type': img.manifest.mediaType } });
    if (put.status !== 201) throw new Error(`manifest: ${put.status}`);

    const timed = async (app: typeof open, path: string, headers: Record<string, string> = {}): Promise<number> => {
      const start = process.hrtime.bigint();
      const res = await app.request(path, { headers });
      await res.arrayBuffer();
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
      return ms;
    };
    const token = async (): Promise<string> => {
      const res = await guarded.request('/auth/token?service=outpost&scope=repository:team/app:pull', { headers: { Authorization: basic } });
      return ((await res.json()) as { token: string }).token;
    };
    const path = '/v2/team/app/manifests/v1';
    const bearer = { Authorization: `Bearer ${await token()}` };
    for (let i = 0; i < 200; i++) {
      await timed(open, path);
      await timed(guarded, path, bearer);
      await timed(guarded, path, { Authorization: basic });
    }
    const plain: number[] = [];
    const withToken: number[] = [];
    const withBasic: number[] = [];
    for (let i = 0; i < WARM; i++) {
      plain.push(await timed(open, path));
      withToken.push(await timed(guarded, path, bearer));
      withBasic.push(await timed(guarded, path, { Authorization: basic }));
    }
    const freshTokens: number[] = [];
    for (let i = 0; i < COLD; i++) {
      const fresh = { Authorization: `Bearer ${await token()}` };
      freshTokens.push(await timed(guarded, path, fresh));
    }
    // A new password check each time: a fresh Auth per login, so nothing is remembered.
    const logins: number[] = [];
    for (let i = 0; i < Math.min(COLD, 20); i++) {
      const app = createApp({ registry, auth: Auth.create(config) });
      await app.request('/v2/'); // the keys imported and the password hashed first
      logins.push(await timed(app, '/auth/token?service=outpost&scope=repository:team/app:pull', { Authorization: basic }));
    }
    const base = median(plain);
    const row = (what: string, xs: number[]) => `| ${what} | ${median(xs).toFixed(3)} ms | ${base.toFixed(3)} ms | +${(median(xs) - base).toFixed(3)} ms (${(median(xs) / base).toFixed(2)}x) |`;
    console.log(`bench: warm GET, ${WARM} each: no auth ${base.toFixed(3)} ms, Bearer ${median(withToken).toFixed(3)} ms, Basic ${median(withBasic).toFixed(3)} ms at the median`);
    console.log('\n| manifest GET (embedded store, in process) | with auth | without auth, same run | added |\n|---|---|---|---|');
    console.log(row('Bearer token, verified before', withToken));
    console.log(row('Basic, password proven before', withBasic));
    console.log(row(`Bearer token, first use (ES256 verify), ${COLD}`, freshTokens));
    console.log(row(`token endpoint, new password check (PBKDF2 100,000), ${logins.length}`, logins));
    index.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

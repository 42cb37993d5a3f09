import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { conformanceFlow } from './suites/conformance-flow.js';
import { tokenFlow, tokenFlowOutput, type TokenFlowTarget } from './suites/token-flow.js';
import { hashPassword, newTokenKey } from './support/cli.js';
import { freshCloudStore } from './support/cloud-store.js';
import { imageBlobs, tarImage, writeLayout } from './support/oci-layout.js';
import type { OutpostProcess } from './support/server.js';
import type { Target } from './support/targets.js';
import { basicAuth } from './support/upstream-registry.js';
import { startWorker } from './support/worker.js';

/**
 * Authentication on workerd: one worker (`wrangler dev`, on S3 + DynamoDB, behind the plain-HTTP
 * relay of support/worker.ts) whose OUTPOST_CONFIG has an auth section as a Worker needs it: a
 * token key from `outpost token-key` in a secret named by privateKeyEnv, users with a password
 * from a secret (hashed by the isolate at start) and with a hash from `outpost hash-password`
 * (100,000 iterations, the most workerd's PBKDF2 takes), and rules. Real clients sign in
 * through it as through Node (test/e2e/suites/token-flow.ts, as auth.test.ts does): skopeo,
 * containerd with ctr --user, the Docker token flow by hand (the challenge's realm must be the
 * origin clients reach, the relay's), and the replayed conformance flow with Basic credentials
 * (conformance-auth.test.ts), all on the one worker. wrangler runs at --log-level log, so that the worker's audit lines reach
 * `logs()`: they record the pushes and refusals, and no output holds a secret.
 */

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const app = tarImage({ layers: [256 * 1024, 1024], arch: ARCH });
const other = tarImage({ layers: [64 * 1024], arch: ARCH });

const ciPassword = randomBytes(15).toString('base64url');
const readerPassword = randomBytes(15).toString('base64url');
const conformancePassword = randomBytes(15).toString('base64url');
const ciBasic = basicAuth({ username: 'ci', password: ciPassword });
const conformanceBasic = basicAuth({ username: 'conformance', password: conformancePassword });

let work: string;
let layout: string;
let worker: OutpostProcess;
let tokenKey: string;
let readerHash: string;
/** Every token the tests were given: none may appear in wrangler's output. */
const tokens: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-auth-worker-'));
  layout = join(work, 'source');
  const [hash, key, store] = await Promise.all([
    // The operator's commands, as real processes: the password piped on stdin.
    hashPassword(readerPassword),
    newTokenKey(),
    freshCloudStore('auth-worker'),
    writeLayout(layout, { app: app.manifest, other: other.manifest }, [...imageBlobs(app), ...imageBlobs(other)]),
  ]);
  readerHash = hash;
  tokenKey = key;

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

const WORKER: TokenFlowTarget = {
  name: 'on workerd',
  server: () => worker,
  work: () => work,
  layout: () => layout,
  app,
  passwords: { ci: ciPassword, reader: readerPassword },
  tokens,
};

tokenFlow(WORKER);

/** The same worker, for the conformance flow: its own stop is the file's afterAll. */
const AUTH_WORKER: Target = {
  name: 'workerd (wrangler dev) on S3 + DynamoDB, with auth and Basic credentials',
  authorization: conformanceBasic,
  start: async () => ({ ...worker, stop: async () => {} }),
};

conformanceFlow(AUTH_WORKER);

// The worker's audit lines, as console.log wrote them and wrangler passed them on.
tokenFlowOutput(WORKER, {
  writer: 'wrangler',
  secrets: () => [conformancePassword, readerHash],
  tokenKey: () => tokenKey,
  // Outpost's own warning (no auth section); wrangler's, that Cron Triggers do not fire in dev, is expected.
  warning: /outpost: WARNING/,
  audit: (_lines, has) => has({ who: 'conformance', action: 'push', repository: 'conformance/myorg/myrepo', result: 'ok' }),
});

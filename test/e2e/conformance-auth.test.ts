import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceFlow } from './suites/conformance-flow.js';
import { startOutpost, type OutpostProcess } from './support/server.js';
import type { Target } from './support/targets.js';
import { basicAuth } from './support/upstream-registry.js';

/**
 * The OCI conformance flow (test/e2e/suites/conformance-flow.ts) against Node on the local store
 * with `auth:` configured, its every request carrying Basic credentials as the suite's client
 * does with OCI_USERNAME and OCI_PASSWORD. The rules grant exactly what the flow does: pull,
 * push and delete on its repository and on the one it mounts into, and nothing to anyone else;
 * the flow must pass as it does without authentication.
 */

const password = randomBytes(15).toString('base64url');
const authorization = basicAuth({ username: 'conformance', password });
const config = {
  auth: {
    users: [{ name: 'conformance', passwordEnv: 'CONFORMANCE_PASSWORD' }],
    // The flow's repository, and the conformance-<random> one of its cross-repository mount.
    rules: [{ repositories: ['conformance/myorg/myrepo', 'conformance-*'], users: ['conformance'], actions: ['pull', 'push', 'delete'] }],
  },
};
const env = { OUTPOST_CONFIG: JSON.stringify(config), CONFORMANCE_PASSWORD: password };

const AUTH_NODE: Target = {
  name: 'Node on the local store, with auth and Basic credentials',
  authorization,
  start: (work) => startOutpost(join(work, 'data'), env, { authorization }),
};

conformanceFlow(AUTH_NODE);

describe('the conformance server with auth', () => {
  let work: string;
  let server: OutpostProcess;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'outpost-conformance-auth-'));
    server = await AUTH_NODE.start(work, 'conformance-auth');
  });
  afterAll(async () => {
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses the flow without credentials, and with a wrong password', async () => {
    const path = `${server.url}/v2/conformance/myorg/myrepo/blobs/uploads/`;
    const anonymous = await fetch(path, { method: 'POST' });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/auth\/token",service="outpost",scope="repository:conformance\/myorg\/myrepo:pull,push"$/);
    const wrong = await fetch(path, { method: 'POST', headers: { Authorization: basicAuth({ username: 'conformance', password: `${password}x` }) } });
    expect(wrong.status).toBe(401);
  });
});

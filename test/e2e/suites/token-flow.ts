import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Image } from '../../support/images.js';
import { challenge, expectAuditLines, expectNoSecrets, type AuditHas, type AuditLine } from '../support/auth-checks.js';
import { startContainerd, type Containerd } from '../support/containerd.js';
import { readLayout } from '../support/oci-layout.js';
import type { OutpostProcess } from '../support/server.js';
import { skopeo, skopeoRefused } from '../support/skopeo.js';
import { basicAuth } from '../support/upstream-registry.js';

/**
 * Real clients signing in to a running Outpost through the Docker token flow (distribution's
 * token spec): `tokenFlow(target)` registers, for one server, skopeo with and without
 * credentials, containerd with ctr --user, and the flow by hand with fetch: GET /v2/ and its
 * challenge, a token got with Basic and a scope, the Bearer retry, insufficient_scope for a
 * push, and the OAuth2 POST with the password and refresh grants.
 *
 * The server's configuration must have users `ci` (pull, push and delete on team/**) and
 * `reader` (pull on team/**), and nothing for anonymous callers on team/**; the layout holds the
 * images `app` (pushed as team/app:v1) and `other`. Target-specific `it`s go into the skopeo
 * and containerd blocks through `skopeo` and `containerd`, after the common ones.
 */

export interface TokenFlowTarget {
  /** Shown in test names, e.g. `on workerd`. */
  name: string;
  /** The running server (the file starts and stops it). */
  server(): OutpostProcess;
  /** A scratch directory the file owns and removes. */
  work(): string;
  /** An OCI image layout with the tags `app` and `other`. */
  layout(): string;
  /** The image tagged `app`. */
  app: Image;
  passwords: { ci: string; reader: string };
  /** Every token the flow is given is added here: none may appear in the server's output. */
  tokens: string[];
  /** More `it`s in the skopeo block. */
  skopeo?: () => void;
  /** More `it`s in the containerd block: the running containerd, and a hosts directory for it. */
  containerd?: (ctd: () => Containerd, hostsDir: () => string) => void;
}

export function tokenFlow(target: TokenFlowTarget): void {
  const { app, passwords } = target;
  const ci = `ci:${passwords.ci}`;
  const reader = `reader:${passwords.reader}`;

  describe(`skopeo through the token flow ${target.name}`, () => {
    const ref = (repoAndTag: string) => `docker://${target.server().host}/${repoAndTag}`;

    it('ci pushes to team/app and pulls it back; a reader (hash from hash-password) pulls it too', async () => {
      const layout = target.layout();
      const pulled = join(target.work(), 'pulled');
      await skopeo('copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', ci, `oci:${layout}:app`, ref('team/app:v1'));
      await skopeo('copy', '--quiet', '--src-tls-verify=false', '--src-creds', ci, ref('team/app:v1'), `oci:${pulled}:v1`);
      expect((await readLayout(pulled)).ref('v1').digest).toBe(app.manifest.digest);
      const inspected = JSON.parse(await skopeo('inspect', '--tls-verify=false', '--creds', reader, ref('team/app:v1'))) as { Digest: string };
      expect(inspected.Digest).toBe(app.manifest.digest);
    });

    it('is refused without credentials and with a wrong password, and a reader may not push', async () => {
      const anonymous = await skopeoRefused('copy', '--quiet', '--src-tls-verify=false', ref('team/app:v1'), `oci:${join(target.work(), 'anonymous')}:v1`);
      expect(anonymous).toMatch(/unauthorized|authentication required/i);
      const push = await skopeoRefused('copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', reader, `oci:${target.layout()}:other`, ref('team/app:v2'));
      expect(push).toMatch(/denied/i);
      const wrong = await skopeoRefused('inspect', '--tls-verify=false', '--creds', `ci:${passwords.reader}`, ref('team/app:v1'));
      expect(wrong).toMatch(/unauthorized|authentication required|invalid username\/password/i);
    });

    target.skopeo?.();
  });

  describe(`containerd through the token flow ${target.name}`, () => {
    let ctd: Containerd | undefined;
    let hostsDir: string;

    beforeAll(async () => {
      ctd = await startContainerd();
      hostsDir = join(target.work(), 'hosts');
      await mkdir(hostsDir, { recursive: true });
    });
    afterAll(async () => ctd?.stop());

    it('pulls team/app with --user, and is refused without it and with a wrong password', async () => {
      const name = `${target.server().host}/team/app:v1`;
      const anonymous = await ctd!.pull(name, { hostsDir, plainHttp: true });
      expect(anonymous.code).not.toBe(0);
      expect(anonymous.stderr).toMatch(/401|unauthorized/i);
      const wrong = await ctd!.pull(name, { hostsDir, plainHttp: true, user: `reader:${passwords.ci}` });
      expect(wrong.code).not.toBe(0);
      const ok = await ctd!.pull(name, { hostsDir, plainHttp: true, user: ci });
      expect(ok.code, ok.stderr).toBe(0);
      expect(await ctd!.images()).toContainEqual({ ref: name, mediaType: app.manifest.mediaType, digest: app.manifest.digest });
    });

    target.containerd?.(
      () => ctd!,
      () => hostsDir,
    );
  });

  describe(`the token flow by hand ${target.name}, as Docker does it`, () => {
    const manifest = (token: string, init: RequestInit = {}) =>
      fetch(`${target.server().url}/v2/team/app/manifests/v1`, { ...init, headers: { Authorization: `Bearer ${token}`, Accept: app.manifest.mediaType, ...init.headers } });

    it('GET /v2/ challenges with a realm at the origin clients reach; a token got there with Basic and a scope opens it', async () => {
      const { url } = target.server();
      const base = await fetch(`${url}/v2/`);
      expect(base.status).toBe(401);
      const { realm, service } = challenge(base);
      // The origin clients reach: on workerd the relay's, not wrangler's own listener behind it.
      expect(realm).toBe(`${url}/auth/token`);
      expect(service).toBe('outpost');
      const denied = await fetch(`${url}/v2/team/app/manifests/v1`);
      expect(challenge(denied).scope).toBe('repository:team/app:pull');

      const got = await fetch(`${realm}?service=${service}&scope=${encodeURIComponent('repository:team/app:pull')}`, { headers: { Authorization: basicAuth({ username: 'ci', password: passwords.ci }) } });
      expect(got.status).toBe(200);
      expect(got.headers.get('cache-control')).toBe('no-store');
      const { token } = (await got.json()) as { token: string };
      target.tokens.push(token);
      expect((await fetch(`${url}/v2/`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
      const res = await manifest(token);
      expect(res.status).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(app.manifest.digest);
      // The token holds pull only: a push is sent back for a token with push.
      const push = await manifest(token, { method: 'PUT', body: new Uint8Array(app.manifest.bytes), headers: { 'Content-Type': app.manifest.mediaType } });
      expect(push.status).toBe(401);
      expect(challenge(push)).toMatchObject({ scope: 'repository:team/app:pull,push', error: 'insufficient_scope' });
    });

    it('the OAuth2 POST password grant gives an access token and a refresh token, which gives new access tokens', async () => {
      const post = (form: Record<string, string>) =>
        fetch(`${target.server().url}/auth/token`, { method: 'POST', body: new URLSearchParams({ service: 'outpost', client_id: 'e2e', ...form }) });
      const login = await post({ grant_type: 'password', username: 'ci', password: passwords.ci, scope: 'repository:team/app:pull', access_type: 'offline' });
      expect(login.status).toBe(200);
      const first = (await login.json()) as { access_token: string; refresh_token: string; token_type: string; scope: string };
      target.tokens.push(first.access_token, first.refresh_token);
      expect(first).toMatchObject({ token_type: 'Bearer', scope: 'repository:team/app:pull' });
      expect(first.refresh_token).toBeTruthy();
      expect((await manifest(first.access_token)).status).toBe(200);

      const refreshed = await post({ grant_type: 'refresh_token', refresh_token: first.refresh_token, scope: 'repository:team/app:pull,push' });
      expect(refreshed.status).toBe(200);
      const second = (await refreshed.json()) as { access_token: string; scope: string };
      target.tokens.push(second.access_token);
      expect(second.access_token).not.toBe(first.access_token);
      expect(second.scope).toBe('repository:team/app:pull,push');
      expect((await manifest(second.access_token)).status).toBe(200);
      // A refresh token is no access token, and a wrong password gets none.
      expect((await manifest(first.refresh_token)).status).toBe(401);
      expect((await post({ grant_type: 'password', username: 'ci', password: passwords.reader })).status).toBe(401);
    });
  });
}

/** What `tokenFlowOutput` reads in the server's output besides what the flow left there. */
export interface OutputChecks {
  /** Who wrote the output, for the block's name: `the server`, `wrangler`. */
  writer: string;
  /** Secrets beyond the target's passwords and tokens: hashes, other users' passwords. */
  secrets: () => string[];
  /** The PEM token key the server signs with. */
  tokenKey: () => string;
  /** A warning of Outpost's in this output: none may appear. */
  warning: RegExp;
  /** The target's own audit lines, beyond the flow's. */
  audit?: (lines: AuditLine[], has: AuditHas) => void;
}

/**
 * Registers the checks of the server's output: the audit lines the flow leaves (and the
 * target's own), and no secret anywhere. Call it after every other block of the file, so that
 * the output is complete.
 */
export function tokenFlowOutput(target: TokenFlowTarget, checks: OutputChecks): void {
  describe(`what ${checks.writer} wrote`, () => {
    it('audit lines record the pushes and the refusals', async () => {
      await expectAuditLines(
        () => target.server().logs(),
        (lines, has) => {
          // ci's push, the reader's refused push, the anonymous pull, the wrong passwords (ci's by
          // skopeo and by the form, the reader's by ctr) and a refresh token used as an access token.
          has({ who: 'ci', action: 'push', repository: 'team/app', reference: 'v1', result: 'ok', status: 201 });
          has({ who: 'reader', action: 'push', repository: 'team/app', result: 'denied', status: 403, code: 'DENIED' });
          has({ who: 'anonymous', action: 'pull', repository: 'team/app', result: 'unauthenticated', status: 401 });
          has({ who: 'reader', action: 'login', result: 'denied', status: 401 });
          expect(lines.filter((l) => l.who === 'ci' && l.action === 'login' && l.result === 'denied' && l.status === 401).length).toBeGreaterThanOrEqual(2);
          has({ who: 'anonymous', action: 'login', result: 'denied', status: 401 });
          checks.audit?.(lines, has);
        },
      );
    });

    it('no line holds a password, a key or a token', () => {
      const output = target.server().logs();
      expectNoSecrets(output, [target.passwords.ci, target.passwords.reader, ...checks.secrets(), ...target.tokens], checks.tokenKey());
      expect(output).not.toMatch(checks.warning);
    });
  });
}

import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import { accessOf, authConfig, basic, bearer, expectChallenge, pushImageAs, putManifestAs, rule, testConnection, token, user, type Requester } from '../support/auth.js';
import { testApp } from '../support/app.js';
import { image, randomBlob, type Image } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';
import { expectOciError } from '../support/oci-errors.js';

/**
 * The authorisation matrix: every role against every route's action, on a hosted repository
 * and on a mirrored one, with the role's credentials sent as Basic on the route and as a token
 * from the token endpoint. Rules only grant, so each role holds exactly its row of actions:
 *
 *   anonymous  nothing         reader  pull         writer  pull, push      admin  pull, push, delete
 *
 * on team/** (hosted) and registry.test/** (the mirrored upstream's namespace, reached here by
 * its alias `up`). A mirrored repository refuses pushes and deletes itself (DENIED, naming the
 * upstream), after authorisation: callers without the action get the authorisation refusal.
 * Last, a rule for anonymous callers alone: it covers signed-in users too.
 */

const PASSWORDS = { reader: 'reader-secret', writer: 'writer-secret', admin: 'admin-secret' } as const;
const GLOBS = ['team/**', 'registry.test/**'];
const auth = Auth.create(
  authConfig({
    users: await Promise.all(Object.entries(PASSWORDS).map(([name, pw]) => user(name, pw))),
    rules: [
      rule(GLOBS, { users: ['reader'] }, ['pull']),
      rule(GLOBS, { users: ['writer'] }, ['pull', 'push']),
      rule(GLOBS, { users: ['admin'] }, ['pull', 'push', 'delete']),
    ],
  }),
);

type Role = 'anonymous' | keyof typeof PASSWORDS;
const ROLES: Role[] = ['anonymous', 'reader', 'writer', 'admin'];
type Mode = 'basic' | 'token';

/** A 2xx status; 401 (a challenge); `denied`: 403 DENIED by the rules; `mirror`: 403 DENIED by the mirror (the upstream owns the content). */
type Expected = number | 'denied' | 'mirror';
type Op = 'manifest GET' | 'manifest HEAD' | 'blob GET' | 'blob HEAD' | 'tags/list' | 'referrers' | 'upload POST' | 'upload PATCH' | 'upload PUT' | 'manifest PUT' | 'manifest DELETE' | 'blob DELETE';

//                                      anonymous reader    writer    admin
const HOSTED: Array<[Op, Expected, Expected, Expected, Expected]> = [
  ['manifest GET', /*             */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['manifest HEAD', /*            */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['blob GET', /*                 */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['blob HEAD', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['tags/list', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['referrers', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['upload POST', /*              */ 401, 'denied', /*       */ 202, /*    */ 202],
  ['upload PATCH', /*             */ 401, 'denied', /*       */ 202, /*    */ 202],
  ['upload PUT', /*               */ 401, 'denied', /*       */ 201, /*    */ 201],
  ['manifest PUT', /*             */ 401, 'denied', /*       */ 201, /*    */ 201],
  ['manifest DELETE', /*          */ 401, 'denied', 'denied', /*           */ 202],
  ['blob DELETE', /*              */ 401, 'denied', 'denied', /*           */ 202],
];

const MIRRORED: Array<[Op, Expected, Expected, Expected, Expected]> = [
  ['manifest GET', /*             */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['manifest HEAD', /*            */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['blob GET', /*                 */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['blob HEAD', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['tags/list', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['referrers', /*                */ 401, /*   */ 200, /*    */ 200, /*    */ 200],
  ['upload POST', /*              */ 401, 'denied', /*  */ 'mirror', /* */ 'mirror'],
  ['upload PATCH', /*             */ 401, 'denied', /*  */ 'mirror', /* */ 'mirror'],
  ['upload PUT', /*               */ 401, 'denied', /*  */ 'mirror', /* */ 'mirror'],
  ['manifest PUT', /*             */ 401, 'denied', /*  */ 'mirror', /* */ 'mirror'],
  ['manifest DELETE', /*          */ 401, 'denied', 'denied', /*      */ 'mirror'],
  ['blob DELETE', /*              */ 401, 'denied', 'denied', /*      */ 'mirror'],
];

const ACTION: Record<Op, 'pull' | 'push' | 'delete'> = {
  'manifest GET': 'pull',
  'manifest HEAD': 'pull',
  'blob GET': 'pull',
  'blob HEAD': 'pull',
  'tags/list': 'pull',
  referrers: 'pull',
  'upload POST': 'push',
  'upload PATCH': 'push',
  'upload PUT': 'push',
  'manifest PUT': 'push',
  'manifest DELETE': 'delete',
  'blob DELETE': 'delete',
};

interface Fixture {
  request: Requester;
  /** The repository name as the requests send it. */
  name: string;
  img: Image;
  /** An upload session opened by admin (hosted), or a made-up one (mirrored: none can exist). */
  session: string;
  /** Whether the repository still holds what the fixture put there, as admin sees it. */
  intact: () => Promise<void>;
}

const ADMIN = basic('admin', PASSWORDS.admin);

async function hosted(): Promise<Fixture> {
  const t = testApp({}, { auth, connection: testConnection });
  const img = image();
  await pushImageAs(t.request, 'team/app', img, 'latest', ADMIN);
  const started = await t.request('/v2/team/app/blobs/uploads/', { method: 'POST', headers: { ...ADMIN, 'Content-Length': '0' } });
  expect(started.status).toBe(202);
  return {
    request: t.request,
    name: 'team/app',
    img,
    session: started.headers.get('location')!,
    intact: async () => {
      const tags = await t.request('/v2/team/app/tags/list', { headers: ADMIN });
      expect(await tags.json()).toEqual({ name: 'team/app', tags: ['latest'] });
      expect((await t.request(`/v2/team/app/manifests/${img.manifest.digest}`, { method: 'HEAD', headers: ADMIN })).status).toBe(200);
      for (const b of img.layers) expect((await t.request(`/v2/team/app/blobs/${b.digest}`, { method: 'HEAD', headers: ADMIN })).status).toBe(200);
    },
  };
}

async function mirrored(): Promise<Fixture> {
  const m = mirrorTest({ auth, connection: testConnection });
  const img = image();
  m.up.addImage('library/x', 'latest', img);
  return {
    request: m.request,
    name: 'up/library/x',
    img,
    session: '/v2/up/library/x/blobs/uploads/0123456789abcdef',
    intact: async () => {
      // Nothing was written upstream, and nothing but reads reached it.
      expect(m.up.requests.every((r) => r.method === 'GET' || r.method === 'HEAD')).toBe(true);
    },
  };
}

function send(op: Op, fx: Fixture, headers: Record<string, string>): Promise<Response> | Response {
  const { request, name, img } = fx;
  const layer = img.layers[0]!;
  const chunk = randomBlob(100);
  switch (op) {
    case 'manifest GET':
      return request(`/v2/${name}/manifests/latest`, { headers: { ...headers, Accept: img.manifest.mediaType } });
    case 'manifest HEAD':
      return request(`/v2/${name}/manifests/latest`, { method: 'HEAD', headers: { ...headers, Accept: img.manifest.mediaType } });
    case 'blob GET':
      return request(`/v2/${name}/blobs/${layer.digest}`, { headers });
    case 'blob HEAD':
      return request(`/v2/${name}/blobs/${layer.digest}`, { method: 'HEAD', headers });
    case 'tags/list':
      return request(`/v2/${name}/tags/list`, { headers });
    case 'referrers':
      return request(`/v2/${name}/referrers/${img.manifest.digest}`, { headers });
    case 'upload POST':
      return request(`/v2/${name}/blobs/uploads/`, { method: 'POST', headers: { ...headers, 'Content-Length': '0' } });
    case 'upload PATCH':
      return request(fx.session, { method: 'PATCH', body: new Uint8Array(chunk.bytes), headers: { ...headers, 'Content-Type': 'application/octet-stream' } });
    case 'upload PUT':
      return request(`${fx.session}${fx.session.includes('?') ? '&' : '?'}digest=${chunk.digest}`, {
        method: 'PUT',
        body: new Uint8Array(chunk.bytes),
        headers: { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(chunk.size) },
      });
    case 'manifest PUT':
      return putManifestAs(request, name, 'v2', img, headers);
    case 'manifest DELETE':
      return request(`/v2/${name}/manifests/${img.manifest.digest}`, { method: 'DELETE', headers });
    case 'blob DELETE':
      return request(`/v2/${name}/blobs/${layer.digest}`, { method: 'DELETE', headers });
  }
}

/** The role's credentials: none, Basic, or a token for pull, push and delete (of which the rules grant the role's row). */
async function credentials(fx: Fixture, role: Role, mode: Mode): Promise<Record<string, string>> {
  const login = role === 'anonymous' ? undefined : basic(role, PASSWORDS[role]);
  if (mode === 'basic') return login ?? {};
  return bearer(await token(fx.request, [`repository:${fx.name}:pull,push,delete`], login));
}

function cells(table: Array<[Op, Expected, Expected, Expected, Expected]>) {
  return table.flatMap(([op, ...expected]) =>
    ROLES.flatMap((role, i) => (['basic', 'token'] as const).map((mode) => ({ op, role, mode, expected: expected[i]! }))),
  );
}

async function check(res: Response, fx: Fixture, op: Op, expected: Expected) {
  const head = op.endsWith('HEAD');
  const scope = `repository:${fx.name}:${ACTION[op] === 'push' ? 'pull,push' : ACTION[op]}`;
  if (expected === 401) {
    await expectOciError(res, { status: 401, code: 'UNAUTHORIZED', head });
    expectChallenge(res, { scope, error: null });
  } else if (expected === 'denied') {
    await expectOciError(res, { status: 403, code: 'DENIED', message: `not allowed to ${ACTION[op]} ${fx.name}`, head });
    expect(res.headers.get('www-authenticate')).toBeNull();
  } else if (expected === 'mirror') {
    await expectOciError(res, { status: 403, code: 'DENIED', message: 'pushes and deletes are refused', head });
    expect(res.headers.get('oci-namespace')).toBe('registry.test');
  } else {
    expect(res.status, await res.clone().text()).toBe(expected);
    if (op === 'manifest GET') expect(Buffer.from(await res.arrayBuffer()).equals(fx.img.manifest.bytes)).toBe(true);
    if (op === 'blob GET') expect(Buffer.from(await res.arrayBuffer()).equals(fx.img.layers[0]!.bytes)).toBe(true);
    if (op === 'tags/list') expect(((await res.json()) as { tags: string[] }).tags).toEqual(['latest']);
  }
  // A refused write leaves the repository as it was.
  if (typeof expected !== 'number' || expected === 401) await fx.intact();
}

describe('hosted repository team/app', () => {
  it.each(cells(HOSTED))('$op as $role via $mode: $expected', async ({ op, role, mode, expected }) => {
    const fx = await hosted();
    await check(await send(op, fx, await credentials(fx, role, mode)), fx, op, expected);
  });
});

describe('mirrored repository registry.test/library/x (as up/library/x)', () => {
  it.each(cells(MIRRORED))('$op as $role via $mode: $expected', async ({ op, role, mode, expected }) => {
    const fx = await mirrored();
    await check(await send(op, fx, await credentials(fx, role, mode)), fx, op, expected);
  });
});

describe('a token never lets a role exceed its row', () => {
  it.each(ROLES)('the token endpoint grants %s exactly its actions on both repositories', async (role) => {
    const fx = await mirrored();
    const login = role === 'anonymous' ? undefined : basic(role, PASSWORDS[role]);
    const res = await fx.request(`/auth/token?service=outpost&scope=repository:team/app:pull,push,delete&scope=repository:up/library/x:*`, { headers: login ?? {} });
    expect(res.status).toBe(200);
    const jwt = ((await res.json()) as { token: string }).token;
    const claim = JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { sub: string; access: unknown[] };
    const row = { anonymous: [], reader: ['pull'], writer: ['pull', 'push'], admin: ['pull', 'push', 'delete'] }[role];
    expect(claim.sub).toBe(role === 'anonymous' ? '' : role);
    expect(claim.access).toEqual(
      row.length === 0
        ? []
        : [
            { type: 'repository', name: 'team/app', actions: row },
            { type: 'repository', name: 'up/library/x', actions: row },
          ],
    );
  });
});

/** Anonymous callers pull pub/** and the mirror; no rule names reader. */
const OPEN = Auth.create(
  authConfig({
    users: await Promise.all(Object.entries(PASSWORDS).map(([name, pw]) => user(name, pw))),
    rules: [rule(['pub/**', 'registry.test/library/**'], { anonymous: true }, ['pull']), rule(['**'], { users: ['admin'] }, ['pull', 'push'])],
  }),
);

// Signing in never takes away what an anonymous caller may do: a rule for anonymous callers
// covers every user too, though no rule names them.
describe('a rule for anonymous callers alone', () => {
  const READER = basic('reader', PASSWORDS.reader);

  it('gives signed-in readers pull, by Basic and by token, hosted and mirrored, and nothing more', async () => {
    const t = testApp({}, { auth: OPEN, connection: testConnection });
    const img = image();
    await pushImageAs(t.request, 'pub/app', img, 'latest', ADMIN);
    const m = mirrorTest({ auth: OPEN, connection: testConnection });
    m.up.addImage('library/x', 'latest', img);
    for (const [request, name] of [[t.request, 'pub/app'], [m.request, 'up/library/x']] as const) {
      for (const headers of [{}, READER, bearer(await token(request, [`repository:${name}:pull,push`], READER))]) {
        const res = await request(`/v2/${name}/manifests/latest`, { headers });
        expect(res.status, `${name} ${JSON.stringify(headers).slice(0, 30)}`).toBe(200);
        expect(Buffer.from(await res.arrayBuffer()).equals(img.manifest.bytes)).toBe(true);
      }
      expect(accessOf(await token(request, [`repository:${name}:pull,push,delete`], READER))).toEqual([{ type: 'repository', name, actions: ['pull'] }]);
    }
    const catalog = await t.request('/v2/_catalog', { headers: READER });
    expect(await catalog.json()).toEqual({ repositories: ['pub/app'] });
    await expectOciError(await putManifestAs(t.request, 'pub/app', 'v2', img, READER), { status: 403, code: 'DENIED' });
  });
});

import { generateKeyPairSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatPasswordHash, hashPassword, MIN_ITERATIONS, parsePasswordHash } from '../../src/core/auth/passwords.js';
import { ConfigError, readConfig } from '../../src/entry/config.js';

/** The `auth:` section of the README's example; HASH is filled in with a real hash. */
const EXAMPLE = `
auth:
  users:
    - name: ci
      passwordEnv: CI_PASSWORD            # plaintext from a variable or secret, hashed at start
    - name: deploy
      passwordHash: "HASH"                # from outpost hash-password
  rules:
    - repositories: ["team/*"]
      users: [ci]
      actions: [pull, push, delete]
    - repositories: ["docker.io/library/*"]
      anonymous: true
      actions: [pull]
`;

type Env = Record<string, unknown>;
type Runtime = 'node' | 'workers';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const PRIVATE_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const SEC1_PEM = privateKey.export({ type: 'sec1', format: 'pem' }).toString();
const PUBLIC_PEM = publicKey.export({ type: 'spki', format: 'pem' }).toString();
/** What Workers need besides the document. */
const CLOUD = { OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' };

let HASH = '';
beforeAll(async () => {
  HASH = formatPasswordHash(await hashPassword('deploy-pw', MIN_ITERATIONS));
});

function read(document: string, env: Env = {}, runtime: Runtime = 'node') {
  return readConfig({ ...(runtime === 'workers' ? CLOUD : {}), ...env, OUTPOST_CONFIG: document }, runtime);
}

/** Problems of a document given as OUTPOST_CONFIG, without the "OUTPOST_CONFIG: " each starts with. */
function problems(document: string, env: Env = {}, runtime: Runtime = 'node'): string[] {
  try {
    read(document, env, runtime);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.replace(/^OUTPOST_CONFIG: /, ''));
    throw err;
  }
}

/** An `auth:` section of the given lines (indented under it). */
function auth(...lines: string[]): string {
  return ['auth:', ...lines.map((l) => `  ${l}`)].join('\n');
}

/** One user `ci` (password from CI_PASSWORD) and one rule granting it pull, plus the given lines. */
function withUser(...lines: string[]): string {
  return auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }]', 'rules: [{ repositories: ["team/*"], users: [ci], actions: [pull] }]', ...lines);
}

const HUB = 'upstreams:\n  - name: hub\n    url: https://registry-1.docker.io\n';

describe('the auth section', () => {
  it('accepts the README example and produces the typed configuration with its defaults', () => {
    const config = read(EXAMPLE.replace('HASH', HASH), { CI_PASSWORD: 'ci-pw' });
    expect(config.auth).toEqual({
      service: 'outpost',
      issuer: 'outpost',
      tokenTtlMs: 5 * 60_000,
      refreshTokenTtlMs: 7 * 86_400_000,
      keys: [],
      users: [
        { name: 'ci', password: { plaintext: 'ci-pw' } },
        { name: 'deploy', password: { hash: HASH } },
      ],
      rules: [
        { repositories: [expect.any(RegExp)], users: ['ci'], authenticated: false, anonymous: false, actions: ['pull', 'push', 'delete'] },
        { repositories: [expect.any(RegExp)], users: [], authenticated: false, anonymous: true, actions: ['pull'] },
      ],
      loginFailures: { limit: 10, windowMs: 5 * 60_000 },
      anonymousFills: { limit: 100, windowMs: 60_000 },
    });
    const [team, hub] = config.auth!.rules;
    expect(['team/app', 'team/a/b', 'teamcity/x'].filter((n) => team!.repositories[0]!.test(n))).toEqual(['team/app']);
    expect(hub!.repositories[0]!.test('docker.io/library/nginx')).toBe(true);
    expect(parsePasswordHash(HASH).iterations).toBe(MIN_ITERATIONS);
    expect(config.immutableTags).toEqual([]);
  });

  it('reads every key', () => {
    const config = read(
      auth(
        'realm: https://registry.example.com/auth/token',
        'service: registry.example.com',
        'issuer: outpost-prod',
        'tokenTtl: 10m',
        'refreshTokenTtl: 30d',
        'tokenKeys:',
        '  - kid: "2025-01"',
        '    privateKeyEnv: OUTPOST_TOKEN_KEY',
        '  - kid: old.key_1',
        '    publicKeyEnv: OLD_PUBLIC_KEY',
        '  - kid: older',
        '    publicKey: |',
        ...PUBLIC_PEM.trim().split('\n').map((l) => `      ${l}`),
        'users: [{ name: ci, passwordEnv: OUTPOST_CI_PASSWORD }]',
        'rules:',
        '  - repositories: ["**"]',
        '    authenticated: true',
        '    actions: [pull, pull]',
        'loginFailures: { limit: 3, window: 1m }',
        'anonymousFills: { limit: 0, window: 1h }',
      ),
      { OUTPOST_TOKEN_KEY: PRIVATE_PEM, OLD_PUBLIC_KEY: PUBLIC_PEM, OUTPOST_CI_PASSWORD: 'pw' },
    );
    expect(config.auth).toMatchObject({
      realm: 'https://registry.example.com/auth/token',
      service: 'registry.example.com',
      issuer: 'outpost-prod',
      tokenTtlMs: 10 * 60_000,
      refreshTokenTtlMs: 30 * 86_400_000,
      keys: [
        { kid: '2025-01', privateKeyPem: PRIVATE_PEM },
        { kid: 'old.key_1', publicKeyPem: PUBLIC_PEM },
        { kid: 'older', publicKeyPem: PUBLIC_PEM },
      ],
      users: [{ name: 'ci', password: { plaintext: 'pw' } }],
      rules: [{ users: [], authenticated: true, anonymous: false, actions: ['pull'] }],
      loginFailures: { limit: 3, windowMs: 60_000 },
      anonymousFills: { limit: 0, windowMs: 3_600_000 },
    });
    expect(config.auth!.rules[0]!.repositories[0]!.test('docker.io/a/b')).toBe(true);
  });

  it.each([
    ['auth: {}', 'an empty mapping'],
    ['auth:\n', 'nothing under it'],
    ['auth:\n  users: []\n  rules: []\n', 'empty lists'],
  ])('turns authentication on with %s (%s): nothing is granted', (document) => {
    expect(read(document).auth).toMatchObject({ users: [], rules: [], keys: [], service: 'outpost' });
  });

  it('is absent without the section', () => {
    expect(read('upstreams: []').auth).toBeUndefined();
    expect('auth' in read('')).toBe(false);
  });

  it('takes the service as issuer by default', () => {
    expect(read(auth('service: reg.example.com')).auth).toMatchObject({ service: 'reg.example.com', issuer: 'reg.example.com' });
  });

  it('does not refuse the OUTPOST_* variables it names as unknown settings', () => {
    const env = { OUTPOST_CI_PASSWORD: 'pw', OUTPOST_TOKEN_KEY: PRIVATE_PEM, OUTPOST_OLD_KEY: PUBLIC_PEM };
    const document = auth(
      'users: [{ name: ci, passwordEnv: OUTPOST_CI_PASSWORD }]',
      'tokenKeys: [{ kid: a, privateKeyEnv: OUTPOST_TOKEN_KEY }, { kid: b, publicKeyEnv: OUTPOST_OLD_KEY }]',
    );
    expect(problems(document, env)).toEqual([]);
    expect(problems(document, env, 'workers')).toEqual([]);
    // Without the document naming it, the same variable is an unknown setting.
    expect(problems('auth: {}', { OUTPOST_CI_PASSWORD: 'pw' })[0]).toMatch(/^OUTPOST_CI_PASSWORD is not a known setting/);
  });

  it('accepts a Workers configuration with a signing key, and refuses a hash a Worker cannot check', () => {
    const config = read(withUser('tokenKeys: [{ kid: k1, privateKeyEnv: TOKEN_KEY }]'), { CI_PASSWORD: 'pw', TOKEN_KEY: PRIVATE_PEM }, 'workers');
    expect(config.auth!.keys).toEqual([{ kid: 'k1', privateKeyPem: PRIVATE_PEM }]);
    const costly = formatPasswordHash({ ...parsePasswordHash(HASH), iterations: 600_000 });
    const document = auth(`users: [{ name: deploy, passwordHash: "${costly}" }]`, 'tokenKeys: [{ kid: k1, privateKeyEnv: TOKEN_KEY }]');
    expect(problems(document, { TOKEN_KEY: PRIVATE_PEM })).toEqual([]);
    expect(problems(document, { TOKEN_KEY: PRIVATE_PEM }, 'workers')).toEqual(['auth.users[0].passwordHash: must have from 10000 to 100000 iterations']);
  });

  const ENV = { CI_PASSWORD: 'pw', TOKEN_KEY: PRIVATE_PEM, PUBLIC_KEY: PUBLIC_PEM };
  it.each<[string, string | (() => string), string[], Env?, Runtime?]>([
    ['an unknown key', auth('user: []'), ['auth.user: unknown key; the known keys are realm, service, issuer, tokenTtl, refreshTokenTtl, tokenKeys, users, rules, loginFailures, anonymousFills']],
    ['a section that is a list', 'auth: [a]', ['auth: must be a mapping with the keys realm, service, issuer, tokenTtl, refreshTokenTtl, tokenKeys, users, rules, loginFailures, anonymousFills, got a list']],
    [
      'a literal password',
      auth('users: [{ name: ci, password: hunter2 }]'),
      [
        'auth.users[0].password: a password is never written in the configuration document; name the variable or secret that holds it with passwordEnv, or store a hash from outpost hash-password in passwordHash',
      ],
    ],
    ['an unknown user key', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD, group: x }]'), ['auth.users[0].group: unknown key; the known keys are name, passwordEnv, passwordHash']],
    ['a hash that is not one', auth('users: [{ name: ci, passwordHash: "sha256$abc" }]'), ['auth.users[0].passwordHash: must be pbkdf2-sha256$<iterations>$<salt>$<key> (from outpost hash-password)']],
    ['a hash of too few iterations', auth('users: [{ name: ci, passwordHash: "pbkdf2-sha256$1000$c2FsdHNhbHQ=$a2V5" }]'), ['auth.users[0].passwordHash: must have from 10000 to 10000000 iterations']],
    ['a hash that is not a string', auth('users: [{ name: ci, passwordHash: 12 }]'), ['auth.users[0].passwordHash: must be a non-empty string, got 12']],
    [
      'both passwordEnv and passwordHash',
      () => auth(`users: [{ name: ci, passwordEnv: CI_PASSWORD, passwordHash: "${HASH}" }]`),
      ['auth.users[0]: needs exactly one of passwordEnv (the variable or secret holding the password, hashed at start) and passwordHash (from outpost hash-password)'],
    ],
    ['neither passwordEnv nor passwordHash', auth('users: [{ name: ci }]'), ['auth.users[0]: needs exactly one of passwordEnv']],
    ['an unset variable', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }]'), ['auth.users[0].passwordEnv: the environment variable CI_PASSWORD is not set (it holds the password of "ci")'], {}],
    ['an unset secret', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }]', 'tokenKeys: [{ kid: k, privateKeyEnv: TOKEN_KEY }]'), ['auth.users[0].passwordEnv: the var or secret CI_PASSWORD is not set'], { TOKEN_KEY: PRIVATE_PEM }, 'workers'],
    ['a password too long', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }]'), ['auth.users[0].passwordEnv: the environment variable CI_PASSWORD holds more than 1024 bytes, the longest password Outpost checks'], { CI_PASSWORD: 'é'.repeat(513) }],
    ['passwordEnv that is not a variable name', auth('users: [{ name: ci, passwordEnv: $CI }]'), ['auth.users[0].passwordEnv: must be the name of a variable, like HUB_TOKEN, got "$CI"']],
    ['a user without a name', auth('users: [{ passwordEnv: CI_PASSWORD }]'), ['auth.users[0].name: is required (the user name clients sign in with)']],
    ['a user name with upper case', auth('users: [{ name: CI, passwordEnv: CI_PASSWORD }]'), ['auth.users[0].name: must be lower-case letters and digits separated by single ".", "_" or "-" (at most 64), got "CI"']],
    ['a user name too long', auth(`users: [{ name: ${'a'.repeat(65)}, passwordEnv: CI_PASSWORD }]`), ['auth.users[0].name: must be lower-case letters and digits separated by single']],
    ['a user named anonymous', auth('users: [{ name: anonymous, passwordEnv: CI_PASSWORD }]'), ['auth.users[0].name: "anonymous" is the caller without credentials; rules grant to it with anonymous: true']],
    ['a duplicate user', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }, { name: ci, passwordEnv: CI_PASSWORD }]'), ['auth.users[1].name: "ci" names another user too']],
    ['too many users', auth(`users: [${Array.from({ length: 1001 }, (_, i) => `{ name: u${i}, passwordEnv: CI_PASSWORD }`).join(', ')}]`), ['auth.users: holds at most 1000 users, got 1001']],
    ['an unknown user in a rule', auth('users: [{ name: ci, passwordEnv: CI_PASSWORD }]', 'rules: [{ repositories: ["a/*"], users: [ci, bob], actions: [pull] }]'), ['auth.rules[0].users[1]: "bob" is not a user of auth.users']],
    ['anonymous as a user in a rule', auth('rules: [{ repositories: ["a/*"], users: [anonymous], actions: [pull] }]'), ['auth.rules[0].users[0]: "anonymous" is not a user; for callers without credentials write anonymous: true']],
    ['an unknown action', auth('rules: [{ repositories: ["a/*"], anonymous: true, actions: [pull, write] }]'), ['auth.rules[0].actions[1]: must be one of pull, push, delete, got "write"']],
    ['no actions', auth('rules: [{ repositories: ["a/*"], anonymous: true }]'), ['auth.rules[0].actions: is required: which of pull, push, delete the rule grants']],
    ['an empty list of actions', auth('rules: [{ repositories: ["a/*"], anonymous: true, actions: [] }]'), ['auth.rules[0].actions: must list at least one of pull, push, delete']],
    ['actions that are not a list', auth('rules: [{ repositories: ["a/*"], anonymous: true, actions: pull }]'), ['auth.rules[0].actions: must be a list, got "pull"']],
    ['a rule granting nobody', auth('rules: [{ repositories: ["a/*"], actions: [pull] }]'), ['auth.rules[0]: grants nobody: name users, or set authenticated (every signed-in user) or anonymous (callers without credentials) to true']],
    ['a rule granting nobody explicitly', auth('rules: [{ repositories: ["a/*"], users: [], authenticated: false, anonymous: false, actions: [pull] }]'), ['auth.rules[0]: grants nobody']],
    ['a flag that is not a boolean', auth('rules: [{ repositories: ["a/*"], anonymous: "yes", actions: [pull] }]'), ['auth.rules[0].anonymous: must be true or false, got "yes"']],
    ['a rule without repositories', auth('rules: [{ anonymous: true, actions: [pull] }]'), ['auth.rules[0].repositories: is required: the repository globs the rule grants actions on']],
    ['a bad glob', auth('rules: [{ repositories: ["Team/*"], anonymous: true, actions: [pull] }]'), ['auth.rules[0].repositories[0]: a repository glob holds lower-case letters']],
    [
      'a glob on an upstream alias',
      `${HUB}${auth('rules: [{ repositories: ["hub/library/*", "docker.io/ok/*"], anonymous: true, actions: [pull] }]')}`,
      ['auth.rules[0].repositories[0]: names the alias of upstream "hub"; mirrored repositories are named by its namespace: "docker.io/library/*"'],
    ],
    ['an unknown rule key', auth('rules: [{ repositories: ["a/*"], anonymous: true, actions: [pull], groups: [x] }]'), ['auth.rules[0].groups: unknown key; the known keys are repositories, users, authenticated, anonymous, actions']],
    ['too many rules', auth(`rules: [${Array.from({ length: 1001 }, () => '{ repositories: ["a/*"], anonymous: true, actions: [pull] }').join(', ')}]`), ['auth.rules: holds at most 1000 rules, got 1001']],
    ['a literal private key', auth('tokenKeys: [{ kid: k, privateKey: "-----BEGIN PRIVATE KEY-----" }]'), ['auth.tokenKeys[0].privateKey: a private key is never written in the configuration document; name the variable or secret that holds its PKCS#8 PEM with privateKeyEnv']],
    ['a duplicate kid', auth('tokenKeys: [{ kid: k, privateKeyEnv: TOKEN_KEY }, { kid: k, publicKeyEnv: PUBLIC_KEY }]'), ['auth.tokenKeys[1].kid: "k" is the kid of another key too']],
    ['a kid with a space', auth('tokenKeys: [{ kid: "my key", privateKeyEnv: TOKEN_KEY }]'), ['auth.tokenKeys[0].kid: must be 1 to 64 letters, digits, ".", "_" or "-", got "my key"']],
    ['a key without a kid', auth('tokenKeys: [{ privateKeyEnv: TOKEN_KEY }]'), ['auth.tokenKeys[0].kid: is required (the key id written in the tokens it signs)']],
    ['a key of two kinds', auth('tokenKeys: [{ kid: k, privateKeyEnv: TOKEN_KEY, publicKeyEnv: PUBLIC_KEY }]'), ['auth.tokenKeys[0]: needs exactly one of privateKeyEnv (the variable holding a PKCS#8 PEM: the key signs and verifies), publicKey (an SPKI PEM inline) and publicKeyEnv (the variable holding one): a public key only verifies']],
    ['public keys only', auth('tokenKeys: [{ kid: k, publicKeyEnv: PUBLIC_KEY }]'), ['auth.tokenKeys: needs a key with privateKeyEnv: the first one signs the tokens Outpost issues, the others only verify']],
    ['an unset key variable', auth('tokenKeys: [{ kid: k, privateKeyEnv: TOKEN_KEY }]'), ['auth.tokenKeys[0].privateKeyEnv: the environment variable TOKEN_KEY is not set (it holds a PKCS#8 private key PEM)'], {}],
    ['a public key where the private one belongs', auth('tokenKeys: [{ kid: k, privateKeyEnv: PUBLIC_KEY }]'), ['auth.tokenKeys[0].privateKeyEnv: the environment variable PUBLIC_KEY does not hold a PEM with -----BEGIN PRIVATE KEY-----']],
    ['an SEC1 private key', auth('tokenKeys: [{ kid: k, privateKeyEnv: SEC1 }]'), ['auth.tokenKeys[0].privateKeyEnv: the environment variable SEC1 does not hold a PEM with -----BEGIN PRIVATE KEY----- (an SEC1 key: convert it with openssl pkcs8 -topk8 -nocrypt)'], { SEC1: SEC1_PEM }],
    ['an inline public key that is not one', auth('tokenKeys: [{ kid: k, privateKeyEnv: TOKEN_KEY }, { kid: o, publicKey: "abc" }]'), ['auth.tokenKeys[1].publicKey: is not a PEM with -----BEGIN PUBLIC KEY-----']],
    ['Workers without token keys', auth(), ['auth.tokenKeys: is required on Workers, with a key from privateKeyEnv: each isolate would otherwise sign with a key of its own, whose tokens the others refuse'], {}, 'workers'],
    ['Workers with public token keys only', auth('tokenKeys: [{ kid: k, publicKeyEnv: PUBLIC_KEY }]'), ['auth.tokenKeys: needs a key with privateKeyEnv'], ENV, 'workers'],
    ['a token TTL too short', auth('tokenTtl: 10s'), ['auth.tokenTtl: must be from 30s to 1d, got "10s"']],
    ['a token TTL too long', auth('tokenTtl: 2d'), ['auth.tokenTtl: must be from 30s to 1d, got "2d"']],
    ['a refresh TTL too long', auth('refreshTokenTtl: 91d'), ['auth.refreshTokenTtl: must be from 1m to 90d, got "91d"']],
    ['a refresh TTL without a unit', auth('refreshTokenTtl: 3600'), ['auth.refreshTokenTtl: must be a duration like 30s, 5m, 24h, got 3600']],
    ['a login failure limit of 0', auth('loginFailures: { limit: 0 }'), ['auth.loginFailures.limit: must be an integer from 1 to 1000, got 0']],
    ['a login failure limit that is a string', auth('loginFailures: { limit: "10" }'), ['auth.loginFailures.limit: must be an integer from 1 to 1000, got "10"']],
    ['a login failure window too long', auth('loginFailures: { window: 2h }'), ['auth.loginFailures.window: must be from 1s to 1h, got "2h"']],
    ['an anonymous fill limit that is not an integer', auth('anonymousFills: { limit: 1.5, window: 500ms }'), ['auth.anonymousFills.limit: must be an integer from 0 to 100000, got 1.5', 'auth.anonymousFills.window: must be from 1s to 1h, got "500ms"']],
    ['an unknown limit key', auth('anonymousFills: { max: 3 }'), ['auth.anonymousFills.max: unknown key; the known keys are limit, window']],
    ['a realm with a query', auth('realm: "https://r.example.com/token?x=1"'), ['auth.realm: must have no query or fragment (clients add their own query), got "https://r.example.com/token?x=1"']],
    ['a relative realm', auth('realm: /auth/token'), ['auth.realm: must be the absolute http(s) URL of the token endpoint as clients reach it, like https://registry.example.com/auth/token, got "/auth/token"']],
    ['a realm of another scheme', auth('realm: "ftp://r.example.com/token"'), ['auth.realm: must be the absolute http(s) URL']],
    ['a service with a quote', auth(`service: 'a"b'`), ['auth.service: must be at most 200 printable ASCII characters without " or \\, got "a\\"b"']],
    ['a service too long', auth(`service: ${'s'.repeat(201)}`), ['auth.service: must be at most 200 printable ASCII characters']],
    ['an issuer with a control character', auth('issuer: "a\\tb"'), ['auth.issuer: must be at most 200 printable ASCII characters']],
  ])('refuses %s', (_, document, expected, env = ENV, runtime = 'node') => {
    const found = problems(typeof document === 'function' ? document() : document, env, runtime);
    expect(found).toHaveLength(expected.length);
    expected.forEach((e, i) => expect(found[i]).toContain(e));
  });

  it('never echoes a hash or a key it refuses', () => {
    const secret = 'pbkdf2-sha256$10000$c2VjcmV0LXNhbHQ=$bm90LWEta2V5';
    const found = problems(auth(`users: [{ name: ci, passwordHash: "${secret}" }]`, 'tokenKeys: [{ kid: k, privateKeyEnv: KEY }]'), { KEY: 'SECRET-MATERIAL' }).join('\n');
    expect(found).toMatch(/passwordHash: has a key that is not 32 bytes/);
    expect(found).not.toContain('c2VjcmV0');
    expect(found).not.toContain('SECRET-MATERIAL');
  });
});

describe('the immutableTags section', () => {
  it('reads its rules, labelled by where they are written', () => {
    const config = read(`${HUB}immutableTags:\n  - repositories: ["team/**", "base/*"]\n    tags: "v[0-9]+(\\\\.[0-9]+)*"\n  - repositories: ["release/*"]\n`);
    const [versions, all] = config.immutableTags;
    expect(versions).toMatchObject({ label: 'immutableTags[0]' });
    expect(['v1', 'v1.2.3', 'latest', 'xv1'].filter((t) => versions!.tags!.test(t))).toEqual(['v1', 'v1.2.3']);
    expect(versions!.repositories.map((g) => g.test('team/a/b'))).toEqual([true, false]);
    expect(all).toEqual({ repositories: [expect.any(RegExp)], label: 'immutableTags[1]' });
    expect(config.auth).toBeUndefined();
  });

  it.each([
    ['a glob of mirrored repositories', `${HUB}immutableTags: [{ repositories: ["docker.io/library/*"] }]`, 'immutableTags[0].repositories[0]: names repositories mirrored from upstream "hub"; immutable tags apply to hosted repositories only'],
    ['a bad regular expression', 'immutableTags: [{ repositories: ["a/*"], tags: "v(" }]', 'immutableTags[0].tags: is not a valid regular expression'],
    ['no repositories', 'immutableTags: [{ tags: "v.*" }]', 'immutableTags[0].repositories: is required: the repository globs whose tags never move'],
    ['an unknown key', 'immutableTags: [{ repositories: ["a/*"], tag: "v.*" }]', 'immutableTags[0].tag: unknown key; the known keys are repositories, tags'],
    ['a glob on an alias', `${HUB}immutableTags: [{ repositories: ["hub/library/*"] }]`, 'immutableTags[0].repositories[0]: names the alias of upstream "hub"; mirrored repositories are named by its namespace: "docker.io/library/*"'],
    ['a section that is a mapping', 'immutableTags: { repositories: ["a/*"] }', 'immutableTags: must be a list, got a mapping'],
  ])('refuses %s', (_, document, expected) => {
    const found = problems(document);
    expect(found).toHaveLength(1);
    expect(found[0]).toContain(expected);
  });
});

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_ALIAS_COUNT, MAX_DOCUMENT_BYTES } from '../../src/entry/config/document.js';
import { ConfigError, readConfig, type ConfigInput } from '../../src/entry/config.js';
import { readConfigFile, readNodeConfig } from '../../src/entry/node.js';

/** The configuration document of the README's example. */
const EXAMPLE = `
upstreams:
  - name: hub                        # /v2/hub/<repository>/... reaches this upstream
    url: https://registry-1.docker.io
    namespace: docker.io             # the host containerd sends as ?ns= (default: the url's host)
    default: true                    # names without an alias and without ?ns= go here (docker registry-mirrors)
    tagTtl: 5m                       # a tag is revalidated with HEAD after this
    maxStale: 24h                    # how long a tag is served while the upstream fails
    username: robot                  # optional Basic / token credentials
    passwordEnv: HUB_TOKEN           # name of the variable or secret holding the password
    content:                         # optional content rules (as zot's sync content)
      allow: ["library/*", "myorg/**"]   # upstream-relative repository globs (src/core/glob.ts); default: all
      deny: ["library/windows*"]
      tags: "^v?[0-9][0-9a-z._-]*$"     # anchored regular expression; only matching tags are fetched
hosted: ["team/", "internal/"]       # repository prefixes hosted here even with a default upstream
mirror:
  fillPartSize: 8MiB                 # sizes: bytes as an integer, or 512KiB / 8MiB / 1GiB / 8MB
  fillLease: 30s
`;

type Env = Record<string, unknown>;

/** Problems of a document given as OUTPOST_CONFIG, without the "OUTPOST_CONFIG: " each starts with. */
function problems(document: string, env: Env = {}, runtime: 'node' | 'workers' = 'node', input: ConfigInput = {}): string[] {
  try {
    readConfig({ ...env, OUTPOST_CONFIG: document }, runtime, input);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.replace(/^OUTPOST_CONFIG: /, ''));
    throw err;
  }
}

function envProblems(env: Env, runtime: 'node' | 'workers' = 'node', input: ConfigInput = {}): string[] {
  try {
    readConfig(env, runtime, input);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

/** One upstream with the given extra lines (indented under it). */
function upstream(...lines: string[]): string {
  return ['upstreams:', '  - name: hub', '    url: https://registry-1.docker.io', ...lines.map((l) => `    ${l}`)].join('\n');
}

describe('the configuration document', () => {
  it('accepts the README example and produces the typed mirror configuration', () => {
    const config = readConfig({ OUTPOST_CONFIG: EXAMPLE, HUB_TOKEN: 's3cret' });
    const [hub] = config.mirror.upstreams;
    expect(config.mirror).toMatchObject({ hosted: ['team/', 'internal/'], fillPartBytes: 8 * 1024 * 1024, fillLeaseMs: 30_000 });
    expect(config.mirror.upstreams).toHaveLength(1);
    expect(hub).toMatchObject({
      name: 'hub',
      url: 'https://registry-1.docker.io',
      namespace: 'docker.io',
      default: true,
      tagTtlMs: 5 * 60_000,
      maxStaleMs: 24 * 3_600_000,
      credentials: { username: 'robot', password: 's3cret' },
    });
    const { allow, deny, tags } = hub!.content;
    expect(allow.map((g) => ['library/nginx', 'library/a/b', 'myorg/a/b', 'other/x'].filter((n) => g.test(n)))).toEqual([
      ['library/nginx'],
      ['myorg/a/b'],
    ]);
    expect(deny.map((g) => g.test('library/windowsservercore'))).toEqual([true]);
    expect(['v1.2.3', '1.25-alpine', 'latest', 'x1.0'].filter((t) => tags!.test(t))).toEqual(['v1.2.3', '1.25-alpine']);
    // The flat settings are unchanged by a document.
    expect(config).toMatchObject({ host: '127.0.0.1', port: 5000, store: { kind: 'local' } });
  });

  it('takes the namespace from the url host by default, folds Docker Hub hosts, and strips a trailing slash', () => {
    const config = readConfig({
      OUTPOST_CONFIG: [
        'upstreams:',
        '  - name: hub',
        '    url: https://Registry-1.Docker.io/',
        '  - name: ghcr',
        '    url: https://ghcr.io',
        '  - name: local',
        '    url: http://127.0.0.1:5001',
        '  - name: q',
        '    url: https://quay.io',
        '    namespace: quay.io:443',
      ].join('\n'),
    });
    expect(config.mirror.upstreams.map((u) => [u.name, u.url, u.namespace])).toEqual([
      ['hub', 'https://registry-1.docker.io', 'docker.io'],
      ['ghcr', 'https://ghcr.io', 'ghcr.io'],
      ['local', 'http://127.0.0.1:5001', '127.0.0.1:5001'],
      ['q', 'https://quay.io', 'quay.io:443'],
    ]);
    const mirrorOfHub = readConfig({ OUTPOST_CONFIG: 'upstreams:\n  - name: hub\n    url: https://mirror.example.com\n    namespace: index.docker.io' });
    expect(mirrorOfHub.mirror.upstreams[0]).toMatchObject({ url: 'https://mirror.example.com', namespace: 'docker.io' });
  });

  it('reads defaults for every optional key', () => {
    const config = readConfig({ OUTPOST_CONFIG: upstream() });
    expect(config.mirror).toEqual({
      upstreams: [
        {
          name: 'hub',
          url: 'https://registry-1.docker.io',
          namespace: 'docker.io',
          default: false,
          tagTtlMs: 5 * 60_000,
          maxStaleMs: 24 * 3_600_000,
          content: { allow: [], deny: [] },
        },
      ],
      hosted: [],
      fillPartBytes: 2 * 1024 * 1024,
      fillLeaseMs: 10_000,
      fillMemoryBytes: 256 * 1024 * 1024,
    });
  });

  it.each([
    ['an empty document', ''],
    ['comments only', '# nothing yet\n'],
    ['empty sections', 'upstreams:\nhosted:\nmirror:\n'],
    ['an empty mapping', '{}'],
  ])('configures nothing with %s', (_, document) => {
    const config = readConfig({ OUTPOST_CONFIG: document }, 'node', document === '' ? { configText: '' } : {});
    expect(config.mirror).toEqual({ upstreams: [], hosted: [], fillPartBytes: 2 * 1024 * 1024, fillLeaseMs: 10_000, fillMemoryBytes: 256 * 1024 * 1024 });
  });

  it('cuts fills into parts of 2 MiB on the embedded store and 8 MiB on S3, whose compose needs 5 MiB', () => {
    const cloud = { OUTPOST_STORE: 'cloud', OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' };
    expect(readConfig({}).mirror.fillPartBytes).toBe(2 * 1024 * 1024);
    expect(readConfig({ OUTPOST_CONFIG: 'mirror:\n  fillLease: 1m' }).mirror.fillPartBytes).toBe(2 * 1024 * 1024);
    expect(readConfig({ ...cloud }).mirror.fillPartBytes).toBe(8 * 1024 * 1024);
    expect(readConfig({ ...cloud, OUTPOST_CONFIG: 'mirror:\n  fillLease: 1m' }).mirror.fillPartBytes).toBe(8 * 1024 * 1024);
    expect(readConfig({ OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' }, 'workers').mirror).toMatchObject({ fillPartBytes: 8 * 1024 * 1024, fillMemoryBytes: 32 * 1024 * 1024 });
    expect(readConfig({ OUTPOST_CONFIG: 'mirror:\n  fillPartSize: 1MiB' }).mirror.fillPartBytes).toBe(1024 * 1024);
    expect(problems('mirror:\n  fillPartSize: 4MiB', cloud)).toEqual(['mirror.fillPartSize: must be from 5MiB to 64MiB, got "4MiB"']);
    expect(problems('mirror:\n  fillMemory: 8MiB', cloud)).toEqual(['mirror.fillMemory: must be from 10MiB to 1GiB, got "8MiB"']);
    expect(problems('mirror:\n  fillMemory: 8MiB')).toEqual([]);
  });

  it('accepts JSON, which is YAML', () => {
    const json = JSON.stringify(
      {
        upstreams: [{ name: 'ghcr', url: 'https://ghcr.io', tagTtl: '30s', content: { tags: 'v.*' } }],
        hosted: ['team/'],
        mirror: { fillPartSize: 16 * 1024 * 1024, fillLease: '1m', fillMemory: '256MiB' },
      },
      null,
      '\t',
    );
    const config = readConfig({ OUTPOST_CONFIG: json });
    expect(config.mirror).toMatchObject({ hosted: ['team/'], fillPartBytes: 16 * 1024 * 1024, fillLeaseMs: 60_000, fillMemoryBytes: 256 * 1024 * 1024 });
    expect(config.mirror.upstreams[0]).toMatchObject({ name: 'ghcr', namespace: 'ghcr.io', tagTtlMs: 30_000 });
    expect(config.mirror.upstreams[0]!.content.tags!.test('v1')).toBe(true);
    expect(config.mirror.upstreams[0]!.content.tags!.test('xv1')).toBe(false);
  });

  it.each([
    ['8388608', 8 * 1024 * 1024],
    ['"8388608"', 8 * 1024 * 1024],
    ['5MiB', 5 * 1024 * 1024],
    ['8MB', 8_000_000],
    ['"64 MiB"', 64 * 1024 * 1024],
    ['65536KiB', 64 * 1024 * 1024],
  ])('reads the size %s', (written, bytes) => {
    expect(readConfig({ OUTPOST_CONFIG: `mirror:\n  fillPartSize: ${written}` }).mirror.fillPartBytes).toBe(bytes);
  });

  it.each([
    ['0s', 0],
    ['1500ms', 1500],
    ['90s', 90_000],
    ['2h', 7_200_000],
    ['7d', 7 * 86_400_000],
  ])('reads the duration %s', (written, ms) => {
    expect(readConfig({ OUTPOST_CONFIG: upstream(`tagTtl: ${written}`) }).mirror.upstreams[0]!.tagTtlMs).toBe(ms);
  });

  /** Each document has exactly the problems listed, each naming its key path. */
  it.each<[string, string, string[]]>([
    ['a duration without a unit we know', upstream('tagTtl: 5 minutes'), ['upstreams[0].tagTtl: must be a duration like 30s, 5m, 24h, got "5 minutes"']],
    ['a duration as a bare number', upstream('tagTtl: 300'), ['upstreams[0].tagTtl: must be a duration like 30s, 5m, 24h, got 300']],
    ['a tag TTL over a week', upstream('tagTtl: 8d'), ['upstreams[0].tagTtl: must be from 0s to 7d, got "8d"']],
    ['maxStale over 30 days', upstream('maxStale: 31d'), ['upstreams[0].maxStale: must be from 0s to 30d, got "31d"']],
    ['a part under the embedded store\'s minimum', 'mirror:\n  fillPartSize: 512KiB', ['mirror.fillPartSize: must be from 1MiB to 64MiB, got "512KiB"']],
    ['a part over the memory cap', 'mirror:\n  fillPartSize: 65MiB', ['mirror.fillPartSize: must be from 1MiB to 64MiB, got "65MiB"']],
    [
      'a size that is not one',
      'mirror:\n  fillPartSize: 8 megs',
      ['mirror.fillPartSize: must be a size: bytes as an integer, or like 512KiB, 8MiB, 1GiB, 2TiB, 8MB; got "8 megs"'],
    ],
    ['a fractional size', 'mirror:\n  fillPartSize: 8388608.5', ['mirror.fillPartSize: must be a size: bytes as an integer, or like 512KiB, 8MiB, 1GiB, 2TiB, 8MB; got 8388608.5']],
    ['a short lease', 'mirror:\n  fillLease: 1s', ['mirror.fillLease: must be from 5s to 10m, got "1s"']],
    ['a long lease', 'mirror:\n  fillLease: 11m', ['mirror.fillLease: must be from 5s to 10m, got "11m"']],
    ['fill memory beyond 1 GiB', 'mirror:\n  fillMemory: 2GiB', ['mirror.fillMemory: must be from 2MiB to 1GiB, got "2GiB"']],
    ['fill memory below two parts', 'mirror:\n  fillPartSize: 32MiB\n  fillMemory: 48MiB', ['mirror.fillMemory: must hold at least two parts of fillPartSize (67108864 bytes)']],
    ['mirror not a mapping', 'mirror: [1]', ['mirror: must be a mapping with the keys fillPartSize, fillLease, fillMemory, got a list']],
    [
      'a name that is not one path component',
      'upstreams:\n  - name: Docker/Hub\n    url: https://registry-1.docker.io',
      ['upstreams[0].name: must be lower-case letters and digits, separated by single ".", "_" or "-" (one path component), got "Docker/Hub"'],
    ],
    [
      'a missing name and url',
      'upstreams:\n  - tagTtl: 5m',
      [
        'upstreams[0].name: is required (the alias: /v2/<name>/<repository> reaches this upstream)',
        'upstreams[0].url: is required (the registry base URL, like https://registry-1.docker.io)',
      ],
    ],
    [
      'a url with a path',
      'upstreams:\n  - name: a\n    url: https://example.com/v2/',
      ['upstreams[0].url: must be the registry\'s base URL without a path or query (Outpost adds /v2/...), got "https://example.com/v2/"'],
    ],
    [
      'a url with a query',
      'upstreams:\n  - name: a\n    url: https://example.com?x=1',
      ['upstreams[0].url: must be the registry\'s base URL without a path or query (Outpost adds /v2/...), got "https://example.com?x=1"'],
    ],
    ['a url that is not http', 'upstreams:\n  - name: a\n    url: ftp://example.com', ['upstreams[0].url: must be an http(s) URL like https://registry-1.docker.io, got "ftp://example.com"']],
    ['a url that is not a url', 'upstreams:\n  - name: a\n    url: example.com', ['upstreams[0].url: must be an http(s) URL like https://registry-1.docker.io, got "example.com"']],
    ['a url with credentials', 'upstreams:\n  - name: a\n    url: https://u:p@example.com', ['upstreams[0].url: must not hold credentials; use username and passwordEnv']],
    [
      'a namespace in upper case',
      upstream('namespace: Docker.IO'),
      ['upstreams[0].namespace: must be a lower-case registry host with an optional port, like docker.io or registry.example.com:5000, got "Docker.IO"'],
    ],
    ['default not a boolean', upstream('default: yes'), ['upstreams[0].default: must be true or false, got "yes"']],
    [
      'two names alike',
      'upstreams:\n  - name: a\n    url: https://a.example\n  - name: a\n    url: https://b.example',
      ['upstreams[1].name: "a" is already the name of upstreams[0] (a)'],
    ],
    [
      'two defaults',
      'upstreams:\n  - name: a\n    url: https://a.example\n    default: true\n  - name: b\n    url: https://b.example\n    default: true',
      ['upstreams[1].default: only one upstream may be the default; upstreams[0] (a) already is'],
    ],
    [
      'two upstreams for Docker Hub (namespaces alike after folding)',
      'upstreams:\n  - name: hub\n    url: https://registry-1.docker.io\n  - name: hub2\n    url: https://mirror.example\n    namespace: index.docker.io',
      ['upstreams[1].namespace: "docker.io" is already the namespace of upstreams[0] (hub) (set namespace to tell them apart)'],
    ],
    [
      'an alias that is a hosted prefix',
      'upstreams:\n  - name: team\n    url: https://a.example\nhosted: ["team/"]',
      ['upstreams[0].name: "team" is also the first component of the hosted prefix "team/"; rename the upstream or the prefix'],
    ],
    [
      'hosted prefixes that are not prefixes',
      'hosted: ["team", "Team/", "a//", "ok/", "ok/"]',
      [
        'hosted[0]: must be a repository name prefix of whole components ending in "/", like team/ or org/internal/, got "team"',
        'hosted[1]: must be a repository name prefix of whole components ending in "/", like team/ or org/internal/, got "Team/"',
        'hosted[2]: must be a repository name prefix of whole components ending in "/", like team/ or org/internal/, got "a//"',
        'hosted[4]: "ok/" is listed twice',
      ],
    ],
    ['hosted not a list', 'hosted: team/', ['hosted: must be a list, got "team/"']],
    ['upstreams not a list', 'upstreams: {name: a}', ['upstreams: must be a list, got a mapping']],
    [
      'a tag pattern that does not compile',
      upstream('content:', '  tags: "^(v"'),
      ['upstreams[0].content.tags: is not a valid regular expression (Unterminated group): "^(v"'],
    ],
    [
      'globs that could never match',
      upstream('content:', '  allow: ["Library/*", "ok/*"]', '  deny: [3]'),
      [
        'upstreams[0].content.allow[0]: a repository glob holds lower-case letters, digits, ".", "_", "-", "/" and * or **, got "Library/*"',
        'upstreams[0].content.deny[0]: must be a non-empty string, got 3',
      ],
    ],
    [
      'unknown keys, naming the known ones',
      upstream('tagTTL: 5m', 'content:', '  allowed: ["a/*"]') + '\nmirror:\n  fillPart: 8MiB\nupstream: []',
      [
        'upstream: unknown key; the known keys are upstreams, hosted, mirror, gc, policies, auth, immutableTags',
        'upstreams[0].tagTTL: unknown key; the known keys are name, url, namespace, default, tagTtl, maxStale, username, passwordEnv, content',
        'upstreams[0].content.allowed: unknown key; the known keys are allow, deny, tags',
        'mirror.fillPart: unknown key; the known keys are fillPartSize, fillLease, fillMemory',
      ],
    ],
    [
      'an unknown key that is not an identifier, quoted and cut',
      `mirror:\n  "${'x '.repeat(100)}": 1`,
      [`mirror["${'x '.repeat(40)}..."]: unknown key; the known keys are fillPartSize, fillLease, fillMemory`],
    ],
    [
      'a literal password',
      upstream('username: robot', 'password: hunter2'),
      [
        'upstreams[0].password: a password is never written in the configuration document; name the variable or secret that holds it with passwordEnv',
        'upstreams[0].passwordEnv: is required with username (the name of the variable or secret that holds the password)',
      ],
    ],
    ['passwordEnv without a username', upstream('passwordEnv: HUB_TOKEN'), ['upstreams[0].username: is required with passwordEnv']],
    ['passwordEnv that is not a variable name', upstream('username: robot', 'passwordEnv: $HUB_TOKEN'), ['upstreams[0].passwordEnv: must be the name of a variable, like HUB_TOKEN, got "$HUB_TOKEN"']],
    ['a document that is a list', '- a\n- b', ['must be a mapping with the keys upstreams, hosted, mirror, gc, policies, auth, immutableTags, got a list']],
    ['a document that is a scalar', 'upstreams', ['must be a mapping with the keys upstreams, hosted, mirror, gc, policies, auth, immutableTags, got "upstreams"']],
  ])('refuses %s', (_, document, expected) => {
    expect(problems(document)).toEqual(expected);
  });

  describe('gc', () => {
    const gcOf = (text: string) => readConfig({ OUTPOST_CONFIG: text }, 'node').gc;

    it('reads the grace and the interval, and defaults both', () => {
      expect(gcOf('gc:\n  grace: 2h\n  interval: 15m\n')).toEqual({ graceMs: 2 * 3600_000, intervalMs: 15 * 60_000, mirror: {}, hosted: [] });
      expect(gcOf('gc:\n  interval: 0\n')).toEqual({ graceMs: 24 * 3600_000, intervalMs: 0, mirror: {}, hosted: [] });
      expect(gcOf('')).toEqual({ graceMs: 24 * 3600_000, intervalMs: 3600_000, mirror: {}, hosted: [] });
      expect(gcOf('gc:\n  mirror:\n    maxAge: 30d\n    sizeBudget: 2TiB\n').mirror).toEqual({ maxAgeMs: 30 * 24 * 3600_000, budgetBytes: 2 * 1024 ** 4 });
      const [hosted] = gcOf('gc:\n  hosted:\n    - repositories: ["team/*"]\n      tags: "v.*"\n      keepTags: 10\n      untaggedAfter: 7d\n').hosted;
      expect(hosted).toMatchObject({ keepTags: 10, untaggedAfterMs: 7 * 24 * 3600_000 });
      expect(hosted!.repositories[0]!.test('team/app')).toBe(true);
      expect(hosted!.tags!.test('v1.2') && !hosted!.tags!.test('latest')).toBe(true);
    });

    it.each([
      ['grace: 1s', 'gc.grace: must be from 1m to 365d, got "1s"'],
      ['interval: soon', 'gc.interval: must be a duration like 30s, 5m, 24h, got "soon"'],
      ['graceful: 1h', 'gc.graceful: unknown key; the known keys are grace, interval, mirror, hosted'],
      ['hosted: [{ keepTags: 3 }]', 'gc.hosted[0].repositories: is required: the repository globs the policy applies to'],
      ['hosted: [{ repositories: ["team/*"] }]', 'gc.hosted[0]: needs keepTags, untaggedAfter or both: a policy with neither deletes nothing'],
      ['hosted: [{ repositories: ["team/*"], keepTags: 0 }]', 'gc.hosted[0].keepTags: must be an integer from 1 to 1000000, got 0'],
      ['hosted: [{ repositories: ["team/*"], untaggedAfter: 5m }]', 'gc.hosted[0].untaggedAfter: must be from 1h to 3650d, got "5m"'],
      ['hosted: [{ repositories: ["Team/*"], keepTags: 2 }]', 'gc.hosted[0].repositories[0]: a repository glob holds lower-case letters, digits, ".", "_", "-", "/" and * or **, got "Team/*"'],
      ['mirror: { maxAge: 5m }', 'gc.mirror.maxAge: must be from 1h to 3650d, got "5m"'],
      ['mirror: { sizeBudget: 1KiB }', 'gc.mirror.sizeBudget: must be from 1MiB to 1024TiB, got "1KiB"'],
      ['mirror: { budget: 1GiB }', 'gc.mirror.budget: unknown key; the known keys are maxAge, sizeBudget'],
    ])('refuses %s', (line, expected) => {
      expect(problems(`gc:\n  ${line}\n`)).toEqual([expected]);
    });
  });

  describe('policies', () => {
    const PEM = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2ZcrIg8AJlZYsKmuFSsB6VLbJVmUb6Wd9rmVFD4JBx8sDP7qKeAfPUE1F2EntkjR2YoFwAHG8PtM/SQ8VgO5Yw==\n-----END PUBLIC KEY-----\n';
    const files: Record<string, string> = { 'keys/cosign.pub': PEM };
    const readFile = (path: string) => files[path] ?? { error: `cannot read "${path}": no such file` };
    const read = (text: string) => {
      try {
        return { config: readConfig({ OUTPOST_CONFIG: text }, 'node', { readFile, publicGoodRoot: () => publicGood }), problems: [] };
      } catch (err) {
        if (err instanceof ConfigError) return { config: undefined, problems: err.problems.map((p) => p.replace(/^OUTPOST_CONFIG: /, '')) };
        throw err;
      }
    };
    const publicGood = JSON.stringify({ tlogs: [{ publicKey: { rawBytes: Buffer.from(PEM.replace(/-----[^-]+-----|\s/g, ''), 'base64').toString('base64') } }] });

    it('accepts the documented shape with key files and inline keys, and defaults the rest', () => {
      const { config, problems } = read(
        'policies:\n  - name: release-signed\n    repositories: ["docker.io/myorg/*", "team/app"]\n    mode: enforce\n    keys:\n      - file: keys/cosign.pub\n      - pem: |\n' +
          PEM.split('\n').map((l) => `          ${l}`).join('\n') +
          '\n    trustedRoot: sigstore-public-good\n    requireTransparencyLog: true\n',
      );
      expect(problems).toEqual([]);
      const [p] = config!.policies;
      expect(p).toMatchObject({ name: 'release-signed', mode: 'enforce', requireTransparencyLog: true, children: true, verdictTtlMs: 300_000 });
      expect(p!.keys.map((k) => k.label)).toEqual(['keys/cosign.pub', 'keys[1]']);
      expect(p!.repositories[0]!.test('docker.io/myorg/app')).toBe(true);
      expect(p!.trustedRoot).toBe(publicGood);
    });

    it.each([
      ['keyless: [{ subject: x }]', 'policies[0].keyless[0].issuer: is required (the OIDC issuer of the certificate'],
      ['keyless: [{ issuer: "https://i.test" }]', 'policies[0].keyless[0]: needs exactly one of subject (the certificate identity, exactly) and subjectPattern'],
      ['keyless: [{ issuer: "https://i.test", subject: x, subjectPattern: "x.*" }]', 'policies[0].keyless[0]: needs exactly one of subject'],
      ['keyless: [{ issuer: "https://i.test", subjectPattern: "(" }]', 'policies[0].keyless[0].subjectPattern: is not a valid regular expression'],
      ['keyless: [{ issuer: "https://i.test", subject: x, email: y }]', 'policies[0].keyless[0]'],
      ['mode: strict', 'policies[0].mode: must be one of enforce, warn, off, got "strict"'],
      ['keys: [{ file: keys/missing.pub }]', 'policies[0].keys[0].file: cannot read "keys/missing.pub": no such file'],
      ['keys: [{ pem: "not a key" }]', 'policies[0].keys[0]: is not a public key Outpost can verify with: '],
      ['predicateTypes: []', 'policies[0].predicateTypes: must name at least one predicate type'],
      ['predicateTypes: ["not a uri"]', 'policies[0].predicateTypes[0]: must be a URI like https://sigstore.dev/cosign/sign/v1, got "not a uri"'],
    ])('refuses %s', (line, expected) => {
      const base = line.startsWith('keys:') ? '' : '    keys: [{ file: keys/cosign.pub }]\n';
      const { problems } = read(`policies:\n  - name: p\n    repositories: ["team/*"]\n${base}    ${line}\n`);
      expect(problems.join('\n')).toContain(expected);
    });

    it('takes predicateTypes for DSSE bundles; without the key a policy has none (cosign\'s signature type alone)', () => {
      const { config, problems } = read(
        'policies:\n  - name: p\n    repositories: ["team/*"]\n    keys: [{ file: keys/cosign.pub }]\n    predicateTypes: [https://sigstore.dev/cosign/sign/v1, https://slsa.dev/provenance/v1]\n  - name: q\n    repositories: ["x/*"]\n    keys: [{ file: keys/cosign.pub }]\n',
      );
      expect(problems).toEqual([]);
      expect(config!.policies[0]!.predicateTypes).toEqual(['https://sigstore.dev/cosign/sign/v1', 'https://slsa.dev/provenance/v1']);
      expect(config!.policies[1]!.predicateTypes).toBeUndefined();
    });

    it('refuses a glob on an upstream alias, naming the qualified form', () => {
      const { problems } = read(
        'upstreams:\n  - name: hub\n    url: https://registry-1.docker.io\npolicies:\n  - name: p\n    repositories: ["hub/myorg/*", "docker.io/ok/*"]\n    keys: [{ file: keys/cosign.pub }]\n',
      );
      expect(problems).toEqual(['policies[0].repositories[0]: names the alias of upstream "hub"; mirrored repositories are named by its namespace: "docker.io/myorg/*"']);
    });

    it('refuses two policies of one name, and a policy without keys or repositories', () => {
      const { problems } = read('policies:\n  - name: p\n    repositories: ["a/*"]\n    keys: [{ file: keys/cosign.pub }]\n  - name: p\n');
      expect(problems).toEqual([
        'policies[1].name: "p" names another policy too',
        'policies[1].repositories: is required: the repository globs the policy gates',
        'policies[1].keys: is required unless keyless is given: the public keys or keyless identities whose signatures satisfy the policy',
      ]);
    });

    const withCa = JSON.stringify({ ...JSON.parse(publicGood), certificateAuthorities: [{ certChain: { certificates: [] } }] });
    const readWith = (text: string, root: string) => {
      try {
        return { config: readConfig({ OUTPOST_CONFIG: text }, 'node', { readFile, publicGoodRoot: () => root }), problems: [] };
      } catch (err) {
        if (err instanceof ConfigError) return { config: undefined, problems: err.problems.map((p) => p.replace(/^OUTPOST_CONFIG: /, '')) };
        throw err;
      }
    };

    it('accepts keyless identities, alone or with keys, a subject exactly or by an anchored pattern', () => {
      const { config, problems } = readWith(
        'policies:\n  - name: keyless-only\n    repositories: ["team/*"]\n    keyless:\n' +
          '      - issuer: https://token.actions.githubusercontent.com\n        subject: https://github.com/myorg/app/.github/workflows/release.yml@refs/heads/main\n' +
          '      - issuer: https://accounts.google.com\n        subjectPattern: ".*@myorg\\\\.com"\n' +
          '  - name: both\n    repositories: ["other/*"]\n    keys: [{ file: keys/cosign.pub }]\n    keyless: [{ issuer: "https://i.test", subject: me }]\n    requireTransparencyLog: false\n',
        withCa,
      );
      expect(problems).toEqual([]);
      const [only, both] = config!.policies;
      expect(only!.keys).toEqual([]);
      expect(only!.keyless![0]).toEqual({ issuer: 'https://token.actions.githubusercontent.com', subject: 'https://github.com/myorg/app/.github/workflows/release.yml@refs/heads/main' });
      const pattern = only!.keyless![1]!.subjectPattern!;
      expect(pattern.test('dev@myorg.com')).toBe(true);
      expect(pattern.test('dev@myorg.com.evil.test')).toBe(false); // anchored at both ends
      expect(pattern.test('dev@myorgXcom')).toBe(false);
      expect(both!.keys).toHaveLength(1);
      expect(both!.keyless).toEqual([{ issuer: 'https://i.test', subject: 'me' }]);
      // Keyless needs the root's Fulcio CAs even when the transparency log is not required.
      expect(both!.trustedRoot).toBe(withCa);
    });

    it('takes a root without transparency logs (a private Fulcio and TSA) unless the policy requires the log', () => {
      files['roots/no-log.json'] = JSON.stringify({ tlogs: [], certificateAuthorities: [{ certChain: { certificates: [] } }], timestampAuthorities: [{ certChain: { certificates: [] } }] });
      const policyWith = (require: boolean) =>
        `policies:\n  - name: p\n    repositories: ["team/*"]\n    keyless: [{ issuer: "https://i.test", subject: me }]\n    trustedRoot: roots/no-log.json\n    requireTransparencyLog: ${require}\n`;
      const { config, problems } = read(policyWith(false));
      expect(problems).toEqual([]);
      expect(config!.policies[0]!.trustedRoot).toBe(files['roots/no-log.json']);
      expect(read(policyWith(true)).problems).toEqual([
        'policies[0].trustedRoot: lists no transparency log, and requireTransparencyLog is on: no signature could ever be proven logged',
      ]);
      expect(read(policyWith(false).replace('roots/no-log.json', 'keys/cosign.pub')).problems).toEqual(['policies[0].trustedRoot: the trusted root is not JSON']);
      // Without a log and without a TSA, a keyless signature could never have a signing time.
      files['roots/nothing.json'] = JSON.stringify({ tlogs: [], certificateAuthorities: [{ certChain: { certificates: [] } }], timestampAuthorities: [] });
      expect(read(policyWith(false).replace('roots/no-log.json', 'roots/nothing.json')).problems).toEqual([
        'policies[0].trustedRoot: lists neither a transparency log nor a timestamp authority: no keyless signature could be given a signing time',
      ]);
    });

    it('refuses keyless identities under a root without a certificate authority, and a policy with empty keys and keyless', () => {
      expect(read('policies:\n  - name: p\n    repositories: ["team/*"]\n    keyless: [{ issuer: "https://i.test", subject: me }]\n').problems).toEqual([
        'policies[0].trustedRoot: lists no Fulcio certificate authority: the keyless identities could never be met',
      ]);
      expect(read('policies:\n  - name: p\n    repositories: ["team/*"]\n    keys: []\n    keyless: []\n').problems).toEqual([
        'policies[0].keys: is required unless keyless is given: the public keys or keyless identities whose signatures satisfy the policy',
      ]);
    });
  });

  it('reports every problem at once, env and document together', () => {
    const found = problems(`${upstream('tagTtl: 5 minutes', 'maxStale: forever')}\nmirror:\n  fillLease: 1s\nauth:\n  tokenTtl: 1s`, { OUTPOST_PORT: 'http' });
    expect(found).toEqual([
      'OUTPOST_PORT must be an integer from 0 to 65535, got "http"',
      'upstreams[0].tagTtl: must be a duration like 30s, 5m, 24h, got "5 minutes"',
      'upstreams[0].maxStale: must be a duration like 30s, 5m, 24h, got "forever"',
      'mirror.fillLease: must be from 5s to 10m, got "1s"',
      'auth.tokenTtl: must be from 30s to 1d, got "1s"',
    ]);
  });

  it('never echoes more than 80 characters of a value', () => {
    const long = 'a'.repeat(10_000);
    const found = problems([upstream(`tagTtl: ${long}`, `namespace: ${long}`, 'content:', `  tags: "(${long}"`), `hosted: ["${long}"]`].join('\n'));
    expect(found).toHaveLength(4);
    for (const p of found) {
      expect(p).toMatch(/"\(?a{79,80}\.\.\."/);
      expect(p).not.toMatch(/a{81}/);
      expect(p.length).toBeLessThan(300);
    }
  });
});

describe('fill memory defaults by runtime', () => {
  it('a Node server holds 256 MiB of fill buffers, a Workers isolate 32 MiB', () => {
    const document = 'upstreams:\n  - name: hub\n    url: https://registry-1.docker.io\n';
    expect(readConfig({ OUTPOST_CONFIG: document }).mirror.fillMemoryBytes).toBe(256 * 1024 * 1024);
    const workers = readConfig({ OUTPOST_CONFIG: document, OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' }, 'workers');
    expect(workers.mirror.fillMemoryBytes).toBe(32 * 1024 * 1024);
  });
});

describe('secrets in the configuration document', () => {
  const withCredentials = upstream('username: robot', 'passwordEnv: HUB_TOKEN');

  it('resolves passwordEnv from the env readConfig is given (the process env on Node, vars and secrets on Workers)', () => {
    expect(readConfig({ OUTPOST_CONFIG: withCredentials, HUB_TOKEN: 'tok' }).mirror.upstreams[0]!.credentials).toEqual({ username: 'robot', password: 'tok' });
    const workers = readConfig(
      { OUTPOST_CONFIG: withCredentials, HUB_TOKEN: 'tok', OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' },
      'workers',
    );
    expect(workers.mirror.upstreams[0]!.credentials).toEqual({ username: 'robot', password: 'tok' });
  });

  it('names the variable that is missing, empty or not a string', () => {
    expect(problems(withCredentials)).toEqual(['upstreams[0].passwordEnv: the environment variable HUB_TOKEN is not set (it holds the password of "robot")']);
    expect(problems(withCredentials, { HUB_TOKEN: '' })).toEqual([
      'upstreams[0].passwordEnv: the environment variable HUB_TOKEN is not set (it holds the password of "robot")',
    ]);
    const cloud = { OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' };
    expect(problems(withCredentials, cloud, 'workers')).toEqual([
      'upstreams[0].passwordEnv: the var or secret HUB_TOKEN is not set (it holds the password of "robot")',
    ]);
    expect(problems(withCredentials, { ...cloud, HUB_TOKEN: {} }, 'workers')).toEqual(['upstreams[0].passwordEnv: the var or secret HUB_TOKEN is not a string']);
  });

  it('accepts an OUTPOST_-named secret the document names, and still refuses other unknown OUTPOST_ variables', () => {
    const document = upstream('username: robot', 'passwordEnv: OUTPOST_HUB_TOKEN');
    expect(readConfig({ OUTPOST_CONFIG: document, OUTPOST_HUB_TOKEN: 'tok' }).mirror.upstreams[0]!.credentials?.password).toBe('tok');
    expect(problems(document, { OUTPOST_HUB_TOKEN: 'tok', OUTPOST_OTHER: 'x' }).join('\n')).toMatch(/^OUTPOST_OTHER is not a known setting/);
  });

  it('never puts a password in an error', () => {
    const found = problems(upstream('username: robot', 'password: hunter2'), {}).join('\n');
    expect(found).not.toContain('hunter2');
  });
});

describe('where the document comes from', () => {
  const text = 'hosted: ["team/"]';

  it('reads the text the entry point passes (OUTPOST_CONFIG_FILE), naming its source in problems', () => {
    expect(readConfig({ OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' }, 'node', { configText: text, configSource: '/etc/outpost.yaml' }).mirror.hosted).toEqual(['team/']);
    expect(envProblems({ OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' }, 'node', { configText: 'hosted: team', configSource: '/etc/outpost.yaml' })).toEqual([
      '/etc/outpost.yaml: hosted: must be a list, got "team"',
    ]);
  });

  it('refuses both OUTPOST_CONFIG and OUTPOST_CONFIG_FILE', () => {
    const expected = ['OUTPOST_CONFIG and OUTPOST_CONFIG_FILE are both set; give the configuration document one way, not two'];
    expect(envProblems({ OUTPOST_CONFIG: text, OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' }, 'node', { configText: text })).toEqual(expected);
    expect(envProblems({ OUTPOST_CONFIG: text, OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' })).toEqual(expected);
  });

  it('refuses OUTPOST_CONFIG_FILE on Workers, and a file named but never read on Node', () => {
    const cloud = { OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' };
    expect(envProblems({ ...cloud, OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' }, 'workers')).toEqual([
      'OUTPOST_CONFIG_FILE does not apply on Workers; use the OUTPOST_CONFIG var',
    ]);
    expect(envProblems({ OUTPOST_CONFIG_FILE: '/etc/outpost.yaml' })).toEqual([
      'OUTPOST_CONFIG_FILE is set to "/etc/outpost.yaml" but this entry point did not read it',
    ]);
  });

  it('refuses an OUTPOST_CONFIG binding that is not text', () => {
    expect(envProblems({ OUTPOST_CONFIG: { upstreams: [] }, OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' }, 'workers')).toEqual([
      'OUTPOST_CONFIG must be a string holding the YAML or JSON document (in wrangler.toml: OUTPOST_CONFIG = """...""")',
    ]);
  });

  it('keeps the indentation of OUTPOST_CONFIG (it is not trimmed)', () => {
    expect(readConfig({ OUTPOST_CONFIG: '  hosted:\n    - team/\n' }).mirror.hosted).toEqual(['team/']);
  });
});

describe('reading OUTPOST_CONFIG_FILE on Node', () => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the file the variable names', () => {
    const path = join(dir, 'outpost.yaml');
    writeFileSync(path, EXAMPLE);
    const config = readNodeConfig({ OUTPOST_CONFIG_FILE: path, HUB_TOKEN: 'tok' });
    expect(config.mirror.upstreams[0]).toMatchObject({ name: 'hub', credentials: { username: 'robot', password: 'tok' } });
  });

  it('reports a missing, unreadable, oversized or non-UTF-8 file as one problem among the others', () => {
    const missing = join(dir, 'missing.yaml');
    expect(() => readNodeConfig({ OUTPOST_CONFIG_FILE: missing, OUTPOST_PORT: 'x' })).toThrow(ConfigError);
    try {
      readNodeConfig({ OUTPOST_CONFIG_FILE: missing, OUTPOST_PORT: 'x' });
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([
        'OUTPOST_PORT must be an integer from 0 to 65535, got "x"',
        `OUTPOST_CONFIG_FILE: cannot read "${missing}": no such file`,
      ]);
    }
    expect(readConfigFile(dir).configReadError).toBe(`OUTPOST_CONFIG_FILE: cannot read "${dir}": it is a directory`);
    const big = join(dir, 'big.yaml');
    writeFileSync(big, `# ${'x'.repeat(MAX_DOCUMENT_BYTES)}\n`);
    expect(readConfigFile(big).configReadError).toMatch(/larger than 1048576 bytes/);
    const binary = join(dir, 'binary.yaml');
    writeFileSync(binary, Buffer.from([0x68, 0x6f, 0xff, 0xfe]));
    expect(readConfigFile(binary).configReadError).toMatch(/it is not UTF-8 text$/);
  });
});

describe('parser limits', () => {
  it('refuses a document over 1 MiB', () => {
    expect(problems(`# ${'x'.repeat(MAX_DOCUMENT_BYTES)}`)).toEqual(['the document is larger than 1048576 bytes (1 MiB), the most Outpost reads']);
    // Counted in UTF-8 bytes, not characters.
    expect(problems(`# ${'é'.repeat(MAX_DOCUMENT_BYTES / 2)}`)).toHaveLength(1);
  });

  it('refuses duplicate keys, with line and column', () => {
    expect(problems('mirror:\n  fillLease: 30s\n  fillLease: 1m\n')).toEqual(['OUTPOST_CONFIG:3:3: Map keys must be unique']);
  });

  it('reports syntax errors with their position, never the whole line', () => {
    const found = problems(`upstreams: [\n  ${'y'.repeat(5000)}: [`);
    expect(found.length).toBeGreaterThan(0);
    for (const p of found) {
      expect(p).toMatch(/^OUTPOST_CONFIG:\d+:\d+: /);
      expect(p.length).toBeLessThan(300);
    }
  });

  it('refuses more than one document in the text', () => {
    expect(problems('hosted: []\n---\nhosted: []\n').join('\n')).toMatch(/^OUTPOST_CONFIG:\d+:\d+: Source contains multiple documents/);
  });

  it('refuses alias expansion past the limit ("billion laughs")', () => {
    const laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      laughs.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    expect(problems(laughs.join('\n'))).toEqual([
      `cannot be read: Excessive alias count indicates a resource exhaustion attack (at most ${MAX_ALIAS_COUNT} alias expansions)`,
    ]);
  });

  it('allows a few aliases to share content rules between upstreams', () => {
    const config = readConfig({
      OUTPOST_CONFIG: [
        'upstreams:',
        '  - name: a',
        '    url: https://a.example',
        '    content: &rules',
        '      allow: ["library/*"]',
        '  - name: b',
        '    url: https://b.example',
        '    content: *rules',
      ].join('\n'),
    });
    expect(config.mirror.upstreams.map((u) => u.content.allow.length)).toEqual([1, 1]);
  });

  it('refuses unknown tags rather than guessing what they mean', () => {
    expect(problems('hosted: !secret ["team/"]').join('\n')).toMatch(/^OUTPOST_CONFIG:1:9: Unresolved tag: !secret/);
  });

  it('reads yes and on as strings, not booleans (YAML 1.2)', () => {
    expect(problems(upstream('default: on'))).toEqual(['upstreams[0].default: must be true or false, got "on"']);
  });

  it('survives pathological nesting', () => {
    const found = problems(`hosted: ${'['.repeat(200_000)}`);
    expect(found.length).toBeGreaterThan(0);
  });
});

describe('the configuration modules are runtime-agnostic', () => {
  /** Every module src/entry/config.ts reaches through relative imports, with its bare imports. */
  function reach(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
    if (seen.has(file)) return seen;
    const text = readFileSync(file, 'utf8');
    const specs = [...text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+['"]([^'"]+)['"]/gms)].map((m) => m[1]!);
    seen.set(file, specs.filter((s) => !s.startsWith('.')));
    for (const spec of specs.filter((s) => s.startsWith('.'))) reach(resolve(dirname(file), spec.replace(/\.js$/, '.ts')), seen);
    return seen;
  }

  it('imports nothing but yaml from outside src/, and no node:* or cloudflare:* module', () => {
    const modules = reach(resolve(import.meta.dirname, '../../src/entry/config.ts'));
    expect([...modules.keys()].some((f) => f.endsWith('config/document.ts'))).toBe(true);
    for (const [file, bare] of modules) expect(bare, file).toEqual(bare.filter((s) => s === 'yaml'));
  });
});

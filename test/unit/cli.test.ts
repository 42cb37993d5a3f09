import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importPKCS8 } from 'jose';
import { parsePasswordHash, verifyPassword } from '../../src/core/auth/passwords.js';
import { runCli, usage } from '../../src/entry/cli.js';
import { cliNodeFlags } from '../support/node-flags.js';

/** runCli with captured output and an environment of its own. */
async function cli(argv: string[], env: Record<string, string> = {}) {
  let out = '';
  let err = '';
  const status = await runCli(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env });
  return { status, out, err };
}

const work = mkdtempSync(join(tmpdir(), 'outpost-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the outpost command', () => {
  it.each([['--help'], ['-h'], ['help']])('%s prints the usage on stdout and exits 0', async (flag) => {
    const r = await cli([flag]);
    expect(r).toEqual({ status: 0, out: usage(), err: '' });
    expect(r.out).toMatch(/^usage: outpost <command>/);
    expect(r.out).toMatch(/\n {2}serve /);
  });

  it('starts node with the same options as `outpost` and as `npm start`', () => {
    const flags = cliNodeFlags();
    expect(flags).toContain('--initial-old-space-size=128');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe(`exec node ${flags.join(' ')} dist/entry/cli.js serve`);
  });

  it('prints its version', async () => {
    expect((await cli(['--version'])).out).toMatch(/^outpost \d+\.\d+\.\d+\n$/);
  });

  it.each([
    [['frob'], 'outpost: unknown command "frob"'],
    [[], 'outpost: no command given'],
    [['--port=80'], 'outpost: unknown command "--port=80"'],
    [['serve', 'now'], 'outpost serve: takes no arguments'],
  ])('%j prints the usage on stderr and exits 2', async (argv, first) => {
    const r = await cli(argv);
    expect(r.status).toBe(2);
    expect(r.out).toBe('');
    expect(r.err.startsWith(first)).toBe(true);
    expect(r.err).toContain(usage());
  });

  it('serve: a configuration error is reported as the configuration check words it, exit 2', async () => {
    const r = await cli(['serve'], { OUTPOST_PORT: 'http' });
    expect(r.status).toBe(2);
    expect(r.err).toBe('outpost: invalid configuration:\n  - OUTPOST_PORT must be an integer from 0 to 65535, got "http"\n');
  });

  it('serve: a data directory below a regular file is one line, no stack, exit 2', async () => {
    const file = join(work, 'file');
    writeFileSync(file, '');
    const r = await cli(['serve'], { OUTPOST_DATA_DIR: join(file, 'data'), OUTPOST_PORT: '0' });
    expect(r.status).toBe(2);
    expect(r.err).toBe(`outpost: cannot use the data directory "${join(file, 'data')}" (OUTPOST_DATA_DIR): a part of the path is a file, not a directory (ENOTDIR)\n`);
  });

  it('serve: an index that is not a database is one line naming the file, exit 2', async () => {
    const data = join(work, 'bad-index');
    mkdirSync(data);
    writeFileSync(join(data, 'index.db'), 'this is not an SQLite database, not even close to one, no header at all'.repeat(20));
    const r = await cli(['serve'], { OUTPOST_DATA_DIR: data, OUTPOST_PORT: '0' });
    expect(r.status).toBe(2);
    expect(r.err).toBe(`outpost: cannot open the index "${join(data, 'index.db')}": file is not a database (SQLITE_NOTADB)\n`);
  });
});

describe('the credential commands', () => {
  /** runCli with a password typed on stdin. */
  async function typed(argv: string[], password: string) {
    let out = '';
    let err = '';
    const status = await runCli(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, readSecret: async () => password });
    return { status, out, err };
  }

  it('hash-password takes --iterations N and --iterations=N; the hash verifies and never holds the password', async () => {
    for (const argv of [['hash-password', '--iterations', '10000'], ['hash-password', '--iterations=10000']]) {
      const r = await typed(argv, 'pw-123');
      expect(r.status, r.err).toBe(0);
      const hash = parsePasswordHash(r.out.trim());
      expect(hash.iterations).toBe(10000);
      expect(await verifyPassword('pw-123', hash)).toBe(true);
      expect(r.out).not.toContain('pw-123');
    }
  });

  it.each([
    [['hash-password', '--iterations'], 'pw', '--iterations must be an integer'],
    [['hash-password', '--iterations=9'], 'pw', '--iterations must be an integer'],
    [['hash-password', '--rounds=10000'], 'pw', 'unknown argument "--rounds=10000"'],
    [['hash-password'], '', 'the password is empty'],
    [['hash-password'], 'a\0b', 'NUL'],
    [['token-key', '--alg', 'RS256'], '', '--alg must be ES256 or EdDSA'],
    [['token-key', '--alg'], '', '--alg must be ES256 or EdDSA'],
    [['token-key', '--size=2048'], '', 'unknown argument "--size=2048"'],
  ])('%j refuses with exit 2', async (argv, password, message) => {
    const r = await typed(argv, password);
    expect(r.status).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain(message);
  });

  it('token-key prints a PKCS#8 key of the asked algorithm (--alg EdDSA and --alg=ES256)', async () => {
    for (const [argv, alg] of [[['token-key', '--alg', 'EdDSA'], 'EdDSA'], [['token-key', '--alg=ES256'], 'ES256']] as const) {
      const r = await typed([...argv], '');
      expect(r.status, r.err).toBe(0);
      expect(r.out).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
      await expect(importPKCS8(r.out, alg)).resolves.toBeDefined();
    }
  });
});

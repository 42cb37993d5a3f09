import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, usage } from '../../src/entry/cli.js';

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

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_BLOB_BYTES } from '../../src/core/registry/context.js';
import { CONFIG_VARIABLES, ConfigError, readConfig } from '../../src/entry/config.js';

/** OUTPOST_MAX_BLOB_BYTES: the blob size cap (RegistryOptions.maxBlobBytes). */

function problems(env: Record<string, string>): string[] {
  try {
    readConfig(env, 'node');
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('OUTPOST_MAX_BLOB_BYTES', () => {
  it('defaults to 64 GiB, on Node and on Workers', () => {
    expect(readConfig({}).maxBlobBytes).toBe(DEFAULT_MAX_BLOB_BYTES);
    const workers = readConfig({ OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' }, 'workers');
    expect(workers.maxBlobBytes).toBe(64 * 1024 ** 3);
  });

  it('takes bytes from 4 MiB (the manifest cap: manifests are stored as blobs) to 5 TiB (S3 per object)', () => {
    expect(readConfig({ OUTPOST_MAX_BLOB_BYTES: '10737418240' }).maxBlobBytes).toBe(10 * 1024 ** 3);
    expect(readConfig({ OUTPOST_MAX_BLOB_BYTES: String(4 * 1024 ** 2) }).maxBlobBytes).toBe(4 * 1024 ** 2);
    expect(readConfig({ OUTPOST_MAX_BLOB_BYTES: String(5 * 1024 ** 4) }).maxBlobBytes).toBe(5 * 1024 ** 4);
    for (const bad of ['1000', String(5 * 1024 ** 4 + 1), '10GiB', '-1', '1e12']) {
      expect(problems({ OUTPOST_MAX_BLOB_BYTES: bad }), bad).toEqual([
        `OUTPOST_MAX_BLOB_BYTES must be an integer from 4194304 to 5497558138880, got "${bad}"`,
      ]);
    }
  });

  it('is documented in the README configuration reference', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    expect(CONFIG_VARIABLES.OUTPOST_MAX_BLOB_BYTES).toBeDefined();
    expect(readme).toMatch(/^\| `OUTPOST_MAX_BLOB_BYTES` \| `68719476736` \(64 GiB\) \|/m);
  });
});

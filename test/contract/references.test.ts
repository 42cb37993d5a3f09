import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { referencesContract } from './references.contract.js';

referencesContract('MemoryMetaIndex', (clock) => ({ index: new MemoryMetaIndex(clock) }));

referencesContract('SqliteMetaIndex', (clock) => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-refs-'));
  const index = new SqliteMetaIndex(join(dir, 'index.db'), clock);
  return {
    index,
    cleanup: () => {
      index.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

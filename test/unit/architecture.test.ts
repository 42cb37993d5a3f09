import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Dependencies point one way: entry -> http -> core -> ports <- adapters (STYLE.md).
 * This test reads every import in src/ and keeps it so.
 */
const SRC = join(import.meta.dirname, '..', '..', 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+['"]([^'"]+)['"]/gms)].map((m) => m[1]!);
}

/** Layer of a file or of a relative import target, by its top folder under src/. */
function layerOf(path: string): string {
  return relative(SRC, path).split(sep)[0]!;
}

const ALLOWED: Record<string, string[]> = {
  core: ['core', 'ports'],
  ports: ['ports'],
  adapters: ['adapters', 'ports'],
  http: ['http', 'core', 'ports'],
  entry: ['entry', 'http', 'core', 'ports', 'adapters'],
};

const all = files(SRC).map((file) => ({ file, layer: layerOf(file), imports: imports(file) }));

describe('architecture', () => {
  it('finds the source tree', () => {
    expect(all.length).toBeGreaterThan(20);
  });

  it.each(all.map((f) => [relative(SRC, f.file), f] as const))('%s imports only what its layer may', (_, f) => {
    for (const spec of f.imports) {
      if (spec.startsWith('.')) {
        const target = layerOf(join(f.file, '..', spec));
        expect(ALLOWED[f.layer], `${spec} from ${f.layer}`).toContain(target);
        continue;
      }
      if (f.layer === 'core' || f.layer === 'ports') {
        expect(spec, 'core and ports are runtime-agnostic').not.toMatch(/^(node:|hono|@aws-sdk|cloudflare:|better-sqlite3)/);
      }
      if (spec === 'hono' || spec.startsWith('hono/')) expect(['http', 'entry']).toContain(f.layer);
      if (/^(@aws-sdk|better-sqlite3)/.test(spec)) expect(f.layer).toBe('adapters');
    }
  });
});

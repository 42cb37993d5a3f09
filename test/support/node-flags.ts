import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The node options the `outpost` command starts with, as its first line gives them
 * (`#!/usr/bin/env -S node <options>`), so that every test and benchmark runs the server the
 * way an installed one runs.
 */
export function cliNodeFlags(): string[] {
  const source = resolve(fileURLToPath(import.meta.url), '../../../src/entry/cli.ts');
  const shebang = readFileSync(source, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\/usr\/bin\/env -S node((?: --?[\w-]+(?:=\S+)?)*)$/.exec(shebang);
  if (!m) throw new Error(`unexpected first line of ${source}: ${shebang}`);
  return m[1]!.trim().split(' ').filter(Boolean);
}

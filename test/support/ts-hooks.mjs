/**
 * Module hooks for register-ts.mjs: resolve `./x.js` to `./x.ts` when only the .ts exists, and
 * transpile .ts with the project's `typescript` (types stripped, no type check). Output is cached
 * under the OS temp dir by content hash, so only the first run pays for loading the compiler.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const tsVersion = require('typescript/package.json').version;
const cacheDir = join(tmpdir(), 'outpost-ts-hooks-cache');

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const fromTs = context.parentURL?.endsWith('.ts');
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !fromTs || !/^(\.{1,2}\/|\/|file:).*\.js$/.test(specifier)) throw err;
    return nextResolve(specifier.slice(0, -3) + '.ts', context);
  }
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
  return { format: 'module', source: await transpile(url), shortCircuit: true };
}

async function transpile(url) {
  const source = await readFile(new URL(url), 'utf8');
  const cached = join(cacheDir, createHash('sha256').update(`${tsVersion}\0${url}\0${source}`).digest('hex') + '.js');
  try {
    return await readFile(cached, 'utf8');
  } catch {
    // Not cached yet: compile below.
  }
  const { default: ts } = await import('typescript');
  const { outputText } = ts.transpileModule(source, {
    fileName: url,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true },
  });
  // Write then rename, so a concurrent process never reads a half-written cache entry.
  await mkdir(cacheDir, { recursive: true });
  const temp = `${cached}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await writeFile(temp, outputText);
  await rename(temp, cached);
  return outputText;
}

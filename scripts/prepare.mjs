// npm's "prepare" script: `npm install` and `npm ci` build dist/ once, so that `npm start` and
// `outpost serve` start at once. TypeScript is a dev dependency, so an install without them
// (`npm ci --omit=dev`) cannot build: it keeps a dist/ that is already there (built by an
// earlier `npm ci`, or copied in), and otherwise fails saying what to do.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let typescript = true;
try {
  require.resolve('typescript/package.json');
} catch {
  typescript = false;
}

if (typescript) {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const build = spawnSync(npm, ['run', 'build'], { stdio: 'inherit', shell: process.platform === 'win32' });
  process.exit(build.status ?? 1);
} else if (existsSync(new URL('../dist/entry/cli.js', import.meta.url))) {
  console.log('prepare: TypeScript is not installed (dev dependencies omitted); keeping the dist/ that is there');
} else {
  console.error('prepare: cannot build dist/: TypeScript is a dev dependency and was not installed (--omit=dev).');
  console.error('prepare: run `npm ci` (with dev dependencies) to build it, then `npm prune --omit=dev`.');
  process.exit(1);
}

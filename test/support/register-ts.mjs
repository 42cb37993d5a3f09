/**
 * `node --import ./test/support/register-ts.mjs file.ts` runs this project's TypeScript in a
 * plain Node 20 process (no tsx, no --experimental-strip-types): a module hook transpiles each
 * .ts file with the project's own `typescript` and maps the `.js` import suffixes back to `.ts`.
 * Test helpers use it to start real child processes over src/ (e.g. the SQLite multi-process race).
 */
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);

// Runs a bundled Worker in one workerd process through Miniflare (no wrangler dev proxy in
// front), so the benchmark measures the Worker and nothing else.
//   node bench/worker-host.mjs <bundle.js> <port> '<bindings as JSON>'
import { Miniflare } from 'miniflare';
import { dirname } from 'node:path';

const [bundle, port, bindings] = process.argv.slice(2);
const mf = new Miniflare({
  scriptPath: bundle,
  modules: true,
  modulesRoot: dirname(bundle),
  compatibilityDate: '2026-04-20',
  compatibilityFlags: ['nodejs_compat'],
  bindings: JSON.parse(bindings),
  host: '127.0.0.1',
  port: Number(port),
});
console.log(`worker ready on ${await mf.ready}`);
process.on('SIGTERM', () => void mf.dispose().then(() => process.exit(0)));

import { execFile } from 'node:child_process';

/**
 * Runs the real skopeo (installed by scripts/install-test-deps.sh). `--insecure-policy` keeps
 * the tests independent of the machine's /etc/containers/policy.json; plain HTTP to the
 * loopback registry is asked for per command with --tls-verify=false and friends.
 */

const SKOPEO_TIMEOUT_MS = 120_000;

/** skopeo's stdout as raw bytes (`inspect --raw` output is compared byte for byte). */
export function skopeoBytes(...args: string[]): Promise<Buffer> {
  const argv = ['--insecure-policy', ...args];
  return new Promise((resolveRun, reject) => {
    execFile('skopeo', argv, { timeout: SKOPEO_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024, encoding: 'buffer' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`skopeo ${argv.join(' ')} failed (${err.code ?? err.signal ?? err.message}):\n${stderr.toString()}`));
      else resolveRun(stdout);
    });
  });
}

export async function skopeo(...args: string[]): Promise<string> {
  return (await skopeoBytes(...args)).toString('utf8');
}

/** A skopeo run that must fail: its error text. */
export function skopeoRefused(...args: string[]): Promise<string> {
  return skopeo(...args).then(
    () => {
      throw new Error(`skopeo ${args.join(' ')} succeeded`);
    },
    (err: Error) => err.message,
  );
}

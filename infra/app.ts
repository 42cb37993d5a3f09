/**
 * The CDK app: `npx aws-cdk@2 synth|deploy` from infra/ (cdk.json runs this file through the
 * project's own TypeScript loader), or `npm run infra:synth` from the repository root, which
 * needs no CDK CLI and writes infra/cdk.out/<stack>.template.json.
 *
 * Settings are CDK context values: `-c keyPrefix=registry/` on either command line, or a
 * "context" entry in infra/cdk.json to keep them. Context rather than environment variables,
 * because the worker refuses unknown OUTPOST_* variables and a shell exported for one would
 * break the other.
 *   stackName (default Outpost), bucketName, tableName, workerUserName,
 *   keyPrefix (must equal the worker's OUTPOST_S3_PREFIX), uploadRetentionDays (default 7)
 * Account and region are the CLI's (CDK_DEFAULT_ACCOUNT / CDK_DEFAULT_REGION) when it sets them;
 * otherwise the template is environment-agnostic.
 */
import { fileURLToPath } from 'node:url';
import { App, DefaultStackSynthesizer } from 'aws-cdk-lib';
import { OutpostStack } from './outpost-stack.js';

const env = process.env;
const app = new App({
  // The CLI says where to write through CDK_OUTDIR; standalone, write beside this file.
  outdir: env.CDK_OUTDIR ?? fileURLToPath(new URL('./cdk.out', import.meta.url)),
  // The CLI passes -c values through CDK_CONTEXT_JSON itself; standalone, read them from argv.
  context: env.CDK_CONTEXT_JSON === undefined ? contextFromArgv(process.argv.slice(2)) : undefined,
});

const setting = (key: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(key);
  return value === undefined || value === null || String(value).trim() === '' ? undefined : String(value).trim();
};
const retention = setting('uploadRetentionDays');
if (retention !== undefined && !/^\d+$/.test(retention)) {
  throw new Error(`context uploadRetentionDays must be a whole number of days, got "${retention}"`);
}

new OutpostStack(app, setting('stackName') ?? 'Outpost', {
  description: 'Outpost OCI registry: blob bucket, metadata table, worker IAM user',
  env: env.CDK_DEFAULT_ACCOUNT && env.CDK_DEFAULT_REGION ? { account: env.CDK_DEFAULT_ACCOUNT, region: env.CDK_DEFAULT_REGION } : undefined,
  bucketName: setting('bucketName'),
  tableName: setting('tableName'),
  workerUserName: setting('workerUserName'),
  keyPrefix: setting('keyPrefix'),
  uploadRetentionDays: retention === undefined ? undefined : Number(retention),
  // The stack has no assets, so its template also deploys with plain CloudFormation
  // (`aws cloudformation deploy`), where the bootstrap-version check would have nothing to read.
  synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }),
});

const assembly = app.synth();
for (const stack of assembly.stacks) console.log(`${stack.stackName}: ${stack.templateFullPath}`);

/** `-c key=value` / `--context key=value`, as the CDK CLI spells them. */
function contextFromArgv(args: string[]): Record<string, string> {
  const context: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg !== '-c' && arg !== '--context') throw new Error(`unknown argument "${arg}"; use -c key=value`);
    const pair = args[++i] ?? '';
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`${arg} needs key=value, got "${pair}"`);
    context[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return context;
}

/**
 * Synthesizes infra/outpost-stack.ts in-process (no CDK CLI, no AWS account) and asserts the
 * template: the bucket's protections, the table's key design (src/adapters/dynamodb/schema.md)
 * and the worker's exact permissions. Each check is a function that throws, so the last block
 * can prove that the checks catch a broken stack (an added s3:*, a missing PITR, ...).
 */
import { App, RemovalPolicy } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { CfnTable } from 'aws-cdk-lib/aws-dynamodb';
import { PolicyStatement, User } from 'aws-cdk-lib/aws-iam';
import { CfnBucket } from 'aws-cdk-lib/aws-s3';
import { describe, expect, it } from 'vitest';
import { OutpostStack, type OutpostStackProps } from '../../infra/outpost-stack.js';

interface Synthesized {
  stack: OutpostStack;
  template: Template;
  /** Logical ids of the bucket, table and worker user. */
  ids: { bucket: string; table: string; user: string };
}

function synth(props: OutpostStackProps = {}, mutate?: (stack: OutpostStack) => void): Synthesized {
  const stack = new OutpostStack(new App(), 'Outpost', props);
  mutate?.(stack);
  const id = (c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as CfnBucket);
  return { stack, template: Template.fromStack(stack), ids: { bucket: id(stack.bucket), table: id(stack.table), user: id(stack.workerUser) } };
}

/** Renders the intrinsics CDK emits for ARNs into readable strings: `<id>.Arn/*`, `ref(<id>)`. */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  const v = value as Record<string, unknown>;
  if (Array.isArray(v['Fn::GetAtt'])) return (v['Fn::GetAtt'] as string[]).join('.');
  if (typeof v.Ref === 'string') return `ref(${v.Ref})`;
  if (Array.isArray(v['Fn::Join'])) {
    const [sep, parts] = v['Fn::Join'] as [string, unknown[]];
    return parts.map(render).join(sep);
  }
  throw new Error(`unexpected intrinsic ${JSON.stringify(value)}`);
}

const list = (x: unknown): unknown[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

interface Statement {
  source: string;
  effect: unknown;
  actions: string[];
  resources: string[];
  other: string[];
}

/** Every identity-policy statement in the template, wherever it is attached. */
function identityStatements(template: Template): Statement[] {
  const out: Statement[] = [];
  const add = (source: string, doc: unknown) => {
    for (const s of list((doc as { Statement?: unknown })?.Statement) as Record<string, unknown>[]) {
      out.push({
        source,
        effect: s.Effect,
        actions: list(s.Action).map(render),
        resources: list(s.Resource).map(render),
        other: Object.keys(s).filter((k) => !['Sid', 'Effect', 'Action', 'Resource'].includes(k)),
      });
    }
  };
  for (const type of ['AWS::IAM::Policy', 'AWS::IAM::ManagedPolicy']) {
    for (const [id, r] of Object.entries(template.findResources(type))) add(id, r.Properties?.PolicyDocument);
  }
  for (const type of ['AWS::IAM::User', 'AWS::IAM::Role', 'AWS::IAM::Group']) {
    for (const [id, r] of Object.entries(template.findResources(type))) {
      for (const p of list(r.Properties?.Policies) as { PolicyDocument: unknown }[]) add(id, p.PolicyDocument);
    }
  }
  return out;
}

/** resource -> sorted actions granted on it. */
function grants(statements: Statement[]): Record<string, string[]> {
  const byResource: Record<string, Set<string>> = {};
  for (const s of statements) for (const r of s.resources) for (const a of s.actions) (byResource[r] ??= new Set()).add(a);
  return Object.fromEntries(Object.entries(byResource).map(([r, a]) => [r, [...a].sort()]));
}

const OBJECT_ACTIONS = ['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:PutObject'];
const TABLE_ACTIONS = ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem'];

function expectWorkerPermissions({ template, ids }: Synthesized, keyPrefix = ''): void {
  const statements = identityStatements(template);
  for (const s of statements) {
    expect(s.effect, `${s.source}: only Allow statements`).toBe('Allow');
    expect(s.other, `${s.source}: no NotAction / NotResource / Condition / Principal`).toEqual([]);
    for (const a of s.actions) expect(a, `${s.source}: action without wildcard`).not.toMatch(/[*?]/);
    for (const r of s.resources) {
      expect(r, `${s.source}: resource is not "*"`).not.toBe('*');
      // The only wildcard allowed is the object suffix of the bucket's own ARN.
      if (r.includes('*')) expect(r, `${s.source}: wildcard resource`).toBe(`${ids.bucket}.Arn/${keyPrefix}*`);
    }
  }
  expect(grants(statements)).toEqual({
    [`${ids.bucket}.Arn/${keyPrefix}*`]: OBJECT_ACTIONS,
    // HeadObject / GetObject of a missing key answer 404 (a miss) only with s3:ListBucket.
    [`${ids.bucket}.Arn`]: ['s3:ListBucket'],
    [`${ids.table}.Arn`]: TABLE_ACTIONS,
  });
  // All of it belongs to the worker user and to no one else.
  const policies = Object.values(template.findResources('AWS::IAM::Policy'));
  expect(policies).toHaveLength(1);
  expect(policies[0]!.Properties.Users).toEqual([{ Ref: ids.user }]);
  expect(policies[0]!.Properties.Roles ?? policies[0]!.Properties.Groups).toBeUndefined();
}

function expectWorkerUser({ template, ids }: Synthesized): void {
  template.resourceCountIs('AWS::IAM::User', 1);
  // No password (no console access) and no access key: its secret would sit in the template.
  expect(template.findResources('AWS::IAM::User')[ids.user]!.Properties?.LoginProfile).toBeUndefined();
  template.resourceCountIs('AWS::IAM::AccessKey', 0);
  template.resourceCountIs('AWS::IAM::Role', 0);
}

function expectBucket({ template, ids }: Synthesized, keyPrefix = '', uploadDays = 7): void {
  template.resourceCountIs('AWS::S3::Bucket', 1);
  template.hasResourceProperties('AWS::S3::Bucket', {
    PublicAccessBlockConfiguration: Match.objectEquals({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    }),
    BucketEncryption: {
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: Match.stringLikeRegexp('^(AES256|aws:kms)$') } }],
    },
    OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
    VersioningConfiguration: Match.absent(),
    LifecycleConfiguration: Match.objectEquals({
      Rules: [
        { Id: 'abort-incomplete-multipart-uploads', Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
        { Id: 'expire-abandoned-upload-parts', Status: 'Enabled', Prefix: `${keyPrefix}uploads/`, ExpirationInDays: uploadDays },
      ],
    }),
  });
  const arn = { 'Fn::GetAtt': [ids.bucket, 'Arn'] };
  template.resourceCountIs('AWS::S3::BucketPolicy', 1);
  template.hasResourceProperties('AWS::S3::BucketPolicy', {
    Bucket: { Ref: ids.bucket },
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({
          Effect: 'Deny',
          Principal: { AWS: '*' },
          Action: 's3:*',
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          Resource: [arn, { 'Fn::Join': ['', [arn, '/*']] }],
        }),
      ]),
    },
  });
  // Nothing in the bucket policy grants anything: it only denies plain HTTP.
  const statements = Object.values(template.findResources('AWS::S3::BucketPolicy'))[0]!.Properties.PolicyDocument.Statement;
  for (const s of statements as { Effect: string }[]) expect(s.Effect).toBe('Deny');
}

function expectTable({ template, ids }: Synthesized): void {
  template.resourceCountIs('AWS::DynamoDB::Table', 1);
  const table = template.findResources('AWS::DynamoDB::Table')[ids.table]!;
  const p = table.Properties;
  expect(p.KeySchema).toEqual([
    { AttributeName: 'pk', KeyType: 'HASH' },
    { AttributeName: 'sk', KeyType: 'RANGE' },
  ]);
  expect(p.AttributeDefinitions).toEqual([
    { AttributeName: 'pk', AttributeType: 'S' },
    { AttributeName: 'sk', AttributeType: 'S' },
  ]);
  expect(p.BillingMode).toBe('PAY_PER_REQUEST');
  expect(p.ProvisionedThroughput).toBeUndefined();
  expect(p.TimeToLiveSpecification).toEqual({ AttributeName: 'ttl', Enabled: true });
  expect(p.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
  // Reads are strongly consistent, which a global secondary index cannot serve.
  expect(p.GlobalSecondaryIndexes).toBeUndefined();
  expect(p.LocalSecondaryIndexes).toBeUndefined();
}

function expectRetained({ template, ids }: Synthesized, policy = 'Retain'): void {
  const resources = template.toJSON().Resources as Record<string, { DeletionPolicy?: string; UpdateReplacePolicy?: string }>;
  for (const id of [ids.bucket, ids.table]) {
    expect(resources[id]!.DeletionPolicy, id).toBe(policy);
    expect(resources[id]!.UpdateReplacePolicy, id).toBe(policy);
  }
}

function expectOutputs({ template, ids }: Synthesized): void {
  expect(Object.keys(template.toJSON().Outputs).sort()).toEqual(['BucketName', 'Region', 'TableName', 'WorkerUserName']);
  template.hasOutput('BucketName', { Value: { Ref: ids.bucket } });
  template.hasOutput('TableName', { Value: { Ref: ids.table } });
  template.hasOutput('WorkerUserName', { Value: { Ref: ids.user } });
  template.hasOutput('Region', { Value: { Ref: 'AWS::Region' } });
}

describe('OutpostStack with default props', () => {
  const synthesized = synth();

  it('creates only the bucket, its policy, the table, the user and its policy', () => {
    const types = Object.values(synthesized.template.toJSON().Resources as Record<string, { Type: string }>).map((r) => r.Type);
    expect(types.sort()).toEqual(['AWS::DynamoDB::Table', 'AWS::IAM::Policy', 'AWS::IAM::User', 'AWS::S3::Bucket', 'AWS::S3::BucketPolicy']);
  });
  it('blocks public access, encrypts, enforces TLS and expires abandoned uploads', () => expectBucket(synthesized));
  it('has the table of schema.md: pk/sk strings, on demand, TTL on ttl, PITR', () => expectTable(synthesized));
  it('keeps bucket and table when the stack goes', () => expectRetained(synthesized));
  it('grants the worker exactly the calls the adapters make', () => expectWorkerPermissions(synthesized));
  it('creates the worker user without password or access key', () => expectWorkerUser(synthesized));
  it('outputs the names the wrangler vars need', () => expectOutputs(synthesized));
  it('leaves out actions nothing calls', () => {
    const actions = identityStatements(synthesized.template).flatMap((s) => s.actions);
    for (const unused of [
      's3:ListBucketMultipartUploads',
      's3:ListMultipartUploadParts',
      's3:DeleteBucket',
      's3:PutBucketPolicy',
      'dynamodb:Scan',
      'dynamodb:PutItem',
      'dynamodb:DeleteItem',
      'dynamodb:BatchWriteItem',
      'dynamodb:DeleteTable',
      'kms:Decrypt',
    ]) {
      expect(actions).not.toContain(unused);
    }
  });
});

describe('OutpostStack props', () => {
  it('passes physical names through', () => {
    const s = synth({ bucketName: 'acme-outpost-blobs', tableName: 'acme-outpost-index', workerUserName: 'acme-outpost-worker' });
    s.template.hasResourceProperties('AWS::S3::Bucket', { BucketName: 'acme-outpost-blobs' });
    s.template.hasResourceProperties('AWS::DynamoDB::Table', { TableName: 'acme-outpost-index' });
    s.template.hasResourceProperties('AWS::IAM::User', { UserName: 'acme-outpost-worker' });
    expectWorkerPermissions(s);
  });

  it('generates names when none are given', () => {
    const { template } = synth();
    template.hasResourceProperties('AWS::S3::Bucket', { BucketName: Match.absent() });
    template.hasResourceProperties('AWS::DynamoDB::Table', { TableName: Match.absent() });
  });

  it('scopes object permissions and the uploads/ expiry to the key prefix', () => {
    const s = synth({ keyPrefix: 'registry/', uploadRetentionDays: 3 });
    expectBucket(s, 'registry/', 3);
    expectWorkerPermissions(s, 'registry/');
  });

  it('can destroy bucket and table with the stack', () => {
    expectRetained(synth({ removalPolicy: RemovalPolicy.DESTROY }), 'Delete');
  });

  it.each([
    [{ keyPrefix: '*' }, /keyPrefix/],
    [{ keyPrefix: 'a/?/' }, /keyPrefix/],
    [{ keyPrefix: '/abs/' }, /keyPrefix/],
    [{ uploadRetentionDays: 0 }, /uploadRetentionDays/],
    [{ uploadRetentionDays: 1.5 }, /uploadRetentionDays/],
  ] as [OutpostStackProps, RegExp][])('refuses %o', (props, message) => {
    expect(() => synth(props)).toThrow(message);
  });
});

describe('the checks catch a broken stack', () => {
  it('an added s3:* on the objects', () => {
    const s = synth({}, (stack) => stack.workerPolicy.addStatements(new PolicyStatement({ actions: ['s3:*'], resources: [stack.bucket.arnForObjects('*')] })));
    expect(() => expectWorkerPermissions(s)).toThrow(/wildcard/);
  });

  it('an extra action on the table', () => {
    const s = synth({}, (stack) => stack.workerPolicy.addStatements(new PolicyStatement({ actions: ['dynamodb:Scan'], resources: [stack.table.tableArn] })));
    expect(() => expectWorkerPermissions(s)).toThrow();
  });

  it('a grant on every resource', () => {
    const s = synth({}, (stack) => stack.workerPolicy.addStatements(new PolicyStatement({ actions: ['dynamodb:GetItem'], resources: ['*'] })));
    expect(() => expectWorkerPermissions(s)).toThrow(/resource is not "\*"/);
  });

  it('a grant helper that widens the actions (bucket.grantReadWrite)', () => {
    const s = synth({}, (stack) => stack.bucket.grantReadWrite(stack.workerUser));
    expect(() => expectWorkerPermissions(s)).toThrow();
  });

  it('a second identity with permissions', () => {
    const s = synth({}, (stack) => stack.table.grantReadData(new User(stack, 'Other')));
    expect(() => expectWorkerPermissions(s)).toThrow();
  });

  it('a missing point-in-time recovery', () => {
    const s = synth({}, (stack) => {
      (stack.table.node.defaultChild as CfnTable).pointInTimeRecoverySpecification = undefined;
    });
    expect(() => expectTable(s)).toThrow();
  });

  it('a missing TTL attribute', () => {
    const s = synth({}, (stack) => {
      (stack.table.node.defaultChild as CfnTable).timeToLiveSpecification = undefined;
    });
    expect(() => expectTable(s)).toThrow();
  });

  it('a public bucket, versioning, or no lifecycle rules', () => {
    const broken: ((b: CfnBucket) => void)[] = [
      (b) => (b.publicAccessBlockConfiguration = { blockPublicAcls: true, blockPublicPolicy: false, ignorePublicAcls: true, restrictPublicBuckets: true }),
      (b) => (b.versioningConfiguration = { status: 'Enabled' }),
      (b) => (b.lifecycleConfiguration = undefined),
    ];
    for (const breakIt of broken) {
      const s = synth({}, (stack) => breakIt(stack.bucket.node.defaultChild as CfnBucket));
      expect(() => expectBucket(s)).toThrow();
    }
  });
});

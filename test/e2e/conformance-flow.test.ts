import { conformanceFlow } from './suites/conformance-flow.js';
import { TARGETS } from './support/targets.js';

/**
 * The OCI conformance suite's request flow (test/e2e/suites/conformance-flow.ts) against every
 * way Outpost runs: Node on the local store, Node on S3 + DynamoDB, and workerd (wrangler dev)
 * on S3 + DynamoDB.
 */
for (const target of TARGETS) conformanceFlow(target);

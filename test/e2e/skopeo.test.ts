import { skopeoRoundTrip } from './suites/skopeo.js';
import { TARGETS } from './support/targets.js';

/**
 * skopeo's push, inspect, pull, copy and delete round trip (test/e2e/suites/skopeo.ts) against
 * every way Outpost runs: Node on the local store, Node on S3 + DynamoDB, and workerd (wrangler
 * dev) on S3 + DynamoDB.
 */
for (const target of TARGETS) skopeoRoundTrip(target);

// Sign a blob the way sigstore-js 4.x does from a signing config (`bundleBuilderFromSigningConfig`
// of @sigstore/sign): the CA, the Rekor log (v1 or v2, by majorApiVersion) and the TSA come from
// the config, as they do for a client that follows a TUF repository. The OIDC token comes from
// SIGSTORE_ID_TOKEN.
//
//   node sign-config.mjs [--attest] --signing-config signing_config.v0.2.json --out BUNDLE FILE
//
// --attest makes a DSSE bundle of FILE (an in-toto statement), as `attest` does.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bundleToJSON } from '@sigstore/bundle';
import { SigningConfig } from '@sigstore/protobuf-specs';
import { bundleBuilderFromSigningConfig } from '@sigstore/sign';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'signing-config': { type: 'string' },
    out: { type: 'string' },
    attest: { type: 'boolean', default: false },
  },
});
const [file] = positionals;
const token = process.env.SIGSTORE_ID_TOKEN;
if (!file || !values.out || !values['signing-config'] || !token) {
  console.error('usage: SIGSTORE_ID_TOKEN=... node sign-config.mjs --signing-config FILE '
    + '--out BUNDLE FILE');
  process.exit(2);
}

const signingConfig = SigningConfig.fromJSON(
  JSON.parse(readFileSync(values['signing-config'], 'utf8')),
);
const builder = bundleBuilderFromSigningConfig({
  signingConfig,
  identityProvider: { getToken: async () => token },
  bundleType: values.attest ? 'dsseEnvelope' : 'messageSignature',
  // One attempt; Rekor v2 clients should wait at least 20 s (CLIENTS.md of rekor-tiles).
  fetchOptions: { retry: 0, timeout: 20000 },
});
try {
  const artifact = { data: readFileSync(file) };
  if (values.attest) artifact.type = 'application/vnd.in-toto+json';
  const bundle = await builder.create(artifact);
  writeFileSync(values.out, JSON.stringify(bundleToJSON(bundle), null, 2) + '\n');
} catch (err) {
  console.error(`sign failed: ${err.code ?? err.name}: ${err.message}`);
  if (err.cause) console.error(`cause: ${err.cause.message ?? err.cause}`);
  process.exit(1);
}

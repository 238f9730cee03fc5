// Verify a bundle with sigstore-js, for a policy on the certificate's email SAN and OIDC issuer.
//
// Trust from a trusted_root.json file, through @sigstore/verify directly:
//   node verify.mjs --trusted-root FILE --bundle B --identity EMAIL --issuer URL [--data FILE]
// Trust through a TUF repository, with the library's own `sigstore.verify`:
//   node verify.mjs --tuf-mirror-url URL --tuf-root-path root.json --tuf-cache-path DIR
//                   --bundle B --identity EMAIL --issuer URL [--data FILE]
// `--data` is the signed artifact (message-signature bundles); DSSE bundles carry their payload.
// Prints "OK <mode>" and exits 0, or prints the error and exits 1.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bundleFromJSON } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';
import { verify } from 'sigstore';

const { values } = parseArgs({
  options: {
    'trusted-root': { type: 'string' },
    'tuf-mirror-url': { type: 'string' },
    'tuf-root-path': { type: 'string' },
    'tuf-cache-path': { type: 'string' },
    bundle: { type: 'string' },
    data: { type: 'string' },
    identity: { type: 'string' },
    issuer: { type: 'string' },
    'tlog-threshold': { type: 'string', default: '1' },
    'ctlog-threshold': { type: 'string', default: '1' },
  },
});
const viaTUF = values['tuf-mirror-url'] !== undefined;
if (!values.bundle || !values.identity || !values.issuer || viaTUF === !!values['trusted-root']) {
  console.error('usage: node verify.mjs (--trusted-root FILE | --tuf-mirror-url URL '
    + '--tuf-root-path FILE --tuf-cache-path DIR) --bundle B --identity EMAIL --issuer URL '
    + '[--data FILE]');
  process.exit(2);
}

const bundleJSON = JSON.parse(readFileSync(values.bundle, 'utf8'));
const data = values.data === undefined ? undefined : readFileSync(values.data);
const tlogThreshold = Number(values['tlog-threshold']);
const ctlogThreshold = Number(values['ctlog-threshold']);

try {
  let signer;
  if (viaTUF) {
    const options = {
      tufMirrorURL: values['tuf-mirror-url'],
      tufRootPath: values['tuf-root-path'],
      tufCachePath: values['tuf-cache-path'],
      certificateIssuer: values.issuer,
      certificateIdentityEmail: values.identity,
      tlogThreshold,
      ctLogThreshold: ctlogThreshold,
      retry: 0,
    };
    signer = data === undefined
      ? await verify(bundleJSON, options)
      : await verify(bundleJSON, data, options);
  } else {
    const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(values['trusted-root'], 'utf8')));
    const verifier = new Verifier(toTrustMaterial(root), { ctlogThreshold, tlogThreshold });
    const entity = toSignedEntity(bundleFromJSON(bundleJSON), data);
    signer = verifier.verify(entity, {
      subjectAlternativeName: values.identity,
      extensions: { issuer: values.issuer },
    });
  }
  console.log(`OK ${viaTUF ? 'tuf' : 'trusted-root'} ${signer.identity?.subjectAlternativeName}`);
} catch (err) {
  console.error(`verification failed: ${err.code ?? err.name}: ${err.message}`);
  process.exit(1);
}

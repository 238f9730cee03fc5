// Sign a blob (hashedrekord) or attest a payload (DSSE) with the `sigstore` library, against
// explicit Fulcio, Rekor and TSA base URLs; the OIDC token comes from SIGSTORE_ID_TOKEN.
//
//   node sign.mjs sign   --fulcio URL --rekor URL --tsa URL --out BUNDLE FILE
//   node sign.mjs attest --fulcio URL --rekor URL --tsa URL --out BUNDLE
//                        [--payload-type application/vnd.in-toto+json] FILE
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { attest, sign } from 'sigstore';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    fulcio: { type: 'string' },
    rekor: { type: 'string' },
    tsa: { type: 'string' },
    out: { type: 'string' },
    'payload-type': { type: 'string', default: 'application/vnd.in-toto+json' },
  },
});
const [mode, file] = positionals;
const token = process.env.SIGSTORE_ID_TOKEN;
if (!['sign', 'attest'].includes(mode) || !file || !values.out || !token) {
  console.error('usage: SIGSTORE_ID_TOKEN=... node sign.mjs sign|attest --fulcio URL --rekor URL '
    + '--tsa URL --out BUNDLE FILE');
  process.exit(2);
}

const options = {
  fulcioURL: values.fulcio,
  rekorURL: values.rekor,
  tsaServerURL: values.tsa,
  identityToken: token,
  // One attempt: a failure should surface at once with the server's message, not after retries.
  retry: 0,
  timeout: 20000,
};
const payload = readFileSync(file);
try {
  const bundle = mode === 'sign'
    ? await sign(payload, options)
    : await attest(payload, values['payload-type'], options);
  writeFileSync(values.out, JSON.stringify(bundle, null, 2) + '\n');
} catch (err) {
  console.error(`${mode} failed: ${err.code ?? err.name}: ${err.message}`);
  if (err.cause) console.error(`cause: ${err.cause.message ?? err.cause}`);
  process.exit(1);
}

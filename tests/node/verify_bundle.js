// Independent cross-check of our test Sigstore instance with npm's @sigstore/verify.
// usage: node verify_bundle.js TRUSTED_ROOT.json BUNDLE.json IDENTITY ISSUER [ARTIFACT|-] [TSA_THRESHOLD]
// TSA_THRESHOLD 1: the bundle must carry a signed timestamp our TSA issued (Rekor v2 bundles).
// Prints "verified" and exits 0, or prints the error and exits 1.
"use strict";
const fs = require("fs");
const { Verifier, toSignedEntity, toTrustMaterial } = require("@sigstore/verify");
const { bundleFromJSON } = require("@sigstore/bundle");
const { TrustedRoot } = require("@sigstore/protobuf-specs");

const [rootPath, bundlePath, identity, issuer, artifactPath, tsaThreshold] = process.argv.slice(2);
try {
  const trustMaterial = toTrustMaterial(TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(rootPath, "utf8"))));
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
  const artifact = artifactPath && artifactPath !== "-" ? fs.readFileSync(artifactPath) : undefined;
  const verifier = new Verifier(trustMaterial, { tlogThreshold: 1, ctlogThreshold: 1, tsaThreshold: Number(tsaThreshold || 0) });
  verifier.verify(toSignedEntity(bundle, artifact), { subjectAlternativeName: identity, extensions: { issuer } });
  console.log("verified");
} catch (error) {
  console.log(`${error.name}: ${error.message}`);
  process.exit(1);
}

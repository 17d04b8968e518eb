// Verifies one gateway envelope with an independent JOSE implementation (npm `jose`).
// stdin: {"jwks": {"keys": [...]}, "envelope": {"protected", "payload", "signature"}}
// stdout: {"ok": true, "kid": "...", "body": {...}} or {"ok": false, "error": "..."}; exit 0/1.
// The key is chosen by the protected header's kid from the JWKS, as a platform would do.
import { createLocalJWKSet, flattenedVerify } from "jose";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { jwks, envelope } = JSON.parse(Buffer.concat(chunks).toString("utf8"));

try {
  const { payload, protectedHeader } = await flattenedVerify(envelope, createLocalJWKSet(jwks), {
    algorithms: ["EdDSA", "Ed25519"],
  });
  if (protectedHeader.typ !== "edge-envelope+json") throw new Error(`typ ${protectedHeader.typ}`);
  const body = JSON.parse(new TextDecoder().decode(payload));
  process.stdout.write(JSON.stringify({ ok: true, kid: protectedHeader.kid, body }) + "\n");
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: `${err.code ?? ""} ${err.message}` }) + "\n");
  process.exitCode = 1;
}

// A platform in Node.js, with nothing of the gateway's code: npm `jose` and `mqtt` only.
//
//   node platform.mjs watch BROKER TOPIC_FILTER COUNT
//     Subscribes to a `json` destination: every payload is plain JSON (JSON.parse), and its
//     detached JWS (MQTT 5 user property `jws`, RFC 7515 Appendix F `protected..signature`)
//     verifies with the JWKS from the retained `.../keys` topic. Prints
//     {"verified": n, "failed": [...], "sample": <one body>} after COUNT data messages.
//
//   node platform.mjs query BROKER GATEWAY PRIVATE_JWK_FILE METHOD [PARAMS_JSON]
//     Signs a request (flattened JWS, typ edge-request+json) with the platform's private JWK,
//     publishes it on GATEWAY/query with an MQTT 5 Response Topic, verifies the signed reply
//     with the gateway's JWKS and prints the reply record.
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { createLocalJWKSet, FlattenedSign, flattenedVerify, importJWK } from "jose";
import mqtt from "mqtt";

const [command, broker, ...rest] = process.argv.slice(2);
const client = mqtt.connect(broker, { protocolVersion: 5, clean: true });
const jwks = { keys: [] };
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

// JCS (RFC 8785) for the request body; enough for strings, numbers, booleans, null, objects
function canonical(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
}

function learnKeys(payload) {
  for (const jwk of JSON.parse(payload.toString("utf8")).keys ?? []) {
    if (!jwks.keys.some((k) => k.kid === jwk.kid)) jwks.keys.push(jwk);
  }
}

async function verifyDetached(payload, detached) {
  const [protectedHeader, empty, signature] = detached.split(".");
  if (empty !== "") throw new Error("not a detached JWS");
  const { payload: verified } = await flattenedVerify(
    { protected: protectedHeader, payload: b64url(payload), signature },
    createLocalJWKSet(jwks),
    { algorithms: ["EdDSA", "Ed25519"] },
  );
  return JSON.parse(new TextDecoder().decode(verified));
}

async function watch(filter, count) {
  const held = [];
  const failed = [];
  let verified = 0;
  let sample = null;
  let done = false;
  const check = async ({ topic, payload, packet }) => {
    if (done) return;
    const detached = packet.properties?.userProperties?.jws;
    let body = null;
    let problem = null;
    try {
      body = await verifyDetached(payload, detached);
      if (body.topic !== topic) throw new Error(`signed for ${body.topic}`);
      if (JSON.stringify(JSON.parse(payload.toString("utf8"))) !== JSON.stringify(body)) {
        throw new Error("payload differs from the signed body");
      }
    } catch (err) {
      problem = `${topic}: ${err.message}`;
    }
    if (done) return; // checks run concurrently: count exactly COUNT of them
    if (problem === null) {
      verified += 1;
      sample = sample ?? body;
    } else {
      failed.push(problem);
    }
    if (verified + failed.length >= count) {
      done = true;
      out({ verified, failed, sample });
      client.end();
    }
  };
  client.on("message", async (topic, payload, packet) => {
    if (topic.endsWith("/keys")) {
      learnKeys(payload);
      for (const msg of held.splice(0)) await check(msg);
    } else if (packet.properties?.userProperties?.jws) {
      if (jwks.keys.length === 0) held.push({ topic, payload, packet });
      else await check({ topic, payload, packet });
    }
  });
  client.subscribe(filter, { qos: 1 });
}

async function query(gateway, keyFile, method, params) {
  const jwk = JSON.parse(readFileSync(keyFile, "utf8"));
  const key = await importJWK({ ...jwk, alg: "EdDSA" }, "EdDSA");
  const replyTopic = `platform/replies/${randomBytes(8).toString("hex")}`;
  const body = {
    method,
    params,
    id: randomBytes(8).toString("hex"),
    ts: new Date().toISOString(),
    nonce: randomBytes(16).toString("base64url"),
  };
  const jws = await new FlattenedSign(new TextEncoder().encode(canonical(body)))
    .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid, typ: "edge-request+json" })
    .sign(key);
  let reply = null;
  const finish = async () => {
    if (reply === null || jwks.keys.length === 0) return;
    const { payload } = await flattenedVerify(JSON.parse(reply), createLocalJWKSet(jwks), {
      algorithms: ["EdDSA", "Ed25519"],
    });
    const signed = JSON.parse(new TextDecoder().decode(payload));
    if (signed.topic !== replyTopic || signed.records[0].id !== body.id) {
      throw new Error("reply is not for this request");
    }
    out(signed.records[0]);
    client.end();
  };
  client.on("message", async (topic, payload) => {
    if (topic.endsWith("/keys")) learnKeys(payload);
    else if (topic === replyTopic) reply = payload.toString("utf8");
    await finish();
  });
  await client.subscribeAsync([`${gateway}/keys`, replyTopic], { qos: 1 });
  await client.publishAsync(`${gateway}/query`, JSON.stringify(jws), {
    qos: 1,
    properties: { responseTopic: replyTopic, correlationData: Buffer.from(body.id) },
  });
}

const timer = setTimeout(() => {
  out({ error: "timed out" });
  process.exit(1);
}, 30_000);
timer.unref();
client.on("error", (err) => {
  out({ error: err.message });
  process.exit(1);
});
client.on("connect", () => {
  const run = command === "watch"
    ? watch(rest[0], Number(rest[1]))
    : query(rest[0], rest[1], rest[2], JSON.parse(rest[3] ?? "{}"));
  run.catch((err) => {
    out({ error: err.message });
    process.exit(1);
  });
});

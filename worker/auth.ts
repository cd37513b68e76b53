import { PoolError } from "../src/errors.ts";

/** Client tokens carry this prefix, then a base64url payload and signature (HTTP token characters only). */
const TOKEN_PREFIX = "ep1";
/** Longest client token lifetime the admin API issues. */
export const MAX_TOKEN_TTL_SECONDS = 30 * 24 * 3600;

const encoder = new TextEncoder();

/** Compares two secrets in time that does not depend on where they differ. */
export async function sameSecret(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([digest(a), digest(b)]);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0;
}

/** The bearer token of a request, from `Authorization: Bearer` or, for WebSockets, the `bearer.<token>` subprotocol. */
export function bearerToken(request: Request): string | undefined {
  const header = request.headers.get("Authorization");
  if (header) return /^Bearer\s+(\S+)$/i.exec(header)?.[1];
  const protocols = request.headers.get("Sec-WebSocket-Protocol")?.split(",").map((p) => p.trim()) ?? [];
  return protocols.find((p) => p.startsWith("bearer."))?.slice("bearer.".length);
}

/** Signs a client token scoped to one tenant, valid until `expiresAt` (seconds since the epoch). */
export async function mintToken(secret: string, tenant: string, expiresAt: number): Promise<string> {
  const payload = base64url(encoder.encode(JSON.stringify({ t: tenant, e: expiresAt })));
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", await key(secret), encoder.encode(`${TOKEN_PREFIX}.${payload}`)));
  return `${TOKEN_PREFIX}.${payload}.${base64url(signature)}`;
}

/**
 * Checks a client token for `tenant`: its signature (constant-time), its expiry
 * and its tenant. Every refusal is `UNAUTHORIZED`; the token itself is never echoed.
 */
export async function verifyToken(secret: string, token: string | undefined, tenant: string, nowSeconds: number): Promise<void> {
  const refuse = (why: string) => new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": ${why}`);
  if (!token) throw refuse("no token (send Authorization: Bearer <token>)");
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) throw refuse("malformed token");
  let claims: { t?: unknown; e?: unknown };
  let signature: Uint8Array;
  try {
    signature = fromBase64url(parts[2]!);
    claims = JSON.parse(new TextDecoder().decode(fromBase64url(parts[1]!)));
  } catch {
    throw refuse("malformed token");
  }
  const valid = await crypto.subtle.verify("HMAC", await key(secret), signature, encoder.encode(`${parts[0]}.${parts[1]}`));
  if (!valid) throw refuse("token signature does not match");
  if (typeof claims.e !== "number" || claims.e <= nowSeconds) throw refuse("token expired");
  if (claims.t !== tenant) throw refuse("token is for another tenant");
}

async function digest(value: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(value)));
}

async function key(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(`edgepool-client-tokens:${secret}`), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** The key client tokens are signed with: `EDGEPOOL_TOKEN_SECRET`, else the admin token. */
export function tokenSecret(env: { EDGEPOOL_TOKEN_SECRET?: string; EDGEPOOL_ADMIN_TOKEN?: string }, tenant: string): string {
  const secret = env.EDGEPOOL_TOKEN_SECRET ?? env.EDGEPOOL_ADMIN_TOKEN;
  if (typeof secret !== "string" || secret === "") {
    throw new PoolError("UNAUTHORIZED", tenant, "remote access is off: set the EDGEPOOL_ADMIN_TOKEN secret");
  }
  return secret;
}

/** Checks a client token for `tenant` now, against the Worker's token secret (`tokenSecret`). */
export function checkClientToken(env: { EDGEPOOL_TOKEN_SECRET?: string; EDGEPOOL_ADMIN_TOKEN?: string }, tenant: string, token: string | undefined): Promise<void> {
  return verifyToken(tokenSecret(env, tenant), token, tenant, Math.floor(Date.now() / 1000));
}

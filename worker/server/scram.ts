/**
 * The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel
 * binding, on WebCrypto: runs in workerd and Node alike.
 */

const encoder = new TextEncoder();
const GS2_HEADER = "n,,";

/** One SCRAM exchange: client-first, then client-final from the server's first message, then the server's proof checked. */
export class ScramSha256 {
  static readonly mechanism = "SCRAM-SHA-256";
  /** The message the client starts with (SASLInitialResponse data). */
  readonly clientFirstMessage: string;
  private readonly clientFirstBare: string;
  private readonly nonce: string;
  private readonly password: string;
  private expectedServerSignature: string | undefined;

  /**
   * `nonce` is random unless given (tests); `user` is empty as libpq sends it:
   * Postgres takes the user from the StartupMessage, not from here.
   */
  constructor(password: string, options: { nonce?: string; user?: string } = {}) {
    this.password = saslPrep(password);
    this.nonce = options.nonce ?? randomNonce();
    this.clientFirstBare = `n=${(options.user ?? "").replaceAll("=", "=3D").replaceAll(",", "=2C")},r=${this.nonce}`;
    this.clientFirstMessage = GS2_HEADER + this.clientFirstBare;
  }

  /** The client-final message (with the proof) answering the server-first message. */
  async clientFinalMessage(serverFirstMessage: string): Promise<string> {
    const attrs = attributes(serverFirstMessage);
    const serverNonce = attrs.get("r");
    const salt = attrs.get("s");
    const iterations = Number(attrs.get("i"));
    if (!serverNonce || !serverNonce.startsWith(this.nonce) || serverNonce.length === this.nonce.length) {
      throw new Error("SCRAM: the server's nonce does not extend the client's");
    }
    if (!salt || !Number.isInteger(iterations) || iterations < 1) throw new Error("SCRAM: the server's first message lacks a salt or iteration count");
    const withoutProof = `c=${btoa(GS2_HEADER)},r=${serverNonce}`;
    const authMessage = encoder.encode(`${this.clientFirstBare},${serverFirstMessage},${withoutProof}`);
    const salted = await pbkdf2(encoder.encode(this.password), base64Bytes(salt), iterations);
    const clientKey = await hmac(salted, encoder.encode("Client Key"));
    const storedKey = new Uint8Array(await crypto.subtle.digest("SHA-256", clientKey));
    const clientSignature = await hmac(storedKey, authMessage);
    const proof = clientKey.map((byte, i) => byte ^ clientSignature[i]!);
    const serverKey = await hmac(salted, encoder.encode("Server Key"));
    this.expectedServerSignature = bytesBase64(await hmac(serverKey, authMessage));
    return `${withoutProof},p=${bytesBase64(proof)}`;
  }

  /** Throws unless the server-final message proves the server knows the password too. */
  verifyServerFinal(serverFinalMessage: string): void {
    const attrs = attributes(serverFinalMessage);
    const error = attrs.get("e");
    if (error) throw new Error(`SCRAM: the server rejected the exchange (${error})`);
    if (this.expectedServerSignature === undefined) throw new Error("SCRAM: server-final message before client-final");
    if (attrs.get("v") !== this.expectedServerSignature) throw new Error("SCRAM: the server's signature does not match");
  }
}

function attributes(message: string): Map<string, string> {
  const attrs = new Map<string, string>();
  for (const part of message.split(",")) {
    const eq = part.indexOf("=");
    if (eq === 1) attrs.set(part[0]!, part.slice(2));
  }
  return attrs;
}

async function pbkdf2(password: Uint8Array, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, 256));
}

async function hmac(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

function randomNonce(): string {
  return bytesBase64(crypto.getRandomValues(new Uint8Array(18)));
}

function bytesBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function base64Bytes(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Non-ASCII spaces (RFC 3454 C.1.2) and characters mapped to nothing (B.1). */
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g;
const MAPPED_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g;
const PROHIBITED = /[\u0000-\u001F\u007F-\u009F\uE000-\uF8FF\uFFF9-\uFFFD]/;

/**
 * The password as SASLprep (RFC 4013) makes it, as the server does; when it
 * holds prohibited characters, the password as is (what Postgres then uses).
 */
function saslPrep(password: string): string {
  if (/^[\x20-\x7E]*$/.test(password)) return password;
  const prepared = password.replace(NON_ASCII_SPACE, " ").replace(MAPPED_TO_NOTHING, "").normalize("NFKC");
  return PROHIBITED.test(prepared) ? password : prepared;
}

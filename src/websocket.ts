import { isPoolErrorCode, PoolError, type PoolErrorCode } from "./errors.ts";
import type { CallOptions, WireMode } from "./protocol.ts";
import type { Tunnel } from "./socket.ts";

/**
 * The remote tunnel (design §2): one WebSocket per client session to
 * `GET /v1/tenants/:tenant/connect`, binary frames carrying the session's
 * protocol bytes. Uses the global `WebSocket` (Node 22, Deno, Bun, browsers).
 */

/** Where and how a remote session opens. */
export interface RemoteSession {
  tenant: string;
  mode: WireMode;
  /** The client token (sent as the `bearer.<token>` subprotocol); absent: the session asks for it as its startup password. */
  token?: string;
  /** The session's `acquireTimeoutMs` / `queryTimeoutMs` (the coordinator checks them before the upgrade). */
  options?: CallOptions;
}

/** Bytes a writer may queue on the socket (`bufferedAmount`) before its writes wait. */
const SEND_HIGH_WATER_BYTES = 256 * 1024;
/** Bytes a writer may queue in front of the socket before `write()` returns false. */
const WRITE_HIGH_WATER_BYTES = 64 * 1024;

/** SQLSTATEs of the refusals a tunnel can meet before its session starts (design §4's table). */
const REFUSALS: Partial<Record<PoolErrorCode, string>> = {
  UNAUTHORIZED: "28000",
  BAD_REQUEST: "08P01",
  INVALID_OPTION: "22023",
  UNKNOWN_TENANT: "08004",
  POOL_DISABLED: "08004",
  POOL_CLOSED: "08004",
};

/** The WebSocket address of a tenant's tunnel. */
export function tunnelUrl(baseUrl: string, session: Omit<RemoteSession, "token">, password: boolean): URL {
  const url = new URL(`/v1/tenants/${encodeURIComponent(session.tenant)}/connect`, baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("mode", session.mode);
  if (password) url.searchParams.set("auth", "password");
  for (const [key, value] of Object.entries(session.options ?? {})) {
    if (value !== undefined) url.searchParams.set(key, String(value));
  }
  return url;
}

/** Whether a URL's host is this machine. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || /^127(?:\.\d{1,3}){3}$/.test(hostname);
}

/**
 * Opens a session's WebSocket and resolves with its two byte streams once it
 * is open. A refused upgrade (a bad token, a bad tenant name, nobody
 * listening) resolves too: the readable then holds the FATAL ErrorResponse a
 * driver would get from a server, so postgres.js and pg report it as they
 * report any refused connection (`UNAUTHORIZED` as 28000 ...).
 */
export async function openTunnel(baseUrl: string, session: RemoteSession): Promise<Tunnel> {
  const password = session.token === undefined;
  const url = tunnelUrl(baseUrl, session, password);
  if (password && url.protocol !== "wss:" && !isLoopbackHost(url.hostname)) {
    return refused(new PoolError("UNAUTHORIZED", session.tenant, `tenant "${session.tenant}": a token as the startup password travels over https only (the coordinator is ${url.host})`));
  }
  const socket = new WebSocket(url.href, password ? ["edgepool"] : ["edgepool", `bearer.${session.token}`]);
  socket.binaryType = "arraybuffer";
  const opened = await new Promise<boolean>((resolve) => {
    socket.addEventListener("open", () => resolve(true), { once: true });
    // Node 22 reports a refused upgrade with `error` and no `close`.
    socket.addEventListener("error", () => resolve(false), { once: true });
    socket.addEventListener("close", () => resolve(false), { once: true });
  });
  if (!opened) {
    socket.close();
    return refused(await why(url, session));
  }
  return {
    readable: new ReadableStream<Uint8Array>({
      start(controller) {
        socket.addEventListener("message", ({ data }) => {
          if (typeof data !== "string") controller.enqueue(new Uint8Array(data as ArrayBuffer));
        });
        const end = () => {
          try {
            controller.close();
          } catch {}
        };
        socket.addEventListener("close", end);
        socket.addEventListener("error", end);
      },
      cancel: () => socket.close(1000),
    }),
    writable: new WritableStream<Uint8Array>({
      async write(bytes) {
        if (socket.readyState !== WebSocket.OPEN) throw new Error("the tunnel is closed");
        socket.send(bytes);
        for (let waitMs = 1; socket.bufferedAmount > SEND_HIGH_WATER_BYTES && socket.readyState === WebSocket.OPEN; waitMs = Math.min(waitMs * 2, 50)) {
          await new Promise((resolve) => setTimeout(resolve, waitMs));
        }
      },
      close: () => socket.close(1000),
      abort: () => socket.close(1000),
    }, new ByteLengthQueuingStrategy({ highWaterMark: WRITE_HIGH_WATER_BYTES })),
  };
}

/**
 * Why the upgrade was refused: the same address over plain HTTP answers with
 * the coordinator's `{ error: { code, message } }` (a WebSocket client sees
 * only that the upgrade failed). Never echoes the token.
 */
async function why(url: URL, session: RemoteSession): Promise<PoolError> {
  const http = new URL(url);
  http.protocol = url.protocol === "wss:" ? "https:" : "http:";
  const { tenant } = session;
  try {
    const response = await fetch(http, { headers: session.token === undefined ? {} : { Authorization: `Bearer ${session.token}` } });
    return await refusal(response, tenant, `the tunnel to ${http.host}`);
  } catch (error) {
    const cause = error instanceof Error ? error.message : String(error);
    return new PoolError("INTERNAL", tenant, `tenant "${tenant}": the tunnel to ${http.host} failed: ${cause}`);
  }
}

/**
 * A refused HTTP answer of the coordinator as a `PoolError`: the code its
 * `{ error: { code, message } }` body names (401 is `UNAUTHORIZED` without
 * one); `INTERNAL` only for the unknown. `what` names the call for that case.
 */
export async function refusal(response: Response, tenant: string, what: string): Promise<PoolError> {
  const body = (await response.json().catch(() => ({}))) as { error?: { code?: unknown; message?: unknown } };
  const code = body.error?.code;
  if (isPoolErrorCode(code) && typeof body.error?.message === "string") {
    const error = new PoolError(code, tenant, "");
    error.message = body.error.message;
    return error;
  }
  if (response.status === 401) return new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": the coordinator refused the token`);
  return new PoolError("INTERNAL", tenant, `tenant "${tenant}": ${what} was refused with HTTP ${response.status}`);
}

/** A tunnel that only answers with this error as a FATAL ErrorResponse, then ends. */
function refused(error: PoolError): Tunnel {
  return {
    readable: new ReadableStream({
      start(controller) {
        controller.enqueue(errorResponse(REFUSALS[error.code] ?? "08001", error.message));
        controller.close();
      },
    }),
    writable: new WritableStream(),
  };
}

/** ErrorResponse (S, V, C, M), FATAL. */
function errorResponse(sqlstate: string, message: string): Uint8Array {
  const encoder = new TextEncoder();
  const fields = ["SFATAL", "VFATAL", `C${sqlstate}`, `M${message}`].map((f) => encoder.encode(`${f}\0`));
  const size = 4 + fields.reduce((n, f) => n + f.length, 0) + 1;
  const out = new Uint8Array(1 + size);
  out[0] = 0x45;
  new DataView(out.buffer).setInt32(1, size);
  let at = 5;
  for (const field of fields) {
    out.set(field, at);
    at += field.length;
  }
  return out;
}

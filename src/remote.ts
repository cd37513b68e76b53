import { newHttpBatchRpcSession, newWebSocketRpcSession } from "capnweb";
import { isPoolErrorCode, PoolError, type PoolErrorCode } from "./errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply } from "./protocol.ts";

/** The tenant API a coordinator serves to remote clients once their token was checked. */
interface RemoteApi {
  run(bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>>;
  acquire(options?: CallOptions): Promise<Reply<Acquired>>;
  stats(): Promise<Reply<unknown>>;
}

/**
 * The coordinator over Cap'n Web, for Deno, Node and Bun: one-shot calls as HTTP
 * batches, each lease on its own WebSocket session. The token travels in the
 * `Authorization` header, or the `bearer.<token>` WebSocket subprotocol.
 */
export function remoteCoordinator(baseUrl: string, tenant: string, token: string): CoordinatorApi {
  const base = new URL(baseUrl);
  const endpoint = new URL(`/v1/tenants/${encodeURIComponent(tenant)}/rpc`, base);
  const batch = () => newHttpBatchRpcSession<RemoteApi>(new Request(endpoint, { method: "POST", headers: { Authorization: `Bearer ${token}` } }));
  const call = async <T>(fn: (api: RemoteApi) => Promise<T>): Promise<T> => {
    try {
      return await fn(batch() as unknown as RemoteApi);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const status = Number(/RPC request failed: (\d{3})/.exec(message)?.[1] ?? 0);
      // capnweb drops the body of a refused batch: ask again for the coordinator's error.
      throw transportError(tenant, endpoint, error, status === 0 || status === 401 ? { status } : await why(endpoint, token, status));
    }
  };
  return {
    run: (_tenant, bytes, options) => call((api) => api.run(bytes, options)),
    stats: () => call((api) => api.stats()),
    async acquire(_tenant, options) {
      const socketUrl = new URL(endpoint);
      socketUrl.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(socketUrl.href, ["edgepool", `bearer.${token}`]);
      const api = newWebSocketRpcSession<RemoteApi>(socket as never) as unknown as RemoteApi & Disposable;
      const close = () => {
        api[Symbol.dispose]?.();
        socket.close();
      };
      let reply: Reply<Acquired>;
      try {
        reply = await api.acquire(options);
      } catch (error) {
        close();
        // A refused upgrade only says "error": ask the endpoint why.
        throw transportError(tenant, endpoint, error, await why(endpoint, token));
      }
      if (!reply.ok) {
        close();
        return reply;
      }
      // Closing the socket ends the session, and with it, on the coordinator, the lease.
      return { ok: true, value: { ...reply.value, close } };
    },
  };
}

/** Why the endpoint refuses this client: the HTTP status and, if the body names one, the coordinator's error. */
interface Refusal {
  status: number;
  error?: { code: PoolErrorCode; message: string };
}

/**
 * Asks the endpoint with an empty batch (no calls, no effects) and reads the
 * `{ error: { code, message } }` body it refuses with. With `expected`, a
 * different status (the cause went away meanwhile) yields only that status.
 */
async function why(endpoint: URL, token: string, expected?: number): Promise<Refusal> {
  try {
    const response = await fetch(endpoint, { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: "" });
    const text = await response.text();
    if (expected !== undefined && response.status !== expected) return { status: expected };
    if (response.ok) return { status: response.status };
    const error = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
    if (!isPoolErrorCode(error?.code) || typeof error.message !== "string") return { status: response.status };
    return { status: response.status, error: { code: error.code, message: error.message } };
  } catch {
    return { status: expected ?? 0 };
  }
}

/**
 * A failed HTTP call or socket, as a `PoolError`: the coordinator's own code when
 * its answer carries one (400 `BAD_REQUEST`, 404 `UNKNOWN_TENANT`, 503 ...), 401 is
 * `UNAUTHORIZED`, and only the unknown is `INTERNAL`. Never echoes the token.
 */
function transportError(tenant: string, endpoint: URL, error: unknown, refusal?: Refusal): PoolError {
  const message = error instanceof Error ? error.message : String(error);
  const code = refusal?.status ?? 0;
  if (code === 401) {
    return new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": the coordinator refused the token (missing, malformed, expired, or for another tenant)`);
  }
  if (refusal?.error && refusal.error.code !== "INTERNAL") {
    // The coordinator's message already starts with its code, as one through a binding does.
    const known = new PoolError(refusal.error.code, tenant, "");
    known.message = refusal.error.message;
    return known;
  }
  const where = `${endpoint.protocol}//${endpoint.host}`;
  return new PoolError("INTERNAL", tenant, `tenant "${tenant}": call to ${where} failed${code ? ` with HTTP ${code}` : ""}: ${message}`);
}

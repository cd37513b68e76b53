import { newHttpBatchRpcSession, newWebSocketRpcSession } from "capnweb";
import { PoolError } from "./errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply } from "./protocol.ts";
import type { QueryResult } from "./result.ts";

/** The tenant API a coordinator serves to remote clients once their token was checked. */
interface RemoteApi {
  query(text: string, params?: unknown[], options?: CallOptions): Promise<Reply<QueryResult>>;
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
      throw transportError(tenant, endpoint, error);
    }
  };
  return {
    query: (_tenant, text, params, options) => call((api) => api.query(text, params, options)),
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
        // A refused upgrade only says "error": ask the endpoint why, with an empty batch.
        const status = await fetch(endpoint, { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: "" }).then((r) => r.status, () => 0);
        throw transportError(tenant, endpoint, error, status);
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

/** A failed HTTP call or socket, as a `PoolError`: 401 is `UNAUTHORIZED`, the rest `INTERNAL`. Never echoes the token. */
function transportError(tenant: string, endpoint: URL, error: unknown, status?: number): PoolError {
  const message = error instanceof Error ? error.message : String(error);
  const code = status ?? Number(/RPC request failed: (\d{3})/.exec(message)?.[1] ?? 0);
  if (code === 401) {
    return new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": the coordinator refused the token (missing, malformed, expired, or for another tenant)`);
  }
  const where = `${endpoint.protocol}//${endpoint.host}`;
  return new PoolError("INTERNAL", tenant, `tenant "${tenant}": call to ${where} failed${code ? ` with HTTP ${code}` : ""}: ${message}`);
}

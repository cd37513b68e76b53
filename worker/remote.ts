import { newHttpBatchRpcResponse, newWebSocketRpcSession } from "capnweb";
import { RpcTarget } from "cloudflare:workers";
import type { CallOptions } from "../src/protocol.ts";
import type { PoolCoordinator } from "./coordinator.ts";

/** What a remote client sees once its token was checked: the tenant's pool, nothing else. */
export class RemoteApi extends RpcTarget {
  readonly #coordinator: PoolCoordinator;
  readonly #tenant: string;

  constructor(coordinator: PoolCoordinator, tenant: string) {
    super();
    this.#coordinator = coordinator;
    this.#tenant = tenant;
  }

  run(bytes: Uint8Array, options?: CallOptions) {
    return this.#coordinator.run(this.#tenant, bytes, options);
  }

  acquire(options?: CallOptions) {
    return this.#coordinator.acquire(this.#tenant, options);
  }

  stats() {
    return this.#coordinator.stats(this.#tenant);
  }
}

/**
 * The remote (Cap'n Web) endpoint of a coordinator: HTTP batch for one-shot
 * queries, a WebSocket session for leases. The coordinator Worker has checked
 * the token before the request gets here.
 */
export function serveRemote(request: Request, api: RemoteApi): Promise<Response> | Response {
  if (request.method === "POST") return newHttpBatchRpcResponse(request, api);
  if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
    return Response.json({ error: { code: "BAD_REQUEST", message: "BAD_REQUEST: the RPC endpoint takes POST (batch) or a WebSocket upgrade" } }, { status: 400 });
  }
  const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  server.accept();
  // Leases made on this session are disposed, and so released, when the socket closes.
  newWebSocketRpcSession(server as never, api);
  return new Response(null, { status: 101, webSocket: client, headers: { "Sec-WebSocket-Protocol": "edgepool" } });
}

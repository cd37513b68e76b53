import { decodeResult, encodeQuery } from "./codec.ts";
import { PoolError, toShape } from "./errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply, WireMode } from "./protocol.ts";
import { SessionClosed, TunnelSession } from "./session.ts";
import { openTunnel, refusal } from "./websocket.ts";

/** One-shot sessions a remote client keeps open at most; concurrent one-shots beyond them queue on the least busy one. */
const MAX_ONE_SHOT_SESSIONS = 4;
/** A one-shot session idle this long is closed (as `postgresOptions`' `idle_timeout`): an idle client holds no socket for long. */
const IDLE_SESSION_MS = 10_000;

const PID_QUERY = encodeQuery("select pg_backend_pid() as pid");

/**
 * The coordinator over the WebSocket tunnel, for Node, Deno and Bun: the
 * built-in client speaks the wire protocol on `/connect` sessions, as drivers
 * do. One-shots reuse a few transaction-mode sessions (opened on demand,
 * reopened when closed, closed when idle); each lease is a session-mode
 * session of its own, ended by closing its socket. The token travels as the
 * `bearer.<token>` subprotocol; `acquireTimeoutMs` / `queryTimeoutMs` as
 * query parameters of the session's URL, applied by the coordinator. `end()`
 * closes the one-shot sessions at once (the client's `end()` waits for its
 * queries first).
 */
export function remoteCoordinator(baseUrl: string, tenant: string, token: string): CoordinatorApi & { end(): void } {
  // Per-call options are fixed per session, so one-shot sessions are kept per set of options.
  const oneShots = new Map<string, TunnelSession[]>();
  const open = (mode: WireMode, options: CallOptions | undefined, oneShot: boolean) =>
    new TunnelSession(openTunnel(baseUrl, { tenant, mode, token, options }), { tenant, oneShot, idleMs: oneShot ? IDLE_SESSION_MS : undefined });

  const pick = (options: CallOptions | undefined): TunnelSession => {
    const key = `${options?.acquireTimeoutMs}/${options?.queryTimeoutMs}`;
    const sessions = (oneShots.get(key) ?? []).filter((s) => !s.closed);
    oneShots.set(key, sessions);
    const idle = sessions.find((s) => s.pending === 0);
    if (idle) return idle;
    if (sessions.length < MAX_ONE_SHOT_SESSIONS) {
      const session = open("transaction", options, true);
      sessions.push(session);
      return session;
    }
    return sessions.reduce((a, b) => (b.pending < a.pending ? b : a));
  };

  return {
    /** Closes the one-shot sessions (their sockets end; the coordinator returns their connections). Leases end on their own. */
    end() {
      for (const sessions of oneShots.values()) for (const session of sessions) session.close();
      oneShots.clear();
    },

    async run(_tenant, bytes, options) {
      for (let attempt = 0; ; attempt++) {
        const session = pick(options);
        try {
          return { ok: true, value: await session.run(bytes) };
        } catch (error) {
          // Queued behind a batch that closed the session: never sent, so it goes on a fresh one.
          if (error instanceof SessionClosed && attempt === 0) continue;
          throw error;
        }
      }
    },

    async acquire(_tenant, options): Promise<Reply<Acquired>> {
      const session = open("session", options, false);
      try {
        // Sent with the startup: one round trip for the lease and its server backend's pid.
        const [row] = decodeResult<{ pid: number }>(await session.run(PID_QUERY), tenant);
        const lease = {
          run: async (batch: Uint8Array) => ({ ok: true as const, value: await session.run(batch) }),
          release: async () => {
            session.close();
            return { ok: true as const, value: null };
          },
        };
        return { ok: true, value: { id: session.key, pid: row!.pid, lease, close: () => session.close() } };
      } catch (error) {
        session.close();
        return { ok: false, error: toShape(error, tenant) };
      }
    },

    async stats() {
      const url = new URL(`/v1/tenants/${encodeURIComponent(tenant)}/stats`, baseUrl);
      let response: Response;
      try {
        response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
      } catch (error) {
        const cause = error instanceof Error ? error.message : String(error);
        throw new PoolError("INTERNAL", tenant, `tenant "${tenant}": GET ${url.protocol}//${url.host}${url.pathname} failed: ${cause}`);
      }
      if (!response.ok) return { ok: false, error: toShape(await refusal(response, tenant, `GET ${url.pathname}`), tenant) };
      return { ok: true, value: await response.json() };
    },
  };
}

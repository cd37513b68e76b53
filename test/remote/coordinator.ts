// Serves the coordinator Worker with `wrangler dev` (local workerd) for remote-client tests.
import { unstable_dev } from "wrangler";
import { freePort } from "../setup/embedded.ts";

export const ADMIN_TOKEN = "remote-admin-token-9876543210";

/** The coordinator Worker from the repository's wrangler.toml, on a loopback port. */
export async function startCoordinator(databaseUrl: string) {
  const port = await freePort();
  const worker = await unstable_dev("worker/index.ts", {
    config: "wrangler.toml",
    ip: "127.0.0.1",
    port,
    inspectorPort: await freePort(),
    persist: false,
    logLevel: "warn",
    vars: { DATABASE_URL: databaseUrl, EDGEPOOL_ADMIN_TOKEN: ADMIN_TOKEN },
    experimental: { disableExperimentalWarning: true, disableDevRegistry: true, watch: false },
  });
  const url = `http://127.0.0.1:${worker.port}`;

  async function admin(method: string, path: string, body?: unknown) {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await response.json()) as Record<string, any>;
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Creates a tenant (on the test database unless told otherwise) and returns a client token for it. */
  async function tenant(name: string, options: Record<string, unknown> = {}, connectionString = databaseUrl): Promise<string> {
    await admin("PUT", `/v1/tenants/${name}`, { connectionString, ...options });
    return (await admin("POST", `/v1/tenants/${name}/tokens`, { ttlSeconds: 600 })).token as string;
  }

  return { url, admin, tenant, stop: () => worker.stop() };
}

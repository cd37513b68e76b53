import { describe, expect, it } from "vitest";
import { mintToken } from "../../worker/auth.ts";
import { ADMIN_TOKEN, http, putTenant, tenantName, testEnv } from "./helpers.ts";

/** The client-token route `GET /v1/tenants/:tenant/stats` with `token`; what matters here is whether the Worker lets it through. */
async function clientRoute(tenant: string, token?: string) {
  const { SELF } = await import("cloudflare:test");
  const headers: Record<string, string> = token === undefined ? {} : { Authorization: `Bearer ${token}` };
  return SELF.fetch(`http://edge/v1/tenants/${tenant}/stats`, { headers });
}

describe("auth", () => {
  it("admin routes need the admin token and refuse client tokens", async () => {
    const tenant = tenantName("admin-auth");
    expect((await http("GET", `/v1/tenants/${tenant}`)).status).toBe(401);
    expect((await http("GET", `/v1/tenants/${tenant}`, { token: "wrong" })).status).toBe(401);
    expect((await http("GET", `/v1/tenants/${tenant}`, { token: `${ADMIN_TOKEN}x` })).status).toBe(401);
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL });
    const minted = await http("POST", `/v1/tenants/${tenant}/tokens`, { token: ADMIN_TOKEN, body: { ttlSeconds: 60 } });
    expect(minted.status).toBe(201);
    expect(minted.json).toMatchObject({ tenant, token: expect.stringMatching(/^ep1\.[\w-]+\.[\w-]+$/) });
    const refused = await http("GET", `/v1/tenants/${tenant}`, { token: minted.json.token });
    expect(refused.status).toBe(401);
    expect(refused.json.error.code).toBe("UNAUTHORIZED");
    expect(refused.text).not.toContain(minted.json.token);
    expect((await http("POST", `/v1/tenants/${tenant}/tokens`, { token: ADMIN_TOKEN, body: { ttlSeconds: 0 } })).json.error.code).toBe("INVALID_OPTION");
    expect((await http("POST", `/v1/tenants/${tenantName("ghost")}/tokens`, { token: ADMIN_TOKEN })).status).toBe(404);
  });

  it("client tokens: missing, malformed, expired and cross-tenant tokens are refused before any session opens", async () => {
    const tenant = tenantName("client-auth");
    const other = tenantName("other");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL });
    await putTenant(other, { connectionString: testEnv.DATABASE_URL });
    const good = (await http("POST", `/v1/tenants/${tenant}/tokens`, { token: ADMIN_TOKEN, body: { ttlSeconds: 60 } })).json.token as string;
    expect((await clientRoute(tenant, good)).status).toBe(200);
    expect((await clientRoute(tenant)).status).toBe(401);
    expect((await clientRoute(tenant, "garbage")).status).toBe(401);
    expect((await clientRoute(tenant, `${good.slice(0, -2)}AA`)).status).toBe(401);
    expect((await clientRoute(tenant, ADMIN_TOKEN)).status).toBe(401); // the admin token is not a client token
    const expired = await mintToken(ADMIN_TOKEN, tenant, Math.floor(Date.now() / 1000) - 1);
    const expiredReply = await clientRoute(tenant, expired);
    expect(expiredReply.status).toBe(401);
    expect(await expiredReply.json()).toMatchObject({ error: { code: "UNAUTHORIZED", message: expect.stringContaining("expired") } });
    const forged = await mintToken("not-the-secret", tenant, Math.floor(Date.now() / 1000) + 60);
    expect((await clientRoute(tenant, forged)).status).toBe(401);
    // A token for one tenant never reaches another tenant's coordinator.
    const cross = await clientRoute(other, good);
    expect(cross.status).toBe(401);
    expect(await cross.json()).toMatchObject({ error: { message: expect.stringContaining("another tenant") } });
  });
});

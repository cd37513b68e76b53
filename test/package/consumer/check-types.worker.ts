// Fails to compile if an edgepool/worker export's type did not resolve (became `any`).
import { createPool } from "edgepool";
import handler, { PoolCoordinator, PoolService } from "edgepool/worker";

type IsAny<T> = 0 extends 1 & T ? true : false;
export const resolved: [IsAny<typeof createPool>, IsAny<PoolCoordinator>, IsAny<PoolService>, IsAny<typeof handler>] = [false, false, false, false];
export const stats = (ns: DurableObjectNamespace<PoolCoordinator>) => ns.get(ns.idFromName("acme")).stats("acme");

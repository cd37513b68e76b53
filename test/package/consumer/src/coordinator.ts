// The coordinator Worker, deployed on its own (docs/install.md): everything comes from the package.
export { default, PoolCoordinator, PoolService } from "edgepool/worker";

// The coordinator Worker, deployed on its own (README.md): everything comes from the package.
export { default, PoolCoordinator, PoolService } from "edgepool/worker";

// A network of its own for a test host: the product's (infra/guest/network.ts), under the tests' names.
export {
  createHostNetwork as createTestNetwork,
  startPinger,
  type HostNetwork as TestNetwork,
  type Pinger,
} from '../../infra/guest/network';

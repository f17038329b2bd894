/** The shadow service module (wiring only): what the launchers load. */
export { shadowService } from './rpc/shadow-handlers';

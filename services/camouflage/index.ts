/** The camouflage service module (wiring only): what the launchers load. */
export { camouflageService } from './rpc/handlers';

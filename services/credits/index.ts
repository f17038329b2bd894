/** The credits service module (wiring only): what the launchers load. */
export { creditsService } from './service';

/**
 * Entry point of one service process in production: `SHIELDX_SERVICE=credits node
 * dist/scripts/start-service.js` (or via tsx from source). Everything it does is in
 * service-process-main.ts, shared with the development entry point.
 */
import { runServiceProcess } from './service-process-main';

runServiceProcess();

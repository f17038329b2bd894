/**
 * Entry point of one service process under `npm start` (dev/dev.ts spawns it): the production
 * entry point, plus the in-process Redis stand-in when REDIS_URL is unset.
 */
import { runServiceProcess } from '../scripts/service-process-main';
import { createRedisStandIn } from './redis-stand-in';

runServiceProcess({ redisStandIn: createRedisStandIn });

import express, { type Express, type Request, type Response } from 'express';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { FaultInjector, type FaultSettings } from './faults.js';
import { type PeerName, RequestLog } from './request-log.js';

export interface PeerServer {
  name: PeerName;
  /** Origin, e.g. http://127.0.0.1:3001 (no trailing slash). */
  origin: string;
  port: number;
  app: Express;
  log: RequestLog;
  faults: FaultInjector;
  close(): Promise<void>;
}

/**
 * One sandbox peer (EHR or payer) on its own port, with a request log and fault injection.
 * Control endpoints (never faulted, never logged):
 *   GET    /_sandbox/requests[?since=N]   recorded requests
 *   DELETE /_sandbox/requests             clear the log
 *   GET    /_sandbox/faults               current fault settings
 *   PUT    /_sandbox/faults               replace fault settings (JSON FaultSettings)
 * Routes added to `app` after this call are subject to the log (via `log.start` in the peer's own
 * handlers, which know the client and scopes) and to the faults.
 */
export async function startPeerServer(name: PeerName, host: string, port: number): Promise<PeerServer> {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const log = new RequestLog(name);
  const faults = new FaultInjector();

  app.get('/_sandbox/requests', (req: Request, res: Response) => {
    const since = Number(req.query['since'] ?? 0);
    res.json(Number.isFinite(since) && since > 0 ? log.since(since) : log.all());
  });
  app.delete('/_sandbox/requests', (_req, res) => {
    log.clear();
    res.status(204).end();
  });
  app.get('/_sandbox/faults', (_req, res) => {
    res.json(faults.current);
  });
  app.put('/_sandbox/faults', express.json(), (req: Request, res: Response) => {
    const next = (req.body ?? {}) as FaultSettings;
    // Applied once this answer is out: refusing connections closes every socket, this one included.
    res.once('finish', () => faults.set(next));
    res.json(next);
  });
  app.use(faults.middleware());

  const server: Server = createServer(app);
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await listen(server, host, port);
  const actualPort = (server.address() as AddressInfo).port;

  let listening = true;
  faults.onChange((settings) => {
    if (settings.refuseConnections && listening) {
      listening = false;
      server.close();
      for (const socket of sockets) socket.destroy();
    } else if (!settings.refuseConnections && !listening) {
      listening = true;
      void listen(server, host, actualPort);
    }
  });

  return {
    name,
    origin: `http://${host}:${actualPort}`,
    port: actualPort,
    app,
    log,
    faults,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        if (!listening) return resolve();
        server.close(() => resolve());
      }),
  };
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The path of the `weft` binary for this platform (or `WEFT_BINARY`). */
export function binaryPath(): string;

export interface WeftDev {
  /** Where the server listens, e.g. http://127.0.0.1:40123. */
  url: string;
  port: number;
  /** Everything the server and the app's task processes printed. */
  output(): string;
  /** Stops the server and removes its database. */
  stop(): Promise<void>;
  /** RENDER_USE_LOCAL_DEV and RENDER_LOCAL_DEV_URL for Render's client. */
  env: { RENDER_USE_LOCAL_DEV: string; RENDER_LOCAL_DEV_URL: string };
}

/**
 * Starts `weft dev` for an app (its start command in `app`) on a free
 * loopback port with a fresh database; resolves once its tasks are
 * registered.
 */
export function startDev(options: {
  app: string[];
  cwd?: string;
  args?: string[];
  timeoutMs?: number;
}): Promise<WeftDev>;

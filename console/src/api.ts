// Client of the token service (console/livenexus_console): /api/config and POST /api/token.

export interface ConsoleConfig {
  livekitUrl: string;
  rooms: string[];
  tokenTtlSeconds: number;
}

export interface TokenGrant {
  token: string;
  url: string;
  identity: string;
  name: string;
  room: string;
  expiresInSeconds: number;
}

export type ApiErrorKind = 'unreachable' | 'refused' | 'rate-limited' | 'unavailable' | 'bad-response';

/** A failure the page shows as it is: ``kind`` picks the wording, ``message`` is the detail. */
export class ApiError extends Error {
  constructor(
    readonly kind: ApiErrorKind,
    message: string,
    readonly status = 0,
    readonly retryAfterSeconds = 0,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

async function request(path: string, init?: RequestInit): Promise<unknown> {
  let resp: Response;
  try {
    resp = await fetch(path, { ...init, cache: 'no-store', signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ApiError('unreachable', `the console server did not answer (${String(err)})`);
  }
  let body: unknown = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (resp.ok) return body;
  const detail =
    typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string'
      ? (body as { error: string }).error
      : `HTTP ${resp.status}`;
  if (resp.status === 429) {
    const retry = Number.parseInt(resp.headers.get('Retry-After') ?? '', 10);
    throw new ApiError('rate-limited', detail, 429, Number.isFinite(retry) ? retry : 0);
  }
  if (resp.status === 502 || resp.status === 503 || resp.status === 504) {
    throw new ApiError('unavailable', detail, resp.status);
  }
  throw new ApiError('refused', detail, resp.status);
}

export async function fetchConfig(): Promise<ConsoleConfig> {
  const body = await request('/api/config');
  const b = body as Partial<ConsoleConfig> | null;
  if (!b || typeof b.livekitUrl !== 'string' || !Array.isArray(b.rooms)) {
    throw new ApiError('bad-response', 'unexpected answer from /api/config');
  }
  return {
    livekitUrl: b.livekitUrl,
    rooms: b.rooms.filter((r): r is string => typeof r === 'string'),
    tokenTtlSeconds: typeof b.tokenTtlSeconds === 'number' ? b.tokenTtlSeconds : 0,
  };
}

export async function fetchToken(room: string, name: string): Promise<TokenGrant> {
  const body = await request('/api/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ room, name }),
  });
  const b = body as Partial<TokenGrant> | null;
  if (!b || typeof b.token !== 'string' || typeof b.url !== 'string' || typeof b.identity !== 'string') {
    throw new ApiError('bad-response', 'unexpected answer from /api/token');
  }
  return {
    token: b.token,
    url: b.url,
    identity: b.identity,
    name: typeof b.name === 'string' ? b.name : b.identity,
    room: typeof b.room === 'string' ? b.room : room,
    expiresInSeconds: typeof b.expiresInSeconds === 'number' ? b.expiresInSeconds : 0,
  };
}

// Client of the token service (console/livenexus_console): /api/config and POST /api/token.

export interface ConsoleConfig {
  livekitUrl: string;
  rooms: string[];
  tokenTtlSeconds: number;
  /** How the service checks visitors: none, token (an access key) or header (a login proxy). */
  auth: string;
  /** Whether tokens let the visitor publish a microphone (false: read-only). */
  microphone: boolean;
  /** Transcripts are accepted only from agent participants whose identity starts with this. */
  agentIdentityPrefix: string;
}

export interface TokenGrant {
  token: string;
  url: string;
  identity: string;
  name: string;
  room: string;
  expiresInSeconds: number;
}

export type ApiErrorKind = 'unreachable' | 'refused' | 'unauthorized' | 'rate-limited' | 'unavailable' | 'bad-response';

const KEY_STORAGE = 'livenexus.accessKey';
let accessKey = sessionStorage.getItem(KEY_STORAGE) ?? '';

/** The access key sent as a bearer token (token mode); kept for this tab only, never in the URL. */
export function setAccessKey(key: string): void {
  accessKey = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function hasAccessKey(): boolean {
  return accessKey !== '';
}

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
    const headers = new Headers(init?.headers);
    if (accessKey) headers.set('Authorization', `Bearer ${accessKey}`);
    resp = await fetch(path, { ...init, headers, cache: 'no-store', signal: AbortSignal.timeout(10_000) });
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
  if (resp.status === 401) throw new ApiError('unauthorized', detail, 401);
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
    auth: typeof b.auth === 'string' ? b.auth : 'none',
    microphone: b.microphone === true,
    // Never empty: an empty prefix would accept every agent-kind participant's transcripts.
    agentIdentityPrefix:
      typeof b.agentIdentityPrefix === 'string' && b.agentIdentityPrefix ? b.agentIdentityPrefix : 'livenexus-agent',
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

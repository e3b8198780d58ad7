// Type declarations of companion-hub.js, the browser client of companion-hub
// (docs/js-client.md). Served by the hub as /client.d.ts.

export type ErrorCode =
  | "BAD_REQUEST" | "UNAUTHORIZED" | "FORBIDDEN" | "NOT_OWNER" | "NOT_FOUND" | "CONFLICT"
  | "TOO_LARGE" | "RATE_LIMITED" | "LIMIT_EXCEEDED" | "UNAVAILABLE" | "TIMEOUT" | "FAILED"
  | "INTERNAL";

export const ErrorCodes: readonly ErrorCode[];
export const CLOSE_REPLACED: 4000;

export class HubError extends Error {
  constructor(code: ErrorCode | string, message: string, details?: Record<string, unknown>);
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  static fromWire(err: unknown): HubError;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Entry {
  readonly key: string;
  readonly value: Json;
  readonly version: number;
  readonly rev: number;
  readonly owner: string | null;
  readonly stale: boolean;
  readonly staleSince: number | null;
  readonly ts: number | null;
}

export interface Change extends Entry {
  readonly deleted: boolean;
}

export interface HubEvent {
  readonly key: string;
  readonly data: Json;
  readonly source: string | null;
  readonly ts: number | null;
}

export interface WriteResult { key: string; version: number; rev: number }

export interface CommandContext {
  id: string;
  name: string;
  source: string;
  deadline: number | null;
  hub: HubClient;
}

export type ClientState = "idle" | "connecting" | "connected" | "closed" | "replaced";

export interface HubClientOptions {
  token?: string;
  reconnect?: boolean;
  backoffBase?: number;
  backoffMax?: number;
  connectTimeout?: number;
  requestTimeout?: number;
  keepalive?: boolean;
  random?: () => number;
  WebSocket?: typeof WebSocket;
}

export function parsePattern(pattern: string): string[];
export function matchPattern(pattern: string[], key: string): boolean;

export class Mirror {
  readonly entries: Map<string, Entry>;
  readonly hub: string | null;
  readonly rev: number;
}

export class Subscription implements AsyncIterable<Change> {
  readonly id: string;
  readonly patterns: readonly string[];
  readonly events: boolean;
  readonly active: boolean;
  readonly ready: Promise<Subscription>;
  readonly mirror: Map<string, Entry>;
  get(key: string): Entry | undefined;
  on(name: "change", fn: (change: Change) => void): () => void;
  on(name: "event", fn: (event: HubEvent) => void): () => void;
  on(name: "dropped", fn: (count: number) => void): () => void;
  on(name: "snapshot", fn: (info: { mode: "full" | "incremental" | "none"; rev: number }) => void): () => void;
  on(name: "error", fn: (error: HubError) => void): () => void;
  off(name: string, fn: (...args: any[]) => void): void;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Change>;
}

export class HubClient {
  constructor(url: string, clientName: string, options?: HubClientOptions);
  readonly url: string;
  readonly clientName: string;
  readonly state: ClientState;
  readonly connected: boolean;
  readonly hubId: string | null;
  readonly rev: number;
  readonly namespaces: string[];
  readonly sessionId: string | null;
  readonly limits: Record<string, number>;
  readonly heartbeatMs: number;
  readonly welcome: Record<string, any> | null;
  readonly reconnects: number;
  readonly lastError: HubError | null;
  readonly mirror: Mirror;
  readonly subscriptions: Map<string, Subscription>;

  connect(): Promise<void>;
  close(): Promise<void>;
  set(key: string, value: Json, options?: { expectVersion?: number; durable?: boolean }): Promise<WriteResult>;
  setMany(
    entries: Record<string, Json> | Map<string, Json> | { key: string; value: Json; expectVersion?: number }[],
    options?: { durable?: boolean },
  ): Promise<WriteResult[]>;
  delete(key: string, options?: { expectVersion?: number; durable?: boolean }): Promise<WriteResult>;
  get(patterns: string | string[]): Promise<Map<string, Entry>>;
  getEntry(key: string): Promise<Entry | undefined>;
  sync(): Promise<{ deleted: number; rev: number }>;
  publish(key: string, data: Json): Promise<number>;
  call<T = Json>(
    target: string, name: string, params?: Record<string, Json>,
    options?: { timeoutMs?: number; idempotencyKey?: string },
  ): Promise<T>;
  subscribe(patterns: string | string[], options?: { events?: boolean }): Subscription;
  handle(name: string, fn: (params: Record<string, Json>, ctx: CommandContext) => Json | Promise<Json>): this;

  on(name: "connect", fn: (info: { hub: string; session: string; resumed: boolean }) => void): () => void;
  on(name: "disconnect", fn: (info: { code: number; reason: string }) => void): () => void;
  on(name: "replaced", fn: () => void): () => void;
  on(name: "closed", fn: (info: { state: ClientState; error: HubError }) => void): () => void;
  on(name: "error", fn: (error: HubError) => void): () => void;
  on(name: "dropped", fn: (count: number) => void): () => void;
  off(name: string, fn: (...args: any[]) => void): void;
}

export default HubClient;

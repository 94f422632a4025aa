// Loads @medplum/core on Node 20. Its ESM build touches `WebSocket` at module load, which
// Node 20 lacks (engines: ^22.18 || >=24.2): a stub is installed before the dynamic import.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = class WebSocketStub {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor() {
      throw new Error('WebSocket is not available in these tests');
    }
  };
}

export const medplumCore = await import('@medplum/core');

/** A fetch that records every request the client makes (method, path, grant type, status). */
export function recordingFetch(calls) {
  return async (url, options = {}) => {
    const response = await fetch(url, options);
    const entry = { method: options.method ?? 'GET', path: new URL(url).pathname, status: response.status };
    if (entry.path.endsWith('/oauth2/token') && typeof options.body === 'string') {
      entry.grant_type = new URLSearchParams(options.body).get('grant_type');
    }
    calls.push(entry);
    return response;
  };
}

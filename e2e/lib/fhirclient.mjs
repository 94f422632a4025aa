// fhirclient 2.6.3 (SMART client-js) loaded for Node, with its HTTP calls recorded.
//
// In Node the library fetches through cross-fetch → node-fetch 2, bound when it is first
// required; node-fetch's `default` export is wrapped before that, so every request the library
// makes (discovery, token, FHIR) is recorded unchanged: method, path, status, the token form's
// non-secret fields and the token response's keys. Nothing is altered on the wire.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const fhirclientRequire = createRequire(require.resolve('fhirclient'));
const crossFetchRequire = createRequire(fhirclientRequire.resolve('cross-fetch'));
const nodeFetch = crossFetchRequire('node-fetch');
const realFetch = nodeFetch.default || nodeFetch;

export const calls = [];

const TOKEN_FORM_FIELDS = ['grant_type', 'client_id', 'redirect_uri'];
const TOKEN_RESPONSE_FIELDS = ['token_type', 'scope', 'patient', 'encounter', 'need_patient_banner',
  'smart_style_url', 'expires_in'];

nodeFetch.default = async function recordingFetch(url, options = {}) {
  const target = new URL(String(url));
  const call = { method: (options.method || 'GET').toUpperCase(), path: target.pathname, query: target.search };
  const headers = Object.fromEntries(Object.entries(options.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
  const [scheme, credentials] = (headers.authorization || '').split(' ');
  call.authorization = scheme || null;
  // The last characters of a Bearer token: which token a call used, without logging it.
  if (scheme === 'Bearer') call.bearer_tail = credentials.slice(-12);
  if (target.pathname.endsWith('/oauth2/token') && typeof options.body === 'string') {
    const form = new URLSearchParams(options.body);
    for (const name of TOKEN_FORM_FIELDS) {
      if (form.has(name)) call[name] = form.get(name);
    }
    call.has_code_verifier = form.has('code_verifier');
    call.has_code = form.has('code');
  }
  const response = await realFetch.call(this, url, options);
  call.status = response.status;
  if (target.pathname.endsWith('/oauth2/token')) {
    try {
      const body = await response.clone().json();
      call.response_keys = Object.keys(body).sort();
      call.response = Object.fromEntries(TOKEN_RESPONSE_FIELDS.filter((k) => k in body).map((k) => [k, body[k]]));
    } catch {
      call.response_keys = null;
    }
  }
  calls.push(call);
  return response;
};

export const smart = require('fhirclient');

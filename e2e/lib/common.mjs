// Shared helpers for the e2e scripts: environment, output, PKCE, and the browser sign-in.
// Each script prints exactly one JSON object on stdout (logs go to stderr); pytest parses it.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`missing environment variable ${name}`);
  }
  return value;
}

export function log(...args) {
  console.error('[e2e]', ...args);
}

// Each client call gets this long (E2E_STEP_TIMEOUT_MS, default 20 s): a client that hangs or
// loops (e.g. re-running a grant forever) fails at once with the step's name, not at the
// 120 s limit pytest puts on the whole script.
export const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT_MS || 20_000);
let currentStep;

export class StepTimeoutError extends Error {
  constructor(name, ms) {
    super(`step ${JSON.stringify(name)} did not finish within ${ms} ms`);
    this.name = 'StepTimeoutError';
    this.step = name;
  }
}

/** Await `action()` (a function returning a promise) for at most `ms`; reject naming the step. */
export async function step(name, action, ms = STEP_TIMEOUT_MS) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepTimeoutError(name, ms)), ms);
  });
  currentStep = name;
  try {
    return await Promise.race([Promise.resolve().then(action), limit]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `target` (a client object or module namespace) whose methods, and those of the `nested`
 * properties, run as steps: every promise they return is time-limited and named `label.method`.
 * Calls inside the library still see the plain object.
 */
export function limited(target, label, nested = []) {
  return new Proxy(target, {
    get(obj, prop) {
      const value = Reflect.get(obj, prop, obj);
      if (nested.includes(prop) && value && typeof value === 'object') return limited(value, `${label}.${prop}`);
      if (typeof value !== 'function' || typeof prop !== 'string') return value;
      return (...args) => {
        const result = value.apply(obj, args);
        return result && typeof result.then === 'function' ? step(`${label}.${prop}`, () => result) : result;
      };
    },
  });
}

/** Run `main`, print its result (or the error) as one JSON line, exit 0/1. */
export async function run(main) {
  try {
    const result = await main();
    process.stdout.write(JSON.stringify({ ok: true, ...result }) + '\n');
    process.exit(0);
  } catch (err) {
    const detail = {
      ok: false,
      error: String(err?.message ?? err),
      name: err?.name,
      code: err?.code,
      step: currentStep,
      cause: err?.cause ? String(err.cause?.message ?? err.cause) : undefined,
      stack: err?.stack,
    };
    process.stdout.write(JSON.stringify(detail) + '\n');
    process.exit(1);
  }
}

/** RFC 7636 S256 pair made with node:crypto (@medplum/core's own startPkce falls back to plain in Node). */
export function pkcePair() {
  const verifier = randomBytes(48).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

export function decodeJwtPayload(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/** A raw HTTP call (no client library), to check what the server does with a token afterwards. */
export async function rawFetch(url, options = {}) {
  const response = await fetch(url, options);
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, body, wwwAuthenticate: response.headers.get('www-authenticate') };
}

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-dev-shm-usage',
];

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.E2E_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/**
 * Open `authorizeUrl` in a browser context, sign in on our page (email + password), allow the
 * consent page when it comes, and return the URL the server redirected to (`redirectUri?…`).
 *
 * Nothing listens at the redirect URI: the browser's request to it is read from Playwright's
 * `request` event (routes do not see the targets of redirects), and the failed navigation that
 * follows is expected. `context` may be reused to keep the server session (prompt=none).
 */
export async function browserAuthorize({ context, authorizeUrl, redirectUri, email, password, shotPrefix,
                                         expectSignIn = true, consent = 'allow' }) {
  const artifacts = process.env.E2E_ARTIFACTS;
  if (artifacts) mkdirSync(artifacts, { recursive: true });
  const page = await context.newPage();
  const steps = [];
  const screenshots = [];
  let callback;
  let arrive;
  const arrived = new Promise((resolve) => { arrive = resolve; });
  page.on('request', (request) => {
    if (!callback && request.url().startsWith(redirectUri)) {
      callback = request.url();
      arrive(callback);
    }
  });

  const shot = async (name) => {
    if (!artifacts || !shotPrefix) return;
    const path = join(artifacts, `${shotPrefix}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    screenshots.push(path);
  };
  // Wait until the browser leaves `pathname` for another of our pages or heads for the redirect URI.
  const leave = async (pathname, action) => {
    const left = page.waitForURL((u) => u.pathname !== pathname, { waitUntil: 'domcontentloaded', timeout: 15_000 })
      .catch((err) => { if (!callback) throw err; });
    await action();
    await Promise.race([arrived, left]);
  };

  await leave('about:blank', () => page.goto(authorizeUrl, { waitUntil: 'domcontentloaded' })
    .catch((err) => { if (!callback) throw err; }));
  for (let i = 0; i < 6 && !callback; i++) {
    const { pathname } = new URL(page.url());
    if (pathname === '/oauth2/signin') {
      steps.push('signin');
      await page.fill('#email', email);
      await page.fill('#password', password);
      await shot('signin');
      await leave(pathname, () => page.click('button[type=submit]'));
      if (!callback && new URL(page.url()).pathname === pathname) {
        throw new Error(`sign-in failed: ${(await page.innerText('body')).slice(0, 500)}`);
      }
    } else if (pathname === '/oauth2/consent') {
      steps.push('consent');
      const scopes = await page.$$eval('input[name=scope]', (els) => els.map((e) => e.value));
      steps.push(`consent-scopes:${scopes.join(' ')}`);
      await shot('consent');
      await leave(pathname, () => page.click(`button[name=action][value=${consent}]`));
    } else if (pathname === '/oauth2/profile') {
      throw new Error('unexpected profile chooser (the test user has one profile)');
    } else {
      await shot('unexpected');
      throw new Error(`unexpected page ${page.url()}: ${(await page.innerText('body')).slice(0, 500)}`);
    }
  }
  const result = await Promise.race([arrived, new Promise((_, reject) => setTimeout(
    () => reject(new Error(`no redirect to ${redirectUri}; last page ${page.url()}`)), 15_000))]);
  if (expectSignIn && !steps.includes('signin')) {
    throw new Error('the sign-in page was expected but did not appear');
  }
  await page.close();
  return { callbackUrl: result, steps, screenshots };
}

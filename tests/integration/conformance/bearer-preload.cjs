// Loaded with `node --require` into the MCP conformance suite, whose server mode cannot send a bearer token:
// adds `Authorization: Bearer $CK_CONFORMANCE_TOKEN` to every request for $CK_CONFORMANCE_ORIGIN (the server
// under test), through global fetch (the SDK's client transport) and undici.request (the DNS-rebinding check).
"use strict";
const origin = process.env.CK_CONFORMANCE_ORIGIN;
const token = process.env.CK_CONFORMANCE_TOKEN;
if (!origin || !token) {
  throw new Error("bearer-preload: set CK_CONFORMANCE_ORIGIN and CK_CONFORMANCE_TOKEN");
}

function forUs(target) {
  try {
    const url = typeof target === "string" ? target : target instanceof URL ? target.href : target.url;
    return new URL(url).origin === origin;
  } catch {
    return false;
  }
}

const originalFetch = globalThis.fetch;
globalThis.fetch = function (input, init) {
  if (forUs(input)) {
    const headers = new Headers((init && init.headers) || (input instanceof Request ? input.headers : undefined));
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
    init = { ...(init || {}), headers };
  }
  return originalFetch(input, init);
};

// undici as the suite resolves it (its own dependency), patched before the suite imports it.
const suiteDir = process.env.CK_CONFORMANCE_PACKAGE_DIR;
const undici = require(require.resolve("undici", suiteDir ? { paths: [suiteDir] } : undefined));
const originalRequest = undici.request;
undici.request = function (url, options = {}) {
  if (forUs(url)) {
    const headers = { ...(options.headers || {}) };
    if (!Object.keys(headers).some((k) => k.toLowerCase() === "authorization")) {
      headers.authorization = `Bearer ${token}`;
    }
    options = { ...options, headers };
  }
  return originalRequest.call(this, url, options);
};

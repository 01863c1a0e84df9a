// The JSON API client: fetch + the CSRF header + one error shape, and what a 401 means.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.status = status; // 0: the network failed, no answer
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429/503 Retry-After
  }
}

/**
 * Calls the JSON API with the session cookie. Unsafe methods carry the CSRF
 * header (the server also checks Origin, which same-origin fetch sends).
 * Resolves with the parsed body (null for 204); rejects with ApiError, or with
 * the AbortError when `signal` aborts.
 */
export async function api(method, path, body, signal, extraHeaders) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (method !== "GET" && method !== "HEAD") headers["X-Requested-With"] = "chatterwerks";
  const init = { method, headers, credentials: "same-origin", cache: "no-store", signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  let data = null;
  try {
    response = await fetch(path, init);
    if (response.status !== 204) {
      const text = await response.text();
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null; // a proxy's HTML error page, say
      }
    }
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection.");
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || `The server answered ${response.status}.`,
      Number(response.headers.get("Retry-After")) || 0,
    );
  }
  return data;
}

// What the page does when the session is found to be over; app.js decides
// (stop everything, show the sign-in form), so no module here imports it.
let sessionEnded = () => {};

export function onSessionEnded(callback) {
  sessionEnded = callback;
}

/** True when the error meant "not signed in" (and the page went to sign-in). */
export function handleAuthError(err) {
  if (err && err.status === 401) {
    sessionEnded("Your session has ended. Please sign in again.");
    return true;
  }
  return false;
}

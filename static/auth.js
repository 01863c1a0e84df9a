// The sign-in / register form: one form, two modes.

import { api } from "./api.js";
import { $, APP_NAME, USERNAME_RE, setFieldError, setText } from "./util.js";

let authMode = "login"; // or "register"

export function showScreen(name) {
  $("boot").hidden = name !== "boot";
  $("auth").hidden = name !== "auth";
  $("chat").hidden = name !== "chat";
}

export function showAuth(notice = "") {
  showScreen("auth");
  document.title = APP_NAME;
  $("auth-password").value = "";
  $("auth-notice").textContent = notice;
  $("auth-notice").hidden = !notice;
  clearAuthErrors();
  $("auth-username").focus();
}

export function setAuthMode(mode) {
  authMode = mode;
  const register = mode === "register";
  setText($("auth-title"), register ? "Create your account" : "Sign in");
  setText(
    $("auth-sub"),
    register ? "Pick a username and a password to join." : "Welcome back. Sign in to your team's chat.",
  );
  setText($("auth-submit"), register ? "Create account" : "Sign in");
  setText($("auth-switch-text"), register ? "Already have an account?" : "New here?");
  setText($("auth-switch"), register ? "Sign in" : "Create an account");
  $("auth-password").autocomplete = register ? "new-password" : "current-password";
  $("auth-username-hint").hidden = !register;
  $("auth-password-hint").hidden = !register;
  clearAuthErrors();
}

export function toggleAuthMode() {
  setAuthMode(authMode === "login" ? "register" : "login");
}

function clearAuthErrors() {
  setFieldError($("auth-username"), $("auth-username-error"), "");
  setFieldError($("auth-password"), $("auth-password-error"), "");
  $("auth-error").textContent = "";
}

/** Client-side checks mirroring the server's (docs/api.md limits). */
function validateAuth(username, password) {
  const errors = {};
  if (!username) errors.username = "Enter your username.";
  else if (authMode === "register" && !USERNAME_RE.test(username))
    errors.username = "Use 3–32 characters: letters, digits, _ . or -";
  if (!password) errors.password = "Enter your password.";
  else if (authMode === "register" && password.length < 8)
    errors.password = "Use at least 8 characters.";
  return errors;
}

/** Signs in or registers; then `onSignedIn()` (app.js's start) loads the chat. */
export async function submitAuth(event, onSignedIn) {
  event.preventDefault();
  const usernameInput = $("auth-username");
  const passwordInput = $("auth-password");
  const username = usernameInput.value.trim();
  const password = passwordInput.value;
  clearAuthErrors();
  const errors = validateAuth(username, password);
  if (errors.username || errors.password) {
    showAuthErrors(errors);
    return;
  }
  const submit = $("auth-submit");
  submit.disabled = true;
  try {
    // The answer carries a token for curl users; the browser relies on the
    // HttpOnly cookie the same answer sets, so the body is not kept.
    await api("POST", authMode === "register" ? "/api/register" : "/api/login", {
      username,
      password,
    });
    passwordInput.value = "";
    await onSignedIn();
  } catch (err) {
    const code = err.code || "";
    if (code.endsWith("username") || code === "username_taken") {
      showAuthErrors({ username: err.message });
    } else if (code.endsWith("password")) {
      showAuthErrors({ password: err.message });
    } else if (code === "invalid_credentials") {
      showAuthErrors({ password: "Wrong username or password." });
      passwordInput.value = "";
    } else if (err.status === 429) {
      $("auth-error").textContent = `Too many attempts. Try again in ${err.retryAfter || 60} s.`;
    } else {
      $("auth-error").textContent = err.message || "Something went wrong. Try again.";
    }
  } finally {
    submit.disabled = false;
  }
}

function showAuthErrors(errors) {
  setFieldError($("auth-username"), $("auth-username-error"), errors.username || "");
  setFieldError($("auth-password"), $("auth-password-error"), errors.password || "");
  (errors.username ? $("auth-username") : $("auth-password")).focus();
}

// Chatterwerks browser client: plain JavaScript, no framework, no build step.
//
// Layout of this file:
//   1. constants and small DOM helpers (h(): user text only ever becomes text nodes)
//   2. api(): fetch + JSON + the CSRF header + one error shape
//   3. state: what the server told us, and what the page shows
//   4. auth page (sign in / register)
//   5. sidebar, header, title
//   6. messages: history pages, rendering, scrolling, read markers
//   7. composer
//   8. members, direct channels, group channels (dialogs)
//   9. the long-poll loop: the only /api/events request, ever
//  10. boot and wiring
//
// Security: nothing here uses innerHTML or builds HTML strings; every piece of
// server or user text goes in through textContent / text nodes. The session is
// the HttpOnly cookie; the token the server returns is never kept.

"use strict";

// ---------------------------------------------------------------- 1. helpers

const APP_NAME = "Chatterwerks";
const POLL_TIMEOUT_S = 25; // server-side wait of one /api/events poll
const POLL_GRACE_MS = 20_000; // give up on a poll this long after its timeout
const PAGE_SIZE = 50; // messages per history page
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const BOTTOM_SLACK_PX = 48; // "at the bottom" within this distance
const TOP_LOAD_PX = 160; // load older messages within this distance of the top
const GROUP_WINDOW_MS = 5 * 60 * 1000; // consecutive messages of one author collapse
const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;

const $ = (id) => document.getElementById(id);

/** Builds an element. Children that are strings become text nodes (never HTML). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** A small stroke icon from path data (constants in this file, not user text). */
function icon(...paths) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

const ICONS = {
  home: ["M4 11l8-6 8 6", "M6 10v9h12v-9"],
  x: ["M6 6l12 12M18 6L6 18"],
};

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A stable colour class for a name, so a person looks the same everywhere. */
function colorClass(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return "c" + (hash % 8);
}

function avatar(user, extraClass = "") {
  const cls = `avatar ${user.is_bot ? "is-bot" : colorClass(user.username)} ${extraClass}`;
  return h("span", { class: cls.trim(), "aria-hidden": "true" }, initial(user.username));
}

function initial(name) {
  return (name || "?").slice(0, 1).toUpperCase();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  month: "long",
  day: "numeric",
});
const dayYearFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "long" });

function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(date) === dayKey(today)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  return date.getFullYear() === today.getFullYear()
    ? dayFormat.format(date)
    : dayYearFormat.format(date);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let toastTimer = 0;
function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 5000);
}

// ---------------------------------------------------------------- 2. api()

class ApiError extends Error {
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
async function api(method, path, body, signal, extraHeaders) {
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

// ---------------------------------------------------------------- 3. state

/**
 * `gen` changes on every sign-in and sign-out; async work started under an
 * older generation checks it after each await and drops its result.
 */
const state = {
  gen: 0,
  me: null, // User
  cursor: null, // the events cursor we follow
  channels: new Map(), // id -> Channel (last_seq, last_read_seq kept current)
  currentId: null,
  // id -> { status: "loading"|"ready"|"error", msgs: Map(seq -> Message),
  //         hasMore, loadingOlder, scroll: null (at bottom) | scrollTop, error }
  // A channel's entry holds one contiguous run of seqs ending at its newest
  // message: the newest page from history, then every message the events
  // deliver. Channels never opened have no entry (events only bump last_seq).
  history: new Map(),
  members: new Map(), // id -> [User]
  drafts: new Map(), // id -> composer text
  sendKeys: new Map(), // id -> {text, key}: the Idempotency-Key of a send not yet confirmed
  sending: false,
  pollAbort: null, // AbortController of the poll in flight
  wake: null, // resolves the backoff wait early (the browser came back online)
  lastScrollTop: 0,
};

/** What the sidebar and views need to drop on sign-out or a state reload. */
function resetState() {
  state.me = null;
  state.cursor = null;
  state.channels = new Map();
  state.currentId = null;
  state.history = new Map();
  state.members = new Map();
  state.drafts = new Map();
  state.sendKeys = new Map();
  state.sending = false;
}

function unreadOf(channel) {
  return Math.max(0, channel.last_seq - channel.last_read_seq);
}

function channelLabel(channel) {
  if (channel.kind === "home") return "Home";
  if (channel.kind === "direct") return channel.peer ? channel.peer.username : "Direct";
  return channel.name;
}

/** Sidebar order: Home, groups by name, direct channels by peer name. */
function sortedChannels(kind) {
  return [...state.channels.values()]
    .filter((c) => c.kind === kind)
    .sort((a, b) =>
      channelLabel(a).localeCompare(channelLabel(b), undefined, { sensitivity: "base" }),
    );
}

function upsertChannel(channel) {
  const known = state.channels.get(channel.id);
  if (known) {
    // Our local view may be ahead (events seen, markers moved): never go back.
    channel = {
      ...known,
      ...channel,
      last_seq: Math.max(known.last_seq, channel.last_seq),
      last_read_seq: Math.max(known.last_read_seq, channel.last_read_seq),
    };
  }
  delete channel.members;
  state.channels.set(channel.id, channel);
  return channel;
}

function forgetChannel(id) {
  state.channels.delete(id);
  state.history.delete(id);
  state.members.delete(id);
  state.drafts.delete(id);
  if (state.currentId === id) {
    state.currentId = null;
    const home = sortedChannels("home")[0];
    if (home) switchChannel(home.id, { focus: false });
  }
  renderSidebar();
}

// ---------------------------------------------------------------- 4. auth page

let authMode = "login"; // or "register"

function showScreen(name) {
  $("boot").hidden = name !== "boot";
  $("auth").hidden = name !== "auth";
  $("chat").hidden = name !== "chat";
}

function showAuth(notice = "") {
  showScreen("auth");
  document.title = APP_NAME;
  $("auth-password").value = "";
  $("auth-notice").textContent = notice;
  $("auth-notice").hidden = !notice;
  clearAuthErrors();
  $("auth-username").focus();
}

function setAuthMode(mode) {
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

function setFieldError(input, errorEl, message) {
  errorEl.textContent = message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

function clearAuthErrors() {
  setFieldError($("auth-username"), $("auth-username-error"), "");
  setFieldError($("auth-password"), $("auth-password-error"), "");
  $("auth-error").textContent = "";
}

/** Client-side checks mirroring the server's (API.md limits). */
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

async function submitAuth(event) {
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
    await start();
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

// ---------------------------------------------------------------- 5. sidebar, header, title

const sidebarItems = new Map(); // channel id -> { li, button, name, badge }

function sidebarItem(channel) {
  let item = sidebarItems.get(channel.id);
  if (item) return item;
  const button = h("button", {
    type: "button",
    class: "chan",
    "data-channel-id": channel.id,
    onclick: () => switchChannel(channel.id),
  });
  item = { li: h("li", null, button), button, name: h("span", { class: "chan-name" }) };
  item.badge = h("span", { class: "badge", hidden: true });
  item.srUnread = h("span", { class: "sr-only" });
  if (channel.kind === "home") {
    button.append(h("span", { class: "chan-icon" }, icon(...ICONS.home)));
  } else if (channel.kind === "direct" && channel.peer) {
    button.append(avatar(channel.peer, "chan-icon"));
  } else {
    button.append(h("span", { class: "chan-icon", "aria-hidden": "true" }, "#"));
  }
  button.append(item.name);
  if (channel.kind === "direct" && channel.peer && channel.peer.is_bot) {
    button.append(h("span", { class: "tag tag-bot" }, "bot"));
  }
  button.append(item.srUnread, item.badge);
  sidebarItems.set(channel.id, item);
  return item;
}

/**
 * Updates the sidebar in place: items are reused, and the lists are only
 * re-ordered when the order changed, so keyboard focus survives new messages.
 */
function renderSidebar() {
  for (const id of [...sidebarItems.keys()]) {
    if (!state.channels.has(id)) sidebarItems.delete(id);
  }
  const lists = { home: $("home-list"), group: $("group-list"), direct: $("direct-list") };
  for (const [kind, list] of Object.entries(lists)) {
    const wanted = sortedChannels(kind).map((channel) => {
      const item = sidebarItem(channel);
      const unread = unreadOf(channel);
      setText(item.name, channelLabel(channel));
      setText(item.badge, unread > 99 ? "99+" : String(unread));
      setText(item.srUnread, unread ? `, ${unread} unread` : "");
      item.badge.hidden = unread === 0;
      item.badge.setAttribute("aria-hidden", "true");
      item.button.classList.toggle("has-unread", unread > 0);
      if (channel.id === state.currentId) item.button.setAttribute("aria-current", "page");
      else item.button.removeAttribute("aria-current");
      return item.li;
    });
    const current = [...list.children];
    if (current.length !== wanted.length || current.some((li, i) => li !== wanted[i])) {
      list.replaceChildren(...wanted);
    }
  }
  $("group-empty").hidden = sortedChannels("group").length > 0;
  renderTitle();
}

/** The tab title shows the unread total: "(3) Chatterwerks". */
function renderTitle() {
  let total = 0;
  let elsewhere = 0;
  for (const channel of state.channels.values()) {
    total += unreadOf(channel);
    if (channel.id !== state.currentId) elsewhere += unreadOf(channel);
  }
  document.title = total ? `(${total}) ${APP_NAME}` : APP_NAME;
  // On a phone the sidebar is hidden: a dot on its button says "unread elsewhere".
  $("nav-toggle-badge").hidden = elsewhere === 0;
  $("nav-toggle").setAttribute(
    "aria-label",
    elsewhere ? `Show channels (${elsewhere} unread)` : "Show channels",
  );
}

function renderHeader() {
  const channel = state.channels.get(state.currentId);
  const title = $("channel-title");
  if (!channel) {
    title.replaceChildren();
    return;
  }
  const parts = [];
  if (channel.kind === "group") parts.push(h("span", { class: "title-prefix" }, "#"));
  parts.push(channelLabel(channel));
  if (channel.kind === "direct" && channel.peer && channel.peer.is_bot) {
    parts.push(h("span", { class: "tag tag-bot" }, "bot"));
  }
  title.replaceChildren(...parts);
  let description = channel.description || "";
  if (channel.kind === "direct") description = "Direct messages";
  if (channel.kind === "home" && !description) description = "Everyone is here.";
  setText($("channel-desc"), description);
  const label = channel.kind === "group" ? `#${channelLabel(channel)}` : channelLabel(channel);
  $("composer-input").placeholder = `Message ${label}`;
  setText($("composer-label"), `Message ${label}`);
}

// Sidebar and member drawers on narrow screens.
function setNavOpen(open) {
  $("chat").classList.toggle("nav-open", open);
  $("nav-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("nav-close").focus();
}

function setMembersOpen(open) {
  $("chat").classList.toggle("members-open", open);
  $("members-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("members-close").focus();
}

const narrow = window.matchMedia("(max-width: 760px)");

// ---------------------------------------------------------------- 6. messages

function switchChannel(id, { focus = true } = {}) {
  const channel = state.channels.get(id);
  if (!channel) return;
  // Switching channels only changes what is shown: it never touches the poll.
  if (state.currentId !== null && state.currentId !== id) {
    saveScroll();
    state.drafts.set(state.currentId, $("composer-input").value);
  }
  const changed = state.currentId !== id;
  state.currentId = id;
  history.replaceState(null, "", `#channel-${id}`);
  renderSidebar();
  renderHeader();
  if (changed) {
    $("composer-input").value = state.drafts.get(id) || "";
    $("composer-error").textContent = "";
    updateSendButton();
    hideNewMarker();
    renderMembers();
    loadMembers(id);
  }
  setNavOpen(false);
  let hist = state.history.get(id);
  if (!hist || hist.status === "error") hist = loadLatest(id);
  renderMessages();
  restoreScroll(hist);
  maybeMarkRead();
  if (focus && !narrow.matches) $("composer-input").focus();
}

function saveScroll() {
  const hist = state.history.get(state.currentId);
  if (hist && hist.status === "ready") hist.scroll = isAtBottom() ? null : $("messages").scrollTop;
}

function restoreScroll(hist) {
  if (hist.scroll === null || hist.scroll === undefined) scrollToBottom();
  else $("messages").scrollTop = hist.scroll;
}

function isAtBottom() {
  const el = $("messages");
  return el.scrollHeight - el.scrollTop - el.clientHeight <= BOTTOM_SLACK_PX;
}

function scrollToBottom() {
  const el = $("messages");
  el.scrollTop = el.scrollHeight;
  hideNewMarker();
}

function newestSeq(hist) {
  let newest = 0;
  for (const seq of hist.msgs.keys()) if (seq > newest) newest = seq;
  return newest;
}

function oldestSeq(hist) {
  let oldest = Infinity;
  for (const seq of hist.msgs.keys()) if (seq < oldest) oldest = seq;
  return oldest;
}

/** Adds a message to a channel's run; false if it was there (dedupe by seq). */
function storeMessage(hist, message) {
  if (hist.msgs.has(message.seq)) return false;
  hist.msgs.set(message.seq, message);
  return true;
}

/** Opens a channel at its newest page. Returns the (loading) history entry. */
function loadLatest(id) {
  const gen = state.gen;
  const hist = {
    status: "loading",
    msgs: new Map(),
    hasMore: false,
    loadingOlder: false,
    scroll: null,
    error: "",
  };
  state.history.set(id, hist);
  (async () => {
    try {
      const page = await api("GET", `/api/channels/${id}/messages?limit=${PAGE_SIZE}`);
      if (gen !== state.gen || state.history.get(id) !== hist) return;
      // Events may already have put newer messages here: merge, dedupe by seq.
      for (const message of page.messages) storeMessage(hist, message);
      hist.hasMore = page.has_more;
      hist.status = "ready";
      const channel = state.channels.get(id);
      if (channel) channel.last_seq = Math.max(channel.last_seq, newestSeq(hist));
    } catch (err) {
      if (gen !== state.gen || state.history.get(id) !== hist) return;
      if (handleAuthError(err)) return;
      if (err.status === 404) {
        forgetChannel(id);
        toast("That channel is no longer available.");
        return;
      }
      hist.status = "error";
      hist.error = err.message;
    }
    if (state.currentId === id) {
      renderMessages();
      scrollToBottom();
      fillViewport();
      maybeMarkRead();
    }
  })();
  return hist;
}

/** Loads the page before the oldest message shown, keeping the reader's place. */
async function loadOlder() {
  const id = state.currentId;
  const hist = state.history.get(id);
  if (!hist || hist.status !== "ready" || !hist.hasMore || hist.loadingOlder) return;
  const gen = state.gen;
  hist.loadingOlder = true;
  hist.olderError = "";
  renderHistoryStatus();
  try {
    const before = oldestSeq(hist);
    const page = await api(
      "GET",
      `/api/channels/${id}/messages?before=${before}&limit=${PAGE_SIZE}`,
    );
    if (gen !== state.gen || state.history.get(id) !== hist) return;
    for (const message of page.messages) storeMessage(hist, message);
    hist.hasMore = page.has_more;
  } catch (err) {
    if (gen !== state.gen) return;
    if (handleAuthError(err)) return;
    hist.olderError = err.message;
  } finally {
    hist.loadingOlder = false;
  }
  if (state.currentId === id) {
    renderMessagesKeepingPlace();
    fillViewport();
  }
}

/** Short channels do not scroll, so no scroll event asks for older pages. */
function fillViewport() {
  const el = $("messages");
  const hist = state.history.get(state.currentId);
  if (hist && hist.hasMore && !hist.olderError && el.scrollHeight <= el.clientHeight + TOP_LOAD_PX)
    loadOlder();
}

// What the message list currently shows, so new messages can be appended.
const rendered = { channelId: null, newest: 0, last: null };

function renderHistoryStatus() {
  const status = $("history-status");
  const retry = $("history-retry");
  const hist = state.history.get(state.currentId);
  const channel = state.channels.get(state.currentId);
  status.classList.remove("beginning");
  retry.hidden = true;
  if (!hist || !channel) {
    setText(status, "");
  } else if (hist.status === "loading") {
    setText(status, "Loading messages…");
  } else if (hist.status === "error") {
    setText(status, `Couldn't load messages: ${hist.error}`);
    retry.hidden = false;
  } else if (hist.loadingOlder) {
    setText(status, "Loading older messages…");
  } else if (hist.olderError) {
    setText(status, `Couldn't load older messages: ${hist.olderError}`);
    retry.hidden = false;
  } else if (!hist.hasMore) {
    status.classList.add("beginning");
    const name =
      channel.kind === "direct"
        ? `your conversation with ${channelLabel(channel)}`
        : channel.kind === "group"
          ? `#${channelLabel(channel)}`
          : "Home";
    setText(status, `This is the very beginning of ${name}.`);
  } else {
    setText(status, "");
  }
}

function messageNodes(message, previous) {
  const nodes = [];
  const when = new Date(message.created_at);
  const prevWhen = previous ? new Date(previous.created_at) : null;
  if (!prevWhen || dayKey(prevWhen) !== dayKey(when)) {
    nodes.push(h("li", { class: "day", role: "separator" }, dayLabel(when)));
  }
  const author = message.author;
  const mine = state.me && author.id === state.me.id;
  const continued =
    previous &&
    prevWhen &&
    previous.author.id === author.id &&
    dayKey(prevWhen) === dayKey(when) &&
    when - prevWhen < GROUP_WINDOW_MS;
  const classes = ["msg"];
  if (mine) classes.push("mine");
  if (author.is_bot) classes.push("bot");
  if (continued) classes.push("cont");
  const time = h(
    "time",
    { class: "msg-time", datetime: message.created_at, title: fullFormat.format(when) },
    timeFormat.format(when),
  );
  const head = h(
    "div",
    { class: continued ? "msg-head sr-only" : "msg-head" },
    h("span", { class: "author" }, author.username),
    author.is_bot ? h("span", { class: "tag tag-bot", title: "An automated account" }, "bot") : null,
    mine ? h("span", { class: "tag tag-you" }, "you") : null,
    time,
  );
  const gutter = continued
    ? h("span", { class: "gutter-time", "aria-hidden": "true" }, timeFormat.format(when))
    : avatar(author);
  nodes.push(
    h(
      "li",
      { class: classes.join(" "), "data-seq": message.seq, "data-author": author.username },
      gutter,
      head,
      h("div", { class: "msg-text" }, message.text),
    ),
  );
  return nodes;
}

/** Renders the current channel's messages from scratch. */
function renderMessages() {
  const list = $("message-list");
  const hist = state.history.get(state.currentId);
  renderHistoryStatus();
  rendered.channelId = state.currentId;
  rendered.newest = 0;
  rendered.last = null;
  if (!hist || hist.status !== "ready") {
    list.replaceChildren();
    return;
  }
  const nodes = [];
  let previous = null;
  for (const seq of [...hist.msgs.keys()].sort((a, b) => a - b)) {
    const message = hist.msgs.get(seq);
    nodes.push(...messageNodes(message, previous));
    previous = message;
  }
  list.replaceChildren(...nodes);
  rendered.newest = previous ? previous.seq : 0;
  rendered.last = previous;
}

/** Re-renders while keeping what the reader looks at in place (older pages
 * arrive above; their height is added to scrollTop). */
function renderMessagesKeepingPlace() {
  const el = $("messages");
  const atBottom = isAtBottom();
  const fromBottom = el.scrollHeight - el.scrollTop;
  renderMessages();
  if (atBottom) scrollToBottom();
  else el.scrollTop = el.scrollHeight - fromBottom;
}

/** A message for the channel on screen: appended, scrolled to or announced. */
function showNewMessage(message, { own = false } = {}) {
  const atBottom = isAtBottom();
  if (rendered.channelId === state.currentId && message.seq > rendered.newest) {
    const hist = state.history.get(state.currentId);
    // Append when it directly follows what is shown; else redraw the run.
    if (rendered.newest && message.seq === rendered.newest + 1) {
      $("message-list").append(...messageNodes(message, rendered.last));
      rendered.newest = message.seq;
      rendered.last = message;
      // A later seq may have arrived first (own send vs. event): catch up.
      let next;
      while ((next = hist.msgs.get(rendered.newest + 1))) {
        $("message-list").append(...messageNodes(next, rendered.last));
        rendered.newest = next.seq;
        rendered.last = next;
      }
    } else {
      renderMessagesKeepingPlace();
    }
  } else {
    renderMessagesKeepingPlace();
  }
  if (own || atBottom) scrollToBottom();
  else showNewMarker();
  maybeMarkRead();
}

function showNewMarker() {
  $("new-marker").hidden = false;
}

function hideNewMarker() {
  $("new-marker").hidden = true;
}

/**
 * Moves the read marker when the reader sees the newest message: the tab is
 * visible and the list is scrolled to the bottom. The badge falls at once; the
 * server tells our other tabs with a `read` event.
 */
function maybeMarkRead() {
  const id = state.currentId;
  const channel = state.channels.get(id);
  const hist = state.history.get(id);
  if (!channel || !hist || hist.status !== "ready") return;
  if (document.visibilityState !== "visible" || !isAtBottom()) return;
  const seq = Math.max(newestSeq(hist), 0);
  if (seq <= channel.last_read_seq) return;
  channel.last_read_seq = seq;
  renderSidebar();
  const gen = state.gen;
  api("POST", `/api/channels/${id}/read`, { seq }).catch((err) => {
    if (gen === state.gen) handleAuthError(err); // else: the next change retries it
  });
}

function onMessagesScroll() {
  const el = $("messages");
  const goingUp = el.scrollTop < state.lastScrollTop;
  state.lastScrollTop = el.scrollTop;
  if (el.scrollTop <= TOP_LOAD_PX && (goingUp || el.scrollTop === 0)) loadOlder();
  if (isAtBottom()) {
    hideNewMarker();
    maybeMarkRead();
  }
}

// ---------------------------------------------------------------- 7. composer

function updateSendButton() {
  $("send").disabled = state.sending || !$("composer-input").value.trim();
}

function onComposerKeydown(event) {
  // Enter sends; Shift+Enter is a new line; an IME composition keeps its Enter.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
}

/**
 * The Idempotency-Key for sending `text` in a channel: the same as the last
 * attempt's while the text is the same, so a retry after a failure (whose
 * send may have committed before the answer was lost) posts it only once.
 */
function sendKeyFor(channelId, text) {
  const held = state.sendKeys.get(channelId);
  if (held && held.text === text) return held.key;
  // crypto.randomUUID() exists only on HTTPS and localhost; this works on plain HTTP too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const key = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  state.sendKeys.set(channelId, { text, key });
  return key;
}

async function sendMessage(event) {
  event.preventDefault();
  const input = $("composer-input");
  const raw = input.value;
  const text = raw.trim();
  const id = state.currentId;
  if (!text || state.sending || !state.channels.has(id)) return;
  const gen = state.gen;
  state.sending = true;
  updateSendButton();
  $("composer-error").textContent = "";
  try {
    const key = sendKeyFor(id, text);
    const { message } = await api("POST", `/api/channels/${id}/messages`, { text }, undefined, {
      "Idempotency-Key": key,
    });
    if (state.sendKeys.get(id)?.key === key) state.sendKeys.delete(id);
    if (gen !== state.gen) return;
    // Clear only what was sent: the reader may have switched channel or typed on.
    if (state.currentId === id) {
      if (input.value === raw) input.value = "";
    } else if (state.drafts.get(id) === raw) {
      state.drafts.delete(id);
    }
    applyMessage(message, { own: true });
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    // The text stays in the composer, so nothing typed is lost.
    if (state.currentId === id) {
      $("composer-error").textContent = `Not sent: ${err.message}`;
    } else {
      toast(`Your message was not sent: ${err.message}`);
    }
  } finally {
    if (gen === state.gen) {
      state.sending = false;
      updateSendButton();
    }
  }
}

// ---------------------------------------------------------------- 8. members, direct, groups

async function loadMembers(id) {
  const gen = state.gen;
  try {
    const { channel } = await api("GET", `/api/channels/${id}`);
    if (gen !== state.gen || !state.channels.has(id)) return;
    state.members.set(id, channel.members);
    upsertChannel(channel);
    if (state.currentId === id) {
      renderMembers();
      renderHeader();
    }
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    if (err.status === 404) forgetChannel(id);
  }
}

function renderMembers() {
  const id = state.currentId;
  const channel = state.channels.get(id);
  const members = state.members.get(id);
  const list = $("member-list");
  if (!channel || !members) {
    list.replaceChildren(h("li", { class: "members-help" }, "Loading…"));
    setText($("members-count"), "Members");
    $("add-member").hidden = true;
    $("leave-channel").hidden = true;
    return;
  }
  const moderator = channel.kind === "group" && channel.role === "moderator";
  list.replaceChildren(
    ...members.map((user) => {
      const isMe = user.id === state.me.id;
      const button = h(
        "button",
        {
          type: "button",
          class: "member",
          "data-username": user.username,
          disabled: isMe,
          title: isMe ? null : `Message ${user.username}`,
          onclick: () => openDirect(user.username),
        },
        avatar(user),
        h("span", { class: "member-name" }, user.username),
        user.is_bot ? h("span", { class: "tag tag-bot" }, "bot") : null,
        isMe ? h("span", { class: "tag tag-you" }, "you") : null,
        isMe ? null : h("span", { class: "sr-only" }, ": send a direct message"),
      );
      const row = h("li", { class: "member-row" }, button);
      if (moderator && !isMe) {
        row.append(
          h(
            "button",
            {
              type: "button",
              class: "icon-btn member-remove",
              "aria-label": `Remove ${user.username} from the channel`,
              title: `Remove ${user.username}`,
              onclick: () => removeMember(id, user.username),
            },
            icon(...ICONS.x),
          ),
        );
      }
      return row;
    }),
  );
  setText($("members-count"), `${members.length}`);
  $("members-toggle").setAttribute("aria-label", `Members: ${members.length}`);
  $("add-member").hidden = !moderator;
  $("leave-channel").hidden = channel.kind !== "group";
}

/** Opens (or creates) the direct channel with a person, and shows it. */
async function openDirect(username) {
  if (!state.me || username.toLowerCase() === state.me.username.toLowerCase()) return;
  const gen = state.gen;
  try {
    const { channel } = await api("POST", "/api/direct", { username });
    if (gen !== state.gen) return;
    const known = upsertChannel(channel);
    setMembersOpen(false);
    closeDialog($("direct-dialog"));
    switchChannel(known.id);
    return true;
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    toast(`Couldn't open a conversation with ${username}: ${err.message}`);
    return false;
  }
}

async function removeMember(id, username) {
  const gen = state.gen;
  try {
    await api("DELETE", `/api/channels/${id}/members/${encodeURIComponent(username)}`);
    if (gen !== state.gen) return;
    if (username.toLowerCase() === state.me.username.toLowerCase()) {
      forgetChannel(id);
      toast("You left the channel.");
    } else {
      loadMembers(id);
    }
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    toast(err.message);
  }
}

async function addMember(event) {
  event.preventDefault();
  const id = state.currentId;
  const input = $("add-member-input");
  const username = input.value.trim();
  const errorEl = $("add-member-error");
  if (!USERNAME_RE.test(username)) {
    setFieldError(input, errorEl, "Enter a username (3–32 characters).");
    return;
  }
  setFieldError(input, errorEl, "");
  const gen = state.gen;
  try {
    const { channel } = await api("POST", `/api/channels/${id}/members`, { username });
    if (gen !== state.gen) return;
    input.value = "";
    state.members.set(id, channel.members);
    upsertChannel(channel);
    if (state.currentId === id) renderMembers();
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    setFieldError(input, errorEl, err.message);
  }
}

// User search, shared by the "find people" dialog and the add-member field.
let searchSeq = 0;
async function searchUsers(query) {
  const mine = ++searchSeq;
  const { users } = await api("GET", `/api/users?q=${encodeURIComponent(query)}`);
  return mine === searchSeq ? users : null; // null: a newer search superseded this one
}

function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

const refreshDirectResults = debounce(async () => {
  const query = $("direct-search").value.trim();
  const errorEl = $("direct-error");
  try {
    const users = await searchUsers(query);
    if (!users) return;
    errorEl.textContent = "";
    const others = users.filter((user) => user.id !== state.me.id);
    $("direct-results").replaceChildren(
      ...(others.length
        ? others.map((user) =>
            h(
              "li",
              null,
              h(
                "button",
                {
                  type: "button",
                  class: "member",
                  "data-username": user.username,
                  onclick: () => openDirect(user.username),
                },
                avatar(user),
                h("span", { class: "member-name" }, user.username),
                user.is_bot ? h("span", { class: "tag tag-bot" }, "bot") : null,
              ),
            ),
          )
        : [h("li", { class: "empty" }, query ? `Nobody called “${query}…”` : "Nobody here yet.")]),
    );
  } catch (err) {
    if (handleAuthError(err)) return;
    errorEl.textContent = err.message;
  }
}, 150);

const refreshMemberOptions = debounce(async () => {
  const query = $("add-member-input").value.trim();
  if (!query) return;
  try {
    const users = await searchUsers(query);
    if (!users) return;
    $("add-member-options").replaceChildren(
      ...users.map((user) => h("option", { value: user.username })),
    );
  } catch {
    // Suggestions are a convenience; the add itself reports errors.
  }
}, 200);

function openDirectDialog() {
  const dialog = $("direct-dialog");
  $("direct-search").value = "";
  $("direct-error").textContent = "";
  $("direct-results").replaceChildren();
  setNavOpen(false);
  dialog.showModal();
  $("direct-search").focus();
  refreshDirectResults();
}

function openChannelDialog() {
  const form = $("channel-form");
  form.reset();
  clearChannelErrors();
  setNavOpen(false);
  $("channel-dialog").showModal();
  $("channel-name").focus();
}

function closeDialog(dialog) {
  if (dialog.open) dialog.close();
}

function clearChannelErrors() {
  for (const field of ["name", "description", "members"]) {
    setFieldError($(`channel-${field}`), $(`channel-${field}-error`), "");
  }
  $("channel-error").textContent = "";
}

async function createChannel(event) {
  event.preventDefault();
  clearChannelErrors();
  const name = $("channel-name").value.trim();
  const description = $("channel-description").value.trim();
  const members = $("channel-members")
    .value.split(/[\s,]+/)
    .map((m) => m.replace(/^@/, ""))
    .filter(Boolean);
  if (!name) {
    setFieldError($("channel-name"), $("channel-name-error"), "Give the channel a name.");
    $("channel-name").focus();
    return;
  }
  const bad = members.find((m) => !USERNAME_RE.test(m));
  if (bad) {
    setFieldError($("channel-members"), $("channel-members-error"), `“${bad}” is not a username.`);
    $("channel-members").focus();
    return;
  }
  const gen = state.gen;
  $("channel-submit").disabled = true;
  try {
    const { channel } = await api("POST", "/api/channels", { name, description, members });
    if (gen !== state.gen) return;
    const known = upsertChannel(channel);
    closeDialog($("channel-dialog"));
    switchChannel(known.id);
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    const code = err.code || "";
    const field =
      code === "channel_exists" || code.endsWith("_name")
        ? "name"
        : code.endsWith("description")
          ? "description"
          : code === "user_not_found" || code.endsWith("members")
            ? "members"
            : null;
    if (field) {
      setFieldError($(`channel-${field}`), $(`channel-${field}-error`), err.message);
      $(`channel-${field}`).focus();
    } else {
      $("channel-error").textContent = err.message;
    }
  } finally {
    $("channel-submit").disabled = false;
  }
}

// ---------------------------------------------------------------- 9. the poll loop

/**
 * Puts one message from anywhere (an event, or our own send's answer) into
 * the state. Duplicates (same channel, same seq) are dropped.
 */
function applyMessage(message, { own = false } = {}) {
  const channel = state.channels.get(message.channel_id);
  if (!channel) return; // not (or no longer) ours; a channel_added precedes ours
  channel.last_seq = Math.max(channel.last_seq, message.seq);
  const hist = state.history.get(message.channel_id);
  // Channels never opened keep no messages: opening loads the newest page.
  if (hist && hist.status !== "error") {
    const added = storeMessage(hist, message);
    if (added && hist.status === "ready" && message.channel_id === state.currentId) {
      showNewMessage(message, { own });
    }
  }
  renderSidebar();
}

function applyEvents(events) {
  for (const event of events) {
    switch (event.type) {
      case "message":
        applyMessage(event.message);
        break;
      case "channel_added": {
        upsertChannel(event.channel);
        renderSidebar();
        break;
      }
      case "channel_removed": {
        if (!state.channels.has(event.channel_id)) break;
        const wasCurrent = state.currentId === event.channel_id;
        const label = channelLabel(state.channels.get(event.channel_id));
        forgetChannel(event.channel_id);
        if (wasCurrent) toast(`You are no longer a member of ${label}.`);
        break;
      }
      case "read": {
        // Our own marker moved, maybe in another tab: the badge follows.
        const channel = state.channels.get(event.channel_id);
        if (channel && event.seq > channel.last_read_seq) {
          channel.last_read_seq = event.seq;
          renderSidebar();
        }
        break;
      }
      default:
        break; // a newer server's event: ignore what we do not know
    }
  }
}

/** Takes GET /api/me's answer as the whole truth (sign-in, or a reload). */
function applySnapshot(me) {
  const previous = state.currentId;
  if (previous !== null) state.drafts.set(previous, $("composer-input").value);
  state.me = me.user;
  state.cursor = me.cursor;
  state.channels = new Map(me.channels.map((c) => [c.id, c]));
  state.history = new Map();
  state.members = new Map();
  setText($("me-name"), me.user.username);
  $("me-avatar").replaceWith(Object.assign(avatar(me.user), { id: "me-avatar" }));
  const fromHash = Number((location.hash.match(/^#channel-(\d+)$/) || [])[1]);
  const home = me.channels.find((c) => c.kind === "home");
  const target = [previous, fromHash, home && home.id].find((id) => state.channels.has(id));
  state.currentId = null;
  renderSidebar();
  if (target !== undefined) switchChannel(target, { focus: false });
}

function setConnection(ok, text = "Reconnecting…") {
  $("conn-banner").hidden = ok;
  setText($("conn-text"), text);
}

/** Capped exponential backoff with jitter: 1 s, 2 s, 4 s ... at most 30 s. */
function backoffDelay(failures, retryAfterS = 0) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures - 1, 10));
  const delay = cap / 2 + Math.random() * (cap / 2);
  return Math.max(delay, retryAfterS * 1000);
}

/** Waits, unless the browser comes back online first. */
function waitOrWake(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      state.wake = null;
      resolve();
    }
    state.wake = done;
  });
}

/**
 * The page's one long-poll. It runs from sign-in to sign-out and is the only
 * code that requests /api/events, one request at a time, so clicking around
 * can never start another. It owns the cursor; on invalid_cursor it reloads
 * the whole state (GET /api/me gives a fresh, consistent cursor).
 */
async function pollLoop(gen) {
  let failures = 0;
  let reload = false;
  while (gen === state.gen) {
    const controller = new AbortController();
    state.pollAbort = controller;
    // A poll that never answers (a proxy swallowed it) is given up on.
    const watchdog = setTimeout(() => controller.abort(), POLL_TIMEOUT_S * 1000 + POLL_GRACE_MS);
    try {
      if (reload) {
        const me = await api("GET", "/api/me", undefined, controller.signal);
        if (gen !== state.gen) return;
        applySnapshot(me);
        reload = false;
      }
      const query = `cursor=${encodeURIComponent(state.cursor)}&timeout=${POLL_TIMEOUT_S}`;
      const answer = await api("GET", `/api/events?${query}`, undefined, controller.signal);
      if (gen !== state.gen) return;
      failures = 0;
      setConnection(true);
      state.cursor = answer.cursor;
      applyEvents(answer.events);
    } catch (err) {
      if (gen !== state.gen) return; // signed out meanwhile: this loop is over
      if (err.status === 401) {
        signedOut("Your session has ended. Please sign in again.");
        return;
      }
      if (err.status === 400 && err.code === "invalid_cursor") {
        reload = true;
        continue;
      }
      // Network error, our watchdog, 5xx, 429, or anything unexpected: back off.
      if (!(err instanceof ApiError) && err.name !== "AbortError") console.error(err);
      failures += 1;
      if (err.status >= 400 && err.status < 500 && err.status !== 429) reload = true;
      const delay = backoffDelay(failures, err.retryAfter);
      setConnection(false, `Connection lost. Reconnecting in ${Math.ceil(delay / 1000)} s…`);
      await waitOrWake(delay);
      if (gen === state.gen) setConnection(false, "Reconnecting…");
    } finally {
      clearTimeout(watchdog);
    }
  }
}

// ---------------------------------------------------------------- 10. boot and wiring

/** True when the error meant "not signed in" (and the page went to sign-in). */
function handleAuthError(err) {
  if (err && err.status === 401) {
    signedOut("Your session has ended. Please sign in again.");
    return true;
  }
  return false;
}

/** Ends everything of the current session in the page (not on the server). */
function stopSession() {
  state.gen += 1;
  if (state.pollAbort) state.pollAbort.abort();
  state.pollAbort = null;
  if (state.wake) state.wake();
  resetState();
  sidebarItems.clear();
  for (const id of ["home-list", "group-list", "direct-list", "message-list", "member-list"]) {
    $(id).replaceChildren();
  }
  for (const dialog of document.querySelectorAll("dialog")) closeDialog(dialog);
  setConnection(true);
  setNavOpen(false);
  setMembersOpen(false);
  $("composer-input").value = "";
}

function signedOut(notice) {
  stopSession();
  history.replaceState(null, "", location.pathname);
  showAuth(notice);
}

async function signOut() {
  stopSession();
  history.replaceState(null, "", location.pathname);
  try {
    await api("POST", "/api/logout");
  } catch {
    // The session may already be gone; either way the page is signed out.
  }
  setAuthMode("login");
  showAuth();
}

/** Loads the state and, signed in, shows the chat and starts the poll. */
async function start() {
  stopSession();
  const gen = state.gen;
  let failures = 0;
  for (;;) {
    try {
      const me = await api("GET", "/api/me");
      if (gen !== state.gen) return;
      showScreen("chat");
      applySnapshot(me);
      pollLoop(gen);
      if (!narrow.matches) $("composer-input").focus();
      return;
    } catch (err) {
      if (gen !== state.gen) return;
      if (err.status === 401) {
        showAuth();
        return;
      }
      failures += 1;
      const delay = backoffDelay(failures, err.retryAfter);
      showScreen("boot");
      setText($("boot-text"), `Can't reach Chatterwerks. Retrying in ${Math.ceil(delay / 1000)} s…`);
      await waitOrWake(delay);
    }
  }
}

function wire() {
  $("auth-form").addEventListener("submit", submitAuth);
  $("auth-switch").addEventListener("click", () => {
    setAuthMode(authMode === "login" ? "register" : "login");
    $("auth-username").focus();
  });
  for (const id of ["auth-username", "auth-password"]) {
    $(id).addEventListener("input", () => setFieldError($(id), $(`${id}-error`), ""));
  }

  $("composer").addEventListener("submit", sendMessage);
  $("composer-input").addEventListener("keydown", onComposerKeydown);
  $("composer-input").addEventListener("input", () => {
    updateSendButton();
    if ($("composer-error").textContent) $("composer-error").textContent = "";
  });

  $("messages").addEventListener("scroll", onMessagesScroll, { passive: true });
  $("new-marker").addEventListener("click", () => {
    scrollToBottom();
    maybeMarkRead();
  });
  $("history-retry").addEventListener("click", () => {
    const hist = state.history.get(state.currentId);
    if (!hist) return;
    if (hist.status === "error") switchChannel(state.currentId);
    else {
      hist.olderError = "";
      loadOlder();
    }
  });

  $("nav-toggle").addEventListener("click", () => setNavOpen(true));
  $("nav-close").addEventListener("click", () => {
    setNavOpen(false);
    $("nav-toggle").focus();
  });
  $("members-toggle").addEventListener("click", () => setMembersOpen(true));
  $("members-close").addEventListener("click", () => {
    setMembersOpen(false);
    $("members-toggle").focus();
  });
  $("scrim").addEventListener("click", () => {
    setNavOpen(false);
    setMembersOpen(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const chat = $("chat");
    if (chat.classList.contains("nav-open")) {
      setNavOpen(false);
      $("nav-toggle").focus();
    } else if (chat.classList.contains("members-open")) {
      setMembersOpen(false);
      $("members-toggle").focus();
    }
  });

  $("sign-out").addEventListener("click", signOut);
  $("new-direct").addEventListener("click", openDirectDialog);
  $("find-people").addEventListener("click", openDirectDialog);
  $("new-channel").addEventListener("click", openChannelDialog);
  $("direct-search").addEventListener("input", refreshDirectResults);
  $("direct-form").addEventListener("submit", (event) => {
    // Enter in the search box opens the first match.
    event.preventDefault();
    const first = $("direct-results").querySelector("button.member");
    if (first) first.click();
  });
  $("channel-form").addEventListener("submit", createChannel);
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => closeDialog(button.closest("dialog")));
  }
  $("add-member").addEventListener("submit", addMember);
  $("add-member-input").addEventListener("input", refreshMemberOptions);
  $("leave-channel").addEventListener("click", () => {
    if (state.me && state.currentId !== null) removeMember(state.currentId, state.me.username);
  });

  // Reading happens when the tab is seen; the network coming back ends a backoff.
  document.addEventListener("visibilitychange", maybeMarkRead);
  window.addEventListener("focus", maybeMarkRead);
  window.addEventListener("online", () => state.wake && state.wake());
  narrow.addEventListener("change", () => setNavOpen(false));
}

wire();
setAuthMode("login");
start();

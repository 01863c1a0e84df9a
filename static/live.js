// Typing and presence: ephemeral events (best-effort, outside the cursor),
// the presence dots, "alice is typing…", and this page's own idleness.

import { api } from "./api.js";
import { state } from "./state.js";
import { $, h, setText } from "./util.js";

const TYPING_SHOW_MS = 6000; // show "typing" this long after the last notice
const TYPING_SEND_MS = 3000; // send a notice at most this often while typing
const IDLE_CHECK_MS = 5000;

const presence = new Map(); // user id -> "online" | "away" | "offline"
const typing = new Map(); // channel id -> Map(user id -> { user, timer })
let lastTypingSent = 0;
let lastInput = Date.now();
let idle = false;

/** Seconds without input before this page reports its user away (from the page). */
function awayAfterMs() {
  const meta = document.querySelector('meta[name="away-after"]');
  const seconds = Number(meta && meta.content);
  return (Number.isFinite(seconds) && seconds > 0 ? seconds : 600) * 1000;
}

/** Whether this page's user is idle: the poll tells the server (`idle=1`). */
export function isIdle() {
  return idle;
}

/** Notes presence from users the server sent (members, direct peers). */
export function notePresence(users) {
  for (const user of users) {
    if (user && user.presence) presence.set(user.id, user.presence);
  }
}

/** A dot that follows the user's presence as events arrive. */
export function presenceDot(user) {
  const state_ = presence.get(user.id) || "offline";
  return h("span", {
    class: "presence-dot",
    "data-presence-user": String(user.id),
    "data-presence": state_,
    title: state_,
    role: "img",
    "aria-label": state_,
  });
}

function updateDots(userId) {
  const value = presence.get(userId) || "offline";
  for (const dot of document.querySelectorAll(`[data-presence-user="${userId}"]`)) {
    dot.dataset.presence = value;
    dot.title = value;
    dot.setAttribute("aria-label", value);
  }
}

/** Applies a typing or presence event; false for any other event. */
export function applyLiveEvent(event) {
  if (event.type === "presence") {
    presence.set(event.user.id, event.presence);
    updateDots(event.user.id);
    return true;
  }
  if (event.type === "typing") {
    if (state.me && event.user.id === state.me.id) return true;
    let users = typing.get(event.channel_id);
    if (!users) typing.set(event.channel_id, (users = new Map()));
    const held = users.get(event.user.id);
    if (held) clearTimeout(held.timer);
    const timer = setTimeout(() => stopTyping(event.channel_id, event.user.id), TYPING_SHOW_MS);
    users.set(event.user.id, { user: event.user, timer });
    renderTyping();
    return true;
  }
  return false;
}

/** A message of that user arrived there: they are done typing it. */
export function stopTyping(channelId, userId) {
  const users = typing.get(channelId);
  const held = users && users.get(userId);
  if (!held) return;
  clearTimeout(held.timer);
  users.delete(userId);
  if (!users.size) typing.delete(channelId);
  renderTyping();
}

/** "alice is typing…" under the current channel's messages. */
export function renderTyping() {
  const line = $("typing-indicator");
  if (!line) return;
  const users = [...(typing.get(state.currentId) || new Map()).values()].map((t) => t.user);
  let text = "";
  if (users.length === 1) text = `${users[0].username} is typing…`;
  else if (users.length === 2) text = `${users[0].username} and ${users[1].username} are typing…`;
  else if (users.length > 2) text = "Several people are typing…";
  setText(line, text);
  line.hidden = !text;
}

/** The composer changed: tell the channel, at most every few seconds. */
export function composerTyped(channelId, text) {
  if (!text.trim() || channelId === null) return;
  const now = Date.now();
  if (now - lastTypingSent < TYPING_SEND_MS) return;
  lastTypingSent = now;
  api("POST", `/api/channels/${channelId}/typing`).catch(() => {
    // Best-effort: a lost or refused notice costs nothing.
  });
}

/** A message was sent: the next keystroke may say "typing" again at once. */
export function typingSent() {
  lastTypingSent = 0;
}

/** Forgets everything (sign-out). */
export function resetLive() {
  presence.clear();
  for (const users of typing.values()) for (const t of users.values()) clearTimeout(t.timer);
  typing.clear();
  renderTyping();
}

function setIdle(value) {
  if (value === idle) return;
  idle = value;
  // The held poll says the old state: ask again at once with the new one.
  if (state.pollAbort) {
    state.repoll = true;
    state.pollAbort.abort();
  }
}

/** Watches this page's input: idle after CHATTERWERKS_AWAY_AFTER without any. */
export function watchIdleness() {
  const active = () => {
    lastInput = Date.now();
    setIdle(false);
  };
  for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "focus"]) {
    window.addEventListener(type, active, { passive: true, capture: true });
  }
  setInterval(() => {
    if (Date.now() - lastInput >= awayAfterMs()) setIdle(true);
  }, Math.min(IDLE_CHECK_MS, awayAfterMs() / 2));
}

// Notifications (issue 11): the per-channel setting, browser notifications
// while the tab is hidden, the counts in the tab title and the favicon, and
// "mark all as read".
//
// Which messages notify (docs/api.md, "Notifications"): never our own, never
// one the page knew of at load (the snapshot's last_seq per channel), never
// one already read, and by the channel's setting: "all" every message,
// "mentions" those that mention us (and in a direct channel every message),
// "none" nothing. Only while the tab is hidden, and only after the user
// allowed it with a click (the permission is never asked on load). Each
// notification's tag is "<channel_id>:<seq>", so when several tabs raise one
// for the same message the browser shows it once.

import { api, handleAuthError } from "./api.js";
import { loadOlder, switchChannel } from "./messages.js";
import { renderSidebar } from "./sidebar.js";
import { channelLabel, mentionsMe, mentionsOf, state, unreadOf, upsertChannel } from "./state.js";
import { openThread } from "./thread.js";
import { $, APP_NAME, setText, toast } from "./util.js";

const BODY_MAX_CHARS = 200; // of a message's text in a notification
const REMEMBERED = 1000; // tags this tab has raised, for "never twice"
const REVEAL_TRIES = 100; // x 100 ms: how long a click waits for the channel to load
const OLDER_PAGES = 10; // history pages a click loads, at most, to find its message
// A tab that wakes after hours may receive hundreds of messages at once:
// at most BURST notifications per BURST_MS; the title and badges count the rest.
const BURST = 4;
const BURST_MS = 5000;
const recent = []; // times of the last notifications raised, oldest first

const baseline = new Map(); // channel id -> last_seq when the page learned of it
const raised = new Set(); // tags this tab raised a notification for

/** A channel's setting; a server without settings: the defaults. */
export function notifySetting(channel) {
  return channel.notify || (channel.kind === "direct" ? "all" : "mentions");
}

export function isMuted(channel) {
  return notifySetting(channel) === "none";
}

/** GET /api/me's channels: what they hold already is never notified. */
export function noteSnapshot(channels) {
  for (const channel of channels) {
    baseline.set(channel.id, Math.max(baseline.get(channel.id) || 0, channel.last_seq));
  }
}

function supported() {
  return typeof window.Notification === "function";
}

/** True when `message` (from someone else) warrants a notification by the setting. */
export function warrants(channel, message) {
  switch (notifySetting(channel)) {
    case "all":
      return true;
    case "mentions":
      return channel.kind === "direct" || mentionsMe(message);
    default:
      return false;
  }
}

/** A message event arrived: raise a notification if it warrants one. */
export function notifyMessage(message) {
  if (!supported() || Notification.permission !== "granted") return;
  if (document.visibilityState !== "hidden") return;
  const channel = state.channels.get(message.channel_id);
  if (!channel || !state.me || message.deleted) return;
  if (message.author && message.author.id === state.me.id) return;
  if (message.seq <= (baseline.get(channel.id) || 0)) return; // replayed from before load
  if (message.seq <= channel.last_read_seq) return; // read in another tab meanwhile
  if (!warrants(channel, message)) return;
  const tag = `${message.channel_id}:${message.seq}`;
  if (raised.has(tag)) return;
  const now = Date.now();
  while (recent.length && now - recent[0] > BURST_MS) recent.shift();
  if (recent.length >= BURST) return;
  recent.push(now);
  if (raised.size >= REMEMBERED) raised.clear(); // seqs only grow: old tags never return
  raised.add(tag);
  const author = message.author ? message.author.username : "Someone";
  const where = channel.kind === "group" ? `#${channelLabel(channel)}` : channelLabel(channel);
  const title = channel.kind === "direct" ? author : `${author} in ${where}`;
  const text = message.text || "";
  const body = text.length > BODY_MAX_CHARS ? `${text.slice(0, BODY_MAX_CHARS)}…` : text;
  let notification;
  try {
    notification = new Notification(title, { body, tag });
  } catch {
    return; // a browser that only notifies from a service worker (Android Chrome)
  }
  notification.onclick = () => {
    window.focus();
    notification.close();
    openMessage(message.channel_id, message.seq, message.reply_to);
  };
}

/** Opens a channel at one of its messages (its thread too, for a reply). */
export function openMessage(channelId, seq, replyTo = null) {
  if (!state.channels.has(channelId)) return;
  switchChannel(channelId);
  reveal(channelId, seq, replyTo, 0);
}

/**
 * Waits for the channel's history, pages back (at most OLDER_PAGES pages)
 * until it holds the message, then scrolls to it and marks it for a moment.
 * A reply shows its root in the channel and opens its thread.
 */
function reveal(channelId, seq, replyTo, tries, pages = 0) {
  if (state.currentId !== channelId || tries >= REVEAL_TRIES) return; // the reader moved on
  const hist = state.history.get(channelId);
  if (hist && hist.status === "error") return;
  const shown = replyTo || seq;
  const again = (morePages) =>
    setTimeout(() => reveal(channelId, seq, replyTo, tries + 1, morePages), 100);
  if (!hist || hist.status !== "ready" || hist.loadingOlder) return again(pages);
  if (!hist.msgs.has(shown)) {
    const oldest = Math.min(...hist.msgs.keys());
    if (hist.hasMore && oldest > shown && pages < OLDER_PAGES && !hist.olderError) {
      loadOlder();
      return again(pages + 1);
    }
    return; // gone, or too far back: the channel shows
  }
  if (replyTo) openThread(channelId, replyTo, { focus: false });
  const li = $("message-list").querySelector(`li.msg[data-seq="${shown}"]`);
  if (!li) return again(pages); // stored, not drawn yet
  li.scrollIntoView({ block: "center" });
  li.classList.add("msg-flash");
  setTimeout(() => li.classList.remove("msg-flash"), 2500);
}

// ---------- The permission: asked only on a click ----------

export function renderPermission() {
  const button = $("notify-permission");
  if (!supported()) {
    button.hidden = true;
    return;
  }
  const permission = Notification.permission;
  button.hidden = false;
  button.dataset.permission = permission;
  button.disabled = permission !== "default";
  const label = {
    granted: "Desktop notifications on",
    denied: "Desktop notifications blocked",
  };
  setText($("notify-permission-text"), label[permission] || "Enable desktop notifications");
  button.title =
    permission === "denied"
      ? "Your browser blocks notifications from this site; allow them in its site settings."
      : permission === "granted"
        ? "You are notified of direct messages and mentions while this tab is hidden."
        : "";
}

async function askPermission() {
  if (!supported() || Notification.permission !== "default") return;
  try {
    await Notification.requestPermission();
  } catch {
    // An old browser's callback form; the state is read again below.
  }
  renderPermission();
}

// ---------- The per-channel setting, in the channel header ----------

export function renderNotifySetting() {
  const channel = state.channels.get(state.currentId);
  const select = $("notify-select");
  select.hidden = !channel;
  if (channel) select.value = notifySetting(channel);
}

async function saveNotifySetting() {
  const id = state.currentId;
  const channel = state.channels.get(id);
  if (!channel) return;
  const notify = $("notify-select").value;
  const before = notifySetting(channel);
  if (notify === before) return;
  channel.notify = notify; // at once; undone below if the server says no
  renderSidebar();
  const gen = state.gen;
  try {
    const answer = await api("PUT", `/api/channels/${id}/settings`, { notify });
    if (gen !== state.gen) return;
    upsertChannel(answer.channel);
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    const now = state.channels.get(id);
    if (now) now.notify = before;
    toast(`Couldn't change the notifications: ${err.message}`);
  }
  renderSidebar();
  renderNotifySetting();
}

// ---------- Mark all as read ----------

async function markAllRead() {
  const button = $("mark-all-read");
  // What the page knew when asked: the server's statement sees at least this.
  const seen = [...state.channels.values()].map((c) => ({
    id: c.id,
    seq: c.last_seq,
    count: c.message_count,
  }));
  const gen = state.gen;
  button.disabled = true;
  try {
    await api("POST", "/api/read-all");
    if (gen !== state.gen) return;
    for (const { id, seq, count } of seen) {
      const channel = state.channels.get(id);
      if (!channel) continue;
      channel.last_read_seq = Math.max(channel.last_read_seq, seq);
      if (count !== undefined) channel.read_count = Math.max(channel.read_count || 0, count);
      // Newer messages may or may not have been read: their `read` events say.
      if (channel.last_seq === seq) channel.mentions = 0;
    }
    renderSidebar();
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    toast(`Couldn't mark everything as read: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---------- The counts: tab title and favicon ----------

/**
 * Unread messages in the channels that are not muted, and unread mentions of
 * you in every channel (a muted one too).
 */
export function counts() {
  let unread = 0;
  let mentions = 0;
  for (const channel of state.channels.values()) {
    if (!isMuted(channel)) unread += unreadOf(channel);
    mentions += mentionsOf(channel);
  }
  return { unread, mentions };
}

/** "(3) Chatterwerks", "(@1 · 3) Chatterwerks", "(@1) Chatterwerks", or "Chatterwerks". */
export function titleFor({ unread, mentions }) {
  if (mentions) return `(@${mentions}${unread ? ` · ${unread}` : ""}) ${APP_NAME}`;
  return unread ? `(${unread}) ${APP_NAME}` : APP_NAME;
}

let faviconShown = "";

/**
 * The favicon: the logo, with an amber badge holding the mention count, or
 * else a red one with the unread count (9+ past nine). Drawn on a canvas
 * into a data: URL (the CSP allows img-src data:).
 */
export function renderFavicon({ unread, mentions }) {
  const link = document.querySelector('link[rel="icon"]');
  if (!link) return;
  const key = `${unread}:${mentions}`;
  if (key === faviconShown) return;
  faviconShown = key;
  if (!link.dataset.plain) link.dataset.plain = link.getAttribute("href");
  link.dataset.unread = String(unread);
  link.dataset.mentions = String(mentions);
  if (!unread && !mentions) {
    link.type = "image/svg+xml";
    link.href = link.dataset.plain;
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 64;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  // The logo of favicon.svg, at twice its size.
  const gradient = ctx.createLinearGradient(0, 0, 64, 64);
  gradient.addColorStop(0, "#6a75e8");
  gradient.addColorStop(1, "#3f9c94");
  ctx.fillStyle = gradient;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(0, 0, 64, 64, 16);
  else ctx.rect(0, 0, 64, 64); // before Chromium 99, Firefox 112, Safari 16
  ctx.fill();
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 6.4;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.arc(32, 32, 14, -0.72, 0.72, true); // the C, open to the right
  ctx.stroke();
  // The badge, top right.
  const number = mentions || unread;
  ctx.fillStyle = mentions ? "#f0b429" : "#e5484d";
  ctx.beginPath();
  ctx.arc(44, 20, 20, 0, Math.PI * 2);
  ctx.fill();
  ctx.fillStyle = mentions ? "#3d2600" : "#fff";
  ctx.font = "bold 26px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(number > 9 ? "9+" : String(number), 44, 21);
  link.type = "image/png";
  link.href = canvas.toDataURL("image/png");
}

/** The title and favicon, from the channels' counts (sidebar.js calls it on every render). */
export function renderCounts() {
  const now = counts();
  document.title = titleFor(now);
  renderFavicon(now);
}

export function wireNotifications() {
  $("notify-permission").addEventListener("click", askPermission);
  $("notify-select").addEventListener("change", saveNotifySetting);
  $("mark-all-read").addEventListener("click", markAllRead);
  // The user may change the permission in the browser's settings meanwhile.
  window.addEventListener("focus", renderPermission);
  renderPermission();
}

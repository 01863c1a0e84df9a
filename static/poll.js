// The long-poll loop, the only /api/events request ever, and the events and snapshots it applies.

import { ApiError, api, handleAuthError } from "./api.js";
import { applyChange, endEdit } from "./changes.js";
import { closePicker } from "./emoji.js";
import { applyLiveEvent, isIdle, notePresence, stopTyping } from "./live.js";
import { applyMessage, forgetChannel, switchChannel } from "./messages.js";
import { noteSnapshot, notifyMessage } from "./notify.js";
import { renderSidebar } from "./sidebar.js";
import { channelLabel, noteRead, state, upsertChannel } from "./state.js";
import { closeThread } from "./thread.js";
import { $, avatar, setText, toast } from "./util.js";

const POLL_TIMEOUT_S = 25; // server-side wait of one /api/events poll
const POLL_GRACE_MS = 20_000; // give up on a poll this long after its timeout
const MAX_QUERY_CHARS = 6000; // servers and proxies cap a request line at about 8 KiB
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

function applyEvents(events) {
  for (const event of events) {
    switch (event.type) {
      case "message":
        notifyMessage(event.message); // while the tab is hidden, if it warrants one
        stopTyping(event.message.channel_id, event.message.author.id);
        applyMessage(event.message);
        break;
      case "typing":
      case "presence":
        applyLiveEvent(event);
        break;
      case "channel_added": {
        notePresence([event.channel.peer]);
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
          noteRead(channel, { seq: event.seq, number: event.read_count });
          // The marker passed every message we know of: their mentions are read.
          const all =
            channel.message_count === undefined || event.read_count === undefined
              ? event.seq >= channel.last_seq
              : event.read_count >= channel.message_count;
          if (all) channel.mentions = 0;
          renderSidebar();
        }
        break;
      }
      default:
        // Edits, deletions, reactions; a newer server's event: ignore what we do not know.
        applyChange(event);
        break;
    }
  }
}

/** Takes GET /api/me's answer as the whole truth (sign-in, or a reload). */
export function applySnapshot(me) {
  const previous = state.currentId;
  if (previous !== null) state.drafts.set(previous, $("composer-input").value);
  state.me = me.user;
  state.cursor = me.cursor;
  state.channels = new Map(me.channels.map((c) => [c.id, c]));
  noteSnapshot(me.channels); // what the page holds now never notifies
  notePresence(me.channels.map((c) => c.peer));
  state.history = new Map();
  state.members = new Map();
  // Views of messages from before the reload go: the next switch rebuilds them.
  endEdit({ focus: false });
  closePicker();
  closeThread();
  setText($("me-name"), me.user.username);
  $("me-avatar").replaceWith(Object.assign(avatar(me.user), { id: "me-avatar" }));
  const fromHash = Number((location.hash.match(/^#channel-(\d+)$/) || [])[1]);
  const home = me.channels.find((c) => c.kind === "home");
  const target = [previous, fromHash, home && home.id].find((id) => state.channels.has(id));
  state.currentId = null;
  renderSidebar();
  if (target !== undefined) switchChannel(target, { focus: false });
}

export function setConnection(ok, text = "Reconnecting…") {
  $("conn-banner").hidden = ok;
  setText($("conn-text"), text);
}

/** Capped exponential backoff with jitter: 1 s, 2 s, 4 s ... at most 30 s. */
export function backoffDelay(failures, retryAfterS = 0) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures - 1, 10));
  const delay = cap / 2 + Math.random() * (cap / 2);
  return Math.max(delay, retryAfterS * 1000);
}

/** Waits, unless the browser comes back online first. */
export function waitOrWake(ms) {
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
export async function pollLoop(gen) {
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
      // ephemeral: typing and presence too; idle: this page's user is away.
      const idle = isIdle();
      const query =
        `cursor=${encodeURIComponent(state.cursor)}&timeout=${POLL_TIMEOUT_S}` +
        `&ephemeral=1&idle=${idle ? 1 : 0}`;
      // A user in many channels has a cursor too long for a URL: POST carries it.
      const answer =
        query.length <= MAX_QUERY_CHARS
          ? await api("GET", `/api/events?${query}`, undefined, controller.signal)
          : await api(
              "POST",
              "/api/events",
              { cursor: state.cursor, timeout: POLL_TIMEOUT_S, ephemeral: true, idle },
              controller.signal,
            );
      if (gen !== state.gen) return;
      failures = 0;
      setConnection(true);
      state.cursor = answer.cursor;
      applyEvents(answer.events);
    } catch (err) {
      if (gen !== state.gen) return; // signed out meanwhile: this loop is over
      if (state.repoll) {
        // Aborted on purpose (idleness changed): poll again now, no backoff.
        state.repoll = false;
        continue;
      }
      if (handleAuthError(err)) return;
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

// The message list: switching channel, history pages, rendering, scrolling, read markers.

import { api, handleAuthError } from "./api.js";
import { updateSendButton } from "./composer.js";
import { renderTyping } from "./live.js";
import { channelTray } from "./files.js";
import { loadMembers, renderMembers } from "./members.js";
import { narrow, renderHeader, renderSidebar, setNavOpen } from "./sidebar.js";
import {
  channelLabel,
  mentionsMe,
  mentionsOf,
  noteMessage,
  noteRead,
  sortedChannels,
  state,
} from "./state.js";
import { applyReply, closeThread, setThreadSummary } from "./thread.js";
import { messageNode, permissions, replaceMessageNode } from "./msgview.js";
import { $, h, setText, toast } from "./util.js";

const PAGE_SIZE = 50; // messages per history page
const BOTTOM_SLACK_PX = 48; // "at the bottom" within this distance
const TOP_LOAD_PX = 160; // load older messages within this distance of the top
const GROUP_WINDOW_MS = 5 * 60 * 1000; // consecutive messages of one author collapse

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

export function switchChannel(id, { focus = true } = {}) {
  const channel = state.channels.get(id);
  if (!channel) return;
  queueMicrotask(renderTyping); // once currentId is the new channel
  // Switching channels only changes what is shown: it never touches the poll.
  if (state.currentId !== null && state.currentId !== id) {
    saveScroll();
    state.drafts.set(state.currentId, $("composer-input").value);
  }
  const changed = state.currentId !== id;
  if (changed && state.thread) closeThread();
  if (changed) state.editing = null; // an edit in place ends with its channel's view
  state.currentId = id;
  history.replaceState(null, "", `#channel-${id}`);
  renderSidebar();
  renderHeader();
  if (changed) {
    $("composer-input").value = state.drafts.get(id) || "";
    $("composer-error").textContent = "";
    if (channelTray) channelTray.render(); // this channel's files (calls updateSendButton)
    updateSendButton();
    hideNewMarker();
    renderMembers();
    loadMembers(id);
  }
  setNavOpen(false);
  let hist = state.history.get(id);
  if (!hist || hist.status === "error") hist = loadLatest(id);
  renderMessages();
  if (hist.focusSeq) scrollToFocus(hist);
  else restoreScroll(hist);
  maybeMarkRead();
  if (focus && !narrow.matches) $("composer-input").focus();
}

/**
 * Opens a channel at one message (a search hit, a mention): scrolled to and
 * highlighted. If the channel's loaded run does not hold it, the page around
 * it is loaded (?around=SEQ); the channel then pages older and newer from
 * there, and joins the live messages when the newer pages reach them.
 */
export function jumpToMessage(channelId, seq) {
  if (!state.channels.has(channelId)) {
    toast("That channel is no longer available.");
    return;
  }
  let hist = state.history.get(channelId);
  const inRun =
    hist && hist.status === "ready" && hist.msgs.has(seq) && (!hist.runEnd || seq <= hist.runEnd);
  if (!inRun) hist = loadAround(channelId, seq);
  hist.focusSeq = seq;
  if (state.currentId === channelId) {
    renderMessages();
    if (hist.status === "ready") scrollToFocus(hist);
  } else {
    switchChannel(channelId, { focus: false });
  }
}

/** Scrolls the focused message (of a jump) into the middle and flashes it. */
function scrollToFocus(hist) {
  const seq = hist.focusSeq;
  if (!seq || hist.status !== "ready") return;
  hist.focusSeq = null;
  const li = $("message-list").querySelector(`li.msg[data-seq="${seq}"]`);
  if (!li) {
    scrollToBottom();
    return;
  }
  li.scrollIntoView({ block: "center" });
  hist.scroll = $("messages").scrollTop;
  for (const old of document.querySelectorAll("li.msg.msg-found")) old.classList.remove("msg-found");
  // Marked until the next jump: a left rule stays, the background fades (CSS).
  li.classList.add("msg-found");
}

export function forgetChannel(id) {
  if (state.thread && state.thread.channelId === id) closeThread();
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

export function scrollToBottom() {
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

/**
 * Puts one message from anywhere (an event, or our own send's answer) into
 * the state. Duplicates (same channel, same seq) are dropped. A reply also
 * sets its root's thread summary and goes to the thread panel if open there.
 */
export function applyMessage(message, { own = false } = {}) {
  const channel = state.channels.get(message.channel_id);
  if (!channel) return; // not (or no longer) ours; a channel_added precedes ours
  noteMessage(channel, message);
  // The server moves the author's marker to what they send, past every mention.
  if (state.me && message.author.id === state.me.id && message.seq > channel.last_read_seq) {
    noteRead(channel, message);
    channel.mentions = 0;
  }
  let hist = state.history.get(message.channel_id);
  if (own && hist && hist.runEnd) {
    // We wrote while reading an older page: open the channel at its newest.
    state.history.delete(message.channel_id);
    hist = null;
    if (state.currentId === message.channel_id) switchChannel(message.channel_id);
  }
  let added = true;
  // Channels never opened keep no messages: opening loads the newest page.
  if (hist && hist.status !== "error") {
    added = storeMessage(hist, message);
    const shown = !hist.runEnd || message.seq <= hist.runEnd;
    if (added && shown && hist.status === "ready" && message.channel_id === state.currentId) {
      showNewMessage(message, { own });
    }
  }
  if (message.reply_to) {
    if (message.thread) setThreadSummary(message.channel_id, message.reply_to, message.thread);
    applyReply(message, { own });
  }
  // Each message event arrives once; a send's own answer never mentions us.
  const author = message.author;
  if (added && mentionsMe(message) && !(state.me && author.id === state.me.id)) {
    if (message.seq > channel.last_read_seq) channel.mentions = mentionsOf(channel) + 1;
  }
  renderSidebar();
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
      const newest = hist.msgs.get(newestSeq(hist));
      if (channel && newest) noteMessage(channel, newest);
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

/**
 * Opens a channel at the page around message `seq`. The entry's run then
 * ends at `runEnd` (the newest seq loaded so far) while `hasNewer`: live
 * messages are still kept (they are beyond the run) but not shown until the
 * newer pages reach them. Returns the (loading) history entry.
 */
function loadAround(id, seq) {
  const gen = state.gen;
  const hist = {
    status: "loading",
    msgs: new Map(),
    hasMore: false,
    hasNewer: false,
    runEnd: null,
    loadingOlder: false,
    loadingNewer: false,
    scroll: null,
    error: "",
    focusSeq: seq,
  };
  state.history.set(id, hist);
  (async () => {
    try {
      const page = await api(
        "GET",
        `/api/channels/${id}/messages?around=${seq}&limit=${PAGE_SIZE}`,
      );
      if (gen !== state.gen || state.history.get(id) !== hist) return;
      for (const message of page.messages) storeMessage(hist, message);
      hist.hasMore = page.has_more_before;
      setNewer(hist, page);
      hist.status = "ready";
    } catch (err) {
      if (gen !== state.gen || state.history.get(id) !== hist) return;
      if (handleAuthError(err)) return;
      if (err.status === 404 && err.code === "channel_not_found") {
        forgetChannel(id);
        toast("That channel is no longer available.");
        return;
      }
      if (err.status === 404) {
        // The message is gone (or never was): open the channel at its newest.
        state.history.delete(id);
        if (state.currentId === id) switchChannel(id);
        toast("That message is no longer there.");
        return;
      }
      hist.status = "error";
      hist.error = err.message;
    }
    if (state.currentId === id) {
      renderMessages();
      scrollToFocus(hist);
      maybeMarkRead();
    }
  })();
  return hist;
}

/** Whether newer messages remain to be paged in, after a page that says so. */
function setNewer(hist, page) {
  const newest = page.messages.length ? page.messages[page.messages.length - 1].seq : 0;
  hist.hasNewer = page.has_more_after;
  hist.runEnd = hist.hasNewer ? Math.max(hist.runEnd || 0, newest) : null;
}

/** Loads the page after the newest message shown (a run opened around a message). */
export async function loadNewer() {
  const id = state.currentId;
  const hist = state.history.get(id);
  if (!hist || hist.status !== "ready" || !hist.hasNewer || hist.loadingNewer) return;
  const gen = state.gen;
  hist.loadingNewer = true;
  try {
    // Around the run's end: half a page we have, then the next newer ones.
    const page = await api(
      "GET",
      `/api/channels/${id}/messages?around=${hist.runEnd}&limit=${2 * PAGE_SIZE}`,
    );
    if (gen !== state.gen || state.history.get(id) !== hist) return;
    for (const message of page.messages) storeMessage(hist, message);
    setNewer(hist, page);
    const channel = state.channels.get(id);
    if (channel && !hist.hasNewer) {
      const newest = hist.msgs.get(newestSeq(hist));
      if (newest) noteMessage(channel, newest);
    }
  } catch (err) {
    if (gen !== state.gen) return;
    if (handleAuthError(err)) return;
    toast(`Couldn't load newer messages: ${err.message}`);
  } finally {
    hist.loadingNewer = false;
  }
  if (state.currentId === id) {
    // Newer messages arrive below: what the reader looks at stays put.
    const el = $("messages");
    const top = el.scrollTop;
    renderMessages();
    el.scrollTop = top;
    maybeMarkRead();
  }
}

/** Loads the page before the oldest message shown, keeping the reader's place. */
export async function loadOlder() {
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
  if (hist && hist.hasNewer && el.scrollHeight <= el.clientHeight + TOP_LOAD_PX) loadNewer();
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

/** The nodes of one message in the channel's list: a day separator if a new day starts. */
function messageNodes(message, previous) {
  const nodes = [];
  const when = new Date(message.created_at);
  const prevWhen = previous ? new Date(previous.created_at) : null;
  if (!prevWhen || dayKey(prevWhen) !== dayKey(when)) {
    nodes.push(h("li", { class: "day", role: "separator" }, dayLabel(when)));
  }
  const continued =
    previous &&
    prevWhen &&
    previous.author.id === message.author.id &&
    dayKey(prevWhen) === dayKey(when) &&
    when - prevWhen < GROUP_WINDOW_MS;
  nodes.push(messageNode(message, { continued }));
  return nodes;
}

/** Thread replies live in the thread panel; the channel shows their root. */
function inChannelList(message) {
  return !message.reply_to;
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
  let newest = 0;
  for (const seq of [...hist.msgs.keys()].sort((a, b) => a - b)) {
    if (hist.runEnd && seq > hist.runEnd) break; // beyond the run: not shown yet
    const message = hist.msgs.get(seq);
    newest = seq;
    if (!inChannelList(message)) continue;
    nodes.push(...messageNodes(message, previous));
    previous = message;
  }
  list.replaceChildren(...nodes);
  rendered.newest = newest;
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
  const hist = state.history.get(state.currentId);
  if (rendered.channelId === state.currentId && message.seq > rendered.newest) {
    // Everything newer than what is shown follows it, in seq order (an own
    // send's answer may have come before an event with a smaller seq).
    const newer = [...hist.msgs.keys()].filter((seq) => seq > rendered.newest);
    for (const seq of newer.sort((a, b) => a - b)) {
      const next = hist.msgs.get(seq);
      rendered.newest = seq;
      if (!inChannelList(next)) continue;
      $("message-list").append(...messageNodes(next, rendered.last));
      rendered.last = next;
    }
  } else {
    renderMessagesKeepingPlace();
  }
  if (!inChannelList(message)) {
    if (atBottom) scrollToBottom();
  } else if (own || atBottom) scrollToBottom();
  else showNewMarker();
  maybeMarkRead();
}

/**
 * Re-renders one message of the channel on screen after it changed (edit,
 * deletion, reaction, thread summary), staying at the bottom if we were.
 */
export function refreshChannelMessage(message) {
  if (rendered.channelId !== message.channel_id || state.currentId !== message.channel_id) return;
  const atBottom = isAtBottom();
  replaceMessageNode($("message-list"), message);
  if (atBottom) scrollToBottom();
}

/** The newest message of mine shown in the channel that I may edit (up-arrow). */
export function lastEditableOfMine(channelId) {
  const hist = state.history.get(channelId);
  if (!hist || hist.status !== "ready") return null;
  const seqs = [...hist.msgs.keys()].sort((a, b) => b - a);
  for (const seq of seqs) {
    if (hist.runEnd && seq > hist.runEnd) continue; // not shown yet
    const message = hist.msgs.get(seq);
    if (inChannelList(message) && permissions(message).edit) return message;
  }
  return null;
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
export function maybeMarkRead() {
  const id = state.currentId;
  const channel = state.channels.get(id);
  const hist = state.history.get(id);
  if (!channel || !hist || hist.status !== "ready" || hist.hasNewer) return;
  if (document.visibilityState !== "visible" || !isAtBottom()) return;
  const newest = hist.msgs.get(newestSeq(hist));
  if (!newest || newest.seq <= channel.last_read_seq) return;
  const seq = newest.seq;
  noteRead(channel, newest);
  // Everything up to the newest message is seen, so every mention is.
  channel.mentions = 0;
  renderSidebar();
  const gen = state.gen;
  api("POST", `/api/channels/${id}/read`, { seq }).catch((err) => {
    if (gen === state.gen) handleAuthError(err); // else: the next change retries it
  });
}

export function onMessagesScroll() {
  const el = $("messages");
  const goingUp = el.scrollTop < state.lastScrollTop;
  state.lastScrollTop = el.scrollTop;
  if (el.scrollTop <= TOP_LOAD_PX && (goingUp || el.scrollTop === 0)) loadOlder();
  if (el.scrollHeight - el.scrollTop - el.clientHeight <= TOP_LOAD_PX) loadNewer();
  if (isAtBottom()) {
    hideNewMarker();
    maybeMarkRead();
  }
}

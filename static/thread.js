// The thread panel: a root message, its replies (paged oldest first), and a composer that replies.

import { api, handleAuthError } from "./api.js";
import { sendText } from "./composer.js";
import { threadTray } from "./files.js";
import { messageNode, permissions, replaceMessageNode } from "./msgview.js";
import { applyMessage, refreshChannelMessage } from "./messages.js";
import { narrow } from "./sidebar.js";
import { channelLabel, state } from "./state.js";
import { $, setText, toast } from "./util.js";

const PAGE_SIZE = 50;
const BOTTOM_SLACK_PX = 48;
const GROUP_WINDOW_MS = 5 * 60 * 1000;

function rootOf(thread) {
  const hist = state.history.get(thread.channelId);
  return (hist && hist.msgs.get(thread.rootSeq)) || thread.root || null;
}

function isAtBottom() {
  const el = $("thread-scroll");
  return el.scrollHeight - el.scrollTop - el.clientHeight <= BOTTOM_SLACK_PX;
}

function scrollToBottom() {
  const el = $("thread-scroll");
  el.scrollTop = el.scrollHeight;
}

/** Opens the thread of `rootSeq` beside the channel (over it on a phone). */
export function openThread(channelId, rootSeq, { focus = true } = {}) {
  const hist = state.history.get(channelId);
  const root = hist && hist.msgs.get(rootSeq);
  if (!root) return;
  if (root.reply_to) {
    openThread(channelId, root.reply_to, { focus }); // a reply's thread is its root's
    return;
  }
  const same =
    state.thread && state.thread.channelId === channelId && state.thread.rootSeq === rootSeq;
  if (!same) {
    if (state.thread) saveThreadDraft();
    state.thread = {
      channelId,
      rootSeq,
      root,
      status: "loading",
      msgs: new Map(),
      hasMore: false,
      loadingMore: false,
      error: "",
      draft: "",
    };
    $("thread-input").value = "";
    $("thread-error").textContent = "";
    loadReplies(state.thread);
    if (threadTray) threadTray.render(); // this thread's files, if any
  }
  $("thread").hidden = false;
  $("chat").classList.add("thread-open");
  renderThread();
  if (!same) scrollToBottom();
  if (focus) $("thread-input").focus();
}

function saveThreadDraft() {
  if (state.thread) state.thread.draft = $("thread-input").value;
}

export function closeThread({ focusChannel = false } = {}) {
  if (state.editing && state.editing.inThread) state.editing = null;
  state.thread = null;
  $("thread").hidden = true;
  $("chat").classList.remove("thread-open");
  $("thread-root").replaceChildren();
  $("thread-list").replaceChildren();
  $("thread-input").value = "";
  if (threadTray) threadTray.render();
  if (focusChannel && !narrow.matches) $("composer-input").focus();
}

async function loadReplies(thread, after = 0) {
  const gen = state.gen;
  const path = `/api/channels/${thread.channelId}/messages/${thread.rootSeq}/replies`;
  thread.loadingMore = after > 0;
  try {
    const query = after ? `?after=${after}&limit=${PAGE_SIZE}` : `?limit=${PAGE_SIZE}`;
    const page = await api("GET", path + query);
    if (gen !== state.gen || state.thread !== thread) return;
    for (const reply of page.messages) {
      if (!thread.msgs.has(reply.seq)) thread.msgs.set(reply.seq, reply);
    }
    thread.hasMore = page.has_more;
    thread.status = "ready";
    thread.error = "";
  } catch (err) {
    if (gen !== state.gen || state.thread !== thread) return;
    if (handleAuthError(err)) return;
    if (thread.status !== "ready") thread.status = "error";
    thread.error = err.message;
  } finally {
    thread.loadingMore = false;
  }
  const atBottom = isAtBottom();
  renderThread();
  if (after === 0 || atBottom) scrollToBottom();
}

function renderStatus(thread) {
  const count = thread.msgs.size;
  const root = rootOf(thread);
  const total = Math.max(count, (root && root.reply_count) || 0);
  setText($("thread-count"), total === 1 ? "1 reply" : total ? `${total} replies` : "No replies yet");
  const status = $("thread-status");
  if (thread.status === "loading") setText(status, "Loading replies…");
  else if (thread.status === "error") setText(status, `Couldn't load replies: ${thread.error}`);
  else if (thread.loadingMore) setText(status, "Loading more replies…");
  else if (thread.error) setText(status, `Couldn't load more replies: ${thread.error}`);
  else setText(status, "");
  $("thread-more").hidden = !(thread.status === "ready" && thread.hasMore && !thread.loadingMore);
  $("thread-retry").hidden = !(thread.status === "error");
}

/** Renders the whole panel from the state. */
export function renderThread() {
  const thread = state.thread;
  if (!thread) return;
  const channel = state.channels.get(thread.channelId);
  setText($("thread-channel"), channel ? channelPrefix(channel) : "");
  const root = rootOf(thread);
  $("thread-root").replaceChildren(...(root ? [messageNode(root, { inThread: true })] : []));
  const nodes = [];
  let previous = null;
  for (const seq of [...thread.msgs.keys()].sort((a, b) => a - b)) {
    const reply = thread.msgs.get(seq);
    nodes.push(messageNode(reply, { continued: continues(previous, reply), inThread: true }));
    previous = reply;
  }
  $("thread-list").replaceChildren(...nodes);
  renderStatus(thread);
  renderThreadComposer(root);
}

function channelPrefix(channel) {
  return channel.kind === "group" ? `#${channelLabel(channel)}` : channelLabel(channel);
}

function continues(previous, message) {
  if (!previous || previous.author.id !== message.author.id) return false;
  const gap = new Date(message.created_at) - new Date(previous.created_at);
  return gap >= 0 && gap < GROUP_WINDOW_MS;
}

function renderThreadComposer(root) {
  const gone = !root || root.deleted;
  const input = $("thread-input");
  input.disabled = gone;
  input.placeholder = gone ? "This message was deleted" : "Reply…";
  updateThreadSend();
}

export function updateThreadSend() {
  const busy = Boolean(threadTray && threadTray.busy());
  const files = threadTray ? threadTray.readyIds().length : 0;
  $("thread-send").disabled =
    state.threadSending ||
    busy ||
    $("thread-input").disabled ||
    (!$("thread-input").value.trim() && !files);
}

/** A reply that arrived (event or our own send): into the panel if it shows its thread. */
export function applyReply(reply) {
  const thread = state.thread;
  if (!thread || thread.channelId !== reply.channel_id || thread.rootSeq !== reply.reply_to) return;
  // While later pages are unloaded, "load more" brings it in order.
  if (thread.status !== "ready" || thread.hasMore || thread.msgs.has(reply.seq)) {
    renderStatus(thread);
    return;
  }
  const atBottom = isAtBottom();
  const newest = Math.max(0, ...thread.msgs.keys());
  thread.msgs.set(reply.seq, reply);
  if (reply.seq > newest) {
    const previous = thread.msgs.get(newest) || null;
    $("thread-list").append(
      messageNode(reply, { continued: continues(previous, reply), inThread: true }),
    );
    renderStatus(thread);
  } else {
    renderThread();
  }
  const own = state.me && reply.author.id === state.me.id;
  if (own || atBottom) scrollToBottom();
}

/** Sets a root's thread summary (from a reply's `thread`) wherever it is shown. */
export function setThreadSummary(channelId, rootSeq, summary) {
  const hist = state.history.get(channelId);
  const copies = new Set();
  if (hist && hist.msgs.has(rootSeq)) copies.add(hist.msgs.get(rootSeq));
  const thread = state.thread;
  if (thread && thread.channelId === channelId && thread.rootSeq === rootSeq && thread.root) {
    copies.add(thread.root);
  }
  for (const root of copies) {
    root.reply_count = summary.reply_count;
    root.last_reply_at = summary.last_reply_at;
  }
  const root = [...copies][0];
  if (!root) return;
  refreshChannelMessage(root);
  if (thread && thread.channelId === channelId && thread.rootSeq === rootSeq) renderStatus(thread);
}

/** Re-renders one message of the thread panel (root or reply) after it changed. */
export function refreshThreadMessage(message) {
  const thread = state.thread;
  if (!thread || thread.channelId !== message.channel_id) return;
  const atBottom = isAtBottom();
  if (message.seq === thread.rootSeq) {
    replaceMessageNode($("thread-root"), message, true);
    renderThreadComposer(message);
  } else {
    replaceMessageNode($("thread-list"), message, true);
  }
  if (atBottom) scrollToBottom();
}

/** My newest reply in the open thread that I may edit (up-arrow in its composer). */
export function lastEditableReply() {
  const thread = state.thread;
  if (!thread) return null;
  const seqs = [...thread.msgs.keys()].sort((a, b) => b - a);
  for (const seq of seqs) {
    const reply = thread.msgs.get(seq);
    if (permissions(reply).edit) return reply;
  }
  const root = rootOf(thread);
  return root && permissions(root).edit ? root : null;
}

export async function sendReply(event) {
  event.preventDefault();
  const thread = state.thread;
  const input = $("thread-input");
  const raw = input.value;
  const text = raw.trim();
  const fileIds = threadTray ? threadTray.readyIds() : [];
  const slot = thread ? `${thread.channelId}:${thread.rootSeq}` : null;
  if (threadTray && threadTray.busy()) return;
  if (!thread || (!text && !fileIds.length) || state.threadSending) return;
  const gen = state.gen;
  state.threadSending = true;
  updateThreadSend();
  $("thread-error").textContent = "";
  try {
    const message = await sendText(thread.channelId, text, thread.rootSeq, fileIds);
    if (gen !== state.gen) return;
    if (fileIds.length) threadTray.sent(slot, fileIds);
    if (state.thread === thread && input.value === raw) input.value = "";
    // Into the channel's run, the root's summary, and this panel.
    applyMessage(message, { own: true });
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    if (state.thread === thread) $("thread-error").textContent = `Not sent: ${err.message}`;
    else toast(`Your reply was not sent: ${err.message}`);
  } finally {
    if (gen === state.gen) {
      state.threadSending = false;
      updateThreadSend();
    }
  }
}

export function loadMoreReplies() {
  const thread = state.thread;
  if (!thread || thread.loadingMore) return;
  if (thread.status === "error") {
    thread.status = "loading";
    renderStatus(thread);
    loadReplies(thread);
    return;
  }
  const newest = Math.max(0, ...thread.msgs.keys());
  renderStatus(thread);
  loadReplies(thread, newest);
}

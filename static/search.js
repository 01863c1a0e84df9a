// Message search (GET /api/search): the search box, results as you type, and
// opening a hit in its channel, scrolled to and highlighted.

import { api, handleAuthError } from "./api.js";
import { jumpToMessage } from "./messages.js";
import { fullFormat, timeFormat } from "./msgview.js";
import { setNavOpen } from "./sidebar.js";
import { channelLabel, state } from "./state.js";
import { $, avatar, closeDialog, debounce, h, setText } from "./util.js";

const PAGE_SIZE = 20;
const TYPING_MS = 200; // results as you type: one request per pause
const SNIPPET = 240; // code points of a long message shown around its first hit

// The search in flight or shown: answers of older ones are dropped.
let current = null; // { q, next, loading, error, abort }

/** Opens the channel a hit is in, at the hit (a reply: at its thread's root). */
export function openHit(channelId, message) {
  jumpToMessage(channelId, message.reply_to || message.seq);
}

/**
 * The text with its highlights as text nodes and <mark> elements, never
 * HTML. Offsets are code points (the server's), so the text is split into
 * code points, not UTF-16 units. A long text is cut around its first hit.
 */
export function highlighted(text, highlights) {
  const chars = Array.from(text);
  let from = 0;
  let to = chars.length;
  if (chars.length > SNIPPET) {
    const first = highlights.length ? highlights[0][0] : 0;
    from = Math.max(0, first - SNIPPET / 4);
    to = Math.min(chars.length, from + SNIPPET);
  }
  const parts = [];
  if (from > 0) parts.push("…");
  let at = from;
  for (const [start, end] of highlights) {
    const s = Math.max(start, at);
    const e = Math.min(end, to);
    if (e <= s) continue;
    if (s > at) parts.push(chars.slice(at, s).join(""));
    parts.push(h("mark", null, chars.slice(s, e).join("")));
    at = e;
  }
  if (at < to) parts.push(chars.slice(at, to).join(""));
  if (to < chars.length) parts.push("…");
  return parts;
}

function where(channelId) {
  const channel = state.channels.get(channelId);
  if (!channel) return "a channel";
  return channel.kind === "group" ? `#${channelLabel(channel)}` : channelLabel(channel);
}

function item({ channel_id: channelId, message, highlights }) {
  const when = new Date(message.created_at);
  return h(
    "li",
    null,
    h(
      "button",
      {
        type: "button",
        class: "mention-item search-hit",
        "data-channel-id": channelId,
        "data-seq": message.seq,
        onclick: () => {
          closeDialog($("search-dialog"));
          openHit(channelId, message);
        },
      },
      avatar(message.author),
      h(
        "span",
        { class: "mention-item-main" },
        h(
          "span",
          { class: "mention-item-head" },
          h("span", { class: "author" }, message.author.username),
          h("span", { class: "mention-item-where" }, where(channelId)),
          h(
            "time",
            { class: "msg-time", datetime: message.created_at, title: fullFormat.format(when) },
            `${when.toLocaleDateString()} ${timeFormat.format(when)}`,
          ),
        ),
        h("span", { class: "mention-item-text" }, highlighted(message.text, highlights)),
      ),
    ),
  );
}

function render(search) {
  const empty = !$("search-results").children.length;
  let status = "";
  if (!search) status = 'Words, "a phrase", from:name, in:channel, before:2026-01-31, after:…';
  else if (search.loading && empty) status = "Searching…";
  else if (search.error) status = search.error;
  else if (!search.loading && empty) status = "No messages match.";
  setText($("search-status"), status);
  $("search-status").classList.toggle("search-error", Boolean(search && search.error));
  $("search-more").hidden = !search || search.loading || !search.next || Boolean(search.error);
}

async function load(search, append) {
  const gen = state.gen;
  if (search.abort) search.abort.abort();
  search.abort = new AbortController();
  search.loading = true;
  render(search);
  try {
    let query = `?q=${encodeURIComponent(search.q)}&limit=${PAGE_SIZE}`;
    if (append && search.next) query += `&before=${encodeURIComponent(search.next)}`;
    const page = await api("GET", `/api/search${query}`, undefined, search.abort.signal);
    if (gen !== state.gen || current !== search) return; // a newer search replaced it
    if (!append) $("search-results").replaceChildren();
    $("search-results").append(...page.results.map(item));
    search.next = page.next;
    search.error = "";
  } catch (err) {
    if (err && err.name === "AbortError") return;
    if (gen !== state.gen || current !== search || handleAuthError(err)) return;
    if (!append) $("search-results").replaceChildren();
    search.error = err.message;
  }
  search.loading = false;
  render(search);
}

/** A new query: the previous one's answers, even late ones, are dropped. */
function runQuery() {
  const q = $("search-input").value;
  if (current && current.abort) current.abort.abort();
  if (!q.trim()) {
    current = null;
    $("search-results").replaceChildren();
    render(null);
    return;
  }
  if (current && current.q === q && !current.error) return;
  current = { q, next: null, loading: false, error: "", abort: null };
  load(current, false);
}

export const onSearchInput = debounce(runQuery, TYPING_MS);

export function loadMoreResults() {
  if (current && !current.loading && current.next) load(current, true);
}

export function openSearch() {
  setNavOpen(false);
  const dialog = $("search-dialog");
  if (!dialog.open) dialog.showModal();
  const input = $("search-input");
  input.focus();
  input.select();
  if (!current) render(null);
}

export function submitSearch(event) {
  event.preventDefault();
  runQuery();
}

/** `/` or Ctrl+K (Cmd+K) opens search, unless one is typing somewhere. */
export function searchShortcut(event) {
  const target = event.target;
  const typing =
    target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  if (typing || event.altKey) return;
  const slash = event.key === "/" && !event.ctrlKey && !event.metaKey;
  const ctrlK = (event.key === "k" || event.key === "K") && (event.ctrlKey || event.metaKey);
  if (!slash && !ctrlK) return;
  if (!slash && document.querySelector("dialog[open]:not(#search-dialog)")) return;
  if (slash && document.querySelector("dialog[open]")) return;
  event.preventDefault();
  openSearch();
}

// The mentions view: the messages that mention you, across your channels, newest first.

import { api, handleAuthError } from "./api.js";
import { fullFormat, textWithMentions, timeFormat } from "./msgview.js";
import { openHit } from "./search.js";
import { setNavOpen } from "./sidebar.js";
import { channelLabel, state } from "./state.js";
import { $, avatar, closeDialog, h, setText } from "./util.js";

const PAGE_SIZE = 30;

// One listing at a time: `before` is the server's cursor for the next page.
let listing = null; // { before: string|null, loading, done }

function item({ channel_id: channelId, message }) {
  const channel = state.channels.get(channelId);
  const where = channel
    ? channel.kind === "group"
      ? `#${channelLabel(channel)}`
      : channelLabel(channel)
    : "a channel";
  const when = new Date(message.created_at);
  return h(
    "li",
    null,
    h(
      "button",
      {
        type: "button",
        class: "mention-item",
        "data-channel-id": channelId,
        "data-seq": message.seq,
        onclick: () => {
          closeDialog($("mentions-dialog"));
          // At the message itself, in context (?around=SEQ), not the channel's newest.
          if (state.channels.has(channelId)) openHit(channelId, message);
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
          h("span", { class: "mention-item-where" }, where),
          h(
            "time",
            { class: "msg-time", datetime: message.created_at, title: fullFormat.format(when) },
            `${when.toLocaleDateString()} ${timeFormat.format(when)}`,
          ),
        ),
        h("span", { class: "mention-item-text" }, textWithMentions(message)),
      ),
    ),
  );
}

async function loadPage(current) {
  const gen = state.gen;
  current.loading = true;
  render(current);
  try {
    const query = current.before
      ? `?before=${encodeURIComponent(current.before)}&limit=${PAGE_SIZE}`
      : `?limit=${PAGE_SIZE}`;
    const page = await api("GET", `/api/mentions${query}`);
    if (gen !== state.gen || listing !== current) return;
    $("mentions-list").append(...page.mentions.map(item));
    current.before = page.next;
    current.done = page.next === null;
    current.error = "";
  } catch (err) {
    if (gen !== state.gen || listing !== current || handleAuthError(err)) return;
    current.error = err.message;
  } finally {
    current.loading = false;
  }
  render(current);
}

function render(current) {
  const empty = !$("mentions-list").children.length;
  let status = "";
  if (current.loading) status = "Loading mentions…";
  else if (current.error) status = `Couldn't load mentions: ${current.error}`;
  else if (current.done && empty) status = "Nobody has mentioned you yet.";
  setText($("mentions-status"), status);
  $("mentions-more").hidden = current.loading || current.done;
  setText($("mentions-more"), current.error ? "Try again" : "Show older mentions");
}

export function openMentions() {
  setNavOpen(false);
  listing = { before: null, loading: false, done: false, error: "" };
  $("mentions-list").replaceChildren();
  $("mentions-dialog").showModal();
  loadPage(listing);
}

export function loadMoreMentions() {
  if (listing && !listing.loading && !listing.done) loadPage(listing);
}

// One message as a list item, shared by the channel's list and the thread panel.
//
// A message node is rebuilt whole when the message changes (an edit, a
// deletion, a reaction, a thread summary): see replaceMessageNode().

import { mentionsMe, state } from "./state.js";
import { avatar, h, icon } from "./util.js";
import { attachmentsOf } from "./viewer.js";

export const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
});
export const fullFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full",
  timeStyle: "short",
});

const ACTION_ICONS = {
  react: [
    "M20.5 12a8.5 8.5 0 11-6-8.1",
    "M8.5 14.5c.9 1.2 2.1 1.8 3.5 1.8s2.6-.6 3.5-1.8",
    "M9 9.5h.01M15 9.5h.01",
    "M19 2.5v5M16.5 5h5",
  ],
  thread: ["M4 5h16v10H9l-5 4z", "M8 9h8M8 12h5"],
  edit: ["M4 20h4L19 9l-4-4L4 16z", "M13.5 6.5l4 4"],
  delete: ["M4 7h16", "M9 7V4h6v3", "M6 7l1 13h10l1-13", "M10 11v6M14 11v6"],
};

/** What the signed-in user may do to a message in its channel. */
export function permissions(message) {
  const channel = state.channels.get(message.channel_id);
  const mine = Boolean(state.me && message.author.id === state.me.id);
  const moderator = Boolean(channel && channel.kind === "group" && channel.role === "moderator");
  const live = !message.deleted;
  return {
    react: live,
    reply: live && !message.reply_to,
    edit: live && mine && !message.author.is_bot,
    delete: live && (mine || moderator),
  };
}

/**
 * The text with each `@username` the server counted as a mention in a span
 * (the one naming the reader stands out). Only text nodes, never HTML.
 */
export function textWithMentions(message) {
  const names = new Set((message.mentions || []).map((name) => name.toLowerCase()));
  const text = message.text;
  if (!names.size) return [text];
  const me = state.me ? state.me.username.toLowerCase() : "";
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/@([A-Za-z0-9_.-]{3,32})/g)) {
    // "@bob." ends a sentence: try shorter names until one is a mention.
    let name = match[1];
    while (name.length >= 3 && !names.has(name.toLowerCase())) name = name.slice(0, -1);
    if (name.length < 3) continue;
    const start = match.index;
    const end = start + 1 + name.length;
    if (start > last) parts.push(text.slice(last, start));
    const cls = name.toLowerCase() === me ? "mention mention-me" : "mention";
    parts.push(h("span", { class: cls }, text.slice(start, end)));
    last = end;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function reactionChips(message) {
  const reactions = message.reactions || [];
  if (!reactions.length || message.deleted) return null;
  const myId = state.me ? state.me.id : null;
  return h(
    "div",
    { class: "reactions" },
    reactions.map((reaction) => {
      const mine = (reaction.users || []).includes(myId);
      const who = mine
        ? reaction.count > 1
          ? `you and ${reaction.count - 1} other${reaction.count > 2 ? "s" : ""}`
          : "you"
        : `${reaction.count} ${reaction.count === 1 ? "person" : "people"}`;
      return h(
        "button",
        {
          type: "button",
          class: mine ? "reaction mine" : "reaction",
          "data-action": "reaction",
          "data-emoji": reaction.emoji,
          "aria-pressed": String(mine),
          "aria-label": `${reaction.emoji} ${reaction.count}: ${who}`,
          title: `${who} reacted with ${reaction.emoji}`,
        },
        h("span", { class: "reaction-emoji", "aria-hidden": "true" }, reaction.emoji),
        h("span", { class: "reaction-count", "aria-hidden": "true" }, String(reaction.count)),
      );
    }),
    h(
      "button",
      {
        type: "button",
        class: "reaction reaction-add",
        "data-action": "react",
        "aria-label": "Add a reaction",
        title: "Add a reaction",
      },
      icon(...ACTION_ICONS.react),
    ),
  );
}

function threadLink(message) {
  const count = message.reply_count || 0;
  if (!count || message.reply_to) return null;
  const last = message.last_reply_at ? new Date(message.last_reply_at) : null;
  return h(
    "button",
    { type: "button", class: "thread-link", "data-action": "thread" },
    h("span", { class: "thread-count" }, count === 1 ? "1 reply" : `${count} replies`),
    last
      ? h(
          "span",
          { class: "thread-last", title: fullFormat.format(last) },
          `Last reply ${timeFormat.format(last)}`,
        )
      : null,
  );
}

function actionButton(action, label) {
  return h(
    "button",
    { type: "button", class: "icon-btn msg-action", "data-action": action, "aria-label": label, title: label },
    icon(...ACTION_ICONS[action]),
  );
}

function actionBar(message, inThread) {
  const can = permissions(message);
  if (!can.react) return null;
  return h(
    "div",
    { class: "msg-actions", role: "toolbar", "aria-label": "Message actions" },
    actionButton("react", "Add a reaction"),
    can.reply && !inThread ? actionButton("thread", "Reply in thread") : null,
    can.edit ? actionButton("edit", "Edit") : null,
    can.delete ? actionButton("delete", "Delete") : null,
  );
}

function body(message, inThread) {
  const editing = state.editing;
  let main;
  if (
    editing &&
    editing.channelId === message.channel_id &&
    editing.seq === message.seq &&
    editing.inThread === inThread
  ) {
    main = editing.form;
  } else if (message.deleted) {
    main = h("p", { class: "msg-deleted" }, "message deleted");
  } else {
    const edited = message.edited_at
      ? h(
          "span",
          { class: "msg-edited", title: `Edited ${fullFormat.format(new Date(message.edited_at))}` },
          "(edited)",
        )
      : null;
    main = h(
      "div",
      { class: "msg-line" },
      h("span", { class: "msg-text" }, textWithMentions(message)),
      edited ? " " : null,
      edited,
    );
  }
  return h(
    "div",
    { class: "msg-body" },
    main,
    attachmentsOf(message),
    reactionChips(message),
    inThread ? null : threadLink(message),
  );
}

/**
 * The list item of one message. `continued`: the same author just before, so
 * the head collapses. `inThread`: shown in the thread panel (no thread link).
 */
export function messageNode(message, { continued = false, inThread = false } = {}) {
  const author = message.author;
  const when = new Date(message.created_at);
  const mine = state.me && author.id === state.me.id;
  const classes = ["msg"];
  if (mine) classes.push("mine");
  if (author.is_bot) classes.push("bot");
  if (continued) classes.push("cont");
  if (message.deleted) classes.push("deleted");
  if (!message.deleted && mentionsMe(message)) classes.push("mentions-me");
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
  return h(
    "li",
    {
      class: classes.join(" "),
      "data-seq": message.seq,
      "data-channel-id": message.channel_id,
      "data-author": author.username,
    },
    gutter,
    head,
    body(message, inThread),
    actionBar(message, inThread),
  );
}

/**
 * Rebuilds the node of `message` in `list` (if shown there), keeping its
 * place, its "continued" look, and the keyboard focus on the same control.
 */
export function replaceMessageNode(list, message, inThread = false) {
  const old = list.querySelector(`li.msg[data-seq="${message.seq}"]`);
  if (!old) return;
  const active = document.activeElement;
  let focusKey = null;
  if (active && old.contains(active) && active.dataset && active.dataset.action) {
    focusKey = [active.dataset.action, active.dataset.emoji];
  }
  const node = messageNode(message, { continued: old.classList.contains("cont"), inThread });
  if (old.classList.contains("show-actions")) node.classList.add("show-actions");
  old.replaceWith(node);
  if (focusKey) {
    const [action, emoji] = focusKey;
    const again = [...node.querySelectorAll(`[data-action="${action}"]`)].find(
      (el) => el.dataset.emoji === emoji,
    );
    (again || node.querySelector("[data-action]") || document.body).focus?.();
  }
  if (state.editing && node.contains(state.editing.input) && active === state.editing.input) {
    state.editing.input.focus();
  }
}

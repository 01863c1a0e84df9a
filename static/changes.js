// Changes to messages: the change events (edit, delete, reaction) and the actions behind them.
//
// Events set state, they never increment it (ISSUE10.md): an edit brings the
// text, a reaction the emoji's whole entry, so a view becomes the database's
// whatever it saw before. Our own actions update the view at once; the event
// that follows sets the same truth again.

import { api, handleAuthError } from "./api.js";
import { closePicker, openPicker, recordEmoji } from "./emoji.js";
import { loadMembers } from "./members.js";
import { lastEditableOfMine, refreshChannelMessage } from "./messages.js";
import { permissions } from "./msgview.js";
import { renderSidebar } from "./sidebar.js";
import { mentionsMe, mentionsOf, state } from "./state.js";
import { lastEditableReply, openThread, refreshThreadMessage } from "./thread.js";
import { $, closeDialog, h, setText, toast } from "./util.js";

/** Every copy of a message we hold: in its channel's run, in the thread panel. */
function copiesOf(channelId, seq) {
  const found = new Set();
  const hist = state.history.get(channelId);
  if (hist && hist.msgs.has(seq)) found.add(hist.msgs.get(seq));
  const thread = state.thread;
  if (thread && thread.channelId === channelId) {
    if (thread.msgs.has(seq)) found.add(thread.msgs.get(seq));
    if (thread.root && thread.root.seq === seq) found.add(thread.root);
  }
  return [...found];
}

export function findMessage(channelId, seq) {
  return copiesOf(channelId, seq)[0] || null;
}

/** Sets `fields` on every copy of a message and redraws it where it shows. */
function patchMessage(channelId, seq, fields) {
  const copies = copiesOf(channelId, seq);
  for (const message of copies) Object.assign(message, fields);
  if (copies.length) {
    refreshChannelMessage(copies[0]);
    refreshThreadMessage(copies[0]);
  }
}

/**
 * Keeps the mention badge in step when a message we know of stops or starts
 * mentioning us (an edit, a deletion) while it is unread.
 */
function recountMention(channelId, message, nowMentions) {
  const channel = state.channels.get(channelId);
  if (!channel || !message || (state.me && message.author.id === state.me.id)) return;
  if (message.seq <= channel.last_read_seq) return;
  const before = mentionsMe(message);
  if (before === nowMentions) return;
  channel.mentions = Math.max(0, mentionsOf(channel) + (nowMentions ? 1 : -1));
  renderSidebar();
}

/**
 * A change to a message this page does not hold may still move the mention
 * badge (an edit adding a mention of us, a deletion taking one back): the
 * channel's own answer says.
 */
function recountFromServer(channelId, seq, mayMatter) {
  const channel = state.channels.get(channelId);
  if (channel && seq > channel.last_read_seq && mayMatter(channel)) loadMembers(channelId);
}

function applyEdit(channelId, seq, fields) {
  const known = findMessage(channelId, seq);
  if (!known) {
    const mentioned = mentionsMe({ mentions: fields.mentions || [] });
    recountFromServer(channelId, seq, (channel) => mentioned || mentionsOf(channel) > 0);
    return;
  }
  if (known.deleted) return;
  recountMention(channelId, known, mentionsMe({ mentions: fields.mentions || [] }));
  patchMessage(channelId, seq, fields);
}

function applyTombstone(channelId, seq) {
  const known = findMessage(channelId, seq);
  if (!known) {
    recountFromServer(channelId, seq, (channel) => mentionsOf(channel) > 0);
    return;
  }
  recountMention(channelId, known, false);
  const editing = state.editing;
  if (editing && editing.channelId === channelId && editing.seq === seq) endEdit({ focus: false });
  patchMessage(channelId, seq, {
    deleted: true,
    text: "",
    edited_at: null,
    reactions: [],
    mentions: [],
  });
}

/** Replaces (or drops, at count 0) one emoji's entry in a reaction summary. */
function withEntry(reactions, entry) {
  const list = [...(reactions || [])];
  const at = list.findIndex((r) => r.emoji === entry.emoji);
  if (entry.count <= 0) {
    if (at >= 0) list.splice(at, 1);
  } else if (at >= 0) {
    list[at] = entry;
  } else {
    list.push(entry);
  }
  return list;
}

/** Applies a change event; false if the event is not a message change. */
export function applyChange(event) {
  const { channel_id: channelId, seq } = event;
  switch (event.type) {
    case "message_edited":
      applyEdit(channelId, seq, {
        text: event.text,
        edited_at: event.edited_at,
        mentions: event.mentions || [],
      });
      return true;
    case "message_deleted":
      applyTombstone(channelId, seq);
      return true;
    case "reaction": {
      const known = findMessage(channelId, seq);
      if (known && !known.deleted) {
        const entry = { emoji: event.emoji, count: event.count, users: event.users || [] };
        patchMessage(channelId, seq, { reactions: withEntry(known.reactions, entry) });
      }
      return true;
    }
    default:
      return false;
  }
}

// ---------- Reactions ----------

function reactionPath(channelId, seq, emoji) {
  return `/api/channels/${channelId}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`;
}

/** Adds (or, with `toggle`, removes if ours) one reaction of ours. */
async function react(channelId, seq, emoji, { toggle = true } = {}) {
  const message = findMessage(channelId, seq);
  if (!message || message.deleted || !state.me) return;
  const myId = state.me.id;
  const entry = (message.reactions || []).find((r) => r.emoji === emoji);
  const mine = Boolean(entry && (entry.users || []).includes(myId));
  if (mine && !toggle) return;
  const adding = !mine;
  if (adding) recordEmoji(emoji);
  const shifted = (current, add) => {
    const users = (current ? current.users || [] : []).filter((id) => id !== myId);
    if (add) users.push(myId);
    const count = (current ? current.count : 0) + (add ? 1 : -1);
    return { emoji, count: Math.max(0, count), users };
  };
  patchMessage(channelId, seq, { reactions: withEntry(message.reactions, shifted(entry, adding)) });
  const gen = state.gen;
  try {
    await api(adding ? "PUT" : "DELETE", reactionPath(channelId, seq, emoji));
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    // Undo ours (the events keep everyone else's right).
    const now = findMessage(channelId, seq);
    if (now && !now.deleted) {
      const current = (now.reactions || []).find((r) => r.emoji === emoji);
      const stillOurs = Boolean(current && (current.users || []).includes(myId));
      if (stillOurs === adding) {
        patchMessage(channelId, seq, {
          reactions: withEntry(now.reactions, shifted(current, !adding)),
        });
      }
    }
    toast(`Couldn't ${adding ? "add" : "remove"} the reaction: ${err.message}`);
  }
}

// ---------- Editing in place ----------

/** Starts editing a message of ours where it shows (the channel or the thread panel). */
export function startEdit(channelId, seq, { inThread = false } = {}) {
  const message = findMessage(channelId, seq);
  if (!message || !permissions(message).edit) return false;
  if (state.editing) endEdit({ focus: false });
  const input = h("textarea", { class: "msg-edit-input", rows: 2, "aria-label": "Edit message" });
  input.value = message.text;
  const error = h("p", { class: "msg-edit-error", role: "alert" });
  const form = h(
    "form",
    { class: "msg-edit", novalidate: true },
    input,
    h(
      "div",
      { class: "msg-edit-bar" },
      h("span", { class: "msg-edit-hint" }, "Escape to cancel · Enter to save"),
      h(
        "button",
        { type: "button", class: "btn btn-ghost btn-small", "data-action": "edit-cancel" },
        "Cancel",
      ),
      h("button", { type: "submit", class: "btn btn-primary btn-small" }, "Save"),
    ),
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveEdit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      endEdit();
    } else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      saveEdit();
    }
  });
  input.addEventListener("input", () => setText(error, ""));
  const origin = inThread ? $("thread-input") : $("composer-input");
  state.editing = { channelId, seq, inThread, form, input, error, origin, saving: false };
  (inThread ? refreshThreadMessage : refreshChannelMessage)(message);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  form.scrollIntoView({ block: "nearest" });
  return true;
}

/** Ends editing (the message shows as it is); by default back to the composer. */
export function endEdit({ focus = true } = {}) {
  const editing = state.editing;
  if (!editing) return;
  state.editing = null;
  const message = findMessage(editing.channelId, editing.seq);
  if (message) (editing.inThread ? refreshThreadMessage : refreshChannelMessage)(message);
  if (focus && editing.origin && !editing.origin.disabled) editing.origin.focus();
}

async function saveEdit() {
  const editing = state.editing;
  if (!editing || editing.saving) return;
  const { channelId, seq } = editing;
  const message = findMessage(channelId, seq);
  const text = editing.input.value.trim();
  if (!message || message.deleted) {
    endEdit();
    return;
  }
  if (!text) {
    setText(editing.error, "A message needs some text. To remove it, delete it.");
    return;
  }
  if (text === message.text) {
    endEdit();
    return;
  }
  const gen = state.gen;
  editing.saving = true;
  try {
    const answer = await api("PATCH", `/api/channels/${channelId}/messages/${seq}`, { text });
    if (gen !== state.gen) return;
    const updated = answer.message;
    if (state.editing === editing) endEdit();
    applyEdit(channelId, seq, {
      text: updated.text,
      edited_at: updated.edited_at,
      mentions: updated.mentions || [],
    });
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    if (err.status === 404) {
      if (state.editing === editing) endEdit();
      toast("That message was deleted.");
    } else {
      setText(editing.error, err.message);
    }
  } finally {
    editing.saving = false;
  }
}

/** Up-arrow in an empty composer: edit my last message there. */
export function editLast(inThread) {
  if (inThread) {
    const message = lastEditableReply();
    return message ? startEdit(message.channel_id, message.seq, { inThread: true }) : false;
  }
  const message = lastEditableOfMine(state.currentId);
  return message ? startEdit(message.channel_id, message.seq) : false;
}

// ---------- Deleting, with a confirmation ----------

let pendingDelete = null; // { channelId, seq }

function confirmDelete(channelId, seq) {
  const message = findMessage(channelId, seq);
  if (!message || !permissions(message).delete) return;
  pendingDelete = { channelId, seq };
  const mine = state.me && message.author.id === state.me.id;
  // A message of files only: their names (its files go with it).
  const files = (message.files || []).map((file) => file.name).join(", ");
  setText($("delete-preview"), message.text || files);
  setText(
    $("delete-note"),
    mine
      ? "It will show as “message deleted” for everyone."
      : `You are deleting ${message.author.username}'s message as the channel's moderator.`,
  );
  setText($("delete-error"), "");
  $("delete-dialog").showModal();
  $("delete-cancel").focus();
}

export async function submitDelete(event) {
  event.preventDefault();
  const target = pendingDelete;
  if (!target) return;
  const gen = state.gen;
  const button = $("delete-confirm");
  button.disabled = true;
  try {
    await api("DELETE", `/api/channels/${target.channelId}/messages/${target.seq}`);
    if (gen !== state.gen) return;
    pendingDelete = null;
    closeDialog($("delete-dialog"));
    applyTombstone(target.channelId, target.seq);
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    setText($("delete-error"), err.message);
  } finally {
    button.disabled = false;
  }
}

// ---------- The message lists: one click handler for every message ----------

function showActions(li) {
  for (const other of document.querySelectorAll(".msg.show-actions")) {
    if (other !== li) other.classList.remove("show-actions");
  }
  li.classList.add("show-actions");
}

/** A press outside every message hides the actions a tap showed. */
export function onDocumentPointerDown(event) {
  if (event.target.closest && event.target.closest("li.msg, #emoji-picker, dialog")) return;
  for (const li of document.querySelectorAll(".msg.show-actions")) {
    li.classList.remove("show-actions");
  }
}

/** Clicks in a message list (the channel's or the thread panel's). */
export function onMessageListClick(event) {
  const li = event.target.closest("li.msg");
  if (!li) return;
  const channelId = Number(li.dataset.channelId);
  const seq = Number(li.dataset.seq);
  const inThread = Boolean(li.closest("#thread"));
  const button = event.target.closest("[data-action]");
  if (!button) {
    // A tap on a touch screen shows the actions (there is no hover).
    if (event.target.closest("form, button, textarea")) return;
    if (event.pointerType === "touch" || event.pointerType === "pen") {
      if (li.classList.contains("show-actions")) li.classList.remove("show-actions");
      else showActions(li);
    }
    return;
  }
  switch (button.dataset.action) {
    case "react":
      openPicker(button, (emoji) => react(channelId, seq, emoji, { toggle: false }));
      break;
    case "reaction":
      react(channelId, seq, button.dataset.emoji);
      break;
    case "thread":
      closePicker();
      openThread(channelId, seq);
      break;
    case "edit":
      startEdit(channelId, seq, { inThread });
      break;
    case "edit-cancel":
      endEdit();
      break;
    case "delete":
      confirmDelete(channelId, seq);
      break;
    default:
      break;
  }
}

/** A long press on a touch screen shows a message's actions instead of the context menu. */
export function onMessageListContextMenu(event) {
  const li = event.target.closest("li.msg");
  if (!li || event.target.closest("textarea")) return;
  if (event.pointerType === "touch" || event.sourceCapabilities?.firesTouchEvents) {
    event.preventDefault();
    showActions(li);
  }
}

// The composer: Enter sends, a failed send keeps its text and retries under the same key.

import { api, handleAuthError } from "./api.js";
import { channelTray } from "./files.js";
import { applyMessage } from "./messages.js";
import { state } from "./state.js";
import { $, toast } from "./util.js";

export function updateSendButton() {
  // Files: the send waits for every upload, and may carry files without text.
  const busy = Boolean(channelTray && channelTray.busy());
  const files = channelTray ? channelTray.readyIds().length : 0;
  $("send").disabled = state.sending || busy || (!$("composer-input").value.trim() && !files);
}

/**
 * The keys of a composer: Enter sends (Shift+Enter is a new line; an IME
 * composition keeps its Enter); Up in an empty composer edits your last message.
 */
export function composerKeys(form, editLast) {
  return (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    } else if (
      event.key === "ArrowUp" &&
      !event.shiftKey &&
      !event.altKey &&
      !event.ctrlKey &&
      !event.metaKey &&
      event.target.value === ""
    ) {
      if (editLast()) event.preventDefault();
    }
  };
}

/**
 * The Idempotency-Key for sending `text` in a channel: the same as the last
 * attempt's while the text is the same, so a retry after a failure (whose
 * send may have committed before the answer was lost) posts it only once.
 */
function sendKeyFor(slot, text) {
  const held = state.sendKeys.get(slot);
  if (held && held.text === text) return held.key;
  // crypto.randomUUID() exists only on HTTPS and localhost; this works on plain HTTP too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const key = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  state.sendKeys.set(slot, { text, key });
  return key;
}

/**
 * Sends `text` to a channel (as a reply to the root `replyTo`, if given) with
 * the uploaded `files` (ids), and resolves with the message. A retry of the
 * same text and files reuses the key.
 */
export async function sendText(channelId, text, replyTo = null, files = []) {
  const slot = replyTo ? `${channelId}:${replyTo}` : channelId;
  const key = sendKeyFor(slot, files.length ? `${text}\u0000${files.join(",")}` : text);
  const body = replyTo ? { text, reply_to: replyTo } : { text };
  if (files.length) body.files = files;
  const { message } = await api("POST", `/api/channels/${channelId}/messages`, body, undefined, {
    "Idempotency-Key": key,
  });
  if (state.sendKeys.get(slot)?.key === key) state.sendKeys.delete(slot);
  return message;
}

export async function sendMessage(event) {
  event.preventDefault();
  const input = $("composer-input");
  const raw = input.value;
  const text = raw.trim();
  const id = state.currentId;
  const fileIds = channelTray ? channelTray.readyIds() : [];
  if (channelTray && channelTray.busy()) return; // the button says so: disabled
  if ((!text && !fileIds.length) || state.sending || !state.channels.has(id)) return;
  const gen = state.gen;
  state.sending = true;
  updateSendButton();
  $("composer-error").textContent = "";
  try {
    const message = await sendText(id, text, null, fileIds);
    if (gen !== state.gen) return;
    if (fileIds.length) channelTray.sent(id, fileIds);
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

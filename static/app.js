// Chatterwerks browser client, the entry module: session start and end, event wiring, boot.
//
// Plain JavaScript modules, no framework, no build step:
//   util.js      small DOM helpers (h(): user text only ever becomes text nodes)
//   api.js       fetch + JSON + the CSRF header + one error shape
//   state.js     what the server told us, and what the page shows
//   auth.js      the sign-in / register form
//   sidebar.js   sidebar, header, title, drawers
//   messages.js  switching channel, history pages, rendering, scrolling, read markers
//   composer.js  the message box
//   msgview.js   one message as a list item (text, mentions, reactions, thread link, actions)
//   changes.js   edits, deletions, reactions: their events and their actions
//   thread.js    the thread panel beside the channel
//   emoji.js     the emoji picker (frequent first)
//   files.js     attaching files: paperclip, drop, paste; uploads with progress
//   viewer.js    a message's files: thumbnails, cards, the full-size viewer
//   mention.js   "@" in a composer offers the channel's members
//   mentions.js  the mentions view (GET /api/mentions)
//   search.js    message search (GET /api/search): the box, results, jumping to a hit
//   members.js   a channel's members, direct channels, user search
//   dialogs.js   "find people" and "create a channel"
//   poll.js      the long-poll loop: the only /api/events request, ever
//   notify.js    notification settings, desktop notifications, title/favicon counts, read-all
//   live.js      typing and presence (ephemeral events), and this page's idleness
// The view modules call one another (a channel switch updates them all). Those
// import cycles are harmless: at import time modules only declare things, and
// this module starts the page once every module is loaded. Relative imports
// inherit the versioned path the page loads this file from (/static/<version>/).
//
// Security: nothing here uses innerHTML or builds HTML strings; every piece of
// server or user text goes in through textContent / text nodes. The session is
// the HttpOnly cookie; the token the server returns is never kept.

import { api, onSessionEnded } from "./api.js";
import { setAuthMode, showAuth, showScreen, submitAuth, toggleAuthMode } from "./auth.js";
import {
  editLast,
  endEdit,
  onMessageListClick,
  onDocumentPointerDown,
  onMessageListContextMenu,
  submitDelete,
} from "./changes.js";
import { composerKeys, sendMessage, updateSendButton } from "./composer.js";
import {
  createChannel,
  openChannelDialog,
  openDirectDialog,
  refreshDirectResults,
} from "./dialogs.js";
import { closePicker, pickerOpen, wirePicker } from "./emoji.js";
import { composerTyped, resetLive, typingSent, watchIdleness } from "./live.js";
import { resetUploads, wireFiles } from "./files.js";
import { addMember, refreshMemberOptions, removeMember } from "./members.js";
import { attachMentionPicker } from "./mention.js";
import { loadMoreMentions, openMentions } from "./mentions.js";
import {
  loadOlder,
  maybeMarkRead,
  onMessagesScroll,
  scrollToBottom,
  switchChannel,
} from "./messages.js";
import { wireNotifications } from "./notify.js";
import { applySnapshot, backoffDelay, pollLoop, setConnection, waitOrWake } from "./poll.js";
import { narrow, setMembersOpen, setNavOpen, sidebarItems } from "./sidebar.js";
import {
  loadMoreResults,
  onSearchInput,
  openSearch,
  searchShortcut,
  submitSearch,
} from "./search.js";
import { resetState, state } from "./state.js";
import { closeThread, loadMoreReplies, sendReply, updateThreadSend } from "./thread.js";
import { $, closeDialog, setFieldError, setText } from "./util.js";

/** Ends everything of the current session in the page (not on the server). */
function stopSession() {
  state.gen += 1;
  if (state.pollAbort) state.pollAbort.abort();
  state.pollAbort = null;
  if (state.wake) state.wake();
  resetState();
  resetLive();
  resetUploads();
  sidebarItems.clear();
  for (const id of ["home-list", "group-list", "direct-list", "message-list", "member-list"]) {
    $(id).replaceChildren();
  }
  for (const dialog of document.querySelectorAll("dialog")) closeDialog(dialog);
  closePicker();
  closeThread();
  setConnection(true);
  setNavOpen(false);
  setMembersOpen(false);
  $("composer-input").value = "";
}

function signedOut(notice) {
  stopSession();
  history.replaceState(null, "", location.pathname);
  showAuth(notice);
}

async function signOut() {
  stopSession();
  history.replaceState(null, "", location.pathname);
  try {
    await api("POST", "/api/logout");
  } catch {
    // The session may already be gone; either way the page is signed out.
  }
  setAuthMode("login");
  showAuth();
}

/** Loads the state and, signed in, shows the chat and starts the poll. */
async function start() {
  stopSession();
  const gen = state.gen;
  let failures = 0;
  for (;;) {
    try {
      const me = await api("GET", "/api/me");
      if (gen !== state.gen) return;
      showScreen("chat");
      applySnapshot(me);
      pollLoop(gen);
      if (!narrow.matches) $("composer-input").focus();
      return;
    } catch (err) {
      if (gen !== state.gen) return;
      if (err.status === 401) {
        showAuth();
        return;
      }
      failures += 1;
      const delay = backoffDelay(failures, err.retryAfter);
      showScreen("boot");
      setText($("boot-text"), `Can't reach Chatterwerks. Retrying in ${Math.ceil(delay / 1000)} s…`);
      await waitOrWake(delay);
    }
  }
}

function wire() {
  $("auth-form").addEventListener("submit", (event) => submitAuth(event, start));
  $("auth-switch").addEventListener("click", () => {
    toggleAuthMode();
    $("auth-username").focus();
  });
  for (const id of ["auth-username", "auth-password"]) {
    $(id).addEventListener("input", () => setFieldError($(id), $(`${id}-error`), ""));
  }

  $("composer").addEventListener("submit", sendMessage);
  wireFiles({ onChannelChange: updateSendButton, onThreadChange: updateThreadSend });
  // The member picker's keys come first: Enter picks a name there, not sends.
  attachMentionPicker($("composer-input"), () => state.currentId);
  $("composer-input").addEventListener(
    "keydown",
    composerKeys($("composer"), () => editLast(false)),
  );
  $("composer-input").addEventListener("input", () => {
    updateSendButton();
    if ($("composer-error").textContent) $("composer-error").textContent = "";
    composerTyped(state.currentId, $("composer-input").value);
  });
  $("composer").addEventListener("submit", typingSent);

  $("thread-composer").addEventListener("submit", sendReply);
  attachMentionPicker($("thread-input"), () => state.thread && state.thread.channelId);
  $("thread-input").addEventListener(
    "keydown",
    composerKeys($("thread-composer"), () => editLast(true)),
  );
  $("thread-input").addEventListener("input", () => {
    updateThreadSend();
    if ($("thread-error").textContent) $("thread-error").textContent = "";
  });
  $("thread-close").addEventListener("click", () => closeThread({ focusChannel: true }));
  $("thread-more").addEventListener("click", loadMoreReplies);
  $("thread-retry").addEventListener("click", loadMoreReplies);
  for (const id of ["message-list", "thread"]) {
    $(id).addEventListener("click", onMessageListClick);
    $(id).addEventListener("contextmenu", onMessageListContextMenu);
  }
  $("delete-form").addEventListener("submit", submitDelete);
  $("open-mentions").addEventListener("click", openMentions);
  $("mentions-more").addEventListener("click", loadMoreMentions);
  $("open-search").addEventListener("click", openSearch);
  $("search-input").addEventListener("input", onSearchInput);
  $("search-form").addEventListener("submit", submitSearch);
  $("search-more").addEventListener("click", loadMoreResults);
  document.addEventListener("keydown", searchShortcut);
  document.addEventListener("pointerdown", onDocumentPointerDown);
  wirePicker();
  wireNotifications();

  $("messages").addEventListener("scroll", onMessagesScroll, { passive: true });
  $("new-marker").addEventListener("click", () => {
    scrollToBottom();
    maybeMarkRead();
  });
  $("history-retry").addEventListener("click", () => {
    const hist = state.history.get(state.currentId);
    if (!hist) return;
    if (hist.status === "error") switchChannel(state.currentId);
    else {
      hist.olderError = "";
      loadOlder();
    }
  });

  $("nav-toggle").addEventListener("click", () => setNavOpen(true));
  $("nav-close").addEventListener("click", () => {
    setNavOpen(false);
    $("nav-toggle").focus();
  });
  $("members-toggle").addEventListener("click", () => setMembersOpen(true));
  $("members-close").addEventListener("click", () => {
    setMembersOpen(false);
    $("members-toggle").focus();
  });
  $("scrim").addEventListener("click", () => {
    setNavOpen(false);
    setMembersOpen(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const chat = $("chat");
    if (pickerOpen()) {
      closePicker({ focusAnchor: true });
    } else if (state.editing) {
      endEdit();
    } else if (chat.classList.contains("nav-open")) {
      setNavOpen(false);
      $("nav-toggle").focus();
    } else if (chat.classList.contains("members-open")) {
      setMembersOpen(false);
      $("members-toggle").focus();
    } else if (state.thread && !document.querySelector("dialog[open]")) {
      closeThread({ focusChannel: true });
    }
  });

  $("sign-out").addEventListener("click", signOut);
  $("new-direct").addEventListener("click", openDirectDialog);
  $("find-people").addEventListener("click", openDirectDialog);
  $("new-channel").addEventListener("click", openChannelDialog);
  $("direct-search").addEventListener("input", refreshDirectResults);
  $("direct-form").addEventListener("submit", (event) => {
    // Enter in the search box opens the first match.
    event.preventDefault();
    const first = $("direct-results").querySelector("button.member");
    if (first) first.click();
  });
  $("channel-form").addEventListener("submit", createChannel);
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => closeDialog(button.closest("dialog")));
  }
  $("add-member").addEventListener("submit", addMember);
  $("add-member-input").addEventListener("input", refreshMemberOptions);
  $("leave-channel").addEventListener("click", () => {
    if (state.me && state.currentId !== null) removeMember(state.currentId, state.me.username);
  });

  // Reading happens when the tab is seen; the network coming back ends a backoff.
  document.addEventListener("visibilitychange", maybeMarkRead);
  window.addEventListener("focus", maybeMarkRead);
  window.addEventListener("online", () => state.wake && state.wake());
  narrow.addEventListener("change", () => setNavOpen(false));
}

onSessionEnded(signedOut);
wire();
watchIdleness();
setAuthMode("login");
// The server tells the page whether its session cookie is good, so a signed-out
// visit shows the form without a failing GET /api/me (and its console error).
if (document.body.dataset.signedIn === "true") start();
else showAuth();

// The member list of a channel: direct messages, adding and removing members, user search.

import { api, handleAuthError } from "./api.js";
import { notePresence, presenceDot } from "./live.js";
import { forgetChannel, switchChannel } from "./messages.js";
import { renderHeader, renderSidebar, setMembersOpen } from "./sidebar.js";
import { state, upsertChannel } from "./state.js";
import {
  $,
  ICONS,
  USERNAME_RE,
  avatar,
  closeDialog,
  debounce,
  h,
  icon,
  setFieldError,
  setText,
  toast,
} from "./util.js";

export async function loadMembers(id) {
  const gen = state.gen;
  try {
    const { channel } = await api("GET", `/api/channels/${id}`);
    if (gen !== state.gen || !state.channels.has(id)) return;
    state.members.set(id, channel.members);
    notePresence([...channel.members, channel.peer]);
    upsertChannel(channel);
    renderSidebar(); // its counts (unread, mentions) are the server's newest
    if (state.currentId === id) {
      renderMembers();
      renderHeader();
    }
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    if (err.status === 404) forgetChannel(id);
  }
}

export function renderMembers() {
  const id = state.currentId;
  const channel = state.channels.get(id);
  const members = state.members.get(id);
  const list = $("member-list");
  if (!channel || !members) {
    list.replaceChildren(h("li", { class: "members-help" }, "Loading…"));
    setText($("members-count"), "Members");
    $("add-member").hidden = true;
    $("leave-channel").hidden = true;
    return;
  }
  const moderator = channel.kind === "group" && channel.role === "moderator";
  list.replaceChildren(
    ...members.map((user) => {
      const isMe = user.id === state.me.id;
      const button = h(
        "button",
        {
          type: "button",
          class: "member",
          "data-username": user.username,
          disabled: isMe,
          title: isMe ? null : `Message ${user.username}`,
          onclick: () => openDirect(user.username),
        },
        avatar(user),
        presenceDot(user),
        h("span", { class: "member-name" }, user.username),
        user.is_bot ? h("span", { class: "tag tag-bot" }, "bot") : null,
        isMe ? h("span", { class: "tag tag-you" }, "you") : null,
        isMe ? null : h("span", { class: "sr-only" }, ": send a direct message"),
      );
      const row = h("li", { class: "member-row" }, button);
      if (moderator && !isMe) {
        row.append(
          h(
            "button",
            {
              type: "button",
              class: "icon-btn member-remove",
              "aria-label": `Remove ${user.username} from the channel`,
              title: `Remove ${user.username}`,
              onclick: () => removeMember(id, user.username),
            },
            icon(...ICONS.x),
          ),
        );
      }
      return row;
    }),
  );
  setText($("members-count"), `${members.length}`);
  $("members-toggle").setAttribute("aria-label", `Members: ${members.length}`);
  $("add-member").hidden = !moderator;
  $("leave-channel").hidden = channel.kind !== "group";
}

/** Opens (or creates) the direct channel with a person, and shows it. */
export async function openDirect(username) {
  if (!state.me || username.toLowerCase() === state.me.username.toLowerCase()) return;
  const gen = state.gen;
  try {
    const { channel } = await api("POST", "/api/direct", { username });
    if (gen !== state.gen) return;
    const known = upsertChannel(channel);
    setMembersOpen(false);
    closeDialog($("direct-dialog"));
    switchChannel(known.id);
    return true;
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    toast(`Couldn't open a conversation with ${username}: ${err.message}`);
    return false;
  }
}

export async function removeMember(id, username) {
  const gen = state.gen;
  try {
    await api("DELETE", `/api/channels/${id}/members/${encodeURIComponent(username)}`);
    if (gen !== state.gen) return;
    if (username.toLowerCase() === state.me.username.toLowerCase()) {
      forgetChannel(id);
      toast("You left the channel.");
    } else {
      loadMembers(id);
    }
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    toast(err.message);
  }
}

export async function addMember(event) {
  event.preventDefault();
  const id = state.currentId;
  const input = $("add-member-input");
  const username = input.value.trim();
  const errorEl = $("add-member-error");
  if (!USERNAME_RE.test(username)) {
    setFieldError(input, errorEl, "Enter a username (3–32 characters).");
    return;
  }
  setFieldError(input, errorEl, "");
  const gen = state.gen;
  try {
    const { channel } = await api("POST", `/api/channels/${id}/members`, { username });
    if (gen !== state.gen) return;
    input.value = "";
    state.members.set(id, channel.members);
    notePresence([...channel.members, channel.peer]);
    upsertChannel(channel);
    if (state.currentId === id) renderMembers();
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    setFieldError(input, errorEl, err.message);
  }
}

// User search, shared by the "find people" dialog and the add-member field.
let searchSeq = 0;
export async function searchUsers(query) {
  const mine = ++searchSeq;
  const { users } = await api("GET", `/api/users?q=${encodeURIComponent(query)}`);
  return mine === searchSeq ? users : null; // null: a newer search superseded this one
}

export const refreshMemberOptions = debounce(async () => {
  const query = $("add-member-input").value.trim();
  if (!query) return;
  try {
    const users = await searchUsers(query);
    if (!users) return;
    $("add-member-options").replaceChildren(
      ...users.map((user) => h("option", { value: user.username })),
    );
  } catch {
    // Suggestions are a convenience; the add itself reports errors.
  }
}, 200);

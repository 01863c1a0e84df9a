// The dialogs: find a person (opens a direct channel) and create a group channel.

import { api, handleAuthError } from "./api.js";
import { openDirect, searchUsers } from "./members.js";
import { switchChannel } from "./messages.js";
import { setNavOpen } from "./sidebar.js";
import { state, upsertChannel } from "./state.js";
import { $, USERNAME_RE, avatar, closeDialog, debounce, h, setFieldError } from "./util.js";

export const refreshDirectResults = debounce(async () => {
  const query = $("direct-search").value.trim();
  const errorEl = $("direct-error");
  try {
    const users = await searchUsers(query);
    if (!users) return;
    errorEl.textContent = "";
    const others = users.filter((user) => user.id !== state.me.id);
    $("direct-results").replaceChildren(
      ...(others.length
        ? others.map((user) =>
            h(
              "li",
              null,
              h(
                "button",
                {
                  type: "button",
                  class: "member",
                  "data-username": user.username,
                  onclick: () => openDirect(user.username),
                },
                avatar(user),
                h("span", { class: "member-name" }, user.username),
                user.is_bot ? h("span", { class: "tag tag-bot" }, "bot") : null,
              ),
            ),
          )
        : [h("li", { class: "empty" }, query ? `Nobody called “${query}…”` : "Nobody here yet.")]),
    );
  } catch (err) {
    if (handleAuthError(err)) return;
    errorEl.textContent = err.message;
  }
}, 150);

export function openDirectDialog() {
  const dialog = $("direct-dialog");
  $("direct-search").value = "";
  $("direct-error").textContent = "";
  $("direct-results").replaceChildren();
  setNavOpen(false);
  dialog.showModal();
  $("direct-search").focus();
  refreshDirectResults();
}

export function openChannelDialog() {
  const form = $("channel-form");
  form.reset();
  clearChannelErrors();
  setNavOpen(false);
  $("channel-dialog").showModal();
  $("channel-name").focus();
}

function clearChannelErrors() {
  for (const field of ["name", "description", "members"]) {
    setFieldError($(`channel-${field}`), $(`channel-${field}-error`), "");
  }
  $("channel-error").textContent = "";
}

export async function createChannel(event) {
  event.preventDefault();
  clearChannelErrors();
  const name = $("channel-name").value.trim();
  const description = $("channel-description").value.trim();
  const members = $("channel-members")
    .value.split(/[\s,]+/)
    .map((m) => m.replace(/^@/, ""))
    .filter(Boolean);
  if (!name) {
    setFieldError($("channel-name"), $("channel-name-error"), "Give the channel a name.");
    $("channel-name").focus();
    return;
  }
  const bad = members.find((m) => !USERNAME_RE.test(m));
  if (bad) {
    setFieldError($("channel-members"), $("channel-members-error"), `“${bad}” is not a username.`);
    $("channel-members").focus();
    return;
  }
  const gen = state.gen;
  $("channel-submit").disabled = true;
  try {
    const { channel } = await api("POST", "/api/channels", { name, description, members });
    if (gen !== state.gen) return;
    const known = upsertChannel(channel);
    closeDialog($("channel-dialog"));
    switchChannel(known.id);
  } catch (err) {
    if (gen !== state.gen || handleAuthError(err)) return;
    const code = err.code || "";
    const field =
      code === "channel_exists" || code.endsWith("_name")
        ? "name"
        : code.endsWith("description")
          ? "description"
          : code === "user_not_found" || code.endsWith("members")
            ? "members"
            : null;
    if (field) {
      setFieldError($(`channel-${field}`), $(`channel-${field}-error`), err.message);
      $(`channel-${field}`).focus();
    } else {
      $("channel-error").textContent = err.message;
    }
  } finally {
    $("channel-submit").disabled = false;
  }
}

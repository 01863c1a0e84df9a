// "@" in a composer offers the channel's members; picking one inserts "@username ".

import { state } from "./state.js";
import { avatar, h } from "./util.js";

const MAX_OPTIONS = 8;
// "@" at the start or after a space, then what is typed of a name, up to the caret.
const TRIGGER = /(^|\s)@([A-Za-z0-9_.-]{0,32})$/;

let nextId = 0;

/**
 * Adds the member picker to `input` (a textarea in a form with position:
 * relative). `channelId()` says whose members to offer. Its keydown listener
 * must come before the composer's own (it takes Enter, Tab, arrows, Escape
 * while the list is open).
 */
export function attachMentionPicker(input, channelId) {
  const listId = `mention-list-${++nextId}`;
  const list = h("ul", { id: listId, class: "mention-list", role: "listbox", "aria-label": "Members" });
  list.hidden = true;
  input.closest("form").append(list);
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", listId);
  let options = []; // users shown
  let active = 0;
  let start = -1; // where the "@" is

  function close() {
    if (list.hidden) return;
    list.hidden = true;
    list.replaceChildren();
    options = [];
    input.removeAttribute("aria-activedescendant");
    input.setAttribute("aria-expanded", "false");
  }

  function render() {
    list.replaceChildren(
      ...options.map((user, i) =>
        h(
          "li",
          {
            id: `${listId}-${i}`,
            class: i === active ? "mention-option active" : "mention-option",
            role: "option",
            "aria-selected": String(i === active),
            "data-username": user.username,
          },
          avatar(user),
          h("span", { class: "member-name" }, user.username),
          user.is_bot ? h("span", { class: "tag tag-bot" }, "bot") : null,
        ),
      ),
    );
    input.setAttribute("aria-activedescendant", `${listId}-${active}`);
  }

  function update() {
    const caret = input.selectionStart;
    if (caret !== input.selectionEnd) return close();
    const match = input.value.slice(0, caret).match(TRIGGER);
    const members = state.members.get(channelId()) || [];
    if (!match || !state.me) return close();
    const typed = match[2].toLowerCase();
    start = caret - match[2].length - 1;
    options = members
      .filter((user) => user.id !== state.me.id && user.username.toLowerCase().startsWith(typed))
      .sort((a, b) => a.username.localeCompare(b.username, undefined, { sensitivity: "base" }))
      .slice(0, MAX_OPTIONS);
    if (!options.length) return close();
    active = Math.min(active, options.length - 1);
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    render();
  }

  function pick(user) {
    const caret = input.selectionStart;
    const before = input.value.slice(0, start);
    const after = input.value.slice(caret).replace(/^\S*/, ""); // the rest of the typed name
    const inserted = `@${user.username} `;
    input.value = before + inserted + after.replace(/^ /, "");
    const at = before.length + inserted.length;
    input.setSelectionRange(at, at);
    close();
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.focus();
  }

  input.addEventListener("input", () => {
    active = list.hidden ? 0 : active;
    update();
  });
  input.addEventListener("click", update);
  input.addEventListener("blur", () => setTimeout(close, 150));
  input.addEventListener("keydown", (event) => {
    if (list.hidden || event.isComposing) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      active = (active + step + options.length) % options.length;
      render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      pick(options[active]);
    } else if (event.key === "Escape") {
      close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
    event.stopPropagation();
  });
  // Pressing an option must not blur the input first.
  list.addEventListener("pointerdown", (event) => event.preventDefault());
  list.addEventListener("click", (event) => {
    const option = event.target.closest("li[data-username]");
    const user = option && options.find((u) => u.username === option.dataset.username);
    if (user) pick(user);
  });
  return { close };
}

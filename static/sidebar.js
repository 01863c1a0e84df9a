// The sidebar (channel list and unread badges), the channel header, the tab title, the drawers.

import { presenceDot } from "./live.js";
import { switchChannel } from "./messages.js";
import { isMuted, renderCounts, renderNotifySetting } from "./notify.js";
import { channelLabel, mentionsOf, sortedChannels, state, unreadOf } from "./state.js";
import { $, ICONS, avatar, h, icon, setText } from "./util.js";

export const sidebarItems = new Map(); // channel id -> { li, button, name, badge }

function sidebarItem(channel) {
  let item = sidebarItems.get(channel.id);
  if (item) return item;
  const button = h("button", {
    type: "button",
    class: "chan",
    "data-channel-id": channel.id,
    onclick: () => switchChannel(channel.id),
  });
  item = { li: h("li", null, button), button, name: h("span", { class: "chan-name" }) };
  item.badge = h("span", { class: "badge", hidden: true });
  item.srUnread = h("span", { class: "sr-only" });
  item.mentionBadge = h("span", { class: "mention-badge", hidden: true });
  if (channel.kind === "home") {
    button.append(h("span", { class: "chan-icon" }, icon(...ICONS.home)));
  } else if (channel.kind === "direct" && channel.peer) {
    button.append(avatar(channel.peer, "chan-icon"), presenceDot(channel.peer));
  } else {
    button.append(h("span", { class: "chan-icon", "aria-hidden": "true" }, "#"));
  }
  button.append(item.name);
  if (channel.kind === "direct" && channel.peer && channel.peer.is_bot) {
    button.append(h("span", { class: "tag tag-bot" }, "bot"));
  }
  button.append(item.srUnread, item.mentionBadge, item.badge);
  sidebarItems.set(channel.id, item);
  return item;
}

/**
 * Updates the sidebar in place: items are reused, and the lists are only
 * re-ordered when the order changed, so keyboard focus survives new messages.
 */
export function renderSidebar() {
  for (const id of [...sidebarItems.keys()]) {
    if (!state.channels.has(id)) sidebarItems.delete(id);
  }
  const lists = { home: $("home-list"), group: $("group-list"), direct: $("direct-list") };
  for (const [kind, list] of Object.entries(lists)) {
    const wanted = sortedChannels(kind).map((channel) => {
      const item = sidebarItem(channel);
      const unread = unreadOf(channel);
      // A muted channel shows only its mentions (notify.js).
      const muted = isMuted(channel);
      item.button.classList.toggle("is-muted", muted);
      setText(item.name, channelLabel(channel));
      setText(item.badge, unread > 99 ? "99+" : String(unread));
      const mentions = mentionsOf(channel);
      const said = [];
      if (muted) said.push("muted");
      if (unread) said.push(`${unread} unread`);
      if (mentions) said.push(mentions === 1 ? "1 mention" : `${mentions} mentions`);
      setText(item.srUnread, said.length ? `, ${said.join(", ")}` : "");
      setText(item.mentionBadge, mentions > 99 ? "@99+" : `@${mentions}`);
      item.mentionBadge.hidden = mentions === 0;
      item.mentionBadge.setAttribute("aria-hidden", "true");
      item.mentionBadge.title = mentions === 1 ? "1 mention of you" : `${mentions} mentions of you`;
      item.badge.hidden = unread === 0 || muted;
      item.badge.setAttribute("aria-hidden", "true");
      item.button.classList.toggle("has-unread", unread > 0 && !muted);
      if (channel.id === state.currentId) item.button.setAttribute("aria-current", "page");
      else item.button.removeAttribute("aria-current");
      return item.li;
    });
    const current = [...list.children];
    if (current.length !== wanted.length || current.some((li, i) => li !== wanted[i])) {
      list.replaceChildren(...wanted);
    }
  }
  $("group-empty").hidden = sortedChannels("group").length > 0;
  renderTitle();
}

/**
 * The tab title and favicon show the unread total of the channels not muted
 * and the mentions: "(3) Chatterwerks", "(@1 · 3) Chatterwerks" (notify.js).
 */
function renderTitle() {
  let elsewhere = 0;
  for (const channel of state.channels.values()) {
    if (channel.id === state.currentId) continue;
    elsewhere += isMuted(channel) ? channel.mentions || 0 : unreadOf(channel);
  }
  renderCounts();
  // On a phone the sidebar is hidden: a dot on its button says "unread elsewhere".
  $("nav-toggle-badge").hidden = elsewhere === 0;
  $("nav-toggle").setAttribute(
    "aria-label",
    elsewhere ? `Show channels (${elsewhere} unread)` : "Show channels",
  );
}

export function renderHeader() {
  const channel = state.channels.get(state.currentId);
  const title = $("channel-title");
  renderNotifySetting();
  if (!channel) {
    title.replaceChildren();
    return;
  }
  const parts = [];
  if (channel.kind === "group") parts.push(h("span", { class: "title-prefix" }, "#"));
  parts.push(channelLabel(channel));
  if (channel.kind === "direct" && channel.peer && channel.peer.is_bot) {
    parts.push(h("span", { class: "tag tag-bot" }, "bot"));
  }
  title.replaceChildren(...parts);
  let description = channel.description || "";
  if (channel.kind === "direct") description = "Direct messages";
  if (channel.kind === "home" && !description) description = "Everyone is here.";
  setText($("channel-desc"), description);
  const label = channel.kind === "group" ? `#${channelLabel(channel)}` : channelLabel(channel);
  $("composer-input").placeholder = `Message ${label}`;
  setText($("composer-label"), `Message ${label}`);
}

// Sidebar and member drawers on narrow screens.
export function setNavOpen(open) {
  $("chat").classList.toggle("nav-open", open);
  $("nav-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("nav-close").focus();
}

export function setMembersOpen(open) {
  $("chat").classList.toggle("members-open", open);
  $("members-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("members-close").focus();
}

export const narrow = window.matchMedia("(max-width: 760px)");

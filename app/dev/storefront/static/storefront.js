// The storefront page: catalog, search and item pages; every search and click goes to the
// server over a websocket, and the ranked list it answers with is shown with its latency:
// from the shopper's action to the list on this page.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  user: sessionStorage.getItem("liverank-user") || "",
  socket: null,
  queue: [], // actions taken before the socket opened
  seq: 0,
  pending: new Map(), // action id -> {seq, t0, label}
  shown: 0, // the newest action whose list is on the page
  updates: 0,
  recent: [],
};

function hue(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.charCodeAt(0)) % 1000;
  return (h * 137.5) % 360; // the golden angle spreads neighbouring hashes apart
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function cover(genre, rank) {
  const node = el("div", "cover");
  node.append(el("span", "", genre));
  if (rank) node.append(el("span", "rank", "#" + rank));
  node.style.background = `hsl(${hue(genre)}, 45%, 42%)`;
  return node;
}

function card(item, rank) {
  const link = el("a", "card");
  link.href = "/item/" + encodeURIComponent(item.item_id);
  link.dataset.itemId = item.item_id;
  link.dataset.genre = item.genre;
  link.append(cover(item.genre, rank), el("div", "title", item.title));
  const price = item.price == null ? "" : ` · $${item.price.toFixed(2)}`;
  link.append(el("div", "meta", item.genre + price));
  const li = el("li");
  li.append(link);
  return li;
}

// ---------------------------------------------------------------- actions and answers

function connect() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (state.user) url.searchParams.set("user", state.user);
  const socket = new WebSocket(url);
  socket.onopen = () => {
    state.socket = socket;
    $("status").textContent = "live";
    $("status").className = "status up";
    for (const msg of state.queue.splice(0)) socket.send(JSON.stringify(msg));
  };
  socket.onclose = () => {
    state.socket = null;
    $("status").textContent = "reconnecting";
    $("status").className = "status";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
}

function act(msg, label) {
  const seq = ++state.seq;
  msg.id = "a" + seq;
  state.pending.set(msg.id, { seq, t0: performance.now(), label });
  if (state.socket) state.socket.send(JSON.stringify(msg));
  else state.queue.push(msg);
}

function receive(msg) {
  if (msg.type === "hello") {
    state.user = msg.user;
    sessionStorage.setItem("liverank-user", msg.user);
    $("user").textContent = msg.user;
    return;
  }
  const action = state.pending.get(msg.id);
  if (!action) return;
  state.pending.delete(msg.id);
  if (action.seq < state.shown) return; // a newer action's list is already showing
  if (msg.type === "error") {
    $("live-note").textContent = `${action.label}: no answer (${msg.message})`;
    return;
  }
  state.shown = action.seq;
  showList(msg, action);
}

function showList(msg, action) {
  const recs = $("recs");
  recs.replaceChildren(...msg.items.map((item, i) => card(item, i + 1)));
  recs.dataset.kind = msg.kind;
  recs.dataset.eventId = msg.event_id;
  recs.classList.remove("fresh");
  void recs.offsetWidth; // restart the highlight
  recs.classList.add("fresh");
  $("live-title").textContent = action.label;
  const degraded = msg.degraded ? " (degraded: the cheap path answered)" : "";
  $("live-note").textContent = `${msg.items.length} items, model ${msg.model_version}${degraded}`;
  // The frame that paints the list: the action's latency, as the shopper sees it.
  requestAnimationFrame(() => {
    const ms = performance.now() - action.t0;
    const badge = $("latency");
    badge.replaceChildren(
      `${ms.toFixed(0)} ms`,
      el("small", "", ` from ${msg.kind === "search" ? "search" : "click"} to this list · ` +
        `${msg.pipeline_ms.toFixed(0)} ms publish to answer at the server`),
    );
    badge.dataset.ms = ms.toFixed(1);
    badge.dataset.pipelineMs = String(msg.pipeline_ms);
    badge.hidden = false;
    state.recent = [`${ms.toFixed(0)} ms`, ...state.recent].slice(0, 8);
    $("history").textContent = "Recent: " + state.recent.join(", ");
    $("live").dataset.updates = String(++state.updates);
  });
}

// ---------------------------------------------------------------- pages

async function getJson(path) {
  const resp = await fetch(path);
  return resp.ok ? resp.json() : null;
}

function itemIdFromPath() {
  const match = location.pathname.match(/^\/item\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function showPage() {
  const itemId = itemIdFromPath();
  const section = $("item");
  if (!itemId) {
    section.hidden = true;
    document.title = "liverank storefront";
    return;
  }
  const item = await getJson("/api/items/" + encodeURIComponent(itemId));
  section.hidden = false;
  if (!item) {
    section.replaceChildren(el("h1", "", "No such item"), el("p", "note", itemId));
    return;
  }
  const tags = item.tags.length ? " · " + item.tags.join(", ") : "";
  const price = item.price == null ? "" : ` · $${item.price.toFixed(2)}`;
  section.replaceChildren(cover(item.genre), el("h1", "", item.title),
    el("p", "meta", item.genre + tags + price));
  section.dataset.itemId = item.item_id;
  document.title = `${item.title} · liverank storefront`;
}

function openItem(itemId, title) {
  history.pushState({}, "", "/item/" + encodeURIComponent(itemId));
  showPage();
  act({ action: "click", item_id: itemId }, `Next, after “${title}”`);
}

function search(query) {
  if (itemIdFromPath()) history.pushState({}, "", "/");
  showPage();
  $("query").value = query;
  act({ action: "search", query }, `Results for “${query}”`);
}

async function showCatalog() {
  const catalog = await getJson("/api/catalog");
  if (!catalog) return;
  $("catalog-size").textContent = `(${catalog.size} items; the most popular first)`;
  $("catalog-items").replaceChildren(...catalog.items.map((item) => card(item)));
  $("genres").replaceChildren(...catalog.genres.slice(0, 12).map((genre) => {
    const chip = el("button", "", genre);
    chip.type = "button";
    chip.addEventListener("click", () => search(genre));
    return chip;
  }));
}

document.addEventListener("click", (event) => {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const link = event.target.closest("a.card, a.brand");
  if (!link) return;
  event.preventDefault();
  if (link.classList.contains("brand")) {
    history.pushState({}, "", "/");
    showPage();
  } else {
    openItem(link.dataset.itemId, link.querySelector(".title").textContent);
  }
});

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (query) search(query);
});

window.addEventListener("popstate", showPage);

connect();
showCatalog();
showPage().then(() => {
  // Opening an item's page is a click on it, whether from a card or a link.
  const itemId = itemIdFromPath();
  const title = document.querySelector("#item h1");
  if (itemId && $("item").dataset.itemId === itemId) {
    act({ action: "click", item_id: itemId }, `Next, after “${title.textContent}”`);
  }
});

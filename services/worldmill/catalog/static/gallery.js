// worldmill catalog gallery: plain ES2020, no framework, no build step.
// Every piece of data is put in the page with textContent / DOM APIs, never as HTML.
"use strict";

(() => {
  const PAGE_SIZE = 60;
  const TOKEN_KEY = "worldmill.gallery.token";
  const RATER = "gallery";
  const FINAL_STATES = new Set(["ready", "failed", "canceled", "lost"]);
  const FILTERS = [
    "series", "scenario", "risk_level", "model", "qa_status", "tag", "manifest", "kind",
    "min_duration", "max_duration", "created_from", "created_to", "q",
  ];
  const FACET_SELECTS = { series: "series", scenario: "scenario", risk_level: "risk_level", model: "model", tag: "tags", manifest: "manifest" };
  // The app serves the page at <base>/gallery; the API lives at <base>.
  const BASE = location.pathname.replace(/\/gallery\/?(index\.html)?$/, "").replace(/\/$/, "");

  const $ = (sel, root = document) => root.querySelector(sel);
  const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

  const ui = {
    grid: byTestId("grid"),
    more: byTestId("load-more"),
    empty: byTestId("empty"),
    summary: byTestId("summary"),
    fresh: byTestId("new-assets"),
    filters: byTestId("filters"),
    error: byTestId("error"),
    errorText: byTestId("error-text"),
    tokenForm: byTestId("token-form"),
    counts: byTestId("run-counts"),
    active: byTestId("active-runs"),
    live: byTestId("live"),
    detail: byTestId("detail"),
  };

  const state = {
    token: null,
    cursor: null,
    loading: 0, // generation counter of grid loads: a stale answer is dropped
    lastQuery: null, // the query of the grid shown (or loading)
    assets: new Map(), // asset_id -> AssetSummary
    cards: new Map(), // asset_id -> card element
    detailId: null,
    detailGen: 0,
    raters: {}, // the open asset's ratings by rater
    pendingNew: 0,
    stream: null, // AbortController of the progress stream
    statusTimer: null,
    statusPoll: null,
  };

  // ---------------------------------------------------------------- small DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = String(v);
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function fmtNum(v, digits = 2) {
    if (v === null || v === undefined || v === "") return "—";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits).replace(/\.?0+$/, "");
    return String(v);
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (Array.isArray(v)) return v.map((x) => fmtNum(x, 3)).join(", ");
    if (typeof v === "number") return fmtNum(v, 3);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "—";
    return `${fmtNum(s, 1)} s`;
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function stars(rating) {
    const n = rating === null || rating === undefined ? 0 : Math.round(rating);
    return "★".repeat(n) + "☆".repeat(5 - n);
  }

  function title(a) {
    const parts = [a.series, a.scenario].filter(Boolean);
    let t = parts.length ? parts.join(" / ") : a.asset_id;
    if (a.variant !== null && a.variant !== undefined) t += ` #${a.variant}`;
    return t;
  }

  // ---------------------------------------------------------------- errors and the API

  function showError(message) {
    ui.errorText.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.errorText.textContent = "";
  }

  $(".error-close", ui.error).addEventListener("click", clearError);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The server's message: FastAPI's {"detail": "..."} or {"detail": [{loc, msg}, ...]}.
  function describeFailure(status, body, text) {
    const detail = body && typeof body === "object" ? body.detail : undefined;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          if (!d || typeof d !== "object") return String(d);
          const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return loc ? `${loc}: ${d.msg}` : String(d.msg);
        })
        .join("; ");
    }
    if (detail !== undefined) return JSON.stringify(detail);
    return (text || "").trim().slice(0, 500) || `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
    const init = { method: options.method || "GET", headers, signal: options.signal };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let resp;
    try {
      resp = await fetch(BASE + path, init);
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, `${init.method} ${path}: the catalog cannot be reached (${err && err.message})`);
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      if (resp.status === 401) askForToken();
      throw new ApiError(resp.status, `${init.method} ${path} → ${resp.status}: ${describeFailure(resp.status, body, text)}`);
    }
    return body;
  }

  function report(err) {
    if (err && err.name === "AbortError") return;
    showError(err && err.message ? err.message : String(err));
  }

  // ---------------------------------------------------------------- token

  function readToken() {
    const hash = location.hash.replace(/^#/, "");
    if (hash) {
      const params = new URLSearchParams(hash);
      const tok = params.get("token");
      if (tok) {
        sessionStorage.setItem(TOKEN_KEY, tok);
        params.delete("token");
        const rest = params.toString();
        history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
      }
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken() {
    ui.tokenForm.hidden = false;
    $("input", ui.tokenForm).focus();
  }

  ui.tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("input", ui.tokenForm);
    const tok = input.value.trim();
    if (!tok) return;
    sessionStorage.setItem(TOKEN_KEY, tok);
    input.value = "";
    ui.tokenForm.hidden = true;
    start(tok);
  });

  // ---------------------------------------------------------------- filters and the URL

  function controls() {
    return Array.from(ui.filters.elements).filter((c) => c.name && FILTERS.includes(c.name));
  }

  function filtersFromUrl() {
    const params = new URLSearchParams(location.search);
    for (const c of controls()) {
      const v = params.get(c.name) || "";
      if (c.tagName === "SELECT" && v && !Array.from(c.options).some((o) => o.value === v)) {
        c.append(el("option", { value: v, text: v })); // facets not loaded yet, or a value no longer listed
      }
      c.value = v;
    }
  }

  function currentFilters() {
    const out = new URLSearchParams();
    for (const c of controls()) {
      const v = c.value.trim();
      if (v) out.set(c.name, v);
    }
    return out;
  }

  function activeFilterCount() {
    return Array.from(currentFilters().keys()).length;
  }

  function syncUrl(push) {
    const params = currentFilters();
    const asset = new URLSearchParams(location.search).get("asset");
    if (asset && state.detailId) params.set("asset", asset);
    const qs = params.toString();
    const url = location.pathname + (qs ? `?${qs}` : "");
    if (url === location.pathname + location.search) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  function apiQuery(cursor) {
    const params = currentFilters();
    // Dates are days in the viewer's time zone; the API wants instants.
    for (const [name, endOfDay] of [["created_from", false], ["created_to", true]]) {
      const v = params.get(name);
      if (!v) continue;
      const [y, m, d] = v.split("-").map(Number);
      const when = endOfDay ? new Date(y, m - 1, d + 1, 0, 0, 0, -1) : new Date(y, m - 1, d);
      if (Number.isNaN(when.getTime())) params.delete(name);
      else params.set(name, when.toISOString());
    }
    params.set("limit", String(PAGE_SIZE));
    if (cursor) params.set("cursor", cursor);
    return params.toString();
  }

  let debounce = null;
  function filtersChanged(immediate) {
    clearTimeout(debounce);
    const run = () => {
      syncUrl(true);
      if (apiQuery(null) !== state.lastQuery) loadGrid(); // a blur after typing changes nothing
    };
    if (immediate) run();
    else debounce = setTimeout(run, 300);
  }

  ui.filters.addEventListener("change", (ev) => {
    if (ev.target && ev.target.name) filtersChanged(true);
  });
  ui.filters.addEventListener("input", (ev) => {
    const t = ev.target;
    if (t && (t.type === "search" || t.type === "number")) filtersChanged(false);
  });
  ui.filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    filtersChanged(true);
  });
  ui.filters.addEventListener("reset", () => {
    setTimeout(() => filtersChanged(true), 0); // after the form has cleared its controls
  });

  window.addEventListener("popstate", () => {
    filtersFromUrl();
    loadGrid();
    const asset = new URLSearchParams(location.search).get("asset");
    if (asset && asset !== state.detailId) openDetail(asset, false);
    else if (!asset && ui.detail.open) ui.detail.close();
  });

  async function loadFacets() {
    const facets = await api("/facets");
    if (!facets || typeof facets !== "object") return;
    for (const [name, key] of Object.entries(FACET_SELECTS)) {
      const select = ui.filters.elements.namedItem(name);
      if (!select) continue;
      const keep = select.value;
      const values = Array.isArray(facets[key]) ? facets[key] : [];
      while (select.options.length > 1) select.remove(1);
      for (const item of values) {
        const value = item && typeof item === "object" ? item.value : item;
        if (value === null || value === undefined || value === "") continue;
        const label = item && typeof item === "object" && item.count !== undefined ? `${value} (${item.count})` : String(value);
        select.append(el("option", { value: String(value), text: label }));
      }
      if (keep && !Array.from(select.options).some((o) => o.value === keep)) {
        select.append(el("option", { value: keep, text: keep }));
      }
      select.value = keep;
    }
  }

  // ---------------------------------------------------------------- the grid

  function image(link, alt, cls) {
    if (!link || !link.url) return null;
    return el("img", { src: link.url, alt, class: cls, loading: "lazy", decoding: "async", draggable: "false" });
  }

  // No screenshot yet (QA pending): the video's first frame, fetched only once the card is in view.
  const previewObserver =
    "IntersectionObserver" in window
      ? new IntersectionObserver(
          (entries) => {
            for (const entry of entries) {
              if (!entry.isIntersecting) continue;
              const v = entry.target;
              previewObserver.unobserve(v);
              v.src = `${v.dataset.src}#t=0.1`;
            }
          },
          { rootMargin: "200px" },
        )
      : null;

  function videoPreview(url) {
    const v = el("video", { muted: true, preload: "metadata", playsinline: true, "data-src": url, "aria-hidden": "true" });
    v.muted = true;
    if (previewObserver) previewObserver.observe(v);
    else v.src = `${url}#t=0.1`;
    return v;
  }

  function qaBadge(a) {
    const status = a.qa_status || "pending";
    const badge = el("span", { class: `qa qa-${status}`, "data-testid": "qa-badge", "data-status": status, text: status });
    const failed = a.failed_checks || [];
    if (failed.length) {
      badge.title = `failed checks: ${failed.join(", ")}`;
      badge.setAttribute("data-failed-checks", failed.join(","));
    }
    return badge;
  }

  function ratingView(a) {
    const r = a.rating;
    const wrap = el("span", { class: "stars", "data-testid": "rating", "data-rating": r === null || r === undefined ? "" : String(r) });
    wrap.append(el("span", { class: "glyphs", "aria-hidden": "true", text: stars(r) }));
    wrap.append(el("span", { class: "num", "data-testid": "rating-value", text: r === null || r === undefined ? "unrated" : fmtNum(r, 1) }));
    if (a.ratings) wrap.append(el("span", { class: "muted", text: ` (${a.ratings})` }));
    return wrap;
  }

  function strip(a, big) {
    const box = el("div", { class: big ? "strip big" : "strip", "data-testid": big ? "detail-strip" : "screenshot-strip" });
    (a.screenshots || []).forEach((shot, i) => {
      const img = image(shot, `frame ${i + 1}`, "");
      if (img) box.append(img);
    });
    return box;
  }

  function renderCard(a) {
    const posterLink = (a.screenshots || []).find((s) => s && s.url) || a.contact_sheet;
    const poster = el("div", { class: "poster" });
    const posterImg = image(posterLink, title(a), "");
    if (posterImg) poster.append(posterImg);
    else if (a.video && a.video.url) poster.append(videoPreview(a.video.url));
    else poster.append(el("span", { class: "noimg", text: "no preview yet" }));
    poster.append(el("span", { class: "dur", text: fmtDuration(a.duration_s) }));

    const shots = strip(a, false);
    // Hovering a frame of the strip shows it as the poster.
    shots.addEventListener("mouseover", (ev) => {
      if (ev.target instanceof HTMLImageElement && posterImg) posterImg.src = ev.target.src;
    });

    const res = a.width && a.height ? `${a.width}×${a.height}` : "—";
    const fps = a.fps ? ` @ ${fmtNum(a.fps, 2)} fps` : "";
    const failed = (a.failed_checks || []).length
      ? el("div", { class: "failed", "data-testid": "failed-checks", text: `failed: ${a.failed_checks.join(", ")}` })
      : null;
    const card = el(
      "article",
      {
        class: "card",
        tabindex: "0",
        role: "button",
        "data-testid": "asset-card",
        "data-asset-id": a.asset_id,
        "data-qa": a.qa_status || "pending",
        "aria-label": `Open ${title(a)}`,
      },
      poster,
      shots,
      el(
        "div",
        { class: "body" },
        el("div", { class: "row" }, el("h3", { class: "title", text: title(a), title: a.prompt || "" }), qaBadge(a)),
        el("div", { class: "facts muted" },
          el("span", { "data-testid": "card-resolution", text: res + fps }),
          el("span", { "data-testid": "card-model", text: a.model || "—" }),
          a.kind === "augmentation" ? el("span", { class: "kind", text: "augmentation" }) : null),
        failed,
        el("div", { class: "row" }, ratingView(a), el("span", { class: "muted small", text: a.risk_level ? `risk ${a.risk_level}` : "" })),
      ),
    );
    card.addEventListener("click", () => openDetail(a.asset_id, true));
    card.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        openDetail(a.asset_id, true);
      }
    });
    return card;
  }

  function upsertCard(a, where) {
    state.assets.set(a.asset_id, a);
    const card = renderCard(a);
    const old = state.cards.get(a.asset_id);
    if (old && old.isConnected) old.replaceWith(card);
    else if (where === "top") ui.grid.prepend(card);
    else ui.grid.append(card);
    state.cards.set(a.asset_id, card);
    ui.empty.hidden = true;
    return card;
  }

  function updateSummary() {
    const n = state.cards.size;
    ui.summary.textContent = `${n} asset${n === 1 ? "" : "s"} shown${state.cursor ? " (more available)" : ""}`;
  }

  async function loadGrid() {
    const gen = ++state.loading;
    state.lastQuery = apiQuery(null);
    state.cursor = null;
    state.pendingNew = 0;
    ui.fresh.hidden = true;
    ui.grid.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/assets?${apiQuery(null)}`);
      if (gen !== state.loading) return;
      ui.grid.replaceChildren();
      state.cards.clear();
      for (const a of page.items || []) upsertCard(a, "bottom");
      state.cursor = page.next_cursor || null;
      ui.more.hidden = !state.cursor;
      ui.empty.hidden = state.cards.size > 0;
      updateSummary();
      clearErrorIfFromGrid();
    } catch (err) {
      if (gen === state.loading) {
        state.lastQuery = null; // the same filters may be tried again
        report(err);
      }
    } finally {
      if (gen === state.loading) ui.grid.setAttribute("aria-busy", "false");
    }
  }

  function clearErrorIfFromGrid() {
    if (!ui.error.hidden && ui.errorText.textContent.startsWith("GET /assets?")) clearError();
  }

  ui.more.addEventListener("click", async () => {
    if (!state.cursor) return;
    const gen = state.loading;
    ui.more.disabled = true;
    try {
      const page = await api(`/assets?${apiQuery(state.cursor)}`);
      if (gen !== state.loading) return;
      for (const a of page.items || []) upsertCard(a, "bottom");
      state.cursor = page.next_cursor || null;
      ui.more.hidden = !state.cursor;
      updateSummary();
    } catch (err) {
      report(err);
    } finally {
      ui.more.disabled = false;
    }
  });

  ui.fresh.addEventListener("click", () => loadGrid());

  // A new or changed asset from the live stream.
  function assetEvent(a) {
    if (!a || !a.asset_id) return;
    if (state.cards.has(a.asset_id)) {
      upsertCard(a);
    } else if (activeFilterCount() === 0) {
      upsertCard(a, "top");
      updateSummary();
    } else {
      // The server decides what matches the filters: offer a reload rather than guessing.
      state.pendingNew += 1;
      ui.fresh.textContent = `${state.pendingNew} new or updated asset${state.pendingNew === 1 ? "" : "s"}: reload`;
      ui.fresh.hidden = false;
    }
    if (state.detailId === a.asset_id) refreshDetail(a.asset_id);
  }

  // ---------------------------------------------------------------- the detail dialog

  function dd(dl, term, value) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return;
    dl.append(el("dt", { text: term }), el("dd", { text: Array.isArray(value) ? value.join(", ") : String(value) }));
  }

  function renderFindings(findings) {
    const tbody = $("tbody", byTestId("findings", ui.detail));
    tbody.replaceChildren();
    if (!findings || !findings.length) {
      tbody.append(el("tr", null, el("td", { colspan: "6", class: "muted", text: "No QA findings yet." })));
      return;
    }
    for (const f of findings) {
      tbody.append(
        el(
          "tr",
          { class: f.passed ? "ok" : `bad sev-${f.severity}`, "data-testid": "finding", "data-check": f.check, "data-passed": String(!!f.passed) },
          el("td", { text: f.check }),
          el("td", { text: f.passed ? "✓" : "✗" }),
          el("td", { text: f.severity }),
          el("td", { text: fmtValue(f.measured) }),
          el("td", { text: fmtValue(f.expected) }),
          el("td", { text: f.message || "" }),
        ),
      );
    }
  }

  function renderProvenance(d) {
    const dl = byTestId("provenance", ui.detail);
    dl.replaceChildren();
    const p = d.provenance || {};
    const plan = d.plan || p.plan || {};
    dd(dl, "model", p.model || d.asset.model);
    dd(dl, "checkpoint", p.checkpoint);
    if (p.checkpoint_sha256) dd(dl, "checkpoint sha256", `${String(p.checkpoint_sha256).slice(0, 16)}…`);
    dd(dl, "seeds", Array.isArray(p.seeds) ? p.seeds.map(String) : p.seeds);
    dd(dl, "backend", p.backend);
    dd(dl, "runner", p.runner);
    dd(dl, "device", p.device);
    if (p.timings && typeof p.timings === "object") {
      const t = p.timings;
      const parts = ["load", "fetch", "infer", "encode", "upload"]
        .filter((k) => t[`${k}_s`] !== undefined && t[`${k}_s`] !== null)
        .map((k) => `${k} ${fmtNum(t[`${k}_s`], 2)} s`);
      dd(dl, "timings", parts.join(" · "));
    }
    if (p.started_at || p.finished_at) dd(dl, "ran", `${fmtTime(p.started_at)} → ${fmtTime(p.finished_at)}`);
    if (p.peak_memory_bytes) dd(dl, "peak memory", `${(p.peak_memory_bytes / 2 ** 30).toFixed(2)} GiB`);
    dd(dl, "code version", p.code_version);
    if (p.sampling) dd(dl, "sampling", `guidance ${fmtNum(p.sampling.guidance)} · ${p.sampling.steps} steps`);
    if (plan.chunks) dd(dl, "chunks", String(plan.chunks.length));
    if (plan.fps_conversion && plan.fps_conversion.method && plan.fps_conversion.method !== "none") {
      const c = plan.fps_conversion;
      dd(dl, "fps conversion", `${c.method}: ${fmtNum(c.source_fps)} → ${fmtNum(c.target_fps)} fps`);
    }
    for (const ad of plan.adaptations || []) dd(dl, `adapted ${ad.field}`, `${ad.requested} → ${ad.delivered} (${ad.reason})`);
    dd(dl, "request", d.request_id);
    dd(dl, "requested by", d.requested_by);
    if (d.checked_at) dd(dl, "QA checked", `${fmtTime(d.checked_at)} (attempt ${d.qa_attempt ?? "?"}, ${d.checker_version || "?"})`);
    if (!dl.children.length) dl.append(el("dd", { class: "muted", text: "No provenance yet." }));
    byTestId("raw", ui.detail).textContent = JSON.stringify({ provenance: d.provenance, plan: d.plan }, null, 2);
  }

  // Nodes and edges as an indented tree: roots are nodes no edge points at.
  function renderLineage(nodes, edges) {
    const box = byTestId("lineage", ui.detail);
    box.replaceChildren();
    nodes = nodes || [];
    edges = edges || [];
    const key = (kind, id) => `${kind}\u0000${id}`;
    const byKey = new Map(nodes.map((n) => [key(n.kind, n.id), n]));
    const children = new Map();
    const hasParent = new Set();
    for (const e of edges) {
      const pk = key(e.parent_kind, e.parent_id);
      const ck = key(e.child_kind, e.child_id);
      if (!byKey.has(pk)) byKey.set(pk, { kind: e.parent_kind, id: e.parent_id, label: "", known: false });
      if (!byKey.has(ck)) byKey.set(ck, { kind: e.child_kind, id: e.child_id, label: "", known: false });
      if (!children.has(pk)) children.set(pk, []);
      children.get(pk).push({ key: ck, relation: e.relation });
      hasParent.add(ck);
    }
    if (!byKey.size) {
      box.append(el("p", { class: "muted", text: "No lineage recorded." }));
      return;
    }
    const current = state.detailId;
    const expanded = new Set(); // a node reached twice (a DAG) is expanded once, then referred to
    const item = (k, relation, path) => {
      const n = byKey.get(k);
      const known = n.known !== false;
      const li = el("li", {
        class: `${known ? "" : "unknown"}${n.kind === "asset" && n.id === current ? " current" : ""}`,
        "data-testid": "lineage-node",
        "data-kind": n.kind,
        "data-id": n.id,
        "data-known": String(known),
      });
      if (relation) li.append(el("span", { class: "rel", text: `${relation} → ` }));
      li.append(el("span", { class: "kind", text: n.kind }), " ");
      li.append(el("span", { class: "label", text: n.id }));
      if (n.label && n.label !== n.id) li.append(" ", el("span", { class: "muted small", text: n.label }));
      if (!known) li.append(" ", el("span", { class: "muted small", text: "(not seen yet)" }));
      const kids = children.get(k) || [];
      if (kids.length) {
        if (path.has(k)) {
          li.append(" ", el("span", { class: "muted small", text: "(cycle)" }));
        } else if (expanded.has(k)) {
          li.append(" ", el("span", { class: "muted small", text: "(see above)" }));
        } else {
          expanded.add(k);
          const next = new Set(path).add(k);
          const ul = el("ul");
          for (const c of kids) ul.append(item(c.key, c.relation, next));
          li.append(ul);
        }
      }
      return li;
    };
    let roots = Array.from(byKey.keys()).filter((k) => !hasParent.has(k));
    if (!roots.length) roots = [Array.from(byKey.keys())[0]]; // all in a cycle: start anywhere
    const ul = el("ul", { class: "tree" });
    for (const r of roots) ul.append(item(r, null, new Set()));
    box.append(ul);
  }

  function renderRating(a, byRater) {
    const r = a.rating;
    const value = byTestId("rating-value", $(".rate", ui.detail));
    value.textContent = r === null || r === undefined ? "unrated" : fmtNum(r, 1);
    value.setAttribute("data-rating", r === null || r === undefined ? "" : String(r));
    byTestId("rating-count", ui.detail).textContent = a.ratings ? `(${a.ratings} rating${a.ratings === 1 ? "" : "s"})` : "";
    const mine = byRater ? byRater[RATER] : undefined;
    const shown = mine !== undefined ? mine : r !== null && r !== undefined ? Math.round(r) : 0;
    for (let i = 1; i <= 5; i += 1) {
      const b = byTestId(`rate-${i}`, ui.detail);
      b.classList.toggle("on", i <= shown);
      b.setAttribute("aria-pressed", String(mine === i));
    }
    if (byRater) {
      const list = byTestId("raters", ui.detail);
      list.replaceChildren();
      for (const [who, val] of Object.entries(byRater)) list.append(el("li", { text: `${who}: ${val}` }));
    }
  }

  function noteItem(n) {
    return el(
      "li",
      { "data-testid": "note", "data-note-id": n.note_id },
      el("div", { class: "note-meta muted small", text: `${n.author} · ${fmtTime(n.noted_at)}` }),
      el("div", { class: "note-text", text: n.text }),
    );
  }

  function renderNotes(notes) {
    const list = byTestId("notes", ui.detail);
    list.replaceChildren();
    for (const n of notes || []) list.append(noteItem(n));
    if (!list.children.length) list.append(el("li", { class: "muted none", text: "No notes yet." }));
  }

  function renderMeta(a) {
    byTestId("detail-title", ui.detail).textContent = title(a);
    const dl = byTestId("detail-meta", ui.detail);
    dl.replaceChildren();
    dd(dl, "prompt", a.prompt);
    dd(dl, "asset", a.asset_id);
    dd(dl, "kind", a.kind);
    dd(dl, "model", a.model);
    dd(dl, "resolution", a.width && a.height ? `${a.width}×${a.height}` : null);
    dd(dl, "duration", a.duration_s !== null && a.duration_s !== undefined ? `${fmtDuration(a.duration_s)} · ${a.frames ?? "?"} frames @ ${fmtNum(a.fps)} fps` : null);
    dd(dl, "manifest", a.manifest);
    dd(dl, "prompt id", a.prompt_id ? `${a.prompt_id}${a.prompt_version ? ` v${a.prompt_version}` : ""}` : null);
    dd(dl, "run", a.run_id);
    dd(dl, "risk", a.risk_level);
    dd(dl, "tags", a.tags && a.tags.length ? Array.from(a.tags) : null);
    dd(dl, "created", a.created_at ? fmtTime(a.created_at) : null);
    const qa = byTestId("detail-qa", ui.detail);
    qa.replaceChildren(qaBadge(a));
    const oldStrip = byTestId("detail-strip", ui.detail);
    oldStrip.replaceWith(strip(a, true));
  }

  function renderDetail(d, withPlayer) {
    const a = d.asset;
    state.assets.set(a.asset_id, a);
    renderMeta(a);
    if (withPlayer) {
      const player = byTestId("player", ui.detail);
      const poster = (a.screenshots || []).find((s) => s && s.url) || a.contact_sheet;
      if (poster && poster.url) player.poster = poster.url;
      else player.removeAttribute("poster");
      if (a.video && a.video.url) player.src = a.video.url;
      else player.removeAttribute("src");
    }
    renderFindings(d.findings);
    renderProvenance(d);
    renderLineage(d.lineage_nodes, d.lineage_edges);
    state.raters = { ...(d.ratings_by_rater || {}) };
    renderRating(a, state.raters);
    renderNotes(d.notes);
  }

  function resetDetail() {
    const player = byTestId("player", ui.detail);
    player.pause();
    player.removeAttribute("src");
    player.removeAttribute("poster");
    player.load();
    byTestId("detail-title", ui.detail).textContent = "Loading…";
    for (const id of ["detail-meta", "provenance", "lineage", "notes", "raters"]) byTestId(id, ui.detail).replaceChildren();
    $("tbody", byTestId("findings", ui.detail)).replaceChildren();
    byTestId("detail-qa", ui.detail).replaceChildren();
    byTestId("raw", ui.detail).textContent = "";
    byTestId("rating-value", $(".rate", ui.detail)).textContent = "";
    byTestId("note-text", ui.detail).value = "";
  }

  async function openDetail(id, push) {
    const gen = ++state.detailGen;
    state.detailId = id;
    resetDetail();
    if (!ui.detail.open) ui.detail.showModal();
    const params = new URLSearchParams(location.search);
    if (params.get("asset") !== id) {
      params.set("asset", id);
      history[push ? "pushState" : "replaceState"](null, "", `${location.pathname}?${params}`);
    }
    try {
      const d = await api(`/assets/${encodeURIComponent(id)}`);
      if (gen !== state.detailGen) return;
      renderDetail(d, true);
    } catch (err) {
      if (gen === state.detailGen) {
        byTestId("detail-title", ui.detail).textContent = "Could not load this asset";
        report(err);
      }
    }
  }

  // Re-read the detail after a live update, leaving the player alone.
  let refreshTimer = null;
  function refreshDetail(id) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      if (state.detailId !== id || !ui.detail.open) return;
      const gen = state.detailGen;
      try {
        const d = await api(`/assets/${encodeURIComponent(id)}`);
        if (gen === state.detailGen && state.detailId === id) renderDetail(d, false);
      } catch (err) {
        report(err);
      }
    }, 250);
  }

  ui.detail.addEventListener("close", () => {
    state.detailGen += 1;
    state.detailId = null;
    const player = byTestId("player", ui.detail);
    player.pause();
    const params = new URLSearchParams(location.search);
    if (params.has("asset")) {
      params.delete("asset");
      const qs = params.toString();
      history.pushState(null, "", location.pathname + (qs ? `?${qs}` : ""));
    }
  });
  byTestId("detail-close", ui.detail).addEventListener("click", () => ui.detail.close());
  // A click on the backdrop (the dialog element itself, outside its content) closes it.
  ui.detail.addEventListener("click", (ev) => {
    if (ev.target === ui.detail) ui.detail.close();
  });

  $(".rate", ui.detail).addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-value]");
    if (!button || !state.detailId) return;
    const id = state.detailId;
    const rating = Number(button.dataset.value);
    const buttons = Array.from(ui.detail.querySelectorAll(".rate button"));
    buttons.forEach((b) => (b.disabled = true));
    try {
      const summary = await api(`/assets/${encodeURIComponent(id)}/rating`, { method: "PUT", body: { rating, rater: RATER } });
      if (state.cards.has(id)) upsertCard(summary);
      else state.assets.set(id, summary);
      if (state.detailId === id) {
        state.raters = { ...state.raters, [RATER]: rating };
        renderRating(summary, state.raters);
      }
    } catch (err) {
      report(err);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });

  byTestId("note-form", ui.detail).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!state.detailId) return;
    const id = state.detailId;
    const area = byTestId("note-text", ui.detail);
    const text = area.value.trim();
    if (!text) return;
    const submit = byTestId("note-submit", ui.detail);
    submit.disabled = true;
    try {
      const note = await api(`/assets/${encodeURIComponent(id)}/notes`, { method: "POST", body: { text, author: RATER } });
      if (state.detailId === id) {
        const list = byTestId("notes", ui.detail);
        const none = $(".none", list);
        if (none) none.remove();
        list.append(noteItem(note));
        area.value = "";
      }
    } catch (err) {
      report(err);
    } finally {
      submit.disabled = false;
    }
  });

  // ---------------------------------------------------------------- runs: status and live progress

  const runRows = new Map(); // run_id -> row element

  function renderCounts(counts) {
    ui.counts.replaceChildren();
    const order = ["queued", "running", "post_processing", "ready", "failed", "canceled", "lost"];
    const names = Object.keys(counts || {}).sort((a, b) => {
      const ia = order.indexOf(a);
      const ib = order.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    if (!names.length) ui.counts.append(el("span", { class: "muted", text: "no runs yet" }));
    for (const name of names) {
      ui.counts.append(
        el("span", { class: `count st-${name}`, "data-testid": `count-${name}`, "data-state": name, "data-count": String(counts[name]) },
          el("b", { text: String(counts[name]) }), ` ${name.replace("_", " ")}`),
      );
    }
  }

  function runRow(run) {
    let row = runRows.get(run.run_id);
    if (!row) {
      const bar = el("progress", { max: "1", value: "0", "data-testid": "progress" });
      row = el(
        "li",
        { class: "run", "data-testid": `run-${run.run_id}`, "data-run-id": run.run_id },
        el("span", { class: "run-id", text: run.run_id, title: run.run_id }),
        bar,
        el("span", { class: "run-label" }),
      );
      runRows.set(run.run_id, row);
      ui.active.append(row);
    }
    return row;
  }

  function updateRun(run) {
    if (!run || !run.run_id) return;
    const row = runRow(run);
    clearTimeout(row._removal);
    const runState = run.state || row.dataset.state || "running";
    row.dataset.state = runState;
    row.className = `run st-${runState}`;
    let fraction = typeof run.fraction === "number" ? run.fraction : row.dataset.fraction ? Number(row.dataset.fraction) : null;
    if (runState === "ready") fraction = 1;
    const bar = $("progress", row);
    if (fraction === null || Number.isNaN(fraction)) {
      bar.removeAttribute("value"); // indeterminate
      row.removeAttribute("data-fraction");
      bar.removeAttribute("data-fraction");
    } else {
      const f = Math.min(1, Math.max(0, fraction));
      bar.value = f;
      row.dataset.fraction = String(f);
      bar.dataset.fraction = String(f);
    }
    if (run.phase) row.dataset.phase = run.phase;
    const parts = [runState === "running" && row.dataset.phase ? row.dataset.phase : runState.replace("_", " ")];
    if (row.dataset.fraction && !FINAL_STATES.has(runState)) parts.push(`${Math.round(Number(row.dataset.fraction) * 100)}%`);
    if (run.attempt > 1) parts.push(`attempt ${run.attempt}`);
    if (run.runner) parts.push(run.runner);
    if (run.error) parts.push(run.error);
    const label = $(".run-label", row);
    label.textContent = parts.join(" · ");
    label.title = run.error || "";
    if (FINAL_STATES.has(runState)) dropRun(run.run_id, row, runState === "ready" ? 4000 : 15000);
    else delete row.dataset.done;
  }

  // A finished run stays a moment (showing how it ended), then leaves the list.
  function dropRun(id, row, afterMs) {
    row.dataset.done = "true";
    clearTimeout(row._removal);
    row._removal = setTimeout(() => {
      row.remove();
      if (runRows.get(id) === row) runRows.delete(id);
    }, afterMs);
  }

  async function loadRunStatus() {
    const status = await api("/runs/status");
    renderCounts(status.counts);
    const active = new Set();
    for (const run of status.active || []) {
      active.add(run.run_id);
      updateRun(run);
    }
    // Runs the server no longer lists as active have finished while we were not told.
    for (const [id, row] of runRows) {
      if (!active.has(id) && row.dataset.done !== "true") {
        $(".run-label", row).textContent = "finished";
        dropRun(id, row, 3000);
      }
    }
  }

  function scheduleRunStatus() {
    clearTimeout(state.statusTimer);
    state.statusTimer = setTimeout(() => loadRunStatus().catch(report), 400);
  }

  // ---------------------------------------------------------------- Server-Sent Events over fetch

  // EventSource cannot send an Authorization header, so the stream is read with fetch and parsed
  // here, following the HTML spec's event-stream interpretation.
  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.reset();
      this.lastEventId = "";
      this.retry = null;
    }

    reset() {
      this.type = "";
      this.data = [];
    }

    push(chunk) {
      this.buffer += chunk;
      let start = 0;
      for (;;) {
        const cr = this.buffer.indexOf("\r", start);
        const lf = this.buffer.indexOf("\n", start);
        if (cr < 0 && lf < 0) break;
        let end;
        let next;
        if (cr >= 0 && (lf < 0 || cr < lf)) {
          if (cr === this.buffer.length - 1) break; // a lone \r at the end: wait to see if \n follows
          end = cr;
          next = this.buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else {
          end = lf;
          next = lf + 1;
        }
        this.line(this.buffer.slice(start, end));
        start = next;
      }
      this.buffer = this.buffer.slice(start);
    }

    line(text) {
      if (text === "") {
        this.dispatch();
        return;
      }
      if (text.startsWith(":")) return; // a comment (keepalive)
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") {
        if (!value.includes("\u0000")) this.lastEventId = value;
      } else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }

    dispatch() {
      if (!this.data.length) {
        this.reset();
        return;
      }
      const ev = { type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId };
      this.reset();
      this.onEvent(ev);
    }
  }

  function handleSse(ev) {
    let payload;
    try {
      payload = JSON.parse(ev.data);
    } catch (_) {
      return; // not JSON: nothing we know how to show
    }
    if (ev.type === "progress") updateRun(payload);
    else if (ev.type === "run") {
      updateRun(payload);
      scheduleRunStatus();
    } else if (ev.type === "asset") assetEvent(payload);
  }

  async function followProgress() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    let delay = 1000;
    const parser = new SseParser(handleSse);
    while (!controller.signal.aborted) {
      let opened = false;
      try {
        const headers = { Accept: "text/event-stream", Authorization: `Bearer ${state.token}` };
        if (parser.lastEventId) headers["Last-Event-ID"] = parser.lastEventId;
        const resp = await fetch(`${BASE}/progress/stream`, { headers, signal: controller.signal, cache: "no-store" });
        if (!resp.ok || !resp.body) {
          const text = await resp.text().catch(() => "");
          let body = null;
          try {
            body = JSON.parse(text);
          } catch (_) {
            body = null;
          }
          if (resp.status === 401) {
            askForToken();
            showError(`GET /progress/stream → 401: ${describeFailure(resp.status, body, text)}`);
            controller.abort();
            break;
          }
          throw new ApiError(resp.status, `GET /progress/stream → ${resp.status}: ${describeFailure(resp.status, body, text)}`);
        }
        opened = true;
        ui.live.dataset.state = "connected";
        ui.live.title = "live updates: connected";
        // Catch up on what happened while we were not connected.
        loadRunStatus().catch(report);
        const reader = resp.body.getReader();
        const decoder = new TextDecoder("utf-8");
        parser.buffer = "";
        parser.reset();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          delay = 1000; // data flows: the next reconnect starts quickly again
          parser.push(decoder.decode(value, { stream: true }));
        }
        parser.push(decoder.decode());
      } catch (err) {
        if (controller.signal.aborted) break;
        if (!opened) console.warn("progress stream:", err && err.message ? err.message : err);
      }
      if (controller.signal.aborted) break;
      ui.live.dataset.state = "reconnecting";
      ui.live.title = `live updates: reconnecting in ${Math.round(delay / 1000)} s`;
      const wait = (parser.retry && parser.retry > delay ? parser.retry : delay) * (0.8 + Math.random() * 0.4);
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay = Math.min(delay * 2, 30000);
    }
  }

  // ---------------------------------------------------------------- start

  async function start(token) {
    state.token = token;
    clearError();
    filtersFromUrl();
    const results = await Promise.allSettled([loadFacets(), loadGrid(), loadRunStatus()]);
    for (const r of results) if (r.status === "rejected") report(r.reason);
    followProgress();
    // The stream carries the changes; a slow poll keeps the counts right if an event was missed.
    clearInterval(state.statusPoll);
    state.statusPoll = setInterval(() => {
      if (!document.hidden) loadRunStatus().catch(() => {});
    }, 30000);
    const asset = new URLSearchParams(location.search).get("asset");
    if (asset) openDetail(asset, false);
  }

  const token = readToken();
  if (token) start(token);
  else askForToken();
})();

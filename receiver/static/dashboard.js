// The live page of callstate (receiver/dashboard.py serves it; docs/dashboard.md describes it).
//
// What it shows comes from two places on its own origin: GET dashboard/data (counts and one page
// of a list, read at a stream position) and the Server-Sent Events of dashboard/events (every
// change after that position). A change updates its row at once; counts and rows are then read
// again, at most once a second, so a busy stream costs the server one small read per second per
// open page. Changes of one call are applied by version: an older or repeated one is ignored
// (docs/redis-schema.md, "The change stream").
//
// Contract for scripts and tests (keep it): #calls holds one element per call shown, with
// data-call-sid and data-status (its status, "none" for null); each count by status is an
// element with data-count-status="<status>" whose text is the number.
"use strict";

(() => {
  const PAGE = 50;
  const REFRESH_MS = 1000; // at most one data read per second while changes arrive
  const PERIODIC_MS = 5000; // and one anyway every 5 s (rate, lag, stuck calls)
  const MAX_VERSIONS = 50000; // versions remembered; beyond, forget (repeats are harmless)

  const state = {
    view: "recent",
    offset: 0,
    total: 0,
    skew: 0, // server clock minus ours, seconds
    lastId: null, // the last stream entry received
    versions: new Map(), // CallSid -> [version, status, final] from the stream
    source: null,
    retry: 1000,
    refreshTimer: null,
    lastRefresh: 0,
    loading: false,
    again: false,
    open: null, // the CallSid whose detail is shown
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
    }
    return node;
  }

  // Whether stream ID a ("1700000000000-3") comes after b.
  function later(a, b) {
    const [am, as] = a.split("-").map(Number);
    const [bm, bs] = b.split("-").map(Number);
    return am > bm || (am === bm && as > bs);
  }

  const text = (value) => (value === null || value === undefined || value === "" ? "–" : String(value));
  const number = (value) => (typeof value === "number" ? value.toLocaleString("en") : "–");

  function since(iso) {
    if (!iso) return "–";
    const seconds = Math.max(0, Math.round(Date.now() / 1000 + state.skew - Date.parse(iso) / 1000));
    if (seconds < 60) return `${seconds}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m ${String(seconds % 60).padStart(2, "0")}s`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours}h ${String(minutes % 60).padStart(2, "0")}m`;
    return `${Math.floor(hours / 24)}d`;
  }

  function setLive(message) {
    $("live").textContent = message;
  }

  function setProblem(message) {
    const problem = $("problem");
    problem.hidden = !message;
    problem.textContent = message || "";
  }

  async function getJSON(url) {
    const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (answer.status === 401) {
      throw new Error("Your read token expired or was revoked: open the page with a new one.");
    }
    if (!answer.ok) throw new Error(`${answer.status}: ${(await answer.text()).slice(0, 200)}`);
    return answer.json();
  }

  // -- reading the data ------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    if (state.loading) {
      state.again = true;
      return;
    }
    state.loading = true;
    state.lastRefresh = Date.now();
    const query = new URLSearchParams({ view: state.view, offset: state.offset, limit: PAGE });
    try {
      const data = await getJSON(`dashboard/data?${query}`);
      render(data);
      setProblem(null);
      if (!state.source) connect(data.position);
      // The server shares an answer among pages for a second: one read before the last change
      // this page saw is stale, so read again (still at most once a second).
      if (state.lastId && later(state.lastId, data.position)) state.again = true;
    } catch (error) {
      setProblem(`Could not read the calls: ${error.message}`);
    } finally {
      state.loading = false;
      if (state.again) {
        state.again = false;
        scheduleRefresh();
      }
    }
  }

  function scheduleRefresh() {
    if (state.refreshTimer !== null) return;
    const wait = Math.max(0, state.lastRefresh + REFRESH_MS - Date.now());
    state.refreshTimer = setTimeout(refresh, wait);
  }

  function render(data) {
    state.skew = data.now - Date.now() / 1000;
    state.total = data.total;
    renderCounts(data.counts);
    $("active").textContent = number(data.active);
    $("stuck").textContent = number(data.stuck);
    $("known").textContent = number(data.known);
    renderThroughput(data);
    renderRows(data.calls);
    const first = data.total ? data.offset + 1 : 0;
    const last = Math.min(data.offset + PAGE, data.total);
    $("pageinfo").textContent = `${number(first)}–${number(last)} of ${number(data.total)}`;
    $("newer").disabled = data.offset === 0;
    $("older").disabled = data.offset + PAGE >= data.total;
  }

  // The deployment's counters, as read over about the last 30 s: [server time, accepted, lag buckets].
  const samples = [];
  const duration = (seconds) => (seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds} s`);

  function renderThroughput(data) {
    const { accepted, lag_bounds: bounds, lag_buckets: buckets } = data.counters;
    const last = samples[samples.length - 1];
    if (last && accepted < last[1]) samples.length = 0; // the counters started again (a new Redis)
    if (!last || data.now > last[0]) samples.push([data.now, accepted, buckets]);
    while (samples.length > 2 && data.now - samples[1][0] >= 30) samples.shift();
    const [since, acceptedThen, bucketsThen] = samples[0];
    const span = data.now - since;
    if (span <= 0) {
      $("rate").textContent = "measuring…";
      $("lag").textContent = "measuring…";
      return;
    }
    const recent = `last ${Math.max(1, Math.round(span))} s`;
    $("rate").textContent = `${((accepted - acceptedThen) / span).toFixed(1)} callbacks/s (${recent})`;
    const delta = buckets.map((count, i) => count - (bucketsThen[i] || 0));
    const total = delta.reduce((sum, count) => sum + count, 0);
    if (total <= 0) {
      $("lag").textContent = `no state written (${recent})`;
      return;
    }
    const quantile = (q) => {
      let seen = 0;
      for (let i = 0; i < delta.length; i += 1) {
        seen += delta[i];
        if (delta[i] && seen >= q * total) {
          return i < bounds.length ? `≤ ${duration(bounds[i])}` : `> ${duration(bounds[bounds.length - 1])}`;
        }
      }
      return "–";
    };
    $("lag").textContent = `p50 ${quantile(0.5)}, p99 ${quantile(0.99)} (${recent})`;
  }

  function renderCounts(counts) {
    const list = $("counts");
    for (const [status, count] of Object.entries(counts)) {
      let value = list.querySelector(`[data-count-status="${CSS.escape(status)}"]`);
      if (!value) {
        value = el("span", { "data-count-status": status, class: "count" });
        const button = el("button", { type: "button", "data-view": status, "aria-pressed": "false" });
        button.append(el("span", { class: `status status-${status}` }, status), " ", value);
        list.append(el("li", {}, button));
      }
      value.textContent = String(count);
    }
    markPressed();
  }

  function renderRows(calls) {
    const body = $("calls");
    const focused = document.activeElement?.closest?.("#calls tr")?.dataset.callSid;
    body.replaceChildren(...calls.map(rowOf));
    if (focused) body.querySelector(`tr[data-call-sid="${CSS.escape(focused)}"] button`)?.focus();
  }

  function rowOf(call) {
    // The stream may be ahead of the data read: keep the newer status.
    const known = state.versions.get(call.sid);
    let { status, final } = call;
    if (known && known[0] > call.version) [, status, final] = known;
    else remember(call.sid, call.version, status, final);
    const open = el("button", { type: "button", class: "sid", "aria-expanded": String(state.open === call.sid) }, call.sid);
    open.addEventListener("click", () => showCall(call.sid, open));
    const row = el(
      "tr",
      { "data-call-sid": call.sid, "data-status": status ?? "none", "data-version": call.version },
      el("th", { scope: "row" }, open),
      statusCell(status, final),
      el("td", {}, text(call.direction)),
      el("td", {}, text(call.from)),
      el("td", {}, text(call.to)),
      el("td", { "data-since": call.started }, since(call.started)),
      el("td", { "data-since": call.updated_at }, since(call.updated_at)),
      el("td", {}, String(call.recordings)),
    );
    return row;
  }

  function statusCell(status, final) {
    const name = status ?? "none";
    return el("td", { class: "status-cell" }, el("span", { class: `status status-${name}` }, name), final ? " (final)" : "");
  }

  function remember(sid, version, status, final) {
    if (state.versions.size >= MAX_VERSIONS) state.versions.clear();
    state.versions.set(sid, [version, status, final]);
  }

  // -- live changes ----------------------------------------------------------------------------

  function connect(after) {
    const url = after ? `dashboard/events?after=${encodeURIComponent(after)}` : "dashboard/events";
    const source = new EventSource(url);
    state.source = source;
    let dropped = false;
    source.addEventListener("open", () => {
      setLive("Live: changes appear as they happen.");
      state.retry = 1000;
      if (dropped) scheduleRefresh(); // back after a drop: read the counts again too
    });
    source.addEventListener("changes", (event) => {
      state.lastId = event.lastEventId;
      applyChanges(JSON.parse(event.data));
    });
    source.addEventListener("reset", () => scheduleRefresh()); // at most one read a second
    source.addEventListener("status", (event) => {
      const { connected } = JSON.parse(event.data);
      setLive(connected ? "Live: changes appear as they happen." : "Live, but the server lost Redis: waiting for it.");
    });
    source.addEventListener("error", () => {
      dropped = true;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (401, 5xx): the browser gives up, so we try again, more slowly each time.
        source.close();
        state.source = null;
        setLive("Disconnected: trying again…");
        setTimeout(() => connect(state.lastId || after), state.retry);
        state.retry = Math.min(state.retry * 2, 30000);
      } else {
        setLive("Connection lost: reconnecting…");
      }
    });
  }

  function belongs(status, final) {
    if (state.offset !== 0) return false;
    if (state.view === "recent") return true;
    if (state.view === "active") return !final;
    if (state.view === "stuck") return false;
    return (status ?? "none") === state.view;
  }

  function applyChanges(changes) {
    const body = $("calls");
    for (const [sid, version, status, final] of changes) {
      const known = state.versions.get(sid);
      if (known && version <= known[0]) continue; // a repeat or a late entry
      remember(sid, version, status, final);
      const row = body.querySelector(`tr[data-call-sid="${CSS.escape(sid)}"]`);
      if (row) {
        row.dataset.status = status ?? "none";
        row.dataset.version = version;
        row.replaceChild(statusCell(status, final), row.children[1]);
      } else if (belongs(status, final)) {
        // Shown at once; the next data read fills in the rest of the row.
        const fresh = rowOf({ sid, version, status, final, direction: null, from: null, to: null,
          started: null, updated_at: null, recordings: 0 });
        body.prepend(fresh);
        while (body.children.length > PAGE) body.lastElementChild.remove();
      }
      if (state.open === sid) loadCall(sid);
    }
    scheduleRefresh();
  }

  // -- one call --------------------------------------------------------------------------------

  let opener = null;

  async function showCall(sid, button) {
    for (const other of document.querySelectorAll("#calls button.sid")) other.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-expanded", "true");
    opener = button;
    state.open = sid;
    await loadCall(sid);
    $("detail").hidden = false;
    $("h-detail").focus();
  }

  async function loadCall(sid) {
    try {
      const { state: call, version } = await getJSON(`dashboard/data/calls/${encodeURIComponent(sid)}`);
      if (state.open !== sid) return;
      renderCall(call, version);
      setProblem(null);
    } catch (error) {
      setProblem(`Could not read call ${sid}: ${error.message}`);
    }
  }

  function renderCall(call, version) {
    $("h-detail").textContent = `Call ${call.sid}`;
    const facts = [
      ["Status", `${call.status ?? "none"}${call.final ? " (final)" : ""}`],
      ["Version", version],
      ["Direction", call.direction],
      ["From", call.from],
      ["To", call.to],
      ["Parent call", call.parent_call_sid],
      ["Duration (s)", call.duration],
      ["SIP response", call.sip_response_code],
      ["Answered by", call.answered_by],
      ["Latest Twilio time", call.updated_at],
    ];
    $("summary").replaceChildren(...facts.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, text(value)))));

    // Delivery counts are shown when the store has them.
    const events = call.events || [];
    const deliveries = events.some((event) => "deliveries" in event);
    const columns = ["Sequence", "Status", "Twilio time", "Source", ...(deliveries ? ["Deliveries"] : [])];
    $("timeline-head").replaceChildren(el("tr", {}, ...columns.map((name) => el("th", { scope: "col" }, name))));
    $("timeline").replaceChildren(
      ...events.map((event) =>
        el(
          "tr",
          {},
          el("td", {}, text(event.sequence_number)),
          el("td", {}, text(event.status)),
          el("td", {}, text(event.timestamp)),
          el("td", {}, text(event.source)),
          ...(deliveries ? [el("td", {}, text(event.deliveries))] : []),
        ),
      ),
    );

    const recordings = call.recordings || [];
    $("no-recordings").hidden = recordings.length > 0;
    $("recordings-table").hidden = recordings.length === 0;
    $("recordings").replaceChildren(
      ...recordings.map((recording) => {
        const link = recording.url
          ? el("a", { href: recording.url, rel: "noopener noreferrer" }, `Recording ${recording.sid}`)
          : "–";
        return el(
          "tr",
          {},
          el("td", {}, recording.sid),
          el("td", {}, text(recording.status)),
          el("td", {}, text(recording.duration)),
          el("td", {}, text(recording.channels)),
          el("td", {}, text(recording.source)),
          el("td", {}, link),
        );
      }),
    );
  }

  function closeCall() {
    $("detail").hidden = true;
    state.open = null;
    const sid = opener?.closest("tr")?.dataset.callSid;
    const again = sid && document.querySelector(`#calls tr[data-call-sid="${CSS.escape(sid)}"] button.sid`);
    if (again) {
      again.setAttribute("aria-expanded", "false");
      again.focus();
    }
  }

  // -- choosing what to list -------------------------------------------------------------------

  const CAPTIONS = {
    recent: "Recent calls, newest first",
    active: "Active calls (not final), newest first",
    stuck: "Stuck calls: active, and no event for a long time; newest first",
  };

  function markPressed() {
    for (const button of document.querySelectorAll("[data-view]")) {
      button.setAttribute("aria-pressed", String(button.dataset.view === state.view));
    }
  }

  function choose(view) {
    state.view = view;
    state.offset = 0;
    $("caption").textContent = CAPTIONS[view] || `Calls whose status is ${view}, newest first`;
    markPressed();
    refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-view]");
    if (button) choose(button.dataset.view);
  });
  $("newer").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    refresh();
  });
  $("older").addEventListener("click", () => {
    state.offset += PAGE;
    refresh();
  });
  $("close").addEventListener("click", closeCall);

  setInterval(() => {
    for (const cell of document.querySelectorAll("[data-since]")) cell.textContent = since(cell.dataset.since);
  }, 1000);
  setInterval(scheduleRefresh, PERIODIC_MS);
  refresh();
})();

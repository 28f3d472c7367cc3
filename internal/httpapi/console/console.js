// The Sentinel's console: plain JavaScript over the JSON API (/api/v1) and
// its event stream. The token lives in this tab's sessionStorage only (no
// cookie): fetches send it as Authorization: Bearer; EventSource cannot send
// headers, so the event stream alone gets it as ?token=, which the server
// accepts on that route only.
(function () {
  "use strict";

  var KEY = "casparian-sentinel-token";
  var STATUSES = ["PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "SKIPPED"];
  var PAGE = 25;
  // AGES_EVERY is how often the overview re-reads the queue's ages while
  // nothing else moves: a job whose retry backoff ends becomes due without
  // any count changing.
  var AGES_EVERY = 5000;
  var body = document.body;
  var tokens = body.dataset.tokens === "true";

  var state = {
    view: "overview",
    status: "", plugin: "", path: "", error: "", total: 0,
    sort: "id", asc: false, // the list's order (the column headers)
    // Keyset paging: the cursor (after) of each page from the first to
    // the one shown ("" for the first), how many jobs come before each,
    // and the next page's cursor.
    pages: [""], starts: [0], next: "",
    jobId: null,     // the job whose detail is open
    job: null,
    last: null,      // the last status event
    changes: "",     // what the last event's counts and running jobs were
    stream: null,
    streamError: false, // the message shown is the stream's error
    retryTimer: null,
    ages: null,      // GET /api/v1/queue/ages's plugins, and when it answered (at)
    agesAsked: 0,    // when the last queue ages request went out; 0: none in flight
    agesNext: 0      // when the overview reads the ages again by itself
  };

  function $(id) { return document.getElementById(id); }

  // el("td", {className: "num"}, "3") builds an element; text is never
  // parsed as markup.
  function el(tag, props, text) {
    var e = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "data") {
        Object.keys(props.data).forEach(function (d) { e.dataset[d] = props.data[d]; });
      } else {
        e[k] = props[k];
      }
    });
    if (text !== undefined && text !== null) {
      e.textContent = String(text);
    }
    return e;
  }

  function row(cells, props) {
    var tr = el("tr", props);
    cells.forEach(function (c) { tr.appendChild(c instanceof Node ? c : el("td", {}, c)); });
    return tr;
  }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (rows.length === 0) {
      tbody.appendChild(el("tr", {}).appendChild(el("td", {className: "empty", colSpan: columns}, empty)).parentNode);
      return;
    }
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function ago(iso) {
    if (!iso) { return "–"; }
    var s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 1) { return "just now"; }
    if (s < 60) { return s + "s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + "m ago"; }
    if (s < 48 * 3600) { return Math.floor(s / 3600) + "h ago"; }
    return Math.floor(s / 86400) + "d ago";
  }

  function timeCell(iso) {
    return el("td", {title: iso || ""}, ago(iso));
  }

  function statusCell(status) {
    return el("td", {className: "status " + status.toLowerCase()}, status);
  }

  // ---- messages and the token ----

  function say(text, isError) {
    var p = $("message");
    p.textContent = text;
    p.className = "message" + (isError ? " error" : "");
    p.hidden = !text;
  }

  function token() { return sessionStorage.getItem(KEY) || ""; }

  function askToken(why) {
    stopStream();
    $("main").hidden = true;
    $("nav").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-why").textContent = why || "";
    $("login-why").hidden = !why;
    $("ready").textContent = "";
    $("login-token").focus();
  }

  // ApiError carries the HTTP status of a refused or failed request.
  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  // api calls the JSON API and resolves to the decoded answer. A 401 asks
  // for a token; a 403 of an admin route says why.
  function api(method, path, payload) {
    var headers = {"Accept": "application/json"};
    if (token()) { headers["Authorization"] = "Bearer " + token(); }
    var init = {method: method, headers: headers, cache: "no-store", credentials: "omit"};
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (res.ok) { return data; }
        var msg = (data && data.error) || ("HTTP " + res.status + " " + text);
        if (res.status === 401 && tokens) {
          askToken(msg);
        } else if (res.status === 403 && data && data.reason === "forbidden") {
          msg = "This needs an admin token; the token this tab has is read-only. " +
            "Use “Forget token” and open the console with an admin token.";
        }
        throw new ApiError(res.status, msg);
      });
    });
  }

  function failed(what) {
    return function (err) {
      if (err instanceof ApiError && err.status === 401 && tokens) { return; } // the login box says it
      say(what + ": " + err.message, true);
    };
  }

  // ---- the event stream ----

  function startStream() {
    stopStream();
    var url = "/api/v1/events";
    if (token()) { url += "?token=" + encodeURIComponent(token()); }
    var es = new EventSource(url);
    state.stream = es;
    es.addEventListener("open", function () { $("live").textContent = "● live"; $("live").className = "ok"; });
    es.addEventListener("status", function (ev) { onStatus(JSON.parse(ev.data)); });
    es.addEventListener("error", function () {
      $("live").textContent = "○ live updates interrupted, reconnecting…";
      $("live").className = "down";
      if (es.readyState !== EventSource.CLOSED) { return; } // the browser reconnects by itself
      // Refused (401, 503 over the cap) or the server went away: find out
      // why with a plain request, then try again.
      stopStream();
      api("GET", "/api/v1/status").then(function () {
        state.retryTimer = setTimeout(startStream, 3000);
      }, function (err) {
        if (err instanceof ApiError && err.status === 401) { return; }
        state.retryTimer = setTimeout(startStream, 5000);
      });
    });
  }

  function stopStream() {
    clearTimeout(state.retryTimer);
    if (state.stream) { state.stream.close(); }
    state.stream = null;
  }

  function onStatus(ev) {
    state.last = ev;
    $("ready").textContent = ev.ready ? "● serving" : "● shutting down";
    $("ready").className = ev.ready ? "ok" : "down";
    if (ev.error) {
      say("Could not read " + ev.error, true);
      state.streamError = true;
    } else if (state.streamError) {
      say(""); // the server reads again what it could not
      state.streamError = false;
    }
    showOverview(ev);
    if (state.view === "workers") { showWorkers(ev.workers); }
    // Counts, running jobs or the jobs ended this minute changed: a job
    // moved, so what the open views show may be stale. (A job retried and
    // failed again within a second leaves the counts as they were, but not
    // the minute's failures.)
    var minute = ev.throughput[ev.throughput.length - 1] || {};
    var changes = JSON.stringify([ev.counts, ev.workers.map(function (w) { return w.running_jobs; }),
      minute.start, minute.completed, minute.failed]);
    if (changes !== state.changes) {
      var first = state.changes === "";
      state.changes = changes;
      loadQueueAges();
      if (!first) { refreshOpen(); }
    } else if (!document.hidden && Date.now() >= state.agesNext) {
      loadQueueAges();
    }
  }

  function refreshOpen() {
    if (state.view === "jobs") { loadJobs(); }
    if (state.jobId !== null) { loadJob(state.jobId); }
  }

  // ---- overview ----

  function showOverview(ev) {
    if (Object.keys(ev.counts).length > 0) {
      var total = 0;
      STATUSES.forEach(function (st) {
        var n = ev.counts[st] || 0;
        total += n;
        // The cards are made once and their numbers updated, so that a
        // card is not replaced under a pointer or the keyboard focus.
        var card = $("count-" + st.toLowerCase());
        if (!card) {
          card = el("button", {type: "button", className: "card", id: "count-" + st.toLowerCase(),
            title: "List the " + st + " jobs", data: {status: st}});
          card.appendChild(el("span", {className: "n"}));
          card.appendChild(el("span", {className: "label status " + st.toLowerCase()}, st));
          $("counts").appendChild(card);
        }
        card.querySelector(".n").textContent = n;
      });
      $("total").textContent = "(" + total + " jobs)";
    }
    var done = 0, fail = 0;
    ev.throughput.forEach(function (m) { done += m.completed; fail += m.failed; });
    var span = ev.throughput.length * 60;
    $("rate-jobs").textContent = rate(done / span);
    $("rate-failures").textContent = rate(fail / span);
    var cur = ev.throughput[ev.throughput.length - 1] || {completed: 0, failed: 0};
    $("rate-minute").textContent = cur.completed + cur.failed;
    $("slots").textContent = ev.busy + " of " + ev.slots;
    showQueueAges();
    drawChart(ev.throughput);
  }

  // loadQueueAges reads how long each plugin's oldest due QUEUED job has
  // waited: when the counts change, and every AGES_EVERY while the tab is
  // shown, not every second; in between, the ages shown grow with the
  // clock. One request at a time (a slow answer is not asked again until it
  // comes or 30 s pass).
  function loadQueueAges() {
    if (state.agesAsked && Date.now() - state.agesAsked < 30000) { return; }
    state.agesAsked = Date.now();
    var answered = function () {
      state.agesAsked = 0;
      state.agesNext = Date.now() + AGES_EVERY;
    };
    api("GET", "/api/v1/queue/ages").then(function (res) {
      answered();
      state.ages = {at: Date.now(), plugins: res.plugins};
      showQueueAges();
    }, function (err) {
      answered();
      failed("Could not read the queue's ages")(err);
    });
  }

  function showQueueAges() {
    if (!state.ages) { return; }
    var since = (Date.now() - state.ages.at) / 1000;
    var plugins = state.ages.plugins; // oldest first
    $("queue-age").textContent = plugins.length ? duration(plugins[0].oldest_age_seconds + since) : "none";
    $("queue-age").title = plugins.length ? "plugin " + plugins[0].plugin : "no QUEUED job is due";
    var list = $("queue-ages");
    // A short list by plugin; a long one would drown the overview (the
    // oldest is on the card, the rest in /metrics).
    list.hidden = plugins.length < 2 || plugins.length > 8;
    if (list.hidden) { return; }
    list.replaceChildren.apply(list, plugins.map(function (a) {
      var li = el("li", {data: {plugin: a.plugin}});
      li.appendChild(el("code", {}, a.plugin));
      li.appendChild(document.createTextNode(": oldest QUEUED job waiting " + duration(a.oldest_age_seconds + since)));
      return li;
    }));
  }

  // duration shows seconds as "45s", "3m 20s", "2h 5m" or "3d 4h".
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m"; }
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }

  // rate shows two significant digits, so that a few jobs an hour do not
  // read as zero.
  function rate(perSecond) {
    if (perSecond === 0) { return "0"; }
    return perSecond >= 100 ? perSecond.toFixed(0) : String(Number(perSecond.toPrecision(2)));
  }

  function drawChart(minutes) {
    var svg = $("chart");
    var ns = "http://www.w3.org/2000/svg";
    var most = 1;
    minutes.forEach(function (m) { most = Math.max(most, m.completed + m.failed); });
    var w = 600 / Math.max(minutes.length, 1);
    var bars = [];
    minutes.forEach(function (m, i) {
      [["done", m.completed, m.failed], ["fail", m.failed, 0]].forEach(function (b) {
        if (b[1] === 0) { return; }
        var r = document.createElementNS(ns, "rect");
        var h = 78 * b[1] / most;
        r.setAttribute("class", b[0]);
        r.setAttribute("x", String(i * w + 1));
        r.setAttribute("width", String(Math.max(w - 2, 1)));
        r.setAttribute("y", String(80 - h - 78 * b[2] / most));
        r.setAttribute("height", String(h));
        var t = document.createElementNS(ns, "title");
        t.textContent = new Date(m.start).toLocaleTimeString() + ": " + m.completed + " completed, " + m.failed + " failed";
        r.appendChild(t);
        bars.push(r);
      });
    });
    svg.replaceChildren.apply(svg, bars);
  }

  // ---- jobs ----

  function jobsQuery() {
    var q = new URLSearchParams();
    if (state.status) { q.set("status", state.status); }
    if (state.plugin) { q.set("plugin", state.plugin); }
    if (state.path) { q.set("path", state.path); }
    if (state.error) { q.set("error", state.error); }
    if (state.sort !== "id") { q.set("sort", state.sort); }
    if (state.asc) { q.set("order", "asc"); }
    q.set("limit", PAGE);
    var after = state.pages[state.pages.length - 1];
    if (after) { q.set("after", after); }
    return q.toString();
  }

  // firstPage goes back to the first page: the filter or the order changed.
  function firstPage() {
    state.pages = [""];
    state.starts = [0];
  }

  function showOrder() {
    document.querySelectorAll("#jobs-head th[data-sort]").forEach(function (th) {
      var on = th.dataset.sort === state.sort;
      if (on) { th.setAttribute("aria-sort", state.asc ? "ascending" : "descending"); } else { th.removeAttribute("aria-sort"); }
      th.querySelector(".arrow").textContent = on ? (state.asc ? "▲" : "▼") : "";
    });
  }

  // sortBy orders the list by a column: a new column sorts descending
  // (newest, highest, latest first), the same column again flips it.
  function sortBy(key) {
    if (state.sort === key) {
      state.asc = !state.asc;
    } else {
      state.sort = key;
      state.asc = false;
    }
    firstPage();
    showOrder();
    loadJobs();
  }

  function loadJobs() {
    var wanted = jobsQuery();
    return api("GET", "/api/v1/jobs?" + wanted).then(function (list) {
      if (wanted !== jobsQuery()) { return; } // the filter, order or page changed meanwhile
      // The total counts the jobs from this page's cursor on.
      var start = state.starts[state.starts.length - 1];
      state.total = start + list.total;
      if (list.jobs.length === 0 && state.pages.length > 1) {
        state.pages.pop(); // the page emptied: go back one
        state.starts.pop();
        loadJobs();
        return;
      }
      state.next = list.next_cursor || "";
      fill($("jobs-body"), list.jobs.map(function (j) {
        return row([
          el("td", {className: "num"}, j.id),
          statusCell(j.status),
          j.plugin,
          el("td", {className: "file"}).appendChild(el("code", {}, j.file_path || ("version " + j.file_version_id))).parentNode,
          el("td", {className: "num"}, j.priority),
          el("td", {className: "num"}, j.attempt),
          el("td", {}).appendChild(el("code", {}, j.worker || "")).parentNode,
          timeCell(j.updated_at),
          timeCell(j.end_time),
          j.error_message || j.result_summary || ""
        ], {className: "job", data: {job: j.id, status: j.status}, tabIndex: 0,
          ariaSelected: String(j.id === state.jobId)});
      }), "No job matches.", 10);
      $("jobs-body").dataset.query = wanted; // what the rows show, for tests and the curious
      $("page-info").textContent = state.total === 0 ? "0 jobs" :
        (start + 1) + "–" + (start + list.jobs.length) + " of " + state.total;
      $("page-prev").disabled = state.pages.length === 1;
      $("page-next").disabled = !state.next;
    }, failed("Could not list the jobs"));
  }

  function loadPlugins() {
    return api("GET", "/api/v1/plugins").then(function (list) {
      var select = $("filter-plugin");
      var names = list.plugins.map(function (p) { return p.name; });
      if (state.plugin && names.indexOf(state.plugin) < 0) { names.push(state.plugin); }
      var opts = [el("option", {value: ""}, "any")].concat(names.map(function (n) { return el("option", {value: n}, n); }));
      select.replaceChildren.apply(select, opts);
      select.value = state.plugin;
      return list.plugins;
    }, failed("Could not list the plugins"));
  }

  function loadJob(id) {
    return api("GET", "/api/v1/jobs/" + id).then(function (j) {
      if (state.jobId !== id) { return; }
      showJob(j);
    }, failed("Could not read job " + id));
  }

  function showJob(j) {
    state.job = j;
    $("detail").hidden = false;
    $("detail").dataset.job = j.id;
    $("detail-id").textContent = j.id;
    $("detail-status").textContent = j.status;
    $("detail-status").className = "status " + j.status.toLowerCase();
    $("job-retry").disabled = j.status !== "FAILED";
    $("job-cancel").disabled = ["PENDING", "QUEUED", "RUNNING"].indexOf(j.status) < 0 || !!j.cancel_requested;
    var fields = [
      ["Status", j.status + (j.cancel_requested ? " (cancel requested)" : "")],
      ["Plugin", j.plugin],
      ["File", j.file_path || ("version " + j.file_version_id)],
      ["Priority", j.priority],
      ["Attempts", j.attempt + (j.retry_count ? " (" + j.retry_count + " automatic retries)" : "")],
      ["Worker", j.worker || "–"],
      ["Claimed", j.claim_time ? ago(j.claim_time) + " · " + j.claim_time : "–"],
      ["Ended", j.end_time ? ago(j.end_time) + " · " + j.end_time : "–"],
      ["Updated", j.updated_at ? ago(j.updated_at) + " · " + j.updated_at : "–"],
      ["Result", j.result_summary || "–"],
      ["Error", j.error_message || "–"],
      ["Metrics", j.metrics ? JSON.stringify(j.metrics, null, 1) : "–"],
      ["Artifacts", j.artifacts ? JSON.stringify(j.artifacts, null, 1) : "–"],
      ["Config overrides", j.config_overrides ? JSON.stringify(j.config_overrides, null, 1) : "–"],
      // Assembled from the rows as they are now: what was sent unless the
      // plugin's manifest or topics changed since the claim.
      ["DISPATCH", j.dispatch ? JSON.stringify(j.dispatch, null, 1) : "–"]
    ];
    var dl = $("detail-fields");
    dl.replaceChildren();
    fields.forEach(function (f) {
      dl.appendChild(el("dt", {}, f[0]));
      var dd = el("dd", {data: {field: f[0].toLowerCase().replace(/ /g, "-")}});
      dd.appendChild(/^[[{]/.test(String(f[1])) ? el("pre", {}, f[1]) : document.createTextNode(String(f[1])));
      dl.appendChild(dd);
    });
    showAttempts(j.attempts || []);
    loadOutputs(j);
    document.querySelectorAll("tr.job").forEach(function (tr) {
      tr.ariaSelected = String(Number(tr.dataset.job) === j.id);
    });
  }

  // loadOutputs lists what the job made, from its file version's lineage
  // (recorded when the Sentinel runs with --lineage).
  function loadOutputs(j) {
    var body = $("detail-outputs").tBodies[0];
    body.replaceChildren(row([el("td", {colSpan: 5}, j.status === "COMPLETED" ? "…" : "None: the job has not completed.")]));
    if (j.status !== "COMPLETED") { return; }
    api("GET", "/api/v1/files/" + j.file_version_id + "/lineage").then(function (res) {
      if (state.jobId !== j.id) { return; }
      var mine = (res.outputs || []).filter(function (o) { return o.job_id === j.id; });
      body.replaceChildren();
      if (mine.length === 0) {
        body.appendChild(row([el("td", {colSpan: 5}, "None recorded (lineage is recorded when the Sentinel runs with --lineage).")]));
        return;
      }
      mine.forEach(function (o) {
        var note = o.reused_from_job ? "reused from job " + o.reused_from_job : "";
        if (o.stale) { note = (note ? note + "; " : "") + "stale: " + (o.stale_reason || "superseded"); }
        body.appendChild(row([o.topic || "–", o.uri || "–", o.rows === undefined ? "–" : String(o.rows),
          (o.artifact_hash || "").slice(0, 12) || "–", note], {className: "output", data: {uri: o.uri || ""}}));
      });
    }, function () {
      body.replaceChildren(row([el("td", {colSpan: 5}, "Could not read the file's lineage.")]));
    });
  }

  // showAttempts lists the job's attempts, oldest first: each claim, its
  // worker and times, and how it ended.
  function showAttempts(attempts) {
    var body = $("detail-attempts").tBodies[0];
    body.replaceChildren();
    if (attempts.length === 0) {
      body.appendChild(row([el("td", {colSpan: 6}, "Never claimed.")]));
      return;
    }
    attempts.forEach(function (a) {
      var outcome = el("td", {}, "");
      outcome.appendChild(el("span", {className: "status " + a.outcome.toLowerCase()}, a.outcome));
      body.appendChild(row([String(a.attempt), outcome, a.worker || "–", a.claim_time ? ago(a.claim_time) : "–",
        a.end_time ? ago(a.end_time) : "–", a.message || ""], {className: "attempt", data: {attempt: a.attempt}}));
    });
  }

  function openJob(id) {
    state.jobId = id;
    loadJob(id);
  }

  function closeJob() {
    state.jobId = null;
    state.job = null;
    $("detail").hidden = true;
    document.querySelectorAll("tr.job").forEach(function (tr) { tr.ariaSelected = "false"; });
  }

  function jobAction(action) {
    var id = state.jobId;
    if (id === null) { return; }
    say("");
    api("POST", "/api/v1/jobs/" + id + "/" + action, {}).then(function (res) {
      showJob(action === "cancel" ? res.job : res);
      say(action === "retry" ? "Job " + id + " is queued again." :
        "Job " + id + (res.abort_sent ? ": its worker was told to abort it." : " is cancelled."));
      loadJobs();
    }, failed("Could not " + action + " job " + id));
  }

  // bulk asks the server how many jobs the filter matches (dry_run), asks
  // the operator to confirm that count, then acts on them.
  function bulk(action) {
    var req = {action: action, status: state.status, plugin: state.plugin, path: state.path, error: state.error, dry_run: true};
    var what = describeFilter();
    say("");
    api("POST", "/api/v1/jobs/bulk", req).then(function (res) {
      if (res.matched === 0) {
        say("No job to " + action + ": none matches " + what + ".");
        return;
      }
      var verb = action === "retry" ? "Retry" : "Cancel";
      confirmThen(verb + " " + res.matched + " job" + (res.matched === 1 ? "" : "s") + " matching " + what + "?",
        verb + " " + res.matched, function () {
          req.dry_run = false;
          api("POST", "/api/v1/jobs/bulk", req).then(function (done) {
            say(verb + ": " + done.changed + " of " + done.matched + " matching jobs changed.");
            refreshOpen();
          }, failed("Could not " + action + " the jobs"));
        });
    }, failed("Could not " + action + " the jobs"));
  }

  function describeFilter() {
    var parts = [];
    if (state.status) { parts.push("status " + state.status); }
    if (state.plugin) { parts.push("plugin " + state.plugin); }
    if (state.path) { parts.push("file containing “" + state.path + "”"); }
    if (state.error) { parts.push("error containing “" + state.error + "”"); }
    return parts.length ? parts.join(", ") : "no filter (every job)";
  }

  function confirmThen(text, label, then, noLabel) {
    var dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = label;
    $("confirm-no").textContent = noLabel || "Keep them";
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "yes") { then(); }
    }, {once: true});
  }

  // ---- workers, plugins, sources ----

  function showWorkers(workers) {
    var slots = 0, busy = 0;
    workers.forEach(function (w) { slots += w.slots; busy += w.busy; });
    $("workers-summary").textContent = "(" + workers.length + " connected, " + busy + " of " + slots + " slots busy)";
    fill($("workers-body"), workers.map(function (w) {
      return row([
        el("td", {}).appendChild(el("code", {}, w.id)).parentNode,
        (w.name || "") + (w.version ? " " + w.version : ""),
        w.capabilities.join(", "),
        el("td", {className: "num"}, w.busy + "/" + w.slots),
        w.running_jobs.join(", "),
        el("td", {className: w.draining ? "paused" : "", data: {field: "state"}}, w.draining ? "draining" : "active"),
        el("td", {title: w.key_fingerprint ? "fingerprint of the worker's CURVE public key" : "plaintext connection"})
          .appendChild(el("code", {}, w.key_fingerprint || "–")).parentNode,
        timeCell(w.last_seen),
        workerActions(w)
      ], {className: "worker", data: {worker: w.id, draining: String(!!w.draining)}});
    }), "No worker is connected.", 9);
  }

  function workerActions(w) {
    var td = el("td", {className: "plugin-actions"});
    td.appendChild(el("button", {type: "button", data: {action: w.draining ? "undrain" : "drain"},
      title: w.draining ? "Give this worker jobs again" : "Give this worker no new jobs; its running jobs finish"},
    w.draining ? "Undrain" : "Drain…"));
    td.appendChild(document.createTextNode(" "));
    td.appendChild(el("button", {type: "button", className: "danger", data: {action: "disconnect"},
      title: "Forget this worker now: its running jobs are queued again"}, "Disconnect…"));
    return td;
  }

  // workerAction drains, undrains or disconnects a worker; drain and
  // disconnect are confirmed first.
  function workerAction(id, action) {
    var w = ((state.last && state.last.workers) || []).filter(function (x) { return x.id === id; })[0];
    var running = w ? w.running_jobs.length : 0;
    var jobs = "the " + running + " running job" + (running === 1 ? "" : "s") + " it has";
    var act = function () {
      say("");
      api("POST", "/api/v1/workers/" + encodeURIComponent(id) + "/" + action, {}).then(function () {
        say(action === "drain" ? "Worker " + id + " is draining: it gets no new jobs; its running jobs finish." :
          action === "undrain" ? "Worker " + id + " gets jobs again." :
            "Worker " + id + " is disconnected: its running jobs are queued again, and it was told to identify again.");
        loadView();
      }, failed("Could not " + action + " worker " + id));
    };
    if (action === "undrain") { act(); return; }
    if (action === "drain") {
      confirmThen("Drain worker " + id + "? It gets no new jobs and finishes " + jobs + ". It stays drained until undrained.",
        "Drain", act, "Keep it");
      return;
    }
    confirmThen("Disconnect worker " + id + "? The Sentinel forgets it now: " + jobs + (running === 1 ? " goes" : " go") +
      " back to the queue. A live worker identifies again.",
      "Disconnect", act, "Keep it");
  }

  function pluginRow(p) {
    var a = p.active || {};
    var s = p.settings || {};
    var hasRetries = s.max_retries !== undefined && s.max_retries !== null;
    var actions = el("td", {className: "plugin-actions"});
    actions.appendChild(el("button", {type: "button", data: {action: s.paused ? "resume" : "pause"}},
      s.paused ? "Resume" : "Pause"));
    actions.appendChild(document.createTextNode(" "));
    actions.appendChild(el("button", {type: "button", data: {action: "backfill"},
      title: "Queue a job for every current file the plugin's subscriptions match that has none of it"}, "Backfill…"));
    // The settings form: empty fields return to --job-timeout and
    // --max-retries.
    var form = el("form", {className: "settings"});
    form.appendChild(el("input", {name: "job_timeout", value: s.job_timeout || "", placeholder: "default",
      title: "Job timeout: a duration (5m, 1h30m), 0 for none, empty for --job-timeout", ariaLabel: "job timeout"}));
    form.appendChild(el("input", {name: "max_retries", value: hasRetries ? String(s.max_retries) : "", placeholder: "default",
      title: "Max retries: a count, empty for --max-retries", ariaLabel: "max retries", inputMode: "numeric"}));
    form.appendChild(el("button", {type: "submit"}, "Save"));
    actions.appendChild(form);
    return row([
      el("td", {}).appendChild(el("code", {}, p.name)).parentNode,
      a.version || "none active", a.status || "–", timeCell(a.deployed_at),
      p.subscription_tags.join(", ") || "–",
      p.versions.map(function (v) { return v.version + " (" + v.status + ")"; }).join(", "),
      el("td", {className: s.paused ? "paused" : "", data: {field: "dispatch"},
        title: s.paused_at ? "paused " + s.paused_at : ""}, s.paused ? "paused" : "active"),
      el("td", {data: {field: "job-timeout"}}, s.job_timeout || "default"),
      el("td", {data: {field: "max-retries"}}, hasRetries ? s.max_retries : "default"),
      actions
    ], {data: {plugin: p.name, paused: String(!!s.paused)}});
  }

  function environmentRow(env) {
    var users = el("td", {data: {field: "plugins"}});
    env.plugins.forEach(function (u, i) {
      if (i > 0) { users.appendChild(document.createTextNode(", ")); }
      users.appendChild(el("code", {className: u.status === "ACTIVE" ? "" : "meta"},
        u.plugin + " " + u.version + (u.status === "ACTIVE" ? "" : " (" + u.status.toLowerCase() + ")")));
    });
    if (env.plugins.length === 0) { users.textContent = "–"; }
    return row([
      el("td", {title: env.hash}).appendChild(el("code", {}, env.hash.length > 16 ? env.hash.slice(0, 16) + "…" : env.hash)).parentNode,
      el("td", {className: "num"}, env.size_mb ? env.size_mb.toFixed(1) + " MB" : "–"),
      el("td", {className: "num"}, env.lockfile_bytes + " B"),
      timeCell(env.last_used),
      timeCell(env.created_at),
      users
    ], {data: {env: env.hash, active: String(env.active_plugins)}});
  }

  function pluginPath(name, action) {
    return "/api/v1/plugins/" + encodeURIComponent(name) + "/" + action;
  }

  // pauseOrResume stops or restarts the dispatch of a plugin's QUEUED jobs.
  function pauseOrResume(name, action) {
    say("");
    api("POST", pluginPath(name, action), {}).then(function () {
      say("Plugin " + name + (action === "pause" ? " is paused: its QUEUED jobs wait; running ones finish." :
        " is active again: its QUEUED jobs are dispatched."));
      loadView();
    }, failed("Could not " + action + " plugin " + name));
  }

  function saveSettings(name, form) {
    var timeout = form.elements.job_timeout.value.trim();
    var retries = form.elements.max_retries.value.trim();
    if (retries !== "" && !/^\d+$/.test(retries)) {
      say("Max retries of " + name + " must be a count (0, 1, 2…), or empty for the default.", true);
      return;
    }
    say("");
    api("POST", pluginPath(name, "settings"), {job_timeout: timeout || "default",
      max_retries: retries === "" ? -1 : Number(retries)}).then(function (res) {
      var s = res.settings;
      say("Plugin " + name + ": job timeout " + (s.job_timeout || "default") + ", max retries " +
        (s.max_retries === undefined || s.max_retries === null ? "default" : s.max_retries) + ".");
      loadView();
    }, failed("Could not save the settings of " + name));
  }

  // backfill asks how many files qualify (dry_run), confirms that count,
  // then queues their jobs.
  function backfill(name) {
    say("");
    api("POST", pluginPath(name, "backfill"), {dry_run: true}).then(function (res) {
      if (res.matched === 0) {
        say("Nothing to backfill for " + name + ": every file its subscriptions match has a job of it.");
        return;
      }
      var n = res.matched + " file" + (res.matched === 1 ? "" : "s");
      confirmThen("Backfill " + name + ": queue a job for " + n + " its subscriptions match that have none of it?",
        "Queue " + res.matched + " job" + (res.matched === 1 ? "" : "s"), function () {
          api("POST", pluginPath(name, "backfill"), {}).then(function (done) {
            say("Backfill of " + name + ": " + done.queued + " job" + (done.queued === 1 ? "" : "s") + " queued for " +
              done.matched + " matching file" + (done.matched === 1 ? "" : "s") + ".");
          }, failed("Could not backfill " + name));
        }, "Do not queue");
    }, failed("Could not backfill " + name));
  }

  function rescan() {
    say("");
    api("POST", "/api/v1/sources/rescan", {}).then(function () {
      say("Scan started: new and changed files under the source roots are picked up in a moment.");
    }, failed("Could not rescan"));
  }

  function loadView() {
    switch (state.view) {
    case "jobs":
      loadPlugins();
      loadJobs();
      if (state.jobId !== null) { loadJob(state.jobId); }
      break;
    case "workers":
      api("GET", "/api/v1/workers").then(function (list) { showWorkers(list.workers); }, failed("Could not list the workers"));
      break;
    case "plugins":
      loadPlugins().then(function (plugins) {
        if (!plugins) { return; }
        fill($("plugins-body"), plugins.map(pluginRow), "No plugin is deployed.", 10);
      });
      break;
    case "environments":
      api("GET", "/api/v1/environments").then(function (list) {
        var active = 0;
        list.environments.forEach(function (env) { if (env.active_plugins > 0) { active++; } });
        $("environments-summary").textContent = "(" + list.environments.length + ", " + active + " used by an active plugin)";
        fill($("environments-body"), list.environments.map(environmentRow), "No plugin environment: built-in plugins need none.", 6);
      }, failed("Could not list the environments"));
      break;
    case "sources":
      api("GET", "/api/v1/sources").then(function (list) {
        fill($("sources-body"), list.sources.map(function (s) {
          return row([el("td", {className: "num"}, s.id), el("td", {}).appendChild(el("code", {}, s.path)).parentNode,
            s.type, s.active ? "yes" : "no"]);
        }), "No source root.", 4);
      }, failed("Could not list the sources"));
      api("GET", "/api/v1/routes").then(function (list) {
        fill($("routes-body"), list.routes.map(function (r) {
          return row([el("td", {className: "num"}, r.id), el("td", {}).appendChild(el("code", {}, r.pattern)).parentNode,
            r.tag, el("td", {className: "num"}, r.priority)]);
        }), "No routing rule.", 4);
      }, failed("Could not list the routes"));
      break;
    }
  }

  function show(view) {
    state.view = view;
    document.querySelectorAll(".view").forEach(function (s) { s.hidden = s.id !== "view-" + view; });
    document.querySelectorAll("#nav button").forEach(function (b) {
      if (b.dataset.view === view) { b.setAttribute("aria-current", "page"); } else { b.removeAttribute("aria-current"); }
    });
    say("");
    loadView();
  }

  function start() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("nav").hidden = false;
    $("logout").hidden = !tokens;
    show(state.view);
    startStream();
  }

  // ---- wiring: listeners only, no inline handlers (the page's CSP has none) ----

  STATUSES.forEach(function (st) { $("filter-status").appendChild(el("option", {value: st}, st)); });
  showOrder();

  $("nav").addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-view]");
    if (b) { show(b.dataset.view); }
  });
  $("counts").addEventListener("click", function (ev) {
    var card = ev.target.closest("[data-status]");
    if (!card) { return; }
    state.status = card.dataset.status;
    firstPage();
    $("filter-status").value = state.status;
    show("jobs");
  });
  $("filter-status").addEventListener("change", function (ev) {
    state.status = ev.target.value;
    firstPage();
    loadJobs();
  });
  $("filter-plugin").addEventListener("change", function (ev) {
    state.plugin = ev.target.value;
    firstPage();
    loadJobs();
  });
  // The text filters apply on Enter or when the field is left.
  ["path", "error"].forEach(function (name) {
    $("filter-" + name).addEventListener("change", function (ev) {
      state[name] = ev.target.value.trim();
      firstPage();
      loadJobs();
    });
  });
  $("page-prev").addEventListener("click", function () {
    if (state.pages.length > 1) {
      state.pages.pop();
      state.starts.pop();
    }
    loadJobs();
  });
  $("page-next").addEventListener("click", function () {
    if (!state.next) { return; }
    state.starts.push(state.starts[state.starts.length - 1] + document.querySelectorAll("#jobs-body tr.job").length);
    state.pages.push(state.next);
    state.next = "";
    loadJobs();
  });
  $("jobs-head").addEventListener("click", function (ev) {
    var th = ev.target.closest("th[data-sort]");
    if (th) { sortBy(th.dataset.sort); }
  });
  $("jobs-body").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr.job");
    if (tr) { openJob(Number(tr.dataset.job)); }
  });
  $("jobs-body").addEventListener("keydown", function (ev) {
    var tr = ev.target.closest("tr.job");
    if (tr && ev.key === "Enter") { openJob(Number(tr.dataset.job)); }
  });
  $("job-retry").addEventListener("click", function () { jobAction("retry"); });
  $("job-cancel").addEventListener("click", function () { jobAction("cancel"); });
  $("detail-close").addEventListener("click", closeJob);
  $("bulk-retry").addEventListener("click", function () { bulk("retry"); });
  $("bulk-cancel").addEventListener("click", function () { bulk("cancel"); });
  $("plugins-body").addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action]");
    var tr = ev.target.closest("tr[data-plugin]");
    if (!b || !tr) { return; }
    if (b.dataset.action === "backfill") {
      backfill(tr.dataset.plugin);
    } else {
      pauseOrResume(tr.dataset.plugin, b.dataset.action);
    }
  });
  $("plugins-body").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var tr = ev.target.closest("tr[data-plugin]");
    if (tr) { saveSettings(tr.dataset.plugin, ev.target); }
  });
  $("rescan").addEventListener("click", rescan);
  $("workers-body").addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action]");
    var tr = ev.target.closest("tr[data-worker]");
    if (b && tr) { workerAction(tr.dataset.worker, b.dataset.action); }
  });
  $("confirm-yes").addEventListener("click", function () { $("confirm").close("yes"); });
  $("confirm-no").addEventListener("click", function () { $("confirm").close("no"); });
  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("login-token").value.trim());
    $("login-token").value = "";
    start();
  });
  $("logout").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    askToken("");
  });

  // Opened as /?token=TOKEN: keep the token in the tab and take it out of
  // the address bar (and so out of the history).
  var params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(KEY, params.get("token"));
    params.delete("token");
    var rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  // The server refused the token this page was opened with, and the tab
  // has none of its own: ask. (With one, try it: the page may have been
  // reloaded, which sends no header.)
  if (tokens && !token()) {
    askToken(body.dataset.refused);
  } else {
    start();
  }
})();

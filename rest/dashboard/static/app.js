// peerstack dashboard: one page, plain DOM, the cluster's own API.
"use strict";
(function () {
  const $ = (s) => document.querySelector(s);
  let session = null, timer = null, events = null, pending = false, term = null, sock = null, view = "", joinToken = "", uploadPct = null;
  let pressedAt = 0, redrawHeld = false;
  // errs keeps the last error of each place the user acted, so the
  // periodic redraw does not wipe it before it is read.
  const errs = {};

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function csrf() {
    const m = document.cookie.match(/(?:^|; )peerstack_csrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  // errMsg digs the message out of any OpenStack error body.
  function errMsg(status, body) {
    try {
      const j = JSON.parse(body);
      for (const v of Object.values(j)) {
        if (v && typeof v === "object" && v.message) return v.message;
        if (typeof v === "string" && v) return v;
      }
      if (j.NeutronError && j.NeutronError.message) return j.NeutronError.message;
    } catch (e) { /* not JSON */ }
    return "HTTP " + status + (body ? ": " + body.slice(0, 200) : "");
  }
  async function api(method, path, body, extra) {
    const hd = { "Accept": "application/json" };
    if (method !== "GET") hd["X-CSRF-Token"] = csrf();
    if (body !== undefined) hd["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers: Object.assign(hd, extra || {}), body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
    const text = await r.text();
    if (r.status === 401 && path !== "/dashboard/login") { showLogin(); throw new Error("Session ended; log in again."); }
    if (!r.ok) throw new Error(errMsg(r.status, text));
    return text ? JSON.parse(text) : {};
  }
  // act runs an action and shows its error next to where the user acted.
  function act(errEl, fn) {
    return async (ev) => {
      if (ev && ev.preventDefault) ev.preventDefault();
      const key = errEl.dataset.err;
      errEl.textContent = ""; delete errs[key];
      try { await fn(ev); await refresh(); } catch (e) { errs[key] = e.message; errEl.textContent = e.message; }
    };
  }
  function errBox(key, tag) {
    return h(tag || "p", { class: "error", role: "alert", "data-err": key, text: errs[key] || "" });
  }
  function table(label, cols, rows) {
    return h("div", { class: "table-wrap" }, h("table", { "aria-label": label },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: cols.length, text: "None." })))));
  }
  function bar(used, cap, unit) {
    const pct = cap > 0 ? Math.min(100, Math.round(100 * used / cap)) : 0;
    const s = h("span"); s.style.width = pct + "%";
    return h("div", {}, h("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": cap, "aria-valuenow": used, "aria-label": unit + " " + used + " of " + cap }, s),
      h("div", { class: "bar-label", text: used + " / " + cap + " " + unit }));
  }
  // clear empties fields after their action, in whichever copy is on the
  // page now: a redraw during the action carried the typed values into a
  // new copy of the form.
  function clear(...els) {
    for (const x of els) {
      x.value = "";
      const live = x.id ? document.getElementById(x.id) : null;
      if (live && live !== x && live.type !== "file") live.value = "";
    }
  }
  function field(id, label, input) {
    input.id = id; input.name = id;
    return h("div", {}, h("label", { for: id, text: label }), input);
  }
  function select(items, valueOf, labelOf, empty) {
    const s = h("select");
    if (empty !== undefined) s.append(h("option", { value: "", text: empty }));
    for (const i of items) s.append(h("option", { value: valueOf(i), text: labelOf(i) }));
    return s;
  }
  const isAdmin = () => session && session.roles.includes("admin");
  const net = (p) => "/network/v2.0/" + p;
  const cmp = (p) => "/compute/v2.1/" + p;
  const vol = (p) => "/volume/v3/" + session.project_id + "/" + p;

  // Views render into a fresh section; forms are kept across refreshes so
  // typing is not lost, only the data parts are replaced.
  const views = {
    async hosts(main) {
      if (!isAdmin()) { main.append(h("p", { text: "Hosts are shown to administrators." })); return; }
      const m = (await api("GET", "/cluster/v1/members")).members || [];
      main.append(h("h1", { text: "Hosts" }), table("Hosts", ["Name", "Role", "Health", "CPU", "RAM", "Disk", "Accelerator", "Clock skew", "Version"],
        m.map((x) => [x.name, x.raft_role, h("span", { class: "status-" + x.gossip_state, text: x.gossip_state + (x.disabled ? " (disabled)" : "") }),
          bar(x.capacity.used_vcpus, x.capacity.vcpus, "vCPU"), bar(x.capacity.used_ram_mb, x.capacity.ram_mb, "MB"),
          bar(x.capacity.used_disk_gb, x.capacity.disk_gb, "GB"), x.accel || "-",
          x.clock_skew_ms === null ? "-" : x.clock_skew_ms + " ms", x.version || "-"])));
    },
    async servers(main) {
      const [sv, fl, im, nw, kp, vl] = await Promise.all([api("GET", cmp("servers/detail")), api("GET", cmp("flavors")),
        api("GET", "/image/v2/images"), api("GET", net("networks")), api("GET", cmp("os-keypairs")), api("GET", vol("volumes"))]);
      const err = errBox("servers-form");
      const nameI = h("input", { required: true });
      const flS = select(fl.flavors, (f) => f.id, (f) => f.name);
      const imS = select(im.images, (i) => i.id, (i) => i.name);
      const nwS = select(nw.networks, (n) => n.id, (n) => n.name, "(none)");
      const kpS = select(kp.keypairs.map((k) => k.keypair), (k) => k.name, (k) => k.name, "(none)");
      const vlS = select(vl.volumes.filter((v) => v.status === "available"), (v) => v.id, (v) => v.name || v.id, "(none)");
      const form = h("form", { class: "inline card", "aria-label": "Create server" },
        field("server-name", "Name", nameI), field("server-flavor", "Flavor", flS), field("server-image", "Image", imS),
        field("server-network", "Network", nwS), field("server-key", "Key pair", kpS), field("server-volume", "Volume", vlS),
        h("button", { type: "submit", id: "server-create", text: "Create server" }));
      form.addEventListener("submit", act(err, async () => {
        const s = { name: nameI.value, flavorRef: flS.value, imageRef: imS.value, networks: nwS.value ? [{ uuid: nwS.value }] : "none" };
        if (kpS.value) s.key_name = kpS.value;
        const r = await api("POST", cmp("servers"), { server: s });
        if (vlS.value) await waitAttach(r.server.id, vlS.value);
        clear(nameI);
      }));
      const rows = sv.servers.map((s) => {
        const addrs = Object.entries(s.addresses || {}).map(([n, a]) => n + ": " + a.map((x) => x.addr).join(", ")).join("; ");
        const e = errBox("server-" + s.id, "span");
        const b = (label, fn, cls) => h("button", { type: "button", class: cls || "secondary", "aria-label": label + " " + s.name, onclick: act(e, fn), text: label });
        const flavor = s.flavor && (s.flavor.original_name || (fl.flavors.find((f) => f.id === s.flavor.id) || { name: s.flavor.id }).name);
        const image = s.image && s.image.id ? (im.images.find((i) => i.id === s.image.id) || { name: s.image.id }).name : "(volume)";
        return [s.name, h("span", { class: "status-" + s.status, "data-server": s.name, text: s.status }), s["OS-EXT-SRV-ATTR:host"] || "-", addrs || "-", flavor || "-", image,
          h("div", { class: "actions" },
            b("Start", () => api("POST", cmp("servers/" + s.id + "/action"), { "os-start": null })),
            b("Stop", () => api("POST", cmp("servers/" + s.id + "/action"), { "os-stop": null })),
            b("Reboot", () => api("POST", cmp("servers/" + s.id + "/action"), { reboot: { type: "SOFT" } })),
            b("Console", () => openConsole(s)),
            b("Log", () => showLog(s)),
            b("Delete", () => confirm("Delete server " + s.name + "?") ? api("DELETE", cmp("servers/" + s.id)) : null, "danger"), e)];
      });
      main.append(h("h1", { text: "Servers" }), form, err,
        table("Servers", ["Name", "Status", "Host", "Addresses", "Flavor", "Image", "Actions"], rows), h("div", { id: "console-area" }));
    },
    async images(main) {
      const im = await api("GET", "/image/v2/images");
      const err = errBox("images-form");
      const nameI = h("input", { required: true }), fileI = h("input", { type: "file", required: true });
      const fmt = select(["qcow2", "raw", "iso"], (x) => x, (x) => x);
      const prog = h("progress", { id: "image-progress", max: 100, value: uploadPct || 0, "aria-label": "Upload progress", hidden: uploadPct === null });
      const form = h("form", { class: "inline card", "aria-label": "Upload image" }, field("image-name", "Name", nameI),
        field("image-format", "Disk format", fmt), field("image-file", "File", fileI), h("button", { type: "submit", id: "image-upload", text: "Upload" }), prog);
      form.addEventListener("submit", act(err, async () => {
        const r = await api("POST", "/image/v2/images", { name: nameI.value, disk_format: fmt.value, container_format: "bare" });
        uploadPct = 0; prog.hidden = false;
        try { await upload("/image/v2/images/" + r.id + "/file", fileI.files[0]); } finally { fileI.value = ""; }
        clear(nameI);
      }));
      main.append(h("h1", { text: "Images" }), form, err, table("Images", ["Name", "Status", "Format", "Size", "Visibility"],
        im.images.map((i) => [i.name, h("span", { class: "status-" + i.status, text: i.status }), i.disk_format || "-", i.size === null ? "-" : i.size, i.visibility])));
    },
    async networks(main) {
      const [nw, sn, rt, fip] = await Promise.all([api("GET", net("networks")), api("GET", net("subnets")), api("GET", net("routers")), api("GET", net("floatingips"))]);
      const err = errBox("networks-form");
      const nameI = h("input", { required: true }), cidrI = h("input", { placeholder: "10.0.0.0/24", required: true });
      const form = h("form", { class: "inline card", "aria-label": "Create network" }, field("network-name", "Network name", nameI),
        field("network-cidr", "Subnet CIDR", cidrI), h("button", { type: "submit", id: "network-create", text: "Create network" }));
      form.addEventListener("submit", act(err, async () => {
        const n = await api("POST", net("networks"), { network: { name: nameI.value } });
        await api("POST", net("subnets"), { subnet: { network_id: n.network.id, cidr: cidrI.value, ip_version: 4, name: nameI.value + "-subnet" } });
        clear(nameI, cidrI);
      }));
      const del = (what, id, name) => { const e = errBox("net-" + id, "span");
        return h("div", { class: "actions" }, h("button", { type: "button", class: "danger", "aria-label": "Delete " + name, text: "Delete", onclick: act(e, () => api("DELETE", net(what + "/" + id))) }), e); };
      main.append(h("h1", { text: "Networks" }), form, err,
        table("Networks", ["Name", "Status", "Subnets", "Shared", "External", ""], nw.networks.map((n) => [n.name, n.status,
          sn.subnets.filter((s) => s.network_id === n.id).map((s) => s.cidr).join(", ") || "-", n.shared ? "yes" : "no", n["router:external"] ? "yes" : "no", del("networks", n.id, n.name)])),
        h("h2", { text: "Routers" }), table("Routers", ["Name", "Status", "External gateway"], rt.routers.map((r) => [r.name, r.status,
          r.external_gateway_info ? (r.external_gateway_info.external_fixed_ips || []).map((x) => x.ip_address).join(", ") : "-"])),
        h("h2", { text: "Floating IPs" }), table("Floating IPs", ["Address", "Fixed address", "Status"], fip.floatingips.map((f) => [f.floating_ip_address, f.fixed_ip_address || "-", f.status])));
    },
    async volumes(main) {
      const [vl, sv] = await Promise.all([api("GET", vol("volumes/detail")), api("GET", cmp("servers/detail"))]);
      const err = errBox("volumes-form");
      const nameI = h("input", { required: true }), sizeI = h("input", { type: "number", min: 1, value: 1, required: true });
      const form = h("form", { class: "inline card", "aria-label": "Create volume" }, field("volume-name", "Name", nameI),
        field("volume-size", "Size (GB)", sizeI), h("button", { type: "submit", id: "volume-create", text: "Create volume" }));
      form.addEventListener("submit", act(err, async () => { await api("POST", vol("volumes"), { volume: { name: nameI.value, size: Number(sizeI.value) } }); clear(nameI); }));
      const name = (id) => (sv.servers.find((s) => s.id === id) || { name: id }).name;
      main.append(h("h1", { text: "Volumes" }), form, err, table("Volumes", ["Name", "Status", "Size", "Attached to", "Actions"], vl.volumes.map((v) => {
        const e = errBox("volume-" + v.id, "span");
        const att = v.attachments || [];
        let ctl;
        if (att.length) {
          ctl = h("button", { type: "button", class: "secondary", "aria-label": "Detach " + (v.name || v.id), text: "Detach",
            onclick: act(e, () => api("DELETE", cmp("servers/" + att[0].server_id + "/os-volume_attachments/" + v.id))) });
        } else {
          const s = select(sv.servers, (x) => x.id, (x) => x.name); s.setAttribute("aria-label", "Server to attach " + (v.name || v.id));
          ctl = h("span", {}, s, h("button", { type: "button", class: "secondary", "aria-label": "Attach " + (v.name || v.id), text: "Attach",
            onclick: act(e, () => api("POST", cmp("servers/" + s.value + "/os-volume_attachments"), { volumeAttachment: { volumeId: v.id } })) }));
        }
        return [v.name || v.id, h("span", { class: "status-" + v.status, text: v.status }), v.size + " GB", att.map((a) => name(a.server_id)).join(", ") || "-", h("div", { class: "actions" }, ctl, e)];
      })));
    },
    async cluster(main) {
      if (!isAdmin()) { main.append(h("p", { text: "The cluster view is shown to administrators." })); return; }
      const st = (await api("GET", "/cluster/v1/status")).status;
      const err = errBox("join-token");
      const out = h("input", { readonly: true, id: "join-token", "aria-label": "Join token", size: 40, value: joinToken });
      const copy = h("button", { type: "button", class: "secondary", id: "join-token-copy", text: "Copy", onclick: () => { out.select(); navigator.clipboard ? navigator.clipboard.writeText(out.value) : document.execCommand("copy"); } });
      main.append(h("h1", { text: "Cluster" }), table("Cluster status", ["Cluster", "Leader", "Raft term", "Commit index", "Applied index", "Members"],
        [[st.cluster_id, st.leader.name || "-", st.term, st.commit_index, st.applied_index, st.members]]),
        h("div", { class: "card" }, h("h2", { text: "Join token" }), h("button", { type: "button", id: "join-token-create", text: "Create join token",
          onclick: act(err, async () => { joinToken = (await api("POST", "/cluster/v1/tokens", { ttl: "1h" })).token.token; }) }), " ", out, " ", copy, err));
    },
  };

  async function waitAttach(serverID, volumeID) {
    for (let i = 0; i < 120; i++) {
      const s = (await api("GET", cmp("servers/" + serverID))).server;
      if (s.status === "ERROR") throw new Error("Server went to ERROR; volume not attached.");
      if (s.status === "ACTIVE") return api("POST", cmp("servers/" + serverID + "/os-volume_attachments"), { volumeAttachment: { volumeId: volumeID } });
      await new Promise((r) => setTimeout(r, 1000));
    }
    throw new Error("Server did not become ACTIVE; volume not attached.");
  }
  function upload(path, file) {
    return new Promise((resolve, reject) => {
      const x = new XMLHttpRequest();
      x.open("PUT", path);
      x.setRequestHeader("Content-Type", "application/octet-stream");
      x.setRequestHeader("X-CSRF-Token", csrf());
      const show = (pct) => { uploadPct = pct; const p = $("#image-progress"); if (p) { p.hidden = false; p.value = pct; } };
      x.upload.onprogress = (e) => { if (e.lengthComputable) show(Math.round(100 * e.loaded / e.total)); };
      x.onload = () => (x.status < 300 ? (show(100), resolve()) : reject(new Error(errMsg(x.status, x.responseText))));
      x.onerror = () => reject(new Error("Upload failed: network error."));
      x.send(file);
    });
  }
  function closeConsole() {
    if (sock) { sock.close(); sock = null; }
    if (term) { term.dispose(); term = null; }
  }
  async function openConsole(s) {
    closeConsole();
    const r = await api("POST", cmp("servers/" + s.id + "/remote-consoles"), { remote_console: { protocol: "serial", type: "serial" } });
    const area = $("#console-area"); area.replaceChildren();
    const box = h("div", { id: "terminal", role: "log", "aria-label": "Serial console of " + s.name });
    area.append(h("div", { class: "card" }, h("h2", { text: "Console: " + s.name }),
      h("button", { type: "button", class: "secondary", text: "Close console", onclick: () => { closeConsole(); area.replaceChildren(); } }), box));
    term = new Terminal({ convertEol: true, scrollback: 5000, fontSize: 13 });
    term.open(box);
    sock = new WebSocket(r.remote_console.url);
    sock.binaryType = "arraybuffer";
    const ws = sock;
    // Keystrokes go to the guest as text messages; its output arrives as
    // binary messages of raw console bytes.
    term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(d); });
    sock.onopen = () => { if (term) { term.write("[connected to the serial console of " + s.name + "]\r\n"); term.focus(); } };
    sock.onerror = () => term && term.write("\r\n[console connection failed]\r\n");
    sock.onmessage = (ev) => term && term.write(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data));
    sock.onclose = (ev) => term && term.write("\r\n[console closed" + (ev.reason ? ": " + ev.reason : "") + "]\r\n");
  }
  async function showLog(s) {
    closeConsole();
    const r = await api("POST", cmp("servers/" + s.id + "/action"), { "os-getConsoleOutput": { length: 200 } });
    const area = $("#console-area");
    area.replaceChildren(h("div", { class: "card" }, h("h2", { text: "Console log: " + s.name }), h("pre", { class: "log", tabindex: 0, text: r.output || "(empty)" })));
  }

  // refresh redraws the current view's data; the console area and any form
  // being typed into are left alone.
  async function refresh() {
    const main = $("#main");
    const name = (location.hash || "#servers").slice(1);
    const fn = views[name] || views.servers;
    // A file being chosen cannot be carried over: wait until it is sent.
    if (name === view && [...main.querySelectorAll("input[type=file]")].some((f) => f.files.length)) return;
    const consoleArea = $("#console-area");
    const fresh = h("div");
    try { await fn(fresh); } catch (e) { fresh.replaceChildren(h("p", { class: "error", role: "alert", text: e.message })); }
    if (name !== (location.hash || "#servers").slice(1)) return;
    // Nor while it was being drawn.
    if (name === view && [...main.querySelectorAll("input[type=file]")].some((f) => f.files.length)) return;
    // A button held down is not swapped under the pointer: the click
    // would fall between two copies and be lost. The redraw waits for the
    // release (or for a press that never ended to go stale).
    if (pressedAt && Date.now() - pressedAt < 5000) { redrawHeld = true; return; }
    const keep = name === view && consoleArea && (term || consoleArea.childElementCount) ? consoleArea : null;
    // Carry what the user typed or picked, and the focus, into the new copy.
    const kept = name === view ? [...main.querySelectorAll("input[id], select[id]")].filter((x) => x.type !== "file").map((x) => [x.id, x.value]) : [];
    // Focus is found again by id, else by accessible name, so keyboard users
    // keep their place across redraws.
    const ae = document.activeElement;
    const focusSel = name === view && ae && ae !== main && main.contains(ae) ? (ae.id ? "#" + CSS.escape(ae.id)
      : ae.getAttribute("aria-label") ? '[aria-label="' + CSS.escape(ae.getAttribute("aria-label")) + '"]'
      : null) : null;
    main.replaceChildren(...fresh.childNodes);
    for (const [id, v] of kept) { const x = document.getElementById(id); if (x && x.type !== "file" && !x.readOnly) x.value = v; }
    if (focusSel) { const x = main.querySelector(focusSel); if (x) x.focus(); }
    document.body.dataset.redraws = Number(document.body.dataset.redraws || 0) + 1;
    if (keep) { const slot = $("#console-area"); if (slot) slot.replaceWith(keep); }
    view = name;
    for (const a of document.querySelectorAll("header nav a")) a.toggleAttribute("aria-current", a.getAttribute("href") === "#" + name) && a.setAttribute("aria-current", "page");
  }
  document.addEventListener("pointerdown", () => { pressedAt = Date.now(); }, true);
  for (const t of ["pointerup", "pointercancel"]) document.addEventListener(t, () => {
    pressedAt = 0;
    if (redrawHeld) { redrawHeld = false; if (session) setTimeout(refresh, 0); }
  }, true);
  function showLogin() {
    session = null; joinToken = ""; clearInterval(timer); stopEvents(); closeConsole();
    $("#app").hidden = true; $("#login").hidden = false; $("#login-user").focus();
  }
  function showApp() {
    $("#login").hidden = true; $("#app").hidden = false;
    $("#who").textContent = session.user + " @ " + session.project;
    if (!location.hash) location.hash = isAdmin() ? "#hosts" : "#servers";
    refresh(); listen();
    // Health, load and clock skew travel by gossip, not the replicated
    // state: those still refresh on a timer.
    clearInterval(timer); timer = setInterval(refresh, 10000);
  }
  // The host pushes a "change" event whenever the replicated state moves
  // on; bursts of changes redraw at most once a second. A hidden tab lets
  // go of its stream (browsers allow six connections per host), and a
  // stream the host refused (a 503 while it catches up) is opened again
  // with back-off: a browser does not retry those by itself.
  let lastDraw = 0, backoff = 1000, retry = null;
  function listen() {
    stopEvents();
    if (!session || document.hidden) return;
    events = new EventSource("/dashboard/events");
    events.onopen = () => { document.body.dataset.events = "open"; backoff = 1000; };
    events.onerror = () => {
      if (!events || events.readyState !== EventSource.CLOSED) return;
      delete document.body.dataset.events;
      events = null;
      retry = setTimeout(listen, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
    events.addEventListener("change", () => {
      if (pending) return;
      pending = true;
      setTimeout(() => { pending = false; lastDraw = Date.now(); if (session) refresh(); }, Math.max(100, 1000 - (Date.now() - lastDraw)));
    });
  }
  function stopEvents() {
    clearTimeout(retry);
    if (events) { events.close(); events = null; }
    delete document.body.dataset.events;
  }
  document.addEventListener("visibilitychange", () => { if (document.hidden) stopEvents(); else if (session) { refresh(); listen(); } });
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      const r = await api("POST", "/dashboard/login", { user: $("#login-user").value, password: $("#login-password").value, project: $("#login-project").value });
      session = r.session; sessionStorage.setItem("peerstack-session", JSON.stringify(session)); $("#login-password").value = "";
      showApp();
    } catch (e) { $("#login-error").textContent = e.message; }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/dashboard/logout"); } catch (e) { /* cookie cleared anyway */ }
    sessionStorage.removeItem("peerstack-session"); showLogin();
  });
  window.addEventListener("hashchange", () => { closeConsole(); view = ""; refresh(); $("#main").focus(); });
  const saved = sessionStorage.getItem("peerstack-session");
  if (saved && csrf()) { session = JSON.parse(saved); showApp(); } else showLogin();
})();

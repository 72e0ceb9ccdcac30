// The tracker's dashboard: live swarms, pools' pushes, load and throughput, from /v1/dashboard/events.
"use strict";

(() => {
  const { bytes, rate, number, duration, when, stamp, percent, h, bar, card, follow, chart } = Shoal;
  const CHART_SPAN = [60, 300];  // seconds shown: at least a minute, at most the five the tracker keeps
  let last = null;

  const PUSH_PILL = { running: "run", complete: "ok", failed: "bad", cancelled: "idle" };
  const MEMBER_PILL = { assigned: "idle", running: "run", done: "ok", failed: "bad", evicted: "warn", cancelled: "idle", left: "warn" };

  function render(snap) {
    last = snap;
    const load = snap.load;
    const now = snap.time;
    const latest = snap.throughput.length ? snap.throughput[snap.throughput.length - 1] : [now, 0, 0];
    document.getElementById("uptime").textContent = `up ${duration(now - load.started)}`;
    document.getElementById("updated").textContent = new Date(now * 1000).toLocaleTimeString();
    const cards = [
      card("stat-announces", "Announces", number(load.announces_per_second, 1), "/s"),
      card("stat-inflight", "In flight", number(load.inflight), `of ${number(load.max_inflight)}`),
      card("stat-tasks", "Tasks", number(load.tasks)),
      card("stat-peers", "Peers", number(load.peers)),
      card("stat-origin-rate", "From origin", rate(latest[1]), null, "origin"),
      card("stat-peer-rate", "From peers", rate(latest[2]), null, "peers"),
      card("stat-stretch", "Interval stretch", `×${number(load.stretch, 2)}`),
      card("stat-shed", "Shed (busy)", number(load.shed)),
    ];
    cards[0].dataset.value = load.announces_per_second;
    cards[2].dataset.value = load.tasks;
    cards[3].dataset.value = load.peers;
    if (load.trackers > 1) cards.push(card("stat-trackers", "Trackers", number(load.trackers)));
    document.getElementById("load").replaceChildren(...cards);
    drawChart();
    renderTasks(snap.tasks);
    renderPools(snap);
  }

  function drawChart() {
    if (!last) return;
    const first = last.throughput.length ? last.throughput[0][0] : last.time;
    const span = Math.min(CHART_SPAN[1], Math.max(CHART_SPAN[0], Math.ceil((last.time - first) / 60) * 60));
    chart(document.getElementById("chart"), last.throughput, last.time, span);
  }

  function renderTasks(list) {
    const total = list.tasks.length + list.more;
    document.getElementById("tasks-count").textContent = total ? number(total) : "";
    const section = document.getElementById("tasks");
    if (!list.tasks.length) {
      section.replaceChildren(h("div", { class: "empty" }, "No live swarm: tasks appear here as peers announce them."));
      return;
    }
    const cards = list.tasks.map(taskCard);
    if (list.more) cards.push(h("div", { class: "empty" }, `${number(list.more)} quieter tasks not shown`));
    section.replaceChildren(...cards);
  }

  function taskCard(task) {
    const taken = task.from_origin + task.from_peers;
    const originShare = taken ? task.from_origin / taken : 0;
    const split = h("div", { class: "split", title: "where the swarm's bytes came from" });
    const o = h("span", { class: "o" }); o.style.width = `${originShare * 100}%`;
    const p = h("span", { class: "p" }); p.style.width = `${taken ? (1 - originShare) * 100 : 0}%`;
    split.append(o, p);
    const rows = task.shown.map((peer) => {
      const where = [peer.site, peer.rack].filter(Boolean).join("/");
      const complete = peer.progress >= 1;
      return h("div", { class: "row peer", dataset: { peer: peer.peer_id, progress: peer.progress } },
        h("div", { class: "who", title: `peer ${peer.peer_id}` }, peer.host || "?", where ? h("span", { class: "where" }, where) : null),
        bar(peer.progress, complete ? "done" : ""),
        h("div", { class: "pct" }, percent(peer.progress)));
    });
    const hidden = task.peers - task.shown.length;
    return h("article", {
      class: "panel task",
      dataset: { task: task.task_id, peers: task.peers, seeds: task.seeds, fromOrigin: task.from_origin, fromPeers: task.from_peers },
    },
      h("div", { class: "task-head" },
        h("span", { class: "name" }, task.name),
        h("span", { class: "badge", title: "generation: bumped when the origin's file changed" }, `gen ${task.generation}`)),
      h("div", { class: "sub", title: task.task_id }, task.url),
      h("div", { class: "facts" },
        h("span", {}, h("span", { class: "k" }, "size"), h("b", {}, task.length === null ? "unknown" : bytes(task.length))),
        h("span", {}, h("span", { class: "k" }, "peers"), h("b", { class: "peer-count" }, number(task.peers))),
        h("span", {}, h("span", { class: "k" }, "seeds"), h("b", { class: "seed-count" }, number(task.seeds))),
        task.pieces !== null ? h("span", {}, h("span", { class: "k" }, "pieces"), h("b", {}, number(task.pieces))) : null),
      split,
      h("div", { class: "split-legend" },
        h("span", { class: "o" }, "origin ", h("b", { class: "from-origin" }, bytes(task.from_origin))),
        h("span", { class: "p" }, "peers ", h("b", { class: "from-peers" }, bytes(task.from_peers)))),
      h("div", { class: "rows" }, rows),
      hidden > 0 ? h("div", { class: "more" }, `+ ${number(hidden)} more peers`) : null);
  }

  function renderPools(snap) {
    const section = document.getElementById("pools");
    const notes = [];
    if (snap.more_pools) notes.push(`${number(snap.more_pools)} more pools not shown`);
    if (snap.private_pools) notes.push(`${number(snap.private_pools)} private pools are not shown here`);
    document.getElementById("pools-count").textContent = snap.pools.length ? number(snap.pools.length + snap.more_pools) : "";
    if (!snap.pools.length) {
      section.replaceChildren(h("div", { class: "empty" }, ["No public pool.", ...notes].join(" ")));
      return;
    }
    section.replaceChildren(h("div", { class: "grid wide" }, snap.pools.map((pool) => poolPanel(pool, snap.time))),
      ...notes.map((n) => h("div", { class: "more" }, n)));
  }

  function poolPanel(pool, now) {
    const pushes = pool.pushes.map((push) => pushBlock(push, now));
    return h("article", { class: "panel pool", dataset: { pool: pool.name } },
      h("div", { class: "push-head" },
        h("span", { class: "name" }, pool.name),
        h("span", { class: "badge" }, `${number(pool.live_members)} of ${number(pool.members)} members live`)),
      pushes.length ? pushes : h("div", { class: "more" }, "No push yet."),
      pool.more_pushes ? h("div", { class: "more" }, `${number(pool.more_pushes)} older pushes`) : null);
  }

  function pushBlock(panel, now) {
    const job = panel.job;
    const name = job.url.split("?")[0].split("/").filter(Boolean).pop() || job.url;
    const target = job.replicas.target === null ? "every member" : `${number(job.replicas.target)} wanted`;
    const rows = job.members.map((m) => memberRow(m, now));
    return h("div", { class: "push", dataset: { job: job.job, status: job.status } },
      h("div", { class: "push-head" },
        h("span", { class: "name" }, name),
        h("span", { class: `pill ${PUSH_PILL[job.status] || "idle"}` }, job.status),
        h("span", { class: "sub" }, `copies ${number(job.replicas.current)} (${target}) · pushed ${when(job.created, now)}`)),
      job.error ? h("div", { class: "error" }, job.error) : null,
      h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {}, "member"), h("th", {}, "state"), h("th", {}, "progress"),
          h("th", { class: "num" }, "rate"), h("th", { class: "num" }, "ETA"), h("th", { class: "num" }, "origin / peers"))),
        h("tbody", {}, rows)),
      panel.more_members ? h("div", { class: "more" }, `+ ${number(panel.more_members)} more members`) : null);
  }

  function memberRow(m, now) {
    const share = m.total ? m.done / m.total : m.status === "done" ? 1 : 0;
    const where = [m.site, m.rack].filter(Boolean).join("/");
    return h("tr", { class: "member", dataset: { member: m.member, status: m.status, done: m.done, total: m.total } },
      h("td", {}, h("div", {}, m.name || m.member.slice(0, 12)), where ? h("div", { class: "sub" }, where) : null,
        m.live ? null : h("div", { class: "sub" }, "not live")),
      h("td", {}, h("span", { class: `pill ${MEMBER_PILL[m.status] || "idle"}` }, m.status),
        m.error ? h("details", { class: "error" }, h("summary", {}, "error"), m.error) : null),
      h("td", { class: "progress" }, h("div", { class: "sub" }, `${bytes(m.done)} of ${m.total ? bytes(m.total) : "?"} · ${percent(share)}`),
        bar(share, m.status === "done" ? "done" : m.status === "failed" ? "failed" : "")),
      h("td", { class: "num" }, m.status === "running" ? rate(m.rate) : "–"),
      h("td", { class: "num" }, m.eta === null ? "–" : duration(m.eta)),
      h("td", { class: "num", title: `updated ${stamp(m.updated)}` }, `${bytes(m.from_origin)} / ${bytes(m.from_peers)}`));
  }

  window.addEventListener("resize", drawChart);
  follow("/v1/dashboard/events", render);
})();

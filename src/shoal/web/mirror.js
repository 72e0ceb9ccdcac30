// The mirror manager's status page: every job and worker, from /v1/mirror/dashboard/events; each job that
// has run links its latest run log (plain text the manager reads from the job's worker).
"use strict";

(() => {
  const { bytes, number, duration, when, stamp, h, card, follow } = Shoal;
  const PILL = { success: "ok", syncing: "run", "pre-syncing": "run", failed: "bad", paused: "warn", disabled: "idle", none: "idle" };
  const ORDER = ["syncing", "pre-syncing", "failed", "success", "paused", "none", "disabled"];

  function render(snap) {
    const now = snap.time;
    document.getElementById("uptime").textContent = `up ${duration(now - snap.started)}`;
    document.getElementById("updated").textContent = new Date(now * 1000).toLocaleTimeString();
    const counts = {};
    for (const job of snap.jobs) counts[job.status] = (counts[job.status] || 0) + 1;
    const live = snap.workers.filter((w) => w.live).length;
    const total = snap.jobs.reduce((sum, job) => sum + job.size, 0);
    const cards = [
      card("stat-jobs", "Jobs", number(snap.jobs.length + snap.more_jobs)),
      card("stat-syncing", "Syncing", number((counts.syncing || 0) + (counts["pre-syncing"] || 0))),
      card("stat-failed", "Failed", number(counts.failed || 0), null, counts.failed ? "bad" : ""),
      card("stat-success", "Up to date", number(counts.success || 0)),
      card("stat-workers", "Workers live", number(live), `of ${number(snap.workers.length)}`),
      card("stat-size", "Mirrored", bytes(total)),
    ];
    document.getElementById("summary").replaceChildren(...cards);
    const jobs = [...snap.jobs].sort((a, b) => ORDER.indexOf(a.status) - ORDER.indexOf(b.status) || a.name.localeCompare(b.name));
    document.getElementById("jobs-count").textContent = number(snap.jobs.length + snap.more_jobs);
    document.querySelector("#jobs tbody").replaceChildren(...(jobs.length ? jobs.map((job) => jobRow(job, now))
      : [h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No job: add [[jobs]] to the manager's config."))]));
    document.getElementById("workers-count").textContent = number(snap.workers.length);
    document.querySelector("#workers tbody").replaceChildren(...snap.workers.map((w) => workerRow(w, now)));
  }

  function jobRow(job, now) {
    const running = job.status === "syncing" || job.status === "pre-syncing";
    return h("tr", { class: "job", dataset: { job: job.name, status: job.status, size: job.size } },
      h("td", {}, h("b", {}, job.name), h("div", { class: "sub" }, job.provider),
        job.error ? h("details", { class: "error" }, h("summary", {}, "last error"), job.error) : null),
      h("td", {}, h("span", { class: `pill ${PILL[job.status] || "idle"}` }, job.status),
        job.attempts > 1 ? h("div", { class: "sub" }, `attempt ${job.attempts}`) : null,
        running && job.last_started ? h("div", { class: "sub" }, `for ${duration(now - job.last_started)}`) : null),
      h("td", { title: stamp(job.last_success) }, job.last_success ? when(job.last_success, now) : "never"),
      h("td", { title: stamp(job.next_run) }, running ? "running" : when(job.next_run, now)),
      h("td", { class: "num" }, job.size ? bytes(job.size) : "–"),
      h("td", {}, h("span", { class: "mono sub" }, job.upstream)),
      h("td", {}, job.worker || "–"),
      h("td", {}, job.version ? h("span", { class: "mono" }, job.version) : "–"),
      h("td", {}, job.log ? h("a", { class: "log", href: job.log, target: "_blank", rel: "noopener" }, "log") : "–"));
  }

  function workerRow(w, now) {
    return h("tr", { dataset: { worker: w.name } },
      h("td", {}, h("b", {}, w.name)),
      h("td", {}, h("span", { class: `pill ${w.live ? "ok" : "bad"}` }, w.live ? "live" : "lost")),
      h("td", { class: "num" }, `${number(w.running)} of ${number(w.concurrency)}`),
      h("td", { title: stamp(w.last_seen) }, when(w.last_seen, now)));
  }

  follow("/v1/mirror/dashboard/events", render);
})();

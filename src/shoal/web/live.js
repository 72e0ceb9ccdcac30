// Shoal's dashboards, shared parts: human units, a DOM builder, the live connection and the chart.
// Plain JavaScript, no library: the pages must work on a fleet with no internet access.
"use strict";

const Shoal = (() => {
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    let i = 0;
    while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${UNITS[i]}`;
  }

  const rate = (n) => `${bytes(n)}/s`;

  function number(n, digits = 0) {
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ""}`.trim();
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // A moment relative to the snapshot's time: "12 s ago", "in 5 min".
  function when(t, now) {
    if (t === null || t === undefined) return "–";
    const d = t - now;
    return Math.abs(d) < 1 ? "now" : d < 0 ? `${duration(-d)} ago` : `in ${duration(d)}`;
  }

  const stamp = (t) => (t ? new Date(t * 1000).toLocaleString() : "");

  const percent = (share) => `${Math.floor(share * 1000) / 10}%`;

  // h("div", {class: "x", dataset: {task: id}}, child, "text", ...)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function bar(share, state) {
    const fill = h("span");
    fill.style.width = `${Math.max(0, Math.min(1, share)) * 100}%`;
    return h("div", { class: `bar ${state || ""}`, role: "progressbar", "aria-valuenow": Math.round(share * 100) }, fill);
  }

  function card(id, label, value, extra, kind) {
    return h("div", { class: `card ${kind || ""}`, id },
      h("div", { class: "label" }, label),
      h("div", { class: "value" }, value, extra ? h("small", {}, extra) : null));
  }

  // Follow a server-sent event stream; render each snapshot; show whether the page is live.
  function follow(url, render) {
    const conn = document.getElementById("conn");
    const label = conn.querySelector(".label");
    const source = new EventSource(url);
    source.onopen = () => { conn.className = "conn live"; label.textContent = "live"; };
    source.onerror = () => { conn.className = "conn down"; label.textContent = "reconnecting…"; };
    source.onmessage = (event) => {
      conn.className = "conn live"; label.textContent = "live";
      render(JSON.parse(event.data));
    };
    return source;
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // Throughput over time on a <canvas>, over the last minutes: the bytes taken from the origin and from
  // peers, stacked (the origin's band from zero, the peers' above it), as a dashboard draws the parts of
  // one total: the top line is all the bytes taken in, and neither part's line can lie on the other's
  // and hide it when the two rates are equal. The lines are drawn after both bands, so no fill veils
  // them, and the origin's last: when the peers give nothing, the two lines meet and the origin's shows.
  function chart(canvas, samples, now, span) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const left = 74, right = 12, top = 10, bottom = 24;
    const w = width - left - right, hgt = height - top - bottom;
    const peak = Math.max(1024, ...samples.map((s) => s[1] + s[2]));
    const step = niceStep(peak / 4);
    const ceiling = Math.ceil(peak / step) * step;
    const x = (t) => left + w * (1 - (now - t) / span);
    const y = (v) => top + hgt * (1 - v / ceiling);
    g.font = `11px ${css("--mono") || "monospace"}`;
    g.fillStyle = css("--muted");
    g.strokeStyle = css("--line");
    g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (let v = 0; v <= ceiling + 1e-9; v += step) {
      g.beginPath(); g.moveTo(left, Math.round(y(v)) + 0.5); g.lineTo(left + w, Math.round(y(v)) + 0.5); g.stroke();
      g.fillText(rate(v), left - 8, y(v));
    }
    g.textAlign = "center"; g.textBaseline = "top";
    const tick = span <= 60 ? 15 : span <= 180 ? 30 : 60;
    for (let ago = 0; ago <= span; ago += tick) {
      g.textAlign = ago === 0 ? "right" : ago === span ? "left" : "center";
      g.fillText(ago === 0 ? "now" : ago < 60 || ago % 60 ? `−${ago} s` : `−${ago / 60} min`, x(now - ago), top + hgt + 6);
    }
    const shown = samples.filter((s) => now - s[0] <= span);
    if (shown.length < 2) return;
    const base = shown.map((s) => [x(s[0]), y(0)]);
    const origin = shown.map((s) => [x(s[0]), y(s[1])]);
    const total = shown.map((s) => [x(s[0]), y(s[1] + s[2])]);
    const trace = (points) => points.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    for (const [lower, upper, color] of [[base, origin, css("--origin")], [origin, total, css("--peers")]]) {
      g.beginPath(); trace(upper);
      [...lower].reverse().forEach(([px, py]) => g.lineTo(px, py));
      g.closePath();
      g.globalAlpha = 0.14; g.fillStyle = color; g.fill(); g.globalAlpha = 1;
    }
    for (const [points, color] of [[total, css("--peers")], [origin, css("--origin")]]) {
      g.beginPath(); trace(points);
      g.strokeStyle = color; g.lineWidth = 2; g.lineJoin = "round"; g.stroke();
    }
  }

  function niceStep(raw) {
    const power = 1024 ** Math.floor(Math.log(Math.max(raw, 1)) / Math.log(1024));
    const scaled = raw / power;
    const nice = [1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000].find((n) => n >= scaled) || 1024;
    return nice * power;
  }

  return { bytes, rate, number, duration, when, stamp, percent, h, bar, card, follow, chart };
})();

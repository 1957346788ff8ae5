// The overview's charts, drawn by uPlot from the figures the page carries as JSON.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("series").textContent);
  function chart(name, series, columns) {
    var box = document.querySelector('[data-chart="' + name + '"]');
    var width = Math.max(280, Math.min(900, box.clientWidth || 600));
    new uPlot({
      width: width, height: 180,
      scales: { x: { time: true } },
      series: [{}].concat(series),
      axes: [{}, { size: 50 }]
    }, [data.x].concat(columns), box);
    box.setAttribute("data-drawn", "yes");
  }
  chart("calls", [{ label: "calls", stroke: "#1d5fa8", fill: "rgba(29,95,168,0.15)" }], [data.calls]);
  chart("latency", [
    { label: "p50 ms", stroke: "#1d5fa8", spanGaps: false },
    { label: "p95 ms", stroke: "#a3320b", spanGaps: false }
  ], [data.latencyP50, data.latencyP95]);
  chart("barge", [
    { label: "p50 ms", stroke: "#1d5fa8" },
    { label: "p95 ms", stroke: "#a3320b" }
  ], [data.bargeP50, data.bargeP95]);
})();

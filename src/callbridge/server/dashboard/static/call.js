// One call's player: the stereo waveform (caller above, bot below) drawn by wavesurfer
// over the page's own <audio> element, and a click on a turn seeks to it.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var box = document.getElementById("waveform");
  if (!player || !box) return;
  try {
    var wave = WaveSurfer.create({
      container: box,
      media: player,
      url: box.getAttribute("data-src"),
      height: 48,
      normalize: true,
      splitChannels: [
        { waveColor: "#1d5fa8", progressColor: "#0b2f57" },
        { waveColor: "#8a4b00", progressColor: "#4a2800" }
      ]
    });
    wave.on("ready", function () { box.setAttribute("data-ready", "yes"); });
    wave.on("error", function (e) { box.setAttribute("data-error", String(e)); });
  } catch (e) {
    box.setAttribute("data-error", String(e));  // the plain player still works
  }
  document.getElementById("conversation").addEventListener("click", function (event) {
    var button = event.target.closest("button.seek");
    if (!button) return;
    player.currentTime = Number(button.getAttribute("data-offset-s"));
    var playing = player.play();
    if (playing && playing.catch) playing.catch(function () {});
    document.querySelectorAll(".turn.current").forEach(function (t) { t.classList.remove("current"); });
    button.closest(".turn").classList.add("current");
  });
})();

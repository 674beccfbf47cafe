// Keyboard navigation (nothing happens while the focus is in a text field or with a modifier key):
//   left/right arrows follow the page's rel="prev"/rel="next" links (units, or pages of a layer),
//   "/" focuses the search box, "u" goes up from a unit to its layer,
//   "j"/"k" move the focus between the tiles of a layer page (Enter opens the focused one).
document.addEventListener("keydown", (event) => {
  const tag = (event.target && event.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag) || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === "/") {
    const box = document.getElementById("search");
    if (box) { event.preventDefault(); box.focus(); box.select(); }
    return;
  }
  if (event.key === "u") {
    const up = document.querySelector(".crumbs a:nth-of-type(2)");
    if (up) window.location.href = up.href;
    return;
  }
  if (event.key === "j" || event.key === "k") {
    const tiles = Array.from(document.querySelectorAll("#unit-grid a.tile"));
    if (!tiles.length) return;
    const at = tiles.indexOf(document.activeElement);
    const next = at < 0 ? 0 : Math.min(tiles.length - 1, Math.max(0, at + (event.key === "j" ? 1 : -1)));
    tiles[next].focus();
    return;
  }
  const rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
  if (!rel) return;
  const link = document.querySelector(`a[rel="${rel}"]`);
  if (link) window.location.href = link.href;
});

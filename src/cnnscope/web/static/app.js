// Keyboard navigation: left/right arrows follow the page's rel="prev"/rel="next" links
// (unless the focus is in a text field).
document.addEventListener("keydown", (event) => {
  const tag = (event.target && event.target.tagName) || "";
  if (tag === "INPUT" || tag === "TEXTAREA" || event.altKey || event.ctrlKey || event.metaKey) return;
  const rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
  if (!rel) return;
  const link = document.querySelector(`a[rel="${rel}"]`);
  if (link) window.location.href = link.href;
});

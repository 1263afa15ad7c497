// Buttons that ask before they act: <button data-confirm="Delete this?">. (No inline handlers:
// the Content-Security-Policy allows scripts from this site's files only.)
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});

"""`llmnest console`: the browser face of the lifecycle (server-rendered pages, light vanilla JS)."""

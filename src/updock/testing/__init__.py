"""The lab of real components used by tests and the demo; the package never imports it."""

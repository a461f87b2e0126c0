"""One module per tab; each exposes build_<name>_tab(services) and wires its events with role-checked handlers."""

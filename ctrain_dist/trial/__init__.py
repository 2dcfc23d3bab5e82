"""One trial (or a pack of seeds) trained to its budget, its rows sent to a sink."""

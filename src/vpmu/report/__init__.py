"""Reports: traces as data, text tables, JSON."""

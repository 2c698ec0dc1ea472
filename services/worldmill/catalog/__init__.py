"""The catalog service: every asset and its lineage, search, a web gallery, status reports and exports."""

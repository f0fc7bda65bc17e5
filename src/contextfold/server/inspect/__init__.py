"""The inspector: its JSON API, the web UI, and the context-window reports the CLI shares."""

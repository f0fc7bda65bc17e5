"""The transparent compaction proxy: Chat Completions and Anthropic Messages."""

"""The shared HTTP edge: errors, body and header limits, text checks, SSE replay, metrics, field checks."""

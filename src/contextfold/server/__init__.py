"""The OpenAI-compatible server: Responses + Conversations API over the event log."""

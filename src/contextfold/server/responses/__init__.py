"""The OpenAI Responses and Conversations API, with Files, Vector Stores and the hosted tools."""

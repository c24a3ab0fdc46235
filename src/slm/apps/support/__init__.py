"""Customer-service assistant: intents, out-of-scope detection, FAQ retrieval and human handoff."""

"""The Kafka side: consuming with manual commits, producing result and failure records."""

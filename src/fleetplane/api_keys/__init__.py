"""API keys: hashed secrets with provider and customer permission sets."""

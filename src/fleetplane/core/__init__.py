"""Domain-free building blocks: database, auth, permissions, errors, pagination, OpenAPI."""

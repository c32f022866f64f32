"""Pages people look at: the API playground."""

"""Device data intake: protocol decoders (socket-free) and, around them, listeners and the
pipeline that stores what the decoders produce."""
